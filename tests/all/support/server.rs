//! A server in this process, serving its API on a free loopback port until
//! it is stopped (or dropped: then it shuts down in the background).

use std::net::SocketAddr;
use std::sync::Arc;

use sessionbox::config::Config;
use sessionbox::server::{self, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct InProcess {
    pub server: Arc<Server>,
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    pub async fn start(config: Config) -> InProcess {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let server = Server::new(config, url.clone()).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server::serve(Arc::clone(&server), listener, async {
            let _ = stopped.await;
        }));
        InProcess {
            server,
            url,
            addr,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Shuts the server down gracefully and waits until it has.
    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let serving = self.serving.take().unwrap();
        serving.await.unwrap().unwrap();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a session of `app` through the API of the server at `url`; the
/// API's answer (`session_id`, `access_url`, ...).
pub async fn start_over_api(url: &str, app: &str, key: &str) -> serde_json::Value {
    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/apps/{app}/sessions"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::CREATED);
    answer.json().await.unwrap()
}

/// Sends a command line to a kv-probe session at its access URL; its
/// one-line answer.
pub async fn probe_over_http(access_url: &str, command: String) -> String {
    let answer = reqwest::Client::new()
        .post(access_url)
        .body(command)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "{text}");
    text
}
