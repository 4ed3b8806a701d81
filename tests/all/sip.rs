//! Real calls: `sessionbox serve` with a SIP listener, and sipp as the far
//! end (scenario files in tests/sip/). The sip-probe guest handles each call
//! by the number called and logs every call event; each test checks both
//! sides: sipp's scenario passed (every message it expected came, in order),
//! and the session's log shows the events the scenario was given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::baresip::{Baresip, Role};
use crate::support::server::InProcess;
use crate::support::sipp::{Sipp, Transport};
use crate::support::{PATIENCE, flite_samples, guest_path, lines, origin};
use http_body_util::{BodyExt, Full};
use hyper::Response;
use sessionbox::SessionRecord;
use sessionbox::config::Config;
use sessionbox::log::LogSource;
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const KEY: &str = "sip-test-key";
/// The node's RTP ports.
const RTP_LOW: u16 = 41_000;
const RTP_HIGH: u16 = 41_999;
/// How long sipp may take over one call.
const SIPP_LIMIT: Duration = Duration::from_secs(30);

/// A server with a SIP listener on a free port, the sip-probe app taking
/// every call, and the records of its sessions as they finish.
struct Node {
    serving: InProcess,
    sip: SocketAddr,
    finished: broadcast::Receiver<Arc<SessionRecord>>,
    _dir: tempfile::TempDir,
}

/// `trunk`: the inside of the `sip.trunk` table, or nothing for no trunk.
async fn node(trunk: Option<String>) -> Node {
    node_running("sip-probe", trunk).await
}

/// The same with the guest `guest` as the app.
async fn node_running(guest: &str, trunk: Option<String>) -> Node {
    let trunk = trunk
        .map(|fields| format!("trunk = {{ {fields} }}"))
        .unwrap_or_default();
    node_with(guest, "http_allow_private = true", "", &trunk).await
}

/// The same with `limits` (inside the app's `limits` table) besides the
/// short waits, and more of the app's fields and of the `sip` section's.
async fn node_with(guest: &str, limits: &str, app: &str, sip: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&format!(
        r#"
        [server]
        database = "{db}"
        [tenants.t]
        api_keys = ["{KEY}"]
        [apps.probe]
        tenant = "t"
        scenario = "{probe}"
        # Short waits so sessions end soon after their calls; the prompt
        # server is on loopback.
        limits = {{ idle_timeout = 200, unanswered_call = 1500, {limits} }}
        {app}
        [sip]
        listen = "127.0.0.1:0"
        rtp_ports = [{RTP_LOW}, {RTP_HIGH}]
        routes = [{{ number = "^[a-z]+$", app = "probe" }}]
        {sip}
        "#,
        db = dir.path().join("history.db").display(),
        probe = guest_path(guest).display(),
    ))
    .unwrap();
    let serving = InProcess::start(config).await;
    Node {
        sip: serving.server.sip_addr().expect("a SIP listener"),
        finished: serving.server.finished_sessions(),
        serving,
        _dir: dir,
    }
}

impl Node {
    /// The next session to finish.
    async fn next_record(&mut self) -> Arc<SessionRecord> {
        tokio::time::timeout(PATIENCE, self.finished.recv())
            .await
            .expect("a session finished in time")
            .unwrap()
    }

    /// Places one call from sipp to `number` and waits for both sides: sipp's
    /// scenario to pass, then the session to finish. Returns the session's
    /// own log lines.
    async fn call(&mut self, scenario: &str, number: &str, transport: Transport) -> Vec<String> {
        let record = self.call_with(scenario, number, transport, &[]).await;
        scenario_lines(&record)
    }

    /// The same, with sipp keys; returns the session's record.
    async fn call_with(
        &mut self,
        scenario: &str,
        number: &str,
        transport: Transport,
        keys: &[(&str, String)],
    ) -> Arc<SessionRecord> {
        let sipp = Sipp::call(scenario, self.sip, number, transport, keys);
        if let Err(failure) = sipp.finish(SIPP_LIMIT).await {
            panic!("sipp {scenario} to {number}: {failure}");
        }
        self.next_record().await
    }
}

/// What the scenario itself logged.
fn scenario_lines(record: &SessionRecord) -> Vec<String> {
    lines(record, LogSource::Scenario)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Places one call from sipp (`scenario` to `number`) to a fresh node and
/// checks the events the scenario logged after CallAlerting; returns the log.
async fn call_and_check(
    scenario: &str,
    number: &str,
    transport: Transport,
    after_alerting: &[&str],
) -> Vec<String> {
    let mut node = node(None).await;
    let log = node.call(scenario, number, transport).await;
    assert_eq!(log[1..], *after_alerting, "{scenario} to {number}: {log:?}");
    log
}

#[tokio::test]
async fn the_caller_hangs_up() {
    let events = ["connected 1", "disconnected 1"];
    let log = call_and_check("uac_caller_hangs_up.xml", "answer", Transport::Udp, &events).await;
    assert_eq!(
        log[0], "alerting 1 from=sipp to=answer name=sipp",
        "caller id, number called and display name from the INVITE"
    );
}

#[tokio::test]
async fn the_scenario_hangs_up_over_tcp() {
    // sipp expects the BYE.
    let events = ["connected 1", "disconnected 1"];
    call_and_check(
        "uac_scenario_hangs_up.xml",
        "hangup",
        Transport::Tcp,
        &events,
    )
    .await;
}

#[tokio::test]
async fn the_scenario_rejects_with_486() {
    // sipp expects exactly 486; the scenario sees nothing after CallAlerting.
    call_and_check("uac_rejected.xml", "reject", Transport::Udp, &[]).await;
}

#[tokio::test]
async fn a_call_cancelled_before_answer_is_disconnected() {
    // sipp expects 200 to its CANCEL and 487 to its INVITE.
    call_and_check(
        "uac_cancel.xml",
        "ring",
        Transport::Udp,
        &["disconnected 1"],
    )
    .await;
}

#[tokio::test]
async fn an_unanswered_call_is_ended_after_the_limit() {
    // sipp expects 480 Temporarily Unavailable.
    let events = ["failed 1 408 not answered within 1500 ms"];
    call_and_check("uac_no_answer.xml", "ring", Transport::Udp, &events).await;
}

#[tokio::test]
async fn info_messages_go_both_ways() {
    // sipp checks that the answer is `echo: hello`.
    let events = ["connected 1", "message 1 hello", "disconnected 1"];
    call_and_check("uac_info.xml", "answer", Transport::Udp, &events).await;
}

#[tokio::test]
async fn an_in_call_message_is_a_message_too() {
    let events = ["connected 1", "message 1 hi there", "disconnected 1"];
    call_and_check("uac_message.xml", "answer", Transport::Tcp, &events).await;
}

#[tokio::test]
async fn dtmf_over_info_is_a_tone() {
    // sipp checks that the answer is `tone: 5`.
    let events = ["connected 1", "tone 1 5", "disconnected 1"];
    call_and_check("uac_dtmf_info.xml", "answer", Transport::Udp, &events).await;
}

#[tokio::test]
async fn dtmf_over_rtp_is_a_tone() {
    // sipp sends key 5 as RFC 4733 events and checks the answer `tone: 5`;
    // the repeats of the event are one key press.
    let events = ["connected 1", "tone 1 5", "disconnected 1"];
    call_and_check("uac_dtmf_rtp.xml", "answer", Transport::Udp, &events).await;
}

#[tokio::test]
async fn a_scenario_that_fails_takes_its_calls_down_with_it() {
    let mut node = node(None).await;
    // The scenario spins once connected; the compute limit ends the session,
    // and sipp expects the BYE that ends the call.
    let record = node
        .call_with("uac_scenario_hangs_up.xml", "spin", Transport::Udp, &[])
        .await;
    assert_eq!(record.finish_reason.label(), "compute_limit");
    assert_eq!(scenario_lines(&record)[1..], ["connected 1"]);
}

/// A WAV of one second of a 440 Hz tone: 8 kHz, mono, 16-bit PCM.
fn one_second_wav() -> Vec<u8> {
    let samples: Vec<u8> = (0..8000)
        .map(|n| ((n as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .flat_map(i16::to_le_bytes)
        .collect();
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(&samples);
    wav
}

#[tokio::test]
async fn a_played_prompt_arrives_as_rtp_in_order() {
    let prompts = origin::serve(|_| async {
        Response::new(
            Full::new(one_second_wav().into())
                .map_err(|e| match e {})
                .boxed(),
        )
    })
    .await;
    // The caller's media socket: sipp offers it in its SDP.
    let media = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = media.local_addr().unwrap().port();
    let counting = tokio::spawn(async move {
        let mut packets = Vec::new();
        let mut buffer = [0u8; 1500];
        // 50 packets of 20 ms make one second; more would be wrong.
        while let Ok(Ok((length, from))) =
            tokio::time::timeout(Duration::from_secs(3), media.recv_from(&mut buffer)).await
        {
            let port = from.port();
            assert!(
                (RTP_LOW..=RTP_HIGH).contains(&port) && port % 2 == 0,
                "RTP from an even port of rtp_ports, not {port}"
            );
            packets.push(buffer[..length].to_vec());
        }
        packets
    });
    let mut node = node(None).await;
    let keys = [
        ("rtp_port", port.to_string()),
        ("prompt_url", format!("{prompts}/welcome.wav")),
    ];
    let record = node
        .call_with("uac_play.xml", "play", Transport::Udp, &keys)
        .await;
    let log = scenario_lines(&record);
    assert_eq!(
        log[1],
        format!("header 1 X-Prompt: {prompts}/welcome.wav"),
        "the INVITE's X- headers reach the scenario"
    );
    assert_eq!(
        log[2..],
        ["connected 1", "playback-finished 1", "disconnected 1"],
        "{log:?}"
    );
    let packets = counting.await.unwrap();
    assert_eq!(packets.len(), 50, "one second is 50 packets of 20 ms");
    for (index, pair) in packets.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.len(), 12 + 160);
        assert_eq!(b[1] & 0x7F, 0, "PCMU, sipp's first choice");
        let sequence = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        let timestamp = |p: &[u8]| u32::from_be_bytes(p[4..8].try_into().unwrap());
        assert_eq!(sequence(b), sequence(a).wrapping_add(1), "packet {index}");
        assert_eq!(
            timestamp(b),
            timestamp(a).wrapping_add(160),
            "packet {index}"
        );
        assert_eq!(a[8..12], b[8..12], "one SSRC");
    }
    assert!(packets[0][1] & 0x80 != 0, "the marker starts the prompt");
}

impl Node {
    /// The caller of the node's one session (call 1) hangs up, as the API
    /// tells the session; its id.
    async fn caller_hangs_up(&self) -> String {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/sessions", self.serving.url);
        let list = client.get(&url).bearer_auth(KEY).send().await.unwrap();
        let list: serde_json::Value = list.json().await.unwrap();
        let session = list["sessions"][0]["session_id"].as_str().unwrap();
        let hangup = format!("{url}/{session}/calls/1/hangup");
        let hung_up = client.post(hangup).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(hung_up.status(), 202);
        session.to_owned()
    }

    /// Places one call with sipp's `scenario` to `number` (X-Prompt:
    /// `prompt`), its media on a socket of the test at `media_ip`, which
    /// the node plays a prompt to and hangs up after; checks the events the
    /// scenario logged, and returns the session's record and the RTP
    /// packets that arrived.
    async fn prompted_call(
        &mut self,
        scenario: &str,
        number: &str,
        prompt: &str,
        media_ip: &str,
    ) -> (Arc<SessionRecord>, Vec<Vec<u8>>) {
        let media = UdpSocket::bind((media_ip, 0)).await.unwrap();
        let port = media.local_addr().unwrap().port();
        let capturing = capture_rtp(media);
        let keys = [
            ("rtp_port", port.to_string()),
            ("prompt_url", prompt.to_owned()),
        ];
        let record = self
            .call_with(scenario, number, Transport::Udp, &keys)
            .await;
        assert_eq!(
            scenario_lines(&record)[2..],
            ["connected 1", "playback-finished 1", "disconnected 1"],
        );
        (record, capturing.await.unwrap())
    }
}

/// Listens as the caller's media socket; the RTP packets that arrive
/// until none has for 3 s.
fn capture_rtp(media: UdpSocket) -> tokio::task::JoinHandle<Vec<Vec<u8>>> {
    tokio::spawn(async move {
        let mut packets = Vec::new();
        let mut buffer = [0u8; 1500];
        while let Ok(Ok((length, _))) =
            tokio::time::timeout(Duration::from_secs(3), media.recv_from(&mut buffer)).await
        {
            packets.push(buffer[..length].to_vec());
        }
        packets
    })
}

#[tokio::test]
async fn say_speaks_its_text_into_the_call() {
    let text = "Welcome to Sessionbox. Press one for sales, or two for support.";
    let mut node = node(None).await;
    let (record, packets) = node
        .prompted_call("uac_play.xml", "say", text, "127.0.0.1")
        .await;
    let notes = lines(&record, LogSource::Host);
    // Exactly the speech of this text, 20 ms a packet (the last padded).
    let expected = flite_samples(text).div_ceil(160);
    assert!(expected > 100, "a sentence is seconds of speech");
    assert_eq!(
        packets.len(),
        expected,
        "the packets of the synthesized text; the log: {notes:?}"
    );
    // Speech, not silence: μ-law codes loud samples with small values of
    // the low seven bits (0x7F is silence).
    let payload: Vec<u8> = packets.iter().flat_map(|p| p[12..].to_vec()).collect();
    let loud = payload.iter().filter(|&&b| b & 0x7F < 0x50).count();
    assert!(
        loud * 5 > payload.len(),
        "{loud} of {} samples loud",
        payload.len()
    );
}

#[tokio::test]
async fn a_late_offer_gets_our_offer_in_the_200_and_audio_as_the_ack_answers() {
    let mut node = node(None).await;
    // sipp checks the 200 carries our offer, and answers PCMA in its ACK.
    let (_, packets) = node
        .prompted_call("uac_late_offer.xml", "play", "bundled:chime", "127.0.0.1")
        .await;
    assert_eq!(packets.len(), 40, "the 0.8 s chime, to the ACK's address");
    assert!(
        packets.iter().all(|packet| packet[1] & 0x7F == 8),
        "PCMA, the codec the ACK answered"
    );
}

#[tokio::test]
async fn a_call_put_on_hold_and_resumed_is_answered_in_kind() {
    let mut node = node(None).await;
    // sipp checks each 200's direction: recvonly to a hold, sendrecv after.
    let record = node
        .call_with("uac_hold.xml", "answer", Transport::Udp, &[])
        .await;
    // The scenario hears of both (`media-events`).
    assert_eq!(
        scenario_lines(&record)[1..],
        ["connected 1", "held 1", "resumed 1", "disconnected 1"]
    );
    let notes = lines(&record, LogSource::Host);
    assert_eq!(
        notes[..2],
        [
            "call 1: the far end put the call on hold",
            "call 1: the far end took the call off hold"
        ],
        "{notes:?}"
    );
}

/// Calls `number` (play or say) with `prompt` as its X-Prompt, one that
/// cannot be played: the call goes on, playback-finished still comes, and
/// the session log says why, starting with `why`.
async fn an_unplayable_prompt_is_reported(number: &str, prompt: &str, why: &str) {
    let mut node = node(None).await;
    let keys = [("prompt_url", prompt.to_owned())];
    let record = node
        .call_with("uac_play.xml", number, Transport::Udp, &keys)
        .await;
    assert_eq!(
        scenario_lines(&record)[2..],
        ["connected 1", "playback-finished 1", "disconnected 1"],
    );
    let notes = lines(&record, LogSource::Host);
    assert!(
        notes.iter().any(|note| note.starts_with(why)),
        "the log says why: {notes:?}"
    );
}

#[tokio::test]
async fn a_say_that_cannot_be_spoken_is_reported_and_the_call_goes_on() {
    let text = "word".repeat(1_250);
    an_unplayable_prompt_is_reported("say", &text, "call 1: say: the text is 5000 bytes").await;
}

#[tokio::test]
async fn a_prompt_that_cannot_be_played_is_reported_and_the_call_goes_on() {
    // Port 9 (discard) on loopback: nothing listens there.
    let prompt = "http://127.0.0.1:9/welcome.wav";
    let why = format!("call 1: play: GET {prompt}: ");
    an_unplayable_prompt_is_reported("play", prompt, &why).await;
}

/// Starts a session that dials `number` through a trunk that is `callee`
/// (`trunk` adds fields to the trunk's table); waits for sipp's scenario to
/// pass and the session to finish, and returns the session's log with the
/// call's id.
async fn dial(callee: Sipp, trunk: &str, number: &str) -> (String, Vec<String>) {
    let mut fields = format!("address = \"{}\"", callee.local_addr());
    if !trunk.is_empty() {
        fields = format!("{fields}, {trunk}");
    }
    let mut node = node(Some(fields)).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/apps/probe/sessions", node.serving.url))
        .bearer_auth(KEY)
        .json(&serde_json::json!({ "custom_data": format!("dial {number}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    if let Err(failure) = callee.finish(SIPP_LIMIT).await {
        panic!("sipp as the callee: {failure}");
    }
    let record = node.next_record().await;
    let log = scenario_lines(&record);
    let call = log[0]
        .strip_prefix("dialed ")
        .unwrap_or_else(|| panic!("dialed first: {log:?}"))
        .to_owned();
    (call, log)
}

#[tokio::test]
async fn an_outbound_call_reaches_the_trunk_and_is_hung_up() {
    let (call, log) = dial(Sipp::answer("uas_answer.xml", 0), "", "uas").await;
    assert_eq!(
        log[1..],
        [format!("connected {call}"), format!("disconnected {call}")],
    );
}

#[tokio::test]
async fn an_outbound_call_answers_the_trunks_digest_challenge() {
    // sipp challenges with 401 and answers only the right credentials.
    let credentials = r#"username = "trunk-user", password = "trunk-secret""#;
    let (call, log) = dial(Sipp::answer("uas_auth_answer.xml", 0), credentials, "555").await;
    assert_eq!(
        log[1..],
        [format!("connected {call}"), format!("disconnected {call}")],
    );
}

#[tokio::test]
async fn an_outbound_call_turned_down_fails_with_its_code() {
    // sipp answers 486 and expects the ACK.
    let (call, log) = dial(Sipp::answer("uas_busy.xml", 0), "", "555").await;
    assert_eq!(log[1..], [format!("failed {call} 486 Busy Here")]);
}

#[tokio::test]
async fn an_outbound_call_nobody_answers_is_cancelled() {
    // sipp rings, then expects the CANCEL (and the ACK of its 487).
    let (call, log) = dial(Sipp::answer("uas_ring.xml", 0), "", "555").await;
    assert_eq!(
        log[1..],
        [format!("failed {call} 408 not answered within 1500 ms")],
    );
}

#[tokio::test]
async fn without_a_trunk_dial_is_refused_and_unknown_numbers_get_404() {
    let node = node(None).await;
    let mut finished = node.serving.server.finished_sessions();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/apps/probe/sessions", node.serving.url))
        .bearer_auth(KEY)
        .json(&serde_json::json!({ "custom_data": "dial 555" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let record = tokio::time::timeout(PATIENCE, finished.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        lines(&record, LogSource::Scenario),
        ["dial refused: calls refused in running: this node has no SIP trunk for outbound calls"]
    );
    // No route takes a number of digits: sipp expects 404.
    Sipp::call("uac_unrouted.xml", node.sip, "12345", Transport::Udp, &[])
        .finish(SIPP_LIMIT)
        .await
        .unwrap_or_else(|failure| panic!("sipp: {failure}"));
    let metrics = node.serving.server.runtime().metrics().render();
    assert!(
        metrics.contains("sessionbox_sip_invites_total{outcome=\"no_route\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_offer_with_ipv6_audio_to_an_ipv4_node_gets_488_and_no_session() {
    let node = node(None).await;
    // sipp expects 488, with no 180 before it.
    Sipp::call(
        "uac_ipv6_offer.xml",
        node.sip,
        "answer",
        Transport::Udp,
        &[],
    )
    .finish(SIPP_LIMIT)
    .await
    .unwrap_or_else(|failure| panic!("sipp: {failure}"));
    let metrics = node.serving.server.runtime().metrics().render();
    assert!(
        metrics.contains("sessionbox_sip_invites_total{outcome=\"not_acceptable\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionbox_sessions_started_total 0"),
        "no session started: {metrics}"
    );
}

#[tokio::test]
async fn an_offer_with_ipv6_audio_gets_ipv6_media_where_the_node_has_an_address() {
    let mut node = node_with("sip-probe", "", "", "media_address_v6 = \"::1\"").await;
    // sipp checks that the 200's answer is IPv6 (c=IN IP6 ::1).
    let (_, packets) = node
        .prompted_call("uac_ipv6_media.xml", "say", "Hello.", "::1")
        .await;
    assert_eq!(
        packets.len(),
        flite_samples("Hello.").div_ceil(160),
        "the speech, over IPv6"
    );
}

/// An RTP packet.
fn rtp(payload_type: u8, marker: bool, sequence: u16, timestamp: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type | if marker { 0x80 } else { 0 }];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&0x5EB0_u32.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// An RFC 4733 packet: the end of a press of `key`.
fn key_press(payload_type: u8, sequence: u16, timestamp: u32, key: u8) -> Vec<u8> {
    rtp(
        payload_type,
        false,
        sequence,
        timestamp,
        &[key, 0x8A, 0x03, 0x20],
    )
}

/// Sends 20 ms packets of `payload` (`payload_type`) from `from` to `to`
/// until `until` is done; returns what it resolved to.
async fn talk_until<T>(
    from: &UdpSocket,
    to: SocketAddr,
    payload_type: u8,
    payload: &[u8],
    until: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(until);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    for index in 0u16.. {
        tokio::select! {
            done = &mut until => return done,
            _ = ticks.tick() => {
                let packet = rtp(payload_type, index == 0, index, 160 * u32::from(index), payload);
                from.send_to(&packet, to).await.unwrap();
            }
        }
    }
    unreachable!()
}

/// The next packet on `socket` that satisfies `wanted`, with its sender.
async fn receive_until(
    what: &str,
    socket: &UdpSocket,
    wanted: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, SocketAddr) {
    let mut buffer = [0u8; 1500];
    loop {
        let (length, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .unwrap();
        if wanted(&buffer[..length]) {
            return (buffer[..length].to_vec(), from);
        }
    }
}

fn payload_type(packet: &[u8]) -> u8 {
    packet[1] & 0x7F
}

fn timestamp(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[4..8].try_into().unwrap())
}

#[tokio::test]
async fn the_call_centre_connects_its_caller_to_the_agent_it_dials() {
    // Each phone's media is a socket of the test: sipp does the signalling.
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let agent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let agent_port = agent.local_addr().unwrap().port().to_string();
    // The agent answers PCMA only, its key presses as payload type 96.
    let agent_sipp = Sipp::answer_with("uas_agent.xml", 0, &[("rtp_port", agent_port)]);
    let trunk = format!("address = \"{}\"", agent_sipp.local_addr());
    let mut node = node_running("call-centre", Some(trunk)).await;
    let keys = [
        ("rtp_port", caller.local_addr().unwrap().port().to_string()),
        ("prompt_url", "-".to_owned()),
    ];
    // The caller offers PCMU first, and gets it; telephone events are 101.
    let caller_sipp = Sipp::call("uac_play.xml", node.sip, "centre", Transport::Udp, &keys);

    // The menu plays; the caller presses 1.
    let (menu, node_caller_side) = receive_until("menu", &caller, |p| payload_type(p) == 0).await;
    assert!(menu[1] & 0x80 != 0, "the menu starts a talkspurt");
    for sequence in 0..3 {
        let press = key_press(101, sequence, 8000, 1);
        caller.send_to(&press, node_caller_side).await.unwrap();
    }

    // The caller talks (a loud μ-law square wave) until the agent hears
    // it: as A-law, on the agent's own stream, in the caller's timing.
    let square_ulaw: Vec<u8> = [0x80, 0x00].repeat(80);
    let square_alaw: Vec<u8> = [0xAA, 0x2A].repeat(80);
    let heard = async {
        let audio = |p: &[u8]| payload_type(p) == 8;
        let first = receive_until("caller's audio at the agent", &agent, audio).await;
        (first, receive_until("more of it", &agent, audio).await.0)
    };
    let ((first, node_agent_side), second) =
        talk_until(&caller, node_caller_side, 0, &square_ulaw, heard).await;
    assert_eq!(first[12..], square_alaw[..], "transcoded PCMU to PCMA");
    assert!(
        first[1] & 0x80 != 0,
        "the relay starts a talkspurt on the agent's stream"
    );
    assert_eq!(timestamp(&second), timestamp(&first).wrapping_add(160));
    assert_eq!(first[8..12], second[8..12], "one stream to the agent");

    // The agent talks back: the caller hears it (once the "connecting"
    // prompt is over) as μ-law; then the agent presses 4, which the caller
    // gets as its own telephone event type.
    let back = receive_until("the agent's audio at the caller", &caller, |p| {
        payload_type(p) == 0 && p[12..] == square_ulaw[..]
    });
    talk_until(&agent, node_agent_side, 8, &square_alaw, back).await;
    agent
        .send_to(&key_press(96, 500, 90_000, 4), node_agent_side)
        .await
        .unwrap();
    let (event, _) = receive_until("the agent's key", &caller, |p| payload_type(p) != 0).await;
    assert_eq!(
        (payload_type(&event), event[12]),
        (101, 4),
        "PT 96 became the caller's 101"
    );

    // The caller hangs up (as the API tells the session): the scenario
    // hangs up the agent, and ends the session once the recording of the
    // conversation is kept; each sipp gets its BYE.
    let session = node.caller_hangs_up().await;
    let base = format!("{}/v1/sessions", node.serving.url);
    let get = async |path: String| {
        let client = reqwest::Client::new();
        client
            .get(format!("{base}{path}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
    };
    for (who, sipp) in [("caller", caller_sipp), ("agent", agent_sipp)] {
        if let Err(failure) = sipp.finish(SIPP_LIMIT).await {
            panic!("sipp as the {who}: {failure}");
        }
    }
    let record = node.next_record().await;
    let log = scenario_lines(&record);
    assert_eq!(
        log[..2],
        ["dialing sales", "caller and agent connected"],
        "{log:?}"
    );

    // The recording: stereo, the caller left and what the caller heard
    // (the agent) right, as long as the scenario was told.
    let listed: serde_json::Value = get(format!("/{session}/recordings"))
        .await
        .json()
        .await
        .unwrap();
    let recording = &listed["recordings"][0];
    assert_eq!(
        (recording["n"].as_u64(), recording["channels"].as_u64()),
        (Some(1), Some(2))
    );
    let duration_ms = recording["duration_ms"].as_u64().unwrap();
    assert_eq!(log[2], format!("recording 1 kept: {duration_ms} ms"));
    let response = get(format!("/{session}/recordings/1")).await;
    assert_eq!(response.headers()["content-type"], "audio/wav");
    let wav = response.bytes().await.unwrap();
    assert_eq!(recording["bytes"].as_u64(), Some(wav.len() as u64));
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "two channels");
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8000);
    let data = u32::from_le_bytes(wav[40..44].try_into().unwrap()) as u64;
    assert_eq!(data, duration_ms * 8 * 2 * 2, "16-bit stereo at 8 kHz");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    // The square waves decode to ±32124: the caller's on the left, the
    // agent's (as the caller heard it) on the right.
    let loud = |channel: usize| {
        (samples.iter().skip(channel).step_by(2))
            .filter(|s| s.unsigned_abs() == 32124)
            .count()
    };
    assert!(
        loud(0) >= 320,
        "the caller's square wave, left: {}",
        loud(0)
    );
    assert!(loud(1) >= 160, "the agent's, right: {}", loud(1));
    let missing = get(format!("/{session}/recordings/2")).await;
    assert_eq!(missing.status(), 404);
}

/// The next JSON text message on a Media Streams socket.
async fn next_json<S>(socket: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a Media Streams message in time")
            .expect("the stream is open")
            .unwrap();
        if let WsMessage::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn a_stream_carries_the_callers_audio_out_and_the_servers_back() {
    use base64::Engine as _;
    use futures_util::SinkExt;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media", server.local_addr().unwrap());
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut node = node(None).await;
    let keys = [
        ("rtp_port", caller.local_addr().unwrap().port().to_string()),
        ("prompt_url", url.clone()),
    ];
    let sipp = Sipp::call("uac_play.xml", node.sip, "stream", Transport::Udp, &keys);

    let (tcp, _) = tokio::time::timeout(PATIENCE, server.accept())
        .await
        .unwrap()
        .unwrap();
    let mut socket = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let connected = next_json(&mut socket).await;
    assert_eq!(connected["event"], "connected");
    let start = next_json(&mut socket).await;
    assert_eq!(start["event"], "start");
    assert_eq!(start["start"]["customParameters"]["from"], "sipp");
    assert_eq!(start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
    let sid = start["streamSid"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("MZ"), "{sid}");

    // The server speaks first (a greeting, then a mark): the caller hears
    // it, and the mark comes back once it has played.
    let greeting: Vec<u8> = [0x80, 0x00].repeat(160);
    for message in [
        serde_json::json!({ "event": "media", "streamSid": sid, "media": { "payload": b64.encode(&greeting) } }),
        serde_json::json!({ "event": "mark", "streamSid": sid, "mark": { "name": "greeted" } }),
    ] {
        socket
            .send(WsMessage::text(message.to_string()))
            .await
            .unwrap();
    }
    let mut heard = Vec::new();
    let mut node_side = None;
    while heard.len() < greeting.len() {
        let (packet, from) = receive_until("the greeting", &caller, |p| payload_type(p) == 0).await;
        heard.extend_from_slice(&packet[12..]);
        node_side = Some(from);
    }
    assert_eq!(
        heard, greeting,
        "two packets of the server's audio, in order"
    );
    let mark = next_json(&mut socket).await;
    assert_eq!(
        (mark["event"].as_str(), mark["mark"]["name"].as_str()),
        (Some("mark"), Some("greeted"))
    );

    // The caller talks and presses 3: the server gets the audio as it was
    // sent (μ-law both), 20 ms a message, and the key.
    let node_side = node_side.unwrap();
    let spoken: Vec<Vec<u8>> = (0..3u8).map(|n| vec![0x10 + n; 160]).collect();
    for (index, payload) in spoken.iter().enumerate() {
        let packet = rtp(0, index == 0, index as u16, 160 * index as u32, payload);
        caller.send_to(&packet, node_side).await.unwrap();
    }
    for sequence in 10..13 {
        caller
            .send_to(&key_press(101, sequence, 9_000, 3), node_side)
            .await
            .unwrap();
    }
    for (index, payload) in spoken.iter().enumerate() {
        let media = next_json(&mut socket).await;
        assert_eq!(media["event"], "media", "{media}");
        assert_eq!(media["media"]["chunk"], (index + 1).to_string());
        let decoded = b64
            .decode(media["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(&decoded, payload);
    }
    let dtmf = next_json(&mut socket).await;
    assert_eq!(
        (dtmf["event"].as_str(), dtmf["dtmf"]["digit"].as_str()),
        (Some("dtmf"), Some("3"))
    );

    // The server hangs up: the scenario hears why, and ends the call.
    socket
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "goodbye".into(),
        }))
        .await
        .unwrap();
    if let Err(failure) = sipp.finish(SIPP_LIMIT).await {
        panic!("sipp: {failure}");
    }
    let record = node.next_record().await;
    let log = scenario_lines(&record);
    assert_eq!(
        log[1..],
        [
            "header 1 X-Prompt: ".to_owned() + &url,
            "connected 1".into(),
            "streaming 1 as 1".into(),
            "tone 1 3".into(),
            "stream-ended 1 1 the server closed it (1000 goodbye)".into(),
            "disconnected 1".into(),
        ],
        "{log:?}"
    );
}

#[tokio::test]
async fn a_stream_to_a_private_address_is_refused_cleanly() {
    // Without http_allow_private: loopback is out of bounds.
    let mut node = node_with("sip-probe", "http_allow_private = false", "", "").await;
    let keys = [("prompt_url", "ws://127.0.0.1:9/media".to_owned())];
    let record = node
        .call_with("uac_play.xml", "stream", Transport::Udp, &keys)
        .await;
    let log = scenario_lines(&record);
    let ended = log
        .iter()
        .find(|line| line.starts_with("stream-ended 1 1 "));
    let ended = ended.unwrap_or_else(|| panic!("{log:?}"));
    // Refused before connecting (a connection to port 9 would be refused
    // too, but not for this reason).
    assert_eq!(
        ended,
        "stream-ended 1 1 could not connect: 127.0.0.1 is 127.0.0.1, an internal address"
    );
}

/// What a real phone hears: baresip records the call it places.
#[tokio::test]
async fn baresip_hears_the_greeting_that_say_speaks() {
    let node = node_running("call-handler", None).await;
    let uri = format!("sip:welcome@{}", node.sip);
    let phone = Baresip::start(Role::Dial(uri), Duration::from_secs(10));
    let heard = phone.finish().await;
    // call-handler answers, says its greeting and hangs up.
    let spoken = flite_samples("Thanks for calling Sessionbox. Goodbye.");
    assert!(
        heard.len() * 10 >= spoken * 9 && heard.len() * 10 <= spoken * 13,
        "about as long as the speech: {} samples heard, {spoken} spoken",
        heard.len()
    );
    let loud = heard.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        loud * 5 > heard.len(),
        "speech, not silence: {loud} of {} loud",
        heard.len()
    );
}

/// The call-centre flow with a real phone as the agent: what the caller
/// says reaches it.
#[tokio::test]
async fn baresip_as_the_agent_hears_the_caller_it_was_connected_to() {
    // call-centre's key 1 dials `sales`.
    let agent = Baresip::start(Role::Answer("sales"), Duration::from_secs(12));
    let trunk = format!("address = \"127.0.0.1:{}\"", agent.port);
    let mut node = node_running("call-centre", Some(trunk)).await;
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let keys = [
        ("rtp_port", caller.local_addr().unwrap().port().to_string()),
        ("prompt_url", "-".to_owned()),
    ];
    let sipp = Sipp::call("uac_play.xml", node.sip, "help", Transport::Udp, &keys);
    let (_, node_side) = receive_until("the menu", &caller, |p| payload_type(p) == 0).await;
    for sequence in 0..3 {
        caller
            .send_to(&key_press(101, sequence, 8000, 1), node_side)
            .await
            .unwrap();
    }
    // The caller talks (a μ-law square wave) for two seconds.
    let square: Vec<u8> = [0x80, 0x00].repeat(80);
    talk_until(
        &caller,
        node_side,
        0,
        &square,
        tokio::time::sleep(Duration::from_secs(3)),
    )
    .await;
    node.caller_hangs_up().await;
    if let Err(failure) = sipp.finish(SIPP_LIMIT).await {
        panic!("sipp: {failure}");
    }
    let record = node.next_record().await;
    let log = scenario_lines(&record);
    assert_eq!(
        log[..2],
        ["dialing sales", "caller and agent connected"],
        "{log:?}"
    );
    let heard = agent.finish().await;
    // ±32124: the square wave, decoded by the phone.
    let square_samples = heard.iter().filter(|s| s.unsigned_abs() == 32124).count();
    assert!(
        square_samples >= 160 * 25,
        "at least half a second of the caller's square wave: {square_samples} samples"
    );
}

#[tokio::test]
async fn an_apps_speech_service_speaks_for_say() {
    // The service: one second of audio for any text, and what it was asked.
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    let service = origin::serve(move |request| {
        let _ = asked_tx.send(request.uri().to_string());
        async {
            Response::new(
                Full::new(one_second_wav().into())
                    .map_err(|e| match e {})
                    .boxed(),
            )
        }
    })
    .await;
    // The operator's URL: loopback, though the app may not reach private
    // addresses itself.
    let tts = format!("tts_url = \"{service}/speak?voice=anna\"");
    let mut node = node_with("sip-probe", "http_allow_private = false", &tts, "").await;
    let (_, packets) = node
        .prompted_call("uac_play.xml", "say", "Grüß Gott & welcome", "127.0.0.1")
        .await;
    // Asked before the speech played, so before the call ended.
    let asked = asked.try_recv().expect("the service was asked");
    assert_eq!(
        asked,
        "/speak?voice=anna&text=Gr%C3%BC%C3%9F+Gott+%26+welcome&language=en-US"
    );
    assert_eq!(
        packets.len(),
        50,
        "the service's second of audio, 20 ms a packet"
    );
}

/// sipp's own pcap caller (`-sn uac_pcap`: seconds of G.711 A-law from a
/// recording, then the key 1 as RFC 4733), connected to an agent: the agent
/// gets the caller's packets, on one stream in the caller's timing, and the
/// key under its own event payload type.
#[tokio::test]
async fn sipps_recorded_caller_is_relayed_to_the_agent_key_press_included() {
    let agent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = agent.local_addr().unwrap().port().to_string();
    let agent_sipp = Sipp::answer_with("uas_agent.xml", 0, &[("rtp_port", port)]);
    let trunk = format!("address = \"{}\"", agent_sipp.local_addr());
    let mut node = node_running("sip-probe", Some(trunk)).await;
    let capturing = capture_rtp(agent);
    let caller = Sipp::call("builtin:uac_pcap", node.sip, "connect", Transport::Udp, &[]);
    for (who, sipp) in [("caller", caller), ("agent", agent_sipp)] {
        if let Err(failure) = sipp.finish(SIPP_LIMIT).await {
            panic!("sipp as the {who}: {failure}");
        }
    }
    let record = node.next_record().await;
    let log = scenario_lines(&record);
    assert!(log.contains(&"tone 1 1".to_owned()), "{log:?}");
    let packets = capturing.await.unwrap();
    let audio: Vec<&Vec<u8>> = packets.iter().filter(|p| payload_type(p) == 8).collect();
    assert!(
        audio.len() > 200,
        "seconds of the recording: {} packets",
        audio.len()
    );
    // The recording's packets are 30 ms: the timeline moves by each one's
    // samples (one a byte, in G.711), as the caller's did.
    let steps = audio
        .windows(2)
        .filter(|pair| {
            let samples = pair[0].len() as u32 - 12;
            timestamp(pair[1]).wrapping_sub(timestamp(pair[0])) == samples
        })
        .count();
    assert!(
        steps * 10 >= audio.len() * 9,
        "steps of a packet: {steps} of {}",
        audio.len()
    );
    assert!(
        audio.iter().all(|p| p[8..12] == audio[0][8..12]),
        "one stream"
    );
    let key = packets.iter().find(|p| payload_type(p) == 96);
    assert_eq!(
        key.map(|p| p[12]),
        Some(1),
        "the key, as the agent's type 96"
    );
}
