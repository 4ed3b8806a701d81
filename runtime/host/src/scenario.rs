//! A scenario: a validated, compiled component, pre-linked against the host
//! (one `InstancePre` per scenario), with the limits its sessions run under.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use wasmtime::component::InstancePre;

use crate::bindings::exports::sessionbox::{
    scenario0_2_0::app_events, scenario0_3_0::media_events,
};
use crate::bindings::v0_1;
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
    /// 0.2.0 or 0.3.0: the same imports, and `app-events`, with 0.3.0's
    /// `media-events` beside it when the component exports it.
    Current {
        pre: InstancePre<SessionState>,
        app_events: app_events::GuestIndices,
        media_events: Option<media_events::GuestIndices>,
    },
    V0_1(v0_1::ScenarioPre<SessionState>),
}

/// An instance, with the exports of its world version.
pub(crate) enum Instance {
    Current {
        app_events: app_events::Guest,
        media_events: Option<media_events::Guest>,
    },
    V0_1(v0_1::Scenario),
}

impl Prelinked {
    pub async fn instantiate(
        &self,
        store: &mut wasmtime::Store<SessionState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Prelinked::Current {
                pre,
                app_events,
                media_events,
            } => {
                let instance = pre.instantiate_async(&mut *store).await?;
                Instance::Current {
                    app_events: app_events.load(&mut *store, &instance)?,
                    media_events: match media_events {
                        Some(indices) => Some(indices.load(&mut *store, &instance)?),
                        None => None,
                    },
                }
            }
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
    match app_events::GuestIndices::new(&pre) {
        Ok(app_events) => {
            // A component that exports `media-events` but gets it wrong is
            // refused rather than run deaf to its media.
            let media_events = match media_events::GuestIndices::new(&pre) {
                Ok(indices) => Some(indices),
                Err(_) if !exports_media_events(component) => None,
                Err(error) => {
                    return Err(anyhow!("{}", one_line(&error))).context(
                        "does not export the scenario world's `media-events` as expected",
                    );
                }
            };
            Ok(Prelinked::Current {
                pre,
                app_events,
                media_events,
            })
        }
        Err(current_error) => match v0_1::ScenarioPre::new(pre) {
            Ok(old) => Ok(Prelinked::V0_1(old)),
            Err(_) => Err(anyhow!("{}", one_line(&current_error)))
                .context("does not export the scenario world's `app-events` as expected"),
        },
    }
}

/// Whether the component exports some version of `media-events`.
fn exports_media_events(component: &wasmtime::component::Component) -> bool {
    let engine = component.engine();
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("sessionbox:scenario/media-events@"))
}

/// A wasmtime error's chain on one line.
pub(crate) fn one_line(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
