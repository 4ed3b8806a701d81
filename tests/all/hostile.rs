//! Guests written to break things, each beside a well-behaved session that
//! is asking and answered all through the attack and must not notice: loops in every handler, runaway recursion, a flood of
//! timers, a log line as large as memory, an oversized answer.

use std::time::Duration;

use sessionbox::log::{LogSource, MAX_REFUSAL_NOTES};
use std::sync::Arc;

use tokio::sync::oneshot::error::TryRecvError;

use crate::support::*;
use sessionbox::{
    FinishReason, IncomingCall, Limits, Runtime, SessionError, SessionHandle, StartOptions,
};

const LOG: &str =
    r#"(import "sessionbox:scenario/logger@0.2.0" "write" (func $log (param i32 i32)))"#;
const SET_TIMEOUT: &str = r#"(import "sessionbox:scenario/timers@0.2.0" "set-timeout" (func $set_timeout (param i32 i32)))"#;
const LOOP: &str = "(loop (br 0)) unreachable";

fn short_compute() -> Limits {
    Limits {
        handler_compute: Duration::from_millis(100),
        ..Limits::default()
    }
}

/// A well-behaved session beside an attack: started before it, asking
/// and answered correctly all through it, ending normally after it.
struct Neighbour {
    session: SessionHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    asking: tokio::task::JoinHandle<usize>,
}

impl Neighbour {
    async fn beside(runtime: &Runtime) -> Neighbour {
        let hello = load(runtime, "hello", Limits::default());
        let session = runtime
            .start(&hello, StartOptions::default())
            .await
            .unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let asking = {
            let session = session.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                // At least once after the attack, however it went.
                while stopped.try_recv() == Err(TryRecvError::Empty) || answered == 0 {
                    let path = format!("/{answered}");
                    let asked = session.http_request(request("GET", &path, ""));
                    let answer = tokio::time::timeout(PATIENCE, asked)
                        .await
                        .expect("the neighbour is answered while the attack runs");
                    assert_eq!(answer.unwrap().body, format!("hello GET {path}").as_bytes());
                    answered += 1;
                    tokio::task::yield_now().await;
                }
                answered
            })
        };
        Neighbour {
            session,
            stop,
            asking,
        }
    }

    /// The attack is over: the neighbour was answered all along and ends
    /// normally.
    async fn ends_well(self) {
        let _ = self.stop.send(());
        let answered = self.asking.await.expect("every answer was right");
        assert!(answered > 0);
        self.session.terminate().unwrap();
        let record = self.session.finished().await.unwrap();
        assert!(record.finish_reason.is_normal(), "{}", record.finish_reason);
        assert_eq!(record.delivered("HttpRequest"), answered as u64);
    }
}

#[tokio::test]
async fn a_loop_in_any_handler_ends_the_session_at_the_compute_limit() {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    let handlers = [
        "started",
        "http-request",
        "timer-fired",
        "terminating",
        "terminated",
    ];
    for handler in handlers {
        // timer-fired needs a timer: started sets one.
        let started = if handler == "timer-fired" {
            "(call $set_timeout (i32.const 1) (i32.const 256))"
        } else {
            ""
        };
        let mut bodies = vec![(handler, LOOP)];
        if !started.is_empty() {
            bodies.push(("started", started));
        }
        let looping = wat::scenario(&bodies, SET_TIMEOUT, "");
        let scenario = runtime.load(handler, &looping, short_compute()).unwrap();
        let mut session = start(&runtime, &scenario, "").await;
        match handler {
            "http-request" => {
                let answer = session.session.http_request(request("GET", "/", "")).await;
                assert!(matches!(answer, Err(SessionError::ScenarioFailed(_))));
            }
            "terminating" | "terminated" => session.session.terminate().unwrap(),
            _ => {}
        }
        let record = session.finished().await;
        assert_eq!(
            record.finish_reason,
            FinishReason::ComputeLimit {
                event: handler,
                limit_ms: 100
            },
            "{handler}"
        );
    }
    neighbour.ends_well().await;
}

#[tokio::test]
async fn runaway_recursion_traps_with_a_stack_overflow() {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    let recursing = wat::scenario(
        &[("http-request", "(call $recurse) (i32.const 1024)")],
        "",
        "(func $recurse (call $recurse))",
    );
    let scenario = runtime
        .load("recursing", &recursing, Limits::default())
        .unwrap();
    let mut session = start(&runtime, &scenario, "").await;
    let _ = session.session.http_request(request("GET", "/", "")).await;
    let record = session.finished().await;
    let FinishReason::Trapped { event, trap } = &record.finish_reason else {
        panic!("{:?}", record.finish_reason);
    };
    assert_eq!(*event, "http-request");
    assert!(trap.contains("call stack exhausted"), "{trap}");
    neighbour.ends_well().await;
}

#[tokio::test]
async fn a_flood_of_timers_is_a_hundred_and_the_rest_refusals() {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    let flood = wat::scenario(
        &[(
            "started",
            "(local $i i32)
             (loop $again
               (call $set_timeout (i32.const 600000) (i32.const 256))
               ;; Free the refusal's reason, as a real guest would.
               (global.set $heap (i32.const 4096))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const 200000))))",
        )],
        SET_TIMEOUT,
        "",
    );
    // Host calls cost compute too: give the loop room to finish in a debug
    // build, on the slow lane beside the other tests, so that what is
    // measured is the count.
    let limits = Limits {
        handler_compute: Duration::from_secs(60),
        ..Limits::default()
    };
    let scenario = runtime.load("flood", &flood, limits).unwrap();
    let mut session = start(&runtime, &scenario, "").await;
    session.session.terminate().unwrap();
    let record = session.finished().await;
    assert!(record.finish_reason.is_normal(), "{}", record.finish_reason);
    assert_eq!(record.capabilities.uses["timers"], 100);
    assert_eq!(record.capabilities.refusals["timers"]["running"], 199_900);
    // The first refusals are noted for the author, the rest only counted.
    let host = lines(&record, LogSource::Host);
    assert_eq!(
        host.iter()
            .filter(|l| l.starts_with("timers refused"))
            .count(),
        MAX_REFUSAL_NOTES as usize
    );
    assert!(host.contains(&"further refusals are counted in the session record, not logged"));
    assert_eq!(
        host[0],
        "timers refused in running: 100 timers are pending, the limit"
    );
    neighbour.ends_well().await;
}

#[tokio::test]
async fn a_log_line_as_large_as_memory_is_truncated() {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    const LINE: u32 = 8 << 20;
    let shouting = wat::scenario(
        &[(
            "http-request",
            // 8 MiB of `a`, logged as one line.
            &format!(
                "(drop (memory.grow (i32.const 130)))
                 (memory.fill (i32.const 65536) (i32.const 97) (i32.const {LINE}))
                 (call $log (i32.const 65536) (i32.const {LINE}))
                 (i32.const 1024)"
            ),
        )],
        LOG,
        "",
    );
    let scenario = runtime
        .load("shouting", &shouting, Limits::default())
        .unwrap();
    let mut session = start(&runtime, &scenario, "").await;
    let answer = session.session.http_request(request("GET", "/", "")).await;
    assert_eq!(answer.unwrap().status, 200);
    session.session.terminate().unwrap();
    let record = session.finished().await;
    let line = lines(&record, LogSource::Scenario)[0];
    let kept = "a".repeat(15_000);
    assert_eq!(
        line,
        format!("{kept} [truncated: {} more characters]", LINE - 15_000)
    );
    neighbour.ends_well().await;
}

#[tokio::test]
async fn an_oversized_answer_is_refused_and_the_session_goes_on() {
    let runtime = runtime();
    const BODY: u32 = 2 << 20;
    let bloated = wat::scenario(
        &[(
            "http-request",
            &format!(
                "(drop (memory.grow (i32.const 33)))
                 (i32.store16 (i32.const 2048) (i32.const 200))
                 (i32.store (i32.const 2060) (i32.const 65536))
                 (i32.store (i32.const 2064) (i32.const {BODY}))
                 (i32.const 2048)"
            ),
        )],
        "",
        "",
    );
    let scenario = runtime
        .load("bloated", &bloated, Limits::default())
        .unwrap();
    let mut session = start(&runtime, &scenario, "").await;
    for _ in 0..2 {
        let answer = session.session.http_request(request("GET", "/", "")).await;
        let Err(SessionError::ScenarioFailed(reason)) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(
            reason,
            format!("its answer is {BODY} bytes; the limit is 1048576")
        );
    }
    session.session.terminate().unwrap();
    let record = session.finished().await;
    assert!(record.finish_reason.is_normal());
    assert_eq!(record.delivered("HttpRequest"), 2);
}

/// A session that ended, however it ended, gives back its memory and its
/// slot before anyone hears it ended.
#[tokio::test]
async fn an_ended_session_gives_back_its_memory_and_its_slot() {
    let runtime = sessionbox::Runtime::new(sessionbox::EngineConfig {
        max_sessions: 2,
        ..sessionbox::EngineConfig::default()
    })
    .unwrap();
    let greedy = greedy();
    let greedy = runtime.load("greedy", &greedy, Limits::default()).unwrap();
    let hello = load(&runtime, "hello", Limits::default());
    let memory = || runtime.metrics().guest_memory_bytes.get();
    assert_eq!(memory(), 0);

    let mut a = start(&runtime, &greedy, "").await;
    let mut b = start(&runtime, &hello, "").await;
    assert!(memory() > 0, "live instances hold memory");
    let full = runtime
        .start(&hello, sessionbox::StartOptions::default())
        .await;
    assert!(matches!(
        full,
        Err(sessionbox::StartError::AtCapacity { max_sessions: 2 })
    ));
    let _ = a.session.http_request(request("GET", "/", "")).await;

    assert!(!a.finished().await.finish_reason.is_normal());
    // Its slot is free the moment its end is known.
    let c = runtime
        .start(&hello, sessionbox::StartOptions::default())
        .await
        .expect("the trapped session's slot is free");
    b.session.terminate().unwrap();
    c.terminate().unwrap();
    b.finished().await;
    c.finished().await.unwrap();
    assert_eq!(memory(), 0, "every byte of guest memory was given back");
}

/// A tenant's sessions share its memory quota: a greedy one stops at the
/// quota, not at its own (larger) limit; one holding the quota keeps the
/// next from starting; what an ended session held is given back.
#[tokio::test]
async fn a_tenants_sessions_share_its_memory_quota() {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    let quota = sessionbox::SharedLimits::new(4 << 20, 100, sessionbox::TenantCpu::new("t", 100));
    let tenant = || sessionbox::StartOptions {
        shared: Some(Arc::clone(&quota)),
        ..sessionbox::StartOptions::default()
    };
    let greedy = runtime
        .load("greedy", &greedy(), Limits::default())
        .unwrap();
    // Grows to exactly 4 MiB (1 initial page + 63) and keeps it.
    let hog = wat::scenario(
        &[(
            "http-request",
            "(drop (memory.grow (i32.const 63))) (i32.const 1024)",
        )],
        "",
        "",
    );
    let hog = runtime.load("hog", &hog, Limits::default()).unwrap();

    let a = runtime.start(&greedy, tenant()).await.unwrap();
    let _ = a.http_request(request("GET", "/", "")).await;
    let record = a.finished().await.unwrap();
    let FinishReason::Trapped { trap, .. } = &record.finish_reason else {
        panic!("{:?}", record.finish_reason);
    };
    assert!(
        trap.ends_with(
            "(after growing memory was refused: the memory its tenant's sessions share is in use)"
        ),
        "{trap}"
    );
    assert_eq!(quota.memory_in_use(), 0, "given back");

    let holder = runtime.start(&hog, tenant()).await.unwrap();
    holder.http_request(request("GET", "/", "")).await.unwrap();
    assert_eq!(quota.memory_in_use(), 4 << 20);
    let refused = runtime.start(&hog, tenant()).await;
    assert!(
        matches!(
            refused,
            Err(sessionbox::StartError::SharedMemoryFull { limit_bytes }) if limit_bytes == 4 << 20
        ),
        "{:?}",
        refused.err()
    );
    neighbour.ends_well().await;

    holder.terminate().unwrap();
    holder.finished().await.unwrap();
    let next = runtime.start(&hog, tenant()).await.expect("room again");
    next.terminate().unwrap();
    next.finished().await.unwrap();
    assert_eq!(quota.memory_in_use(), 0);
}

/// A guest that keeps every call handle it is given cannot make the host
/// hold more than the resource limit: the call that does not fit ends the
/// session, naming the table, and everything it held is released.
#[tokio::test]
async fn leaked_call_handles_stop_at_the_resource_limit() {
    // hello keeps every call it is offered and never lets go.
    let (runtime, mut watched, neighbour) = hello_with_eight_handles().await;
    // One call more than the table holds; each one's far end gives up at
    // once, but the scenario still holds its handle.
    for _ in 0..9 {
        if let Ok(call) = watched.session.incoming_call(IncomingCall::default()) {
            let _ = watched
                .session
                .remote_failed(call, 487, "Request Terminated");
        }
    }
    let record = watched.finished().await;
    // The table holds a few WASI handles too.
    assert!(record.delivered("CallAlerting") < 8);
    ended_at_the_resource_table(&runtime, &record, neighbour).await;
}

/// A runtime, a hello session that may hold 8 host handles, and its
/// neighbour.
async fn hello_with_eight_handles() -> (Runtime, Watched, Neighbour) {
    let runtime = runtime();
    let neighbour = Neighbour::beside(&runtime).await;
    let limits = Limits {
        resources: 8,
        ..Limits::default()
    };
    let hello = load(&runtime, "hello", limits);
    let watched = start(&runtime, &hello, "").await;
    (runtime, watched, neighbour)
}

/// The session ended because its resource table was full, and gave back
/// its memory; a session beside it is fine.
async fn ended_at_the_resource_table(
    runtime: &Runtime,
    record: &sessionbox::SessionRecord,
    neighbour: Neighbour,
) {
    let FinishReason::Trapped { event, trap } = &record.finish_reason else {
        panic!("{:?}", record.finish_reason);
    };
    assert_eq!(*event, "host");
    assert!(trap.starts_with("resource table: "), "{trap}");
    neighbour.ends_well().await;
    // Every byte given back, the neighbour's too.
    assert_eq!(runtime.metrics().guest_memory_bytes.get(), 0);
}

/// The same for sockets: hello keeps every socket, even those the client
/// closed, so opening and closing sockets in turn fills the table.
#[tokio::test]
async fn leaked_socket_handles_stop_at_the_resource_limit() {
    let (runtime, mut watched, neighbour) = hello_with_eight_handles().await;
    for _ in 0..9 {
        let Ok(socket) = watched.session.open_websocket("/ws".into(), vec![]).await else {
            break;
        };
        let _ = watched
            .session
            .websocket_closed(socket.id, 1000, "bye".into());
    }
    let record = watched.finished().await;
    ended_at_the_resource_table(&runtime, &record, neighbour).await;
}

#[tokio::test]
async fn a_spinning_handler_computes_on_the_slow_lane_while_its_neighbour_answers() {
    let runtime = runtime();
    let spin = wat::scenario(&[("http-request", LOOP)], "", "");
    let limits = Limits {
        handler_compute: Duration::from_millis(300),
        ..Limits::default()
    };
    let spinner = runtime.load("spinner", &spin, limits).unwrap();
    let mut spinning = start(&runtime, &spinner, "").await;
    let hello = load(&runtime, "hello", Limits::default());
    let mut healthy = start(&runtime, &hello, "").await;
    let spun = {
        let session = spinning.session.clone();
        tokio::spawn(async move { session.http_request(request("GET", "/spin", "")).await })
    };
    // The neighbour answers while the spinner computes.
    for n in 0..20 {
        let answer = healthy
            .session
            .http_request(request("GET", &format!("/{n}"), ""))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    assert!(
        !spun.is_finished(),
        "the neighbour was answered while the spinner computed"
    );
    assert!(matches!(
        spun.await.unwrap(),
        Err(SessionError::ScenarioFailed(_))
    ));
    let record = spinning.finished().await;
    assert!(
        matches!(record.finish_reason, FinishReason::ComputeLimit { .. }),
        "{}",
        record.finish_reason
    );
    let cpu = record.cpu;
    // (Started too, when the OS held it past its first slice.)
    assert!(cpu.slow_lane_handlers >= 1, "{cpu:?}");
    // Its first 1-2 ms were on the fast lane, the rest on the slow one.
    assert!(
        cpu.slow_lane_cpu_ms > 250.0 && cpu.slow_lane_cpu_ms < 400.0,
        "{cpu:?}"
    );
    healthy.session.terminate().unwrap();
    let record = healthy.finished().await;
    // Its handlers are short: whatever the OS did to their timing (a
    // handler descheduled past its first slice moves lanes), they computed
    // next to nothing on the slow lane.
    assert!(record.cpu.slow_lane_cpu_ms < 50.0, "{:?}", record.cpu);
}

#[tokio::test]
async fn spinning_tenants_take_turns_on_the_slow_lane_and_their_records_show_the_wait() {
    let runtime = Runtime::new(sessionbox::EngineConfig {
        max_sessions: 8,
        slow_lane_threads: 1,
        ..sessionbox::EngineConfig::default()
    })
    .unwrap();
    let spin = wat::scenario(&[("http-request", LOOP)], "", "");
    let limits = Limits {
        handler_compute: Duration::from_millis(200),
        ..Limits::default()
    };
    let spinner = runtime.load("spinner", &spin, limits).unwrap();
    let tenants = ["one", "two"].map(|name| {
        sessionbox::SharedLimits::new(1 << 30, 10, sessionbox::TenantCpu::new(name, 100))
    });
    let mut sessions = Vec::new();
    for shared in &tenants {
        let options = sessionbox::StartOptions {
            shared: Some(Arc::clone(shared)),
            ..Default::default()
        };
        sessions.push(runtime.start(&spinner, options).await.unwrap());
    }
    let spins: Vec<_> = sessions
        .iter()
        .map(|session| {
            let session = session.clone();
            tokio::spawn(async move { session.http_request(request("GET", "/", "")).await })
        })
        .collect();
    for spin in spins {
        assert!(spin.await.unwrap().is_err());
    }
    let mut throttled = 0.0;
    let mut records = Vec::new();
    for session in &sessions {
        let record = session.finished().await.unwrap();
        assert!(matches!(
            record.finish_reason,
            FinishReason::ComputeLimit { .. }
        ));
        assert!(record.cpu.slow_lane_handlers >= 1, "{:?}", record.cpu);
        throttled += record.cpu.throttled_ms;
        records.push(record.cpu);
    }
    // One thread, two spinners: each waited while the other computed.
    assert!(throttled > 100.0, "{throttled} ms throttled: {records:?}");
    for tenant in &tenants {
        assert!(tenant.cpu().cpu_used() >= Duration::from_millis(150));
    }
}
