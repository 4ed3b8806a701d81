//! Sessionbox: a runtime for session-scoped tenant code.
//!
//! A *scenario* is a WebAssembly component implementing the `scenario` world
//! in `wit/`. The [`Runtime`] loads scenarios and starts *sessions*: one
//! sandboxed instance each, receiving that session's events (Started,
//! CallAlerting, HttpRequest, WebSocket, ..., Terminating, Terminated) one
//! at a time, with what the code may do metered phase by phase.
//!
//! This crate puts the workspace's crates under one name: the host
//! (`sessionbox-host`: engine, sessions, capabilities) at the top, the
//! server as [`server`] (with its [`config`]) and SIP as [`sip`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sessionbox::{EngineConfig, Limits, Runtime, StartOptions};
//!
//! let runtime = Runtime::new(EngineConfig::default())?;
//! let scenario = runtime.load_file("hello.wasm".as_ref(), Limits::default())?;
//! let session = runtime.start(&scenario, StartOptions::default()).await?;
//! session.terminate()?;
//! let record = session.finished().await?;
//! println!("{}", record.finish_reason);
//! # Ok(()) }
//! ```

pub use sessionbox_host::*;
pub use sessionbox_server::{self as server, config};
pub use sessionbox_sip as sip;
