//! `tcp:tcp_retransmit_synack`: a listener sent a SYN-ACK again.
//!
//! Kernel: `tcp_rtx_synack()` in net/ipv4/tcp_output.c, traced since Linux
//! 4.15. BTF arguments: `(const struct sock *sk, const struct request_sock *req)`.
//! `sk` is the listener: the event carries the listener's cookie (the request
//! has no cookie of its own yet) and the request's 4-tuple, which starts with
//! a `struct sock_common` like any socket.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{Event, KIND_SYNACK_RETRANSMIT};

use crate::{
    emit::{self, Task},
    sock,
};

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    let _ = try_tcp_retransmit_synack(&ctx);
    0
}

fn try_tcp_retransmit_synack(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = sock::offsets().ok_or(())?;
    let sk: *const u8 = ctx.arg(0);
    let req: *const u8 = ctx.arg(1);
    let mut ev = Event::ZERO;
    let common = sock::Common::read(req, &off)?;
    ev.new_state = common.state();
    ev.cookie = sock::cookie(sk);
    common.fill_tuple(&mut ev)?;
    emit::send(&mut ev, KIND_SYNACK_RETRANSMIT, Task::Unrelated);
    Ok(())
}
