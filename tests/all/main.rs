//! Sessionbox's integration tests, in one binary (as wasmtime's `tests/all`):
//! each module runs real guest components through the runtime or the real
//! server. `cargo test --test all MODULE::` runs one module.

mod support;

mod backends;
mod cli;
mod cluster;
mod conformance;
mod deploy;
mod dispatch;
mod dispatch_http;
mod dispatch_sip;
mod failures;
mod hostile;
mod limits;
mod operations;
mod outbound;
mod phases;
mod properties;
mod serve;
mod sip;
