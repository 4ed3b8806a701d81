//! The bare embedding the benchmarks measure Sessionbox against: the same
//! guest on the same tuned engine with nothing but wasmtime — a store, an
//! instance, calls. Shared by the benches that include it (`#[path]`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sessionbox::bindings::ScenarioPre;
use sessionbox::engine::{EngineConfig, EpochTicker, build_engine};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub struct Bare {
    engine: Engine,
    pre: ScenarioPre<BareState>,
    _ticker: EpochTicker,
}

pub struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    log_lines: Arc<AtomicU64>,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The design's 1 s handler limit in the engine's 1 ms epoch ticks.
pub const DEADLINE_TICKS: u64 = 1_000;

/// The guest both sides run: tests/guests/bench-echo, built.
pub fn bench_echo() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests/bench-echo.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the guests: guest-examples/rust/build.sh)",
            path.display()
        )
    })
}

/// The baselines' custom data (31 bytes, as named there).
pub const CUSTOM_DATA: &str = "custom-data-of-32-bytes-xxxxxxx";

/// An instance's store, its bindings, and the lines it logged.
pub type Opened = (
    Store<BareState>,
    sessionbox::bindings::Scenario,
    Arc<AtomicU64>,
);

impl Bare {
    /// A pool of `max_sessions` instances, as Sessionbox's engine sizes it.
    pub fn new(guest: &[u8], max_sessions: u32) -> Self {
        let config = EngineConfig {
            max_sessions,
            ..EngineConfig::default()
        };
        let engine = build_engine(&config).unwrap();
        let component = Component::new(&engine, guest).unwrap();
        let mut linker = Linker::<BareState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        linker
            .instance("sessionbox:scenario/logger@0.2.0")
            .unwrap()
            .func_wrap("write", |mut store, (_message,): (String,)| {
                store.data_mut().log_lines.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        stub_host_interfaces(&engine, &component, &mut linker);
        let pre = ScenarioPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let ticker = EpochTicker::start(&engine, config.epoch_tick, || {});
        Bare {
            engine,
            pre,
            _ticker: ticker,
        }
    }

    /// A new instance, its store, and the count of lines it logged.
    pub async fn open(&self) -> Opened {
        self.try_open().await.unwrap()
    }

    /// Delivers Started with the baselines' custom data.
    pub async fn started(store: &mut Store<BareState>, instance: &sessionbox::bindings::Scenario) {
        let started = sessionbox::bindings::StartedEvent {
            session_id: String::new(),
            access_url: String::new(),
            custom_data: CUSTOM_DATA.into(),
        };
        store.set_epoch_deadline(DEADLINE_TICKS);
        instance
            .sessionbox_scenario0_2_0_app_events()
            .call_started(&mut *store, &started)
            .await
            .unwrap();
    }

    /// As `open`, failing when the pool is full.
    pub async fn try_open(&self) -> wasmtime::Result<Opened> {
        let log_lines = Arc::new(AtomicU64::new(0));
        let state = BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            log_lines: Arc::clone(&log_lines),
        };
        let mut store = Store::new(&self.engine, state);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(DEADLINE_TICKS);
        let instance = self.pre.instantiate_async(&mut store).await?;
        Ok((store, instance, log_lines))
    }
}

/// The SDK links every host interface; bench-echo calls none but the logger.
/// The others get functions that fail if called, and the host's resource
/// types (the exports' types name them).
fn stub_host_interfaces(engine: &Engine, component: &Component, linker: &mut Linker<BareState>) {
    use sessionbox::bindings::CallHandle;
    use sessionbox::bindings::SocketHandle;
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;

    for (name, item) in component.component_type().imports(engine) {
        let stubbed = name.starts_with("sessionbox:scenario/") && !name.contains("/logger@");
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !stubbed {
            continue;
        }
        let mut stub = linker.instance(name).unwrap();
        for (export, item) in instance.exports(engine) {
            match (export, item.ty) {
                (_, ComponentItem::ComponentFunc(_)) => stub
                    .func_new(export, |_, _, _, _| {
                        wasmtime::bail!("not part of the bench")
                    })
                    .unwrap(),
                ("call", ComponentItem::Resource(_)) => stub
                    .resource(export, ResourceType::host::<CallHandle>(), |_, _| Ok(()))
                    .unwrap(),
                ("websocket", ComponentItem::Resource(_)) => stub
                    .resource(export, ResourceType::host::<SocketHandle>(), |_, _| Ok(()))
                    .unwrap(),
                _ => {}
            }
        }
    }
}
