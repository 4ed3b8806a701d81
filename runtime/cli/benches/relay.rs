//! The media relay's CPU per call-second, beside a plain UDP forwarder in
//! the same run (issue: at most 1.5× the forwarder).
//!
//!   env -u RUST_BACKTRACE cargo bench --bench relay            # the README's figures
//!   env -u RUST_BACKTRACE cargo bench --bench relay -- --smoke # a short run, no claims
//!
//! `CALLS` bridged calls carry audio both ways, 20 ms packets of 160 bytes,
//! from "phones" (sockets on loopback, driven by a thread of their own) for
//! `SECONDS` a round. The side under test runs on one thread, whose own CPU
//! time is the figure, so the phones' cost is not counted:
//!
//! - relay: Sessionbox's call media (`sessionbox_sip::media::Rtp`, the code
//!   a bridge runs): each leg's receive task parses the packet and relays
//!   it on the other leg's stream (header rewritten, timeline moved), as
//!   is (both legs PCMU);
//! - transcoding: the same with one leg PCMU and the other PCMA;
//! - forwarder: the least a relay can do, a task per socket that receives a
//!   packet and sends it on unchanged.
//!
//! Sides take turns, three rounds each; medians, and their ratio. The
//! signalling that sets a bridge up is per call, not per second, and is not
//! part of this figure (scripts/bench-sip.sh measures bridged calls per
//! second through the server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sessionbox::sip::media::Rtp;
use sessionbox::sip::sdp::{Codec, RemoteAudio};
use tokio::net::UdpSocket;

const CALLS: usize = 100;

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Forwarder,
    Relay,
    Transcoding,
}

/// One call's two phones and where each sends.
struct Call {
    a: Arc<UdpSocket>,
    b: Arc<UdpSocket>,
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let (seconds, rounds) = if smoke { (1, 1) } else { (10, 3) };
    let sides = [Side::Forwarder, Side::Relay, Side::Transcoding];
    let mut results: Vec<(Side, Vec<f64>)> = sides.iter().map(|&s| (s, Vec::new())).collect();
    for _ in 0..rounds {
        for (side, figures) in &mut results {
            let (cpu_per_call_second, delivered) = round(*side, Duration::from_secs(seconds));
            assert!(
                delivered > 0.95,
                "{side:?}: only {:.0}% of the packets arrived",
                delivered * 100.0
            );
            figures.push(cpu_per_call_second);
        }
    }
    println!("{CALLS} bridged calls, audio both ways, {seconds} s a round, {rounds} rounds");
    println!("side          CPU µs per call-second (median)   × forwarder");
    let forwarder = median(results[0].1.clone());
    for (side, figures) in &results {
        let figure = median(figures.clone());
        println!(
            "{:<12}  {:>10.1} {:>30.2}",
            format!("{side:?}").to_lowercase(),
            figure,
            figure / forwarder
        );
        println!(
            "csv,{},{figure:.1},{:.3}",
            format!("{side:?}").to_lowercase(),
            figure / forwarder
        );
    }
    if smoke {
        println!("(smoke run: the figures are not measurements)");
    }
}

/// One round of `side`: its CPU µs per call-second, and the share of the
/// phones' packets that arrived.
fn round(side: Side, length: Duration) -> (f64, f64) {
    let phones = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let calls: Vec<Call> = phones.block_on(async {
        let mut calls = Vec::new();
        for _ in 0..CALLS {
            calls.push(Call {
                a: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
                b: Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            });
        }
        calls
    });
    let addresses: Vec<(SocketAddr, SocketAddr)> = (calls.iter())
        .map(|c| (c.a.local_addr().unwrap(), c.b.local_addr().unwrap()))
        .collect();

    // The side under test, on a thread of its own: it reports the ports
    // each call's phones send to, then its CPU time over the round.
    let (ports_tx, ports_rx) = std::sync::mpsc::channel();
    let running = Arc::new(AtomicBool::new(true));
    let measuring = Arc::new(AtomicBool::new(false));
    let under_test = {
        let (running, measuring) = (Arc::clone(&running), Arc::clone(&measuring));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (ports, _held) = serve(side, &addresses).await;
                ports_tx.send(ports).unwrap();
                while !measuring.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let start = thread_cpu();
                while running.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                thread_cpu() - start
            })
        })
    };
    let ports: Vec<(SocketAddr, SocketAddr)> = ports_rx.recv().unwrap();

    let received = Arc::new(AtomicU64::new(0));
    let sent = phones.block_on(async {
        for call in &calls {
            for socket in [&call.a, &call.b] {
                let (socket, received) = (Arc::clone(socket), Arc::clone(&received));
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1500];
                    while socket.recv(&mut buffer).await.is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        measuring.store(true, Ordering::Relaxed);
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        let started = Instant::now();
        let mut sent = 0u64;
        let mut sequence = 0u16;
        while started.elapsed() < length {
            ticks.tick().await;
            sequence = sequence.wrapping_add(1);
            // A's phone speaks PCMU; B's speaks PCMA when its leg does.
            let from_a = packet(0, sequence);
            let from_b = packet(if side == Side::Transcoding { 8 } else { 0 }, sequence);
            for (call, (to_a, to_b)) in calls.iter().zip(&ports) {
                let _ = call.a.send_to(&from_a, to_a).await;
                let _ = call.b.send_to(&from_b, to_b).await;
                sent += 2;
            }
        }
        // The last packets' way through.
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent
    });
    running.store(false, Ordering::Relaxed);
    let cpu = under_test.join().unwrap();
    let call_seconds = CALLS as f64 * length.as_secs_f64();
    let delivered = received.load(Ordering::Relaxed) as f64 / sent as f64;
    (cpu.as_secs_f64() * 1e6 / call_seconds, delivered)
}

/// 20 ms of audio (payload type 0, PCMU, or 8, PCMA), as a phone sends it.
fn packet(payload_type: u8, sequence: u16) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type];
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
    packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    packet.extend((0..160).map(|n| (n * 7) as u8));
    packet
}

/// Sets `side` up for the calls whose phones are at `phones`; the ports
/// each call's phones send to, and what must live for the round.
async fn serve(
    side: Side,
    phones: &[(SocketAddr, SocketAddr)],
) -> (Vec<(SocketAddr, SocketAddr)>, Vec<Box<dyn std::any::Any>>) {
    let mut ports = Vec::new();
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let loopback = "127.0.0.1".parse().unwrap();
    for &(phone_a, phone_b) in phones {
        match side {
            Side::Forwarder => {
                let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                ports.push((a.local_addr().unwrap(), b.local_addr().unwrap()));
                for (from, to, phone) in [(&a, &b, phone_b), (&b, &a, phone_a)] {
                    let (from, to) = (Arc::clone(from), Arc::clone(to));
                    tokio::spawn(async move {
                        let mut buffer = [0u8; 1500];
                        while let Ok(length) = from.recv(&mut buffer).await {
                            let _ = to.send_to(&buffer[..length], phone).await;
                        }
                    });
                }
            }
            Side::Relay | Side::Transcoding => {
                let mut a = Rtp::bind(loopback, loopback, None).unwrap();
                let mut b = Rtp::bind(loopback, loopback, None).unwrap();
                let b_codec = if side == Side::Relay {
                    Codec::Pcmu
                } else {
                    Codec::Pcma
                };
                for (rtp, phone, codec) in [(&a, phone_a, Codec::Pcmu), (&b, phone_b, b_codec)] {
                    rtp.sender().set_remote(Some(RemoteAudio {
                        addr: phone,
                        codec,
                        telephone_event: Some(101),
                        direction: Default::default(),
                    }));
                }
                a.listen(|_| {});
                b.listen(|_| {});
                a.sender().relay_to(Some(Arc::new(b.sender())));
                b.sender().relay_to(Some(Arc::new(a.sender())));
                ports.push((a.advertised(), b.advertised()));
                held.push(Box::new((a, b)));
            }
        }
    }
    (ports, held)
}
