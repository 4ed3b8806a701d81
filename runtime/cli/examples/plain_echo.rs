//! The W4 comparison point: a plain hyper server that answers what the
//! bench-echo scenario answers (200, `content-type:
//! application/octet-stream`, the request body), with no sandbox behind it.
//! `scripts/bench.sh` puts `wrk` in front of it and of a Sessionbox access
//! URL in the same run.
//!
//!   cargo run --release --example plain_echo -- 127.0.0.1:9090

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let listener = TcpListener::bind(&address).await?;
    eprintln!("plain echo on http://{address}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let body = request.into_body().collect().await?.to_bytes();
                let response = Response::builder()
                    .header("content-type", "application/octet-stream")
                    .body(Full::<Bytes>::new(body))
                    .expect("a valid response");
                Ok::<_, hyper::Error>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
