//! `sock:inet_sock_set_state`: every TCP state change, IPv4 and IPv6.
//!
//! Kernel: `inet_sk_set_state()` and `inet_sk_state_store()` in
//! net/ipv4/inet_connection_sock.c / include/net/inet_sock.h, traced since
//! Linux 4.16; as a BTF tracepoint its arguments are
//! `(const struct sock *sk, const int oldstate, const int newstate)`.
//! The tracepoint also fires for SCTP and MPTCP sockets; we keep TCP only.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::KIND_STATE;

use crate::{
    emit::{self, Fail, Head, Hook, Task},
    sock::Sock,
};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_FIN_WAIT1: i32 = 4;
const TCP_CLOSE: i32 = 7;
const TCP_CLOSE_WAIT: i32 = 8;
const TCP_LAST_ACK: i32 = 9;
const TCP_LISTEN: i32 = 10;

/// Transitions made inside a syscall of the socket's owner (connect, listen,
/// close, shutdown, abort), where the current task is the owner. Every
/// other transition runs in softirq or a timer.
#[inline(always)]
fn task_of(old: i32, new: i32) -> Task {
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT)
        | (TCP_CLOSE, TCP_LISTEN)
        | (TCP_LISTEN, TCP_CLOSE)
        | (TCP_ESTABLISHED, TCP_FIN_WAIT1)
        | (TCP_ESTABLISHED, TCP_CLOSE)
        | (TCP_CLOSE_WAIT, TCP_LAST_ACK) => Task::Owner,
        _ => Task::Unrelated,
    }
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    emit::finish(&ctx, Hook::State, try_inet_sock_set_state(&ctx))
}

#[inline(always)]
fn try_inet_sock_set_state(ctx: &BtfTracePointContext) -> Result<(), Fail> {
    let sk = Sock::new(ctx.arg(0))?;
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    if sk.protocol() != IPPROTO_TCP {
        return Ok(());
    }
    let head = Head {
        kind: KIND_STATE,
        old_state: old as u8,
        new_state: new as u8,
        // Why a connection ended, as connect() or the next read would say:
        // one load, only on the way to close.
        err: if new == TCP_CLOSE { sk.err() } else { 0 },
        cookie: if old == TCP_LISTEN && new == TCP_SYN_RECV {
            sk.child_cookie()
        } else {
            sk.cookie()
        },
        task: task_of(old, new),
    };
    sk.emit(head)
}
