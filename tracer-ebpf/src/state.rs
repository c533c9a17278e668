//! `sock:inet_sock_set_state`: every TCP state change, IPv4 and IPv6.
//!
//! Kernel: `inet_sk_set_state()` and `inet_sk_state_store()` in
//! net/ipv4/inet_connection_sock.c / include/net/inet_sock.h, traced since
//! Linux 4.16; as a BTF tracepoint its arguments are
//! `(const struct sock *sk, const int oldstate, const int newstate)`.
//! The tracepoint also fires for SCTP and MPTCP sockets; we keep TCP only.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{Event, KIND_STATE};

use crate::{emit, sock};

const IPPROTO_TCP: u16 = 6;

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let _ = try_inet_sock_set_state(&ctx);
    0
}

fn try_inet_sock_set_state(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = sock::offsets().ok_or(())?;
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if sock::protocol(sk, &off)? != IPPROTO_TCP {
        return Ok(());
    }
    let mut ev = Event::ZERO;
    ev.old_state = old as u8;
    ev.new_state = new as u8;
    ev.cookie = sock::cookie(sk);
    sock::fill_tuple(&mut ev, sk, &off)?;
    emit::send(&mut ev, KIND_STATE);
    Ok(())
}
