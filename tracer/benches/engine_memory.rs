//! Heap bytes per tracked socket, with 1,000,000 synthetic sockets
//! (issue 5 target: at most 200). A counting global allocator measures what
//! the engine really holds, hash-table slack and growth included, in two
//! populations: all ESTABLISHED, and all in (inferred) TIME_WAIT, which
//! also needs a 4-tuple index entry and is what peak churn leaves behind.
//!
//! Then, at the cap, it feeds 10,000 more sockets (each evicting an old
//! record) to settle, and 10,000 more while counting allocator calls: the
//! hot path should make none. The settling ones may: the first evictions
//! move the rest of a span's cookies to the index's hashed table, which
//! grows once to its working size (about fifteen calls, printed too).
//!
//! Prints `key: value` lines; `bytes_per_socket` is the worse population.
//! Run with `cargo bench -p tracer --bench engine_memory`.
#[path = "../tests/common/counting.rs"]
mod counting;
mod synth;

use std::sync::atomic::Ordering;

use counting::{CALLS, Counting, LIVE, PEAK};
use synth::st;
use tracer::{
    engine::{Config, Engine},
    event::SockEvent,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

const SOCKETS: u64 = 1_000_000;

/// Feed `steps` for client sockets `first..first + n` (cookie `k + 1`).
fn feed(engine: &mut Engine, steps: &[(u8, u8)], first: u64, n: u64) {
    for k in first..first + n {
        let port = 32768 + (k % 28000) as u16;
        let src = [127, 1, (k / 254 % 256) as u8, (k % 254 + 1) as u8];
        for (i, &(old, new)) in steps.iter().enumerate() {
            let ts = 1_000_000_000 + k * 1_000 + i as u64 * 100;
            let raw = synth::raw(k + 1, ts, true, port, src, old, new);
            if let Ok(ev) = SockEvent::decode(&synth::bytes(&raw)) {
                engine.apply(&ev, &mut ());
            }
        }
    }
}

/// Track `SOCKETS` client sockets through `steps`, then keep feeding new
/// ones at the cap (each evicts an old record) and count allocator calls.
fn measure(name: &str, steps: &[(u8, u8)]) -> f64 {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut engine = Engine::new(Config {
        max_sockets: SOCKETS as usize,
        ..Config::default()
    });
    feed(&mut engine, steps, 0, SOCKETS);
    let live = LIVE.load(Ordering::Relaxed) - base;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let per = live as f64 / SOCKETS as f64;
    println!("{name}_tracked: {}", engine.tracked());
    println!("{name}_bytes_per_socket: {per:.1}");
    println!(
        "{name}_peak_bytes_per_socket: {:.1}",
        peak as f64 / SOCKETS as f64
    );
    println!(
        "{name}_engine_estimate_bytes_per_socket: {:.1}",
        engine.approx_heap_bytes() as f64 / SOCKETS as f64
    );
    const MORE: u64 = 10_000;
    let calls = CALLS.load(Ordering::Relaxed);
    feed(&mut engine, steps, SOCKETS, MORE);
    println!(
        "{name}_allocations_settling_at_cap: {}",
        CALLS.load(Ordering::Relaxed) - calls
    );
    let calls = CALLS.load(Ordering::Relaxed);
    feed(&mut engine, steps, SOCKETS + MORE, MORE);
    let events = MORE * steps.len() as u64;
    let allocs = CALLS.load(Ordering::Relaxed) - calls;
    println!(
        "{name}_allocations_per_event_at_cap: {:.4}",
        allocs as f64 / events as f64
    );
    per
}

fn main() {
    let established = [(st::CLOSE, st::SYN_SENT), (st::SYN_SENT, st::ESTABLISHED)];
    let time_wait = [
        (st::CLOSE, st::SYN_SENT),
        (st::SYN_SENT, st::ESTABLISHED),
        (st::ESTABLISHED, st::FIN_WAIT1),
        (st::FIN_WAIT1, st::FIN_WAIT2),
        (st::FIN_WAIT2, st::CLOSE),
    ];
    println!("sockets: {SOCKETS}");
    let worst = measure("established", &established).max(measure("time_wait", &time_wait));
    println!("bytes_per_socket: {worst:.1}");
}
