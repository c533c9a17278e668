//! `tcp:tcp_retransmit_synack`: a listener sent a SYN-ACK again.
//!
//! Kernel: `tcp_rtx_synack()` in net/ipv4/tcp_output.c, traced since Linux
//! 4.15. BTF arguments: `(const struct sock *sk, const struct request_sock *req)`.
//! `sk` is the listener: the event carries the listener's cookie (the request
//! has no cookie of its own yet) and the request's 4-tuple, which starts with
//! a `struct sock_common` like any socket.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::KIND_SYNACK_RETRANSMIT;

use crate::{
    emit::{self, Fail, Head, Hook, Task},
    sock::Sock,
};

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    emit::finish(
        &ctx,
        Hook::SynackRetransmit,
        try_tcp_retransmit_synack(&ctx),
    )
}

#[inline(always)]
fn try_tcp_retransmit_synack(ctx: &BtfTracePointContext) -> Result<(), Fail> {
    let listener = Sock::new(ctx.arg(0))?;
    let req = Sock::new(ctx.arg(1))?;
    let head = Head {
        kind: KIND_SYNACK_RETRANSMIT,
        old_state: 0,
        new_state: req.state(),
        err: 0,
        cookie: listener.cookie(),
        task: Task::Unrelated,
    };
    req.emit(head)
}
