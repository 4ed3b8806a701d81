//! The `sessionbox` command: run one session locally, or check a scenario.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use sessionbox::bindings::{Header, HttpRequestEvent};
use sessionbox::capabilities::AppState;
use sessionbox::capabilities::storage::AppStorage;
use sessionbox::capabilities::variables::{Variable, Variables};
use sessionbox::keyvalue::sqlite::{DEFAULT_CACHE_BYTES, SqliteKeyValue};
use sessionbox::recording::{Recording, RecordingStore};

use sessionbox::sip::WavOut;
use sessionbox::{EngineConfig, IncomingCall, Limits, Notice, Runtime, StartOptions};
use tokio::sync::mpsc;

// Access requests are allocated on one worker thread and often freed on
// another (a request queued for a busy session). glibc's malloc answers
// that with arena-lock contention (0.4 futex calls per request in W4);
// mimalloc frees across threads without a lock. W4: ~10 % more req/s,
// ~1.5 µs less server CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "A runtime for session-scoped tenant code")]
struct Cli {
    /// Where compiled components are cached [default: ~/.cache/sessionbox/components]
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Compile every time instead of using the cache.
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serves the management API and access URLs. Without --config: one app,
    /// `demo`, running the bundled remote-control scenario.
    Serve {
        /// The config file (TOML): server settings, tenants, apps.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to listen, overriding the config [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Runs one session of a scenario here, printing every event and log line.
    Run {
        /// The scenario component (.wasm).
        scenario: PathBuf,
        /// Custom data for Started.
        #[arg(long, default_value = "")]
        custom_data: String,
        /// An incoming call after Started: FROM,TO.
        #[arg(long, value_name = "FROM,TO")]
        call: Option<String>,
        /// Writes what the caller of --call hears (its say and play, in
        /// order) to this WAV file (8 kHz, mono).
        #[arg(long, value_name = "FILE", requires = "call")]
        audio_out: Option<PathBuf>,
        /// Keys the caller of --call presses, one each time what it hears
        /// has finished (its next CallPlaybackFinished): `1`, `12#`.
        #[arg(long, value_name = "KEYS", requires = "call")]
        press: Option<String>,
        /// Where the session's recordings go, as SESSION-N.wav. Without it,
        /// recording is refused. (Calls here carry no audio: a recording
        /// holds silence, as long as it ran.)
        #[arg(long, value_name = "DIR")]
        recordings: Option<PathBuf>,
        /// An HTTP request to the session after Started: 'METHOD PATH [BODY]'.
        /// Repeatable; requests are delivered in order.
        #[arg(long, value_name = "'METHOD PATH [BODY]'")]
        http: Vec<String>,
        /// Milliseconds without calls or requests before Terminating.
        #[arg(long, value_name = "MS", default_value_t = 5_000)]
        idle_timeout: u64,
        /// Let outbound HTTP reach loopback and private addresses (a webhook
        /// on this machine, say); off, only public addresses are reachable.
        #[arg(long)]
        allow_private_http: bool,
        /// The guest's linear memory limit, in MiB. JavaScript and Python
        /// guests need more than the default.
        #[arg(long, value_name = "MIB", default_value_t = Limits::default().memory_bytes >> 20)]
        memory_mib: usize,
        /// The storage database; the app's store is named after the
        /// scenario file, so it is kept from run to run. Default:
        /// ~/.local/share/sessionbox/run-storage.db.
        #[arg(long, value_name = "FILE")]
        storage: Option<PathBuf>,
        /// A variable for `variables.get`. Repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// A secret for `variables.get`, read from the environment variable
        /// ENV (so it stays off the command line); the log shows `[secret]`
        /// in its place. Repeatable.
        #[arg(long = "secret", value_name = "NAME=ENV")]
        secrets: Vec<String>,
    },
    /// Checks that a component is a valid scenario, without running it.
    Check {
        /// The scenario component (.wasm).
        scenario: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting tokio");
    match runtime.block_on(cli.run()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    /// The runtime for one local session (run, check): a small pool starts
    /// fast, its slots as large as the session's memory limit.
    fn local_runtime(
        cache_dir: Option<PathBuf>,
        no_cache: bool,
        limits: &Limits,
    ) -> Result<Runtime> {
        let config = EngineConfig {
            max_sessions: 4,
            max_memory_bytes: limits.memory_bytes,
            ..EngineConfig::default()
        };
        let runtime = Runtime::new(config)?;
        let dir = cache_dir.or_else(sessionbox::cache::ComponentCache::default_dir);
        Ok(match dir {
            Some(dir) if !no_cache => runtime.with_cache(dir),
            _ => runtime,
        })
    }

    async fn run(self) -> Result<ExitCode> {
        let Cli {
            cache_dir,
            no_cache,
            command,
        } = self;
        match command {
            Command::Serve { config, listen } => {
                serve(config.as_deref(), listen, cache_dir, no_cache).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Check { scenario } => {
                let limits = Limits::default();
                let runtime = Self::local_runtime(cache_dir, no_cache, &limits)?;
                let loaded = runtime.load_file(&scenario, limits)?;
                println!(
                    "ok: {} is a valid scenario (sha256 {})",
                    scenario.display(),
                    &loaded.content_hash()[..16]
                );
                Ok(ExitCode::SUCCESS)
            }
            Command::Run {
                scenario,
                custom_data,
                call,
                audio_out,
                press,
                recordings,
                http,
                idle_timeout,
                allow_private_http,
                memory_mib,
                storage,
                vars,
                secrets,
            } => {
                let call = call.as_deref().map(parse_call).transpose()?;
                let audio_out = audio_out
                    .map(|path| {
                        WavOut::create(&path)
                            .with_context(|| format!("--audio-out: creating {}", path.display()))
                    })
                    .transpose()?;
                let requests = http
                    .iter()
                    .map(|spec| parse_request(spec))
                    .collect::<Result<Vec<_>>>()?;
                let limits = Limits {
                    idle_timeout: Duration::from_millis(idle_timeout),
                    http_allow_private: allow_private_http,
                    memory_bytes: memory_mib << 20,
                    ..Limits::default()
                };
                let runtime = Self::local_runtime(cache_dir, no_cache, &limits)?;
                let scenario = runtime.load_file(&scenario, limits)?;
                let storage = storage.unwrap_or_else(|| demo_dir().join("run-storage.db"));
                let mut app = local_app(&runtime, scenario.name(), &storage, &vars, &secrets)?;
                if let Some(dir) = recordings {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("--recordings: creating {}", dir.display()))?;
                    app.recordings = Some(Arc::new(RecordingsDir(dir)));
                }
                let keys: Vec<String> = press
                    .iter()
                    .flat_map(|keys| keys.chars())
                    .map(String::from)
                    .collect();
                if let Some(key) = keys
                    .iter()
                    .find(|key| !"0123456789*#ABCD".contains(key.as_str()))
                {
                    bail!("--press: {key:?} is not a key (0-9, *, #, A-D)");
                }
                let call = call.map(|call| LocalCall {
                    call,
                    audio_out,
                    keys,
                });
                run_session(&runtime, &scenario, custom_data, call, requests, app).await
            }
        }
    }
}

/// `run`'s call: where its audio goes, and the keys its caller presses.
struct LocalCall {
    call: IncomingCall,
    audio_out: Option<Arc<WavOut>>,
    keys: Vec<String>,
}

async fn run_session(
    runtime: &Runtime,
    scenario: &std::sync::Arc<sessionbox::Scenario>,
    custom_data: String,
    call: Option<LocalCall>,
    requests: Vec<HttpRequestEvent>,
    app: AppState,
) -> Result<ExitCode> {
    let (observer, mut notices) = mpsc::unbounded_channel();
    let options = StartOptions {
        custom_data,
        observer: Some(observer),
        app,
        ..StartOptions::default()
    };
    let session = runtime.start(scenario, options).await?;
    // The call's id as notices name it, and the keys still to press.
    let mut pressing = None;
    if let Some(LocalCall {
        call,
        audio_out,
        keys,
    }) = call
    {
        let id = match audio_out {
            Some(out) => {
                session.incoming_call_via(call, Box::new(move |context| out.link(context)))?
            }
            None => session.incoming_call(call)?,
        };
        pressing = Some((id, keys.into_iter()));
    }
    // Responses are printed by the loop below, after the notices that
    // caused them (which were sent first), so the output reads in order.
    let (responses_tx, mut responses) = mpsc::unbounded_channel();
    let requester = {
        let session = session.clone();
        tokio::spawn(async move {
            for request in requests {
                let line = format!("{} {}", request.method, request.path);
                let line = match session.http_request(request).await {
                    Ok(response) => format!(
                        "{line} -> {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ),
                    Err(e) => format!("{line} -> no response: {e}"),
                };
                let _ = responses_tx.send(line);
            }
        })
    };
    loop {
        tokio::select! {
            biased;
            notice = notices.recv() => match notice {
                Some(Notice::Event { name, detail }) if name == "CallPlaybackFinished" => {
                    println!("{name} {detail}");
                    if let Some((id, keys)) = &mut pressing
                        && detail == format!("call={id}")
                        && let Some(key) = keys.next()
                    {
                        println!("  (the caller presses {key})");
                        let _ = session.remote_tone(*id, &key);
                    }
                }
                Some(Notice::Event { name, detail }) if detail.is_empty() => println!("{name}"),
                Some(Notice::Event { name, detail }) => println!("{name} {detail}"),
                Some(Notice::Log(line)) => println!("  {:>8} | {}", line.source.name(), line.text),
                Some(Notice::Finished(record)) => {
                    // Requests still queued fail at once now; print every answer.
                    let _ = requester.await;
                    while let Ok(line) = responses.try_recv() {
                        println!("  response | {line}");
                    }
                    println!("finished: {}", record.finish_reason);
                    return Ok(if record.finish_reason.is_normal() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                None => bail!("the session ended without a record"),
            },
            Some(line) = responses.recv() => println!("  response | {line}"),
            _ = tokio::signal::ctrl_c() => {
                // Ctrl-C ends the session the orderly way: Terminating, Terminated.
                let _ = session.terminate();
            }
        }
    }
}

async fn serve(
    config_path: Option<&std::path::Path>,
    listen: Option<std::net::SocketAddr>,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> Result<()> {
    use sessionbox::config::Config;
    use sessionbox::server::{self, Server};

    let (mut config, demo_key) = match config_path {
        Some(path) => (Config::load(path)?, None),
        None => {
            let (config, key) = server::default_config(&demo_dir());
            (config, Some(key))
        }
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if cache_dir.is_some() {
        config.server.cache_dir = cache_dir;
    }
    if no_cache {
        // An empty path: nothing is cached (see Server::new).
        config.server.cache_dir = Some(PathBuf::new());
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    let public_url = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let apps: Vec<String> = config.apps.keys().cloned().collect();
    let server = Server::new(config, public_url.clone()).await?;
    println!(
        "sessionbox listening on {public_url} (apps: {})",
        apps.join(", ")
    );
    if let Some(key) = demo_key {
        print_demo(&public_url, &key);
    }
    server::serve(server, listener, shutdown_signal()).await
}

/// The copy-and-paste tour of the default app, with this run's key.
fn print_demo(url: &str, key: &str) {
    println!(
        r#"
App "demo" runs the bundled remote-control scenario. Try it:

  # start a session (delivers Started) and keep its answer
  S=$(curl -s -X POST -H 'Authorization: Bearer {key}' -d '{{"custom_data":"hello"}}' {url}/v1/apps/demo/sessions); echo "$S"
  A=$(echo "$S" | sed -E 's/.*"access_url":"([^"]+)".*/\1/')
  L=$(echo "$S" | sed -E 's/.*"log_url":"([^"]+)".*/\1/')
  # talk to it (each request is an HttpRequest event; the scenario answers)
  curl -s "$A/status"; echo
  curl -s -X POST -d 'new data' "$A/custom-data"; echo
  # end it (Terminating, Terminated) and read its log
  curl -s -X POST "$A/stop"; echo
  curl -s -H 'Authorization: Bearer {key}' "$L?wait=true"; echo
"#
    );
}

/// The app a local run belongs to: its store in `storage`, named `name`,
/// and its variables (`NAME=VALUE`) and secrets (`NAME=ENV`).
fn local_app(
    runtime: &Runtime,
    name: &str,
    storage: &std::path::Path,
    vars: &[String],
    secrets: &[String],
) -> Result<AppState> {
    let split = |spec: &str, what| {
        spec.split_once('=')
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .with_context(|| format!("{spec:?}: expected {what}"))
    };
    let mut variables = std::collections::BTreeMap::new();
    for spec in vars {
        let (name, value) = split(spec, "NAME=VALUE")?;
        variables.insert(
            name,
            Variable {
                value,
                secret: false,
            },
        );
    }
    for spec in secrets {
        let (name, env) = split(spec, "NAME=ENV")?;
        let value = std::env::var(&env).with_context(|| {
            format!("--secret {spec}: the environment variable {env} is not set")
        })?;
        variables.insert(
            name,
            Variable {
                value,
                secret: true,
            },
        );
    }
    if let Some(dir) = storage.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let backend =
        SqliteKeyValue::open(storage, DEFAULT_CACHE_BYTES, Arc::clone(runtime.metrics()))?;
    Ok(AppState {
        storage: Some(AppStorage {
            app: name.into(),
            backend: Arc::new(backend),
        }),
        variables: Arc::new(Variables::new(variables)),
        ..AppState::default()
    })
}

/// `run`'s recordings: WAV files in a directory.
struct RecordingsDir(PathBuf);

impl RecordingStore for RecordingsDir {
    fn keep(
        &self,
        session: &str,
        recording: Recording,
        _app_bytes: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let path = self.0.join(format!("{session}-{}.wav", recording.id));
        let written = std::fs::write(&path, &recording.wav)
            .map(|()| eprintln!("recording {} written to {}", recording.id, path.display()))
            .map_err(|e| format!("writing {}: {e}", path.display()));
        Box::pin(std::future::ready(written))
    }
}

/// Where the default app keeps its history and storage.
fn demo_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("sessionbox")
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn parse_call(spec: &str) -> Result<IncomingCall> {
    let (from, to) = spec
        .split_once(',')
        .context("--call takes FROM,TO (e.g. --call +15550100,+15550199)")?;
    Ok(IncomingCall {
        caller_id: from.trim().to_owned(),
        destination: to.trim().to_owned(),
        display_name: String::new(),
        headers: Vec::<Header>::new(),
    })
}

fn parse_request(spec: &str) -> Result<HttpRequestEvent> {
    let mut parts = spec.trim().splitn(3, ' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        bail!("--http takes 'METHOD PATH [BODY]' (e.g. --http 'GET /status'), not {spec:?}");
    };
    if !path.starts_with('/') {
        bail!("--http: the path must start with '/', not {path:?}");
    }
    Ok(HttpRequestEvent {
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        headers: Vec::new(),
        body: parts.next().unwrap_or_default().as_bytes().to_vec(),
    })
}
