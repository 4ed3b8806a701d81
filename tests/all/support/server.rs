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
