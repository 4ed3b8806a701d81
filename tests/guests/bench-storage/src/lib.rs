//! bench-storage: the storage benchmark's scenario. An HttpRequest whose
//! body is `get N K` reads, or `set N K` writes (a 100-byte value), the keys
//! `k0` .. `k{K-1}` in turn, N operations in all. It answers 200 with each
//! operation's time in nanoseconds, as N little-endian u64s, or 500 with the
//! first refusal.

use std::time::Instant;

use sessionbox_guest::{HttpRequestEvent, HttpResponse, Scenario, export_scenario, storage};

#[derive(Default)]
struct BenchStorage;

impl Scenario for BenchStorage {
    fn http_request(&mut self, request: HttpRequestEvent) -> HttpResponse {
        let command = String::from_utf8_lossy(&request.body).into_owned();
        let words: Vec<&str> = command.split(' ').collect();
        let (op, n, keys) = match words[..] {
            [op, n, keys] => match (n.parse::<usize>(), keys.parse::<usize>()) {
                (Ok(n), Ok(keys)) if keys > 0 => (op, n, keys),
                _ => return HttpResponse::text(400, "expected `get|set N K`"),
            },
            _ => return HttpResponse::text(400, "expected `get|set N K`"),
        };
        let value = [b'v'; 100];
        let mut times = Vec::with_capacity(8 * n);
        for i in 0..n {
            let key = format!("k{}", i % keys);
            let began = Instant::now();
            let done = match op {
                "get" => storage::get(&key).map(drop),
                "set" => storage::set(&key, &value, None),
                _ => return HttpResponse::text(400, "expected `get|set N K`"),
            };
            let took = began.elapsed().as_nanos() as u64;
            if let Err(refusal) = done {
                return HttpResponse::text(500, refusal.to_string());
            }
            times.extend_from_slice(&took.to_le_bytes());
        }
        HttpResponse::empty(200).with_body(times)
    }
}

export_scenario!(BenchStorage);
