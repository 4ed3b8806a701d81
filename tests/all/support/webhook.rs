//! A real HTTP server on 127.0.0.1 that records what scenarios send it.

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request the webhook received.
#[derive(Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
}

/// Starts the server; returns its URL (`http://127.0.0.1:PORT/hook`) and
/// the requests as they arrive. It answers every request 200 `ok`.
pub async fn start() -> (String, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    let method = request.method().to_string();
                    let path = request.uri().path().to_owned();
                    let header = |name| {
                        let value = request.headers().get(name)?;
                        value.to_str().ok().map(str::to_owned)
                    };
                    let content_type = header("content-type");
                    let authorization = header("authorization");
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let _ = tx.send(Received {
                        method,
                        path,
                        content_type,
                        authorization,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, rx)
}
