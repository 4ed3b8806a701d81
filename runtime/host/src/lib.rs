//! Sessionbox's host: the engine, the compiled-component cache, sessions and
//! their capabilities. (Library users take it through the `sessionbox`
//! crate, which adds the server and SIP.)
//!
//! A *scenario* is a WebAssembly component implementing the `scenario` world
//! in `wit/`. The [`Runtime`] loads scenarios and starts *sessions*: one
//! sandboxed instance each, receiving that session's events (Started,
//! CallAlerting, HttpRequest, WebSocket, ..., Terminating, Terminated) one
//! at a time, with what the code may do metered phase by phase.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use sessionbox_host::{EngineConfig, Limits, Runtime, StartOptions};
//!
//! let runtime = Runtime::new(EngineConfig::default())?;
//! let scenario = runtime.load_file("hello.wasm".as_ref(), Limits::default())?;
//! let session = runtime.start(&scenario, StartOptions::default()).await?;
//! session.terminate()?;
//! let record = session.finished().await?;
//! println!("{}", record.finish_reason);
//! # Ok(()) }
//! ```

pub mod bindings;
mod budget;
pub mod cache;
pub mod capabilities;
pub mod cpu;
pub mod deadline;
pub mod destination;
pub mod engine;
pub mod guest;
pub mod in_flight;
pub mod keyvalue;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod recording;
pub mod runtime;
pub mod scenario;
pub mod session;
pub mod shared_limits;
mod store;
pub mod sync;
pub mod telephony;

pub use cpu::TenantCpu;
pub use engine::EngineConfig;
pub use limits::Limits;
pub use runtime::{Runtime, StartError, StartOptions};
pub use scenario::Scenario;
pub use session::{FinishReason, Notice, SessionError, SessionHandle, SessionRecord};
pub use shared_limits::SharedLimits;
pub use telephony::IncomingCall;
