//! The SIP front of a multi-node Sessionbox (issue 17): the proxy's own
//! configuration, `deploy/kamailio/kamailio.cfg`, run as in production in
//! front of stand-in nodes, with no Sessionbox at all. The nodes are sipp
//! UASes (`tests/sip/uas_node*.xml`) and one small UDP responder here; the
//! caller is a sipp UAC (`tests/sip/uac_via_proxy.xml`) whose every answer
//! names the node that sent it.
//!
//! What the proxy must do, and what shows it here:
//! - new calls spread over the nodes (round-robin): three nodes answer;
//! - a call's in-dialog requests reach the node that answered, through the
//!   proxy: sipp sends every request to the proxy, and only the proxy's
//!   Record-Route (checked in the 200) and loose routing take the ACK, INFO
//!   and BYE on to that node, which names itself in its answers;
//! - a node that answers the proxy's OPTIONS probes 503 (draining) gets no
//!   new calls, and gets them again once it answers 200;
//! - a call refused with 503, or not answered at all, moves on to the next
//!   node; a node that stops answering the probes leaves the rotation.

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::kamailio::{self, Kamailio};
use crate::support::repo_root;
use crate::support::sipp::{Sipp, Transport};
use tokio::net::UdpSocket;

/// A sipp UAC gives up after 25 s (sipp.rs): above that.
const SIPP_LIMIT: Duration = Duration::from_secs(30);

/// sipp standing in for a node: a UAS on a fixed 127.0.0.1 port taking any
/// number of calls (and the proxy's probes, each a "call" to sipp) until
/// dropped.
struct Node {
    name: String,
    addr: SocketAddr,
    scenario: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Node {
    /// `tests/sip/{scenario}.xml` as the node `name` on a free port.
    async fn start(scenario: &str, name: &str) -> Node {
        let mut last = String::new();
        // The free port may be taken before sipp binds it: another one then.
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|socket| socket.local_addr())
                .expect("a free UDP port")
                .port();
            match Node::start_at(
                scenario,
                name,
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            )
            .await
            {
                Ok(node) => return node,
                Err(report) => last = report,
            }
        }
        panic!("sipp did not start as node {name}:\n{last}")
    }

    /// This node, now running `scenario` at the same address (what a node
    /// does when it starts or stops draining).
    async fn switch_to(self, scenario: &str) -> Node {
        let (name, addr) = (self.name.clone(), self.addr);
        drop(self);
        Node::start_at(scenario, &name, addr)
            .await
            .unwrap_or_else(|report| panic!("restarting node {name}: {report}"))
    }

    /// Starts sipp and waits until it answers an OPTIONS (the answer it
    /// gives the proxy's probes).
    async fn start_at(scenario: &str, name: &str, addr: SocketAddr) -> Result<Node, String> {
        let dir = tempfile::Builder::new()
            .prefix("sessionbox-sipp-node-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let file = repo_root().join(format!("tests/sip/{scenario}.xml"));
        let path = |name: &str| dir.path().join(name).display().to_string();
        let stdout =
            std::fs::File::create(dir.path().join("stdout.txt")).map_err(|e| e.to_string())?;
        let child = Command::new("sipp")
            .args(["-sf", &file.display().to_string()])
            .args([
                "-p",
                &addr.port().to_string(),
                "-i",
                "127.0.0.1",
                "-bind_local",
            ])
            .args(["-t", "u1", "-nostdin", "-key", "node", name])
            .args(["-trace_logs", "-log_file", &path("logs.log")])
            .args(["-trace_err", "-error_file", &path("errors.log")])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sipp: {e}"))?;
        let mut node = Node {
            name: name.to_owned(),
            addr,
            scenario: scenario.to_owned(),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(format!(
                    "sipp exited ({status}) before answering\n{}",
                    node.report()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sipp did not answer OPTIONS in 10 s\n{}",
                    node.report()
                ));
            }
            let answer = kamailio::ask(addr, "OPTIONS", 70, &[], Duration::from_millis(200)).await;
            if answer.is_some() {
                return Ok(node);
            }
        }
    }

    /// sipp's `<log>` lines so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs.log")).unwrap_or_default()
    }

    fn report(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "node {} ({}, {}):\n----- errors.log -----\n{}\n----- logs.log -----\n{}",
            self.name,
            self.scenario,
            self.addr,
            read("errors.log"),
            read("logs.log")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node that answers the proxy's probes 200 (until told to stop) and
/// never answers anything else: calls sent to it time out. It keeps the
/// Call-IDs of the INVITEs it got.
struct SilentNode {
    addr: SocketAddr,
    probes_answered: Arc<AtomicBool>,
    invites: Arc<Mutex<HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentNode {
    async fn start() -> SilentNode {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let probes_answered = Arc::new(AtomicBool::new(true));
        let invites = Arc::new(Mutex::new(HashSet::new()));
        let task = tokio::spawn({
            let (probes_answered, invites) = (Arc::clone(&probes_answered), Arc::clone(&invites));
            async move {
                let mut buffer = vec![0u8; 65_535];
                while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
                    let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
                    if message.starts_with("OPTIONS ") && probes_answered.load(Ordering::SeqCst) {
                        let _ = socket.send_to(ok(&message).as_bytes(), from).await;
                    } else if message.starts_with("INVITE ")
                        && let Some(call_id) = header(&message, "Call-ID")
                    {
                        invites.lock().unwrap().insert(call_id.to_owned());
                    }
                }
            }
        });
        SilentNode {
            addr,
            probes_answered,
            invites,
            task,
        }
    }

    fn invites(&self) -> HashSet<String> {
        self.invites.lock().unwrap().clone()
    }
}

impl Drop for SilentNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the first header `name` of a SIP message.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// 200 OK to `request`, with the headers a response must copy.
fn ok(request: &str) -> String {
    let mut answer = String::from("SIP/2.0 200 OK\r\n");
    for line in request.lines() {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|wanted| wanted.eq_ignore_ascii_case(name))
        {
            answer.push_str(line.trim_end());
            answer.push_str("\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            answer.push_str(line.trim_end());
            answer.push_str(";tag=silent\r\n");
        }
    }
    answer.push_str("Content-Length: 0\r\n\r\n");
    answer
}

/// One call through the proxy, as the caller saw it: the node that answered
/// its INVITE, INFO and BYE (each answer's X-Node).
#[derive(Debug)]
struct Call {
    call_id: String,
    invite: String,
    info: String,
    bye: String,
}

/// Places one call through the proxy (uac_via_proxy.xml: INVITE, ACK, INFO,
/// BYE, every answer 2xx, the 200 carrying a Record-Route) and reads back
/// who answered what.
async fn call(proxy: &Kamailio) -> Call {
    let sipp = Sipp::call("uac_via_proxy", proxy.addr, "answer", Transport::Udp, &[]);
    let output = sipp
        .finish(SIPP_LIMIT)
        .await
        .unwrap_or_else(|report| panic!("{report}\n----- kamailio.log -----\n{}", proxy.log()));
    // call <call-id> invite=<node> info=<node> bye=<node> record-route=<uri>
    let line = output
        .lines()
        .find(|line| line.starts_with("call ") && line.contains(" invite="))
        .unwrap_or_else(|| panic!("the caller logged no call:\n{output}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_owned()
    };
    let call = Call {
        call_id: line.split_whitespace().nth(1).unwrap().to_owned(),
        invite: field("invite="),
        info: field("info="),
        bye: field("bye="),
    };
    assert!(
        call.info == call.invite && call.bye == call.invite,
        "the call's in-dialog requests reached another node than the one that answered: {call:?}"
    );
    call
}

/// `n` calls one after the other; how many each node answered.
async fn calls(proxy: &Kamailio, n: usize) -> (Vec<Call>, BTreeMap<String, usize>) {
    let mut placed = Vec::new();
    let mut by_node = BTreeMap::new();
    for _ in 0..n {
        let call = call(proxy).await;
        *by_node.entry(call.invite.clone()).or_insert(0) += 1;
        placed.push(call);
    }
    (placed, by_node)
}

#[tokio::test]
async fn calls_spread_over_the_nodes_and_draining_ones_get_none() {
    let n1 = Node::start("uas_node", "n1").await;
    let n2 = Node::start("uas_node", "n2").await;
    let n3 = Node::start("uas_node", "n3").await;
    let proxy = Kamailio::start(&[n1.addr, n2.addr, n3.addr]).await;

    // Round-robin: six calls, every node answers some. Each call's ACK,
    // INFO and BYE reached the node that answered it (`call` checks).
    let (_, by_node) = calls(&proxy, 6).await;
    assert_eq!(
        by_node.keys().collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "six calls over three nodes: {by_node:?}"
    );

    // n3 drains: it answers the probes 503, and leaves the rotation.
    let n3 = n3.switch_to("uas_node_draining").await;
    proxy.until_nodes(&[n1.addr, n2.addr], &[n3.addr]).await;
    let (_, by_node) = calls(&proxy, 4).await;
    assert!(
        !by_node.contains_key("n3"),
        "a draining node got calls: {by_node:?}"
    );
    assert_eq!(
        by_node.keys().collect::<Vec<_>>(),
        ["n1", "n2"],
        "{by_node:?}"
    );

    // n3 answers 200 again: back in the rotation, and taking calls.
    // Round-robin reaches it within three calls; but a probe sent while n3
    // was restarting went unanswered, and its timeout may still take n3 out
    // until the next probe (a second): so up to twelve calls (about 3 s).
    let n3 = n3.switch_to("uas_node").await;
    proxy.until_nodes(&[n1.addr, n2.addr, n3.addr], &[]).await;
    let mut answered_by = Vec::new();
    while answered_by.len() < 12 && !answered_by.iter().any(|node| node == "n3") {
        answered_by.push(call(&proxy).await.invite);
    }
    assert!(
        answered_by.iter().any(|node| node == "n3"),
        "a node back from draining got no calls: {answered_by:?}"
    );
}

#[tokio::test]
async fn a_call_a_node_refuses_moves_on_to_the_next() {
    // r1 answers the probes 200, so it stays in the rotation, but refuses
    // every call with 503.
    let r1 = Node::start("uas_node_refusing", "r1").await;
    let g1 = Node::start("uas_node", "g1").await;
    let proxy = Kamailio::start(&[r1.addr, g1.addr]).await;

    // Round-robin sends one of two calls to r1 first (a node is skipped only
    // after it failed a call).
    let (placed, by_node) = calls(&proxy, 2).await;
    assert_eq!(by_node.keys().collect::<Vec<_>>(), ["g1"], "{by_node:?}");
    let log = r1.log();
    let refused: Vec<&str> = log
        .lines()
        .filter_map(|line| line.strip_prefix("r1 refused INVITE "))
        .collect();
    assert!(
        !refused.is_empty(),
        "no call went to the refusing node first\n{}",
        r1.report()
    );
    for call_id in refused {
        assert!(
            placed.iter().any(|call| call.call_id == call_id),
            "r1 refused {call_id}, not one of the calls placed: {placed:?}"
        );
    }
}

#[tokio::test]
async fn a_call_a_node_leaves_unanswered_moves_on_and_a_silent_node_leaves_the_rotation() {
    let silent = SilentNode::start().await;
    let g1 = Node::start("uas_node", "g1").await;
    let proxy = Kamailio::start(&[silent.addr, g1.addr]).await;

    // One of the two calls goes to the silent node first, and on to g1
    // after kamailio::NO_ANSWER_MS.
    let (placed, by_node) = calls(&proxy, 2).await;
    assert_eq!(by_node.keys().collect::<Vec<_>>(), ["g1"], "{by_node:?}");
    let unanswered = silent.invites();
    assert!(
        !unanswered.is_empty(),
        "no call went to the silent node first"
    );
    assert!(
        unanswered
            .iter()
            .all(|call_id| placed.iter().any(|call| &call.call_id == call_id)),
        "{unanswered:?} vs {placed:?}"
    );

    // That node still answers the probes: back in the rotation. Then it
    // stops answering them too, and leaves it.
    proxy.until_nodes(&[silent.addr, g1.addr], &[]).await;
    silent.probes_answered.store(false, Ordering::SeqCst);
    proxy.until_nodes(&[g1.addr], &[silent.addr]).await;
    let (_, by_node) = calls(&proxy, 2).await;
    assert_eq!(by_node.keys().collect::<Vec<_>>(), ["g1"], "{by_node:?}");
    assert_eq!(
        silent.invites(),
        unanswered,
        "a node out of the rotation got calls"
    );
}

#[tokio::test]
async fn the_proxy_answers_options_itself_and_refuses_what_it_cannot_place() {
    // A node that answers no probe: out of the rotation at once.
    let dead = SilentNode::start().await;
    dead.probes_answered.store(false, Ordering::SeqCst);
    let proxy = Kamailio::start(&[dead.addr]).await;
    // Keep-alives and health checks (also how `start` knew it was up).
    assert_eq!(proxy.ask("OPTIONS", 70, &[]).await, Some(200));
    // A request that has used up its hops is not forwarded again.
    assert_eq!(proxy.ask("INVITE", 0, &[]).await, Some(483));
    // Nothing but calls is taken out of a dialog.
    assert_eq!(proxy.ask("REGISTER", 70, &[]).await, Some(405));
    assert_eq!(proxy.ask("MESSAGE", 70, &[]).await, Some(405));
    // No node in the rotation: the proxy says so itself.
    proxy.until_nodes(&[], &[dead.addr]).await;
    assert_eq!(proxy.ask("INVITE", 70, &[]).await, Some(503));
    assert!(dead.invites().is_empty(), "{:?}", dead.invites());
}
