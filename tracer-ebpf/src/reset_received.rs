//! `tcp:tcp_receive_reset`: a RST arrived for one of our sockets.
//!
//! Kernel: `tcp_reset()` in net/ipv4/tcp_input.c, traced since Linux 4.15.
//! BTF arguments: `(struct sock *sk)`. Runs in softirq: the current task is
//! whoever was interrupted, not the socket's owner.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::KIND_RESET_RECEIVED;

use crate::{
    emit::{self, Fail, Head, Hook, Task},
    sock::Sock,
};

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    emit::finish(&ctx, Hook::ResetReceived, try_tcp_receive_reset(&ctx))
}

#[inline(always)]
fn try_tcp_receive_reset(ctx: &BtfTracePointContext) -> Result<(), Fail> {
    let sk = Sock::new(ctx.arg(0))?;
    let head = Head {
        kind: KIND_RESET_RECEIVED,
        old_state: 0,
        new_state: sk.state(),
        err: 0,
        cookie: sk.cookie(),
        task: Task::Unrelated,
    };
    sk.emit(head)
}
