//! A scenario: a validated, compiled component, pre-linked against the host
//! (one `InstancePre` per scenario), with the limits its sessions run under.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use crate::bindings::{self, ScenarioPre, v0_1};
use crate::destination::HostRule;
use crate::limits::Limits;
use crate::store::SessionState;

/// The largest component Sessionbox loads. Python components are ~18 MB.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

pub struct Scenario {
    pub(crate) name: String,
    pub(crate) content_hash: String,
    pub(crate) limits: Arc<Limits>,
    /// `limits.http_allow`, parsed.
    pub(crate) http_rules: Arc<[HostRule]>,
    pub(crate) pre: Prelinked,
}

impl Scenario {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hex SHA-256 of the component's bytes.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// Checks what can be told from the bytes alone, before compiling: the size,
/// and that this is a component rather than a core module or something else.
pub(crate) fn check_bytes(bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_COMPONENT_BYTES {
        bail!(
            "it is {} MiB; components are limited to {} MiB",
            bytes.len() >> 20,
            MAX_COMPONENT_BYTES >> 20
        );
    }
    if !bytes.starts_with(b"\0asm") {
        bail!("not a WebAssembly binary (it does not start with \\0asm)");
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        bail!(
            "a core WebAssembly module, not a component: build for wasm32-wasip2, \
             or wrap it with `wasm-tools component new`"
        );
    }
    if !wasmparser::Parser::is_component(bytes) {
        bail!("an unsupported WebAssembly binary version (neither a core module nor a component)");
    }
    // A structural read (no validation, cheap next to compiling) tells a
    // cut-off upload from a component that is whole but wrong.
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        payload.map_err(|e| anyhow!("truncated or corrupt: {e}"))?;
    }
    Ok(())
}

/// A component pre-linked for the version of the scenario world it was
/// built for.
#[derive(Clone)]
pub(crate) enum Prelinked {
    Current(ScenarioPre<SessionState>),
    V0_1(v0_1::ScenarioPre<SessionState>),
}

/// An instance, with the exports of its world version.
pub(crate) enum Instance {
    Current(bindings::Scenario),
    V0_1(v0_1::Scenario),
}

impl Prelinked {
    pub async fn instantiate(
        &self,
        store: &mut wasmtime::Store<SessionState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Prelinked::Current(pre) => Instance::Current(pre.instantiate_async(store).await?),
            Prelinked::V0_1(pre) => Instance::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

/// Pre-links a compiled component against the host: every import must be
/// one a world version offers, and that version's `app-events` export must
/// be there.
pub(crate) fn prelink(
    linker: &wasmtime::component::Linker<SessionState>,
    component: &wasmtime::component::Component,
) -> Result<Prelinked> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow!("{}", one_line(&e)))
        .context("imports something the scenario world does not offer")?;
    match ScenarioPre::new(pre.clone()) {
        Ok(current) => Ok(Prelinked::Current(current)),
        Err(current_error) => match v0_1::ScenarioPre::new(pre) {
            Ok(old) => Ok(Prelinked::V0_1(old)),
            Err(_) => Err(anyhow!("{}", one_line(&current_error)))
                .context("does not export the scenario world's `app-events` as expected"),
        },
    }
}

/// A wasmtime error's chain on one line.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
