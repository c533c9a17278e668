//! Synthetic kernel events for the benchmarks: the ten state changes of one
//! loopback connection whose client closes first, in the order the kernel
//! reports them (recorded from `tracer events` on Linux 6.18), as raw
//! 88-byte ring-buffer records.
//!
//! Client socket `2k`, server child `2k + 1`; every connection has fresh
//! cookies, since the kernel never reuses one.
#![allow(dead_code, reason = "each bench binary uses part of this module")]

use tracer_common as abi;

/// Kernel TCP state numbers (`include/net/tcp_states.h`).
pub mod st {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
}

/// Events per connection.
pub const EVENTS_PER_CONN: usize = 10;
/// The server port.
pub const SERVER_PORT: u16 = 8080;

/// (client side?, old, new) in kernel order.
const SEQUENCE: [(bool, u8, u8); EVENTS_PER_CONN] = [
    (true, st::CLOSE, st::SYN_SENT),
    (true, st::SYN_SENT, st::ESTABLISHED),
    (false, st::LISTEN, st::SYN_RECV),
    (false, st::SYN_RECV, st::ESTABLISHED),
    (true, st::ESTABLISHED, st::FIN_WAIT1),
    (false, st::ESTABLISHED, st::CLOSE_WAIT),
    (false, st::CLOSE_WAIT, st::LAST_ACK),
    (true, st::FIN_WAIT1, st::FIN_WAIT2),
    (true, st::FIN_WAIT2, st::CLOSE),
    (false, st::LAST_ACK, st::CLOSE),
];

/// One raw state event.
pub fn raw(
    cookie: u64,
    ts_ns: u64,
    client: bool,
    port: u16,
    src: [u8; 4],
    old: u8,
    new: u8,
) -> abi::Event {
    let mut e = abi::Event::ZERO;
    e.kind = abi::KIND_STATE;
    e.version = abi::ABI_VERSION;
    e.family = abi::FAMILY_INET;
    e.old_state = old;
    e.new_state = new;
    e.ts_ns = ts_ns;
    e.cookie = cookie;
    e.pid = 4242;
    e.tid = 4243;
    let (local, remote) = (src, [127, 0, 0, 1]);
    if client {
        (e.sport, e.dport) = (port, SERVER_PORT);
        e.saddr[..4].copy_from_slice(&local);
        e.daddr[..4].copy_from_slice(&remote);
    } else {
        (e.sport, e.dport) = (SERVER_PORT, port);
        e.saddr[..4].copy_from_slice(&remote);
        e.daddr[..4].copy_from_slice(&local);
    }
    e.comm[..5].copy_from_slice(b"churn");
    e
}

/// `conns` connections starting at connection number `first`, one every
/// `gap_ns`, each lasting about 60 µs; events in kernel order.
pub fn connections(first: u64, conns: u64, gap_ns: u64) -> Vec<abi::Event> {
    make(first, conns, gap_ns, 6_000, |k| k % 28000)
}

/// Like [`connections`], but as a busy host reports them: about `overlap`
/// connections open at once, each lasting `overlap` gaps, their events in
/// time order, and the client ports scattered over the range (the kernel
/// starts each search for a free port at a hashed offset) instead of one
/// after another. Events of one socket stay in order; the last connections
/// of one call end after the first ones of the next begin, as on a host.
pub fn interleaved(first: u64, conns: u64, gap_ns: u64, overlap: u64) -> Vec<abi::Event> {
    let step = gap_ns * overlap / EVENTS_PER_CONN as u64;
    // 7,919 is prime and divides no factor of 28,000: every port once per
    // 28,000 connections, in a scattered order.
    let mut out = make(first, conns, gap_ns, step, |k| k.wrapping_mul(7919) % 28000);
    // Stable: ties keep the order they were made in.
    out.sort_by_key(|e| e.ts_ns);
    out
}

/// The events of connections `first..first + conns`, one every `gap_ns`,
/// a connection's events `step_ns` apart, connection `k`'s client on port
/// `32768 + port(k)`; in the order made.
fn make(
    first: u64,
    conns: u64,
    gap_ns: u64,
    step_ns: u64,
    port: impl Fn(u64) -> u64,
) -> Vec<abi::Event> {
    let mut out = Vec::with_capacity(conns as usize * EVENTS_PER_CONN);
    for k in first..first + conns {
        let t0 = 1_000_000_000 + k * gap_ns;
        let port = 32768 + port(k) as u16;
        let src = [127, 1, (k / 254 % 256) as u8, (k % 254 + 1) as u8];
        for (i, &(client, old, new)) in SEQUENCE.iter().enumerate() {
            let cookie = 2 * k + u64::from(!client) + 1;
            out.push(raw(
                cookie,
                t0 + i as u64 * step_ns,
                client,
                port,
                src,
                old,
                new,
            ));
        }
    }
    out
}

/// The bytes of a raw event, as the ring buffer hands them out.
pub fn bytes(e: &abi::Event) -> [u8; size_of::<abi::Event>()] {
    // SAFETY: Event is repr(C) plain data whose padding is named fields, so
    // every byte is initialised.
    unsafe { std::mem::transmute_copy(e) }
}
