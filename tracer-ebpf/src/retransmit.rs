//! `tcp:tcp_retransmit_skb`: a data segment was sent again.
//!
//! Kernel: `__tcp_retransmit_skb()` in net/ipv4/tcp_output.c, traced since
//! Linux 4.15. BTF arguments: `(const struct sock *sk, const struct sk_buff *skb)`,
//! plus `int err` from 6.17; we use only `sk`, so both layouts work.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::KIND_RETRANSMIT;

use crate::{
    emit::{self, Fail, Head, Hook, Task},
    sock::Sock,
};

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    emit::finish(&ctx, Hook::Retransmit, try_tcp_retransmit_skb(&ctx))
}

#[inline(always)]
fn try_tcp_retransmit_skb(ctx: &BtfTracePointContext) -> Result<(), Fail> {
    let sk = Sock::new(ctx.arg(0))?;
    let head = Head {
        kind: KIND_RETRANSMIT,
        old_state: 0,
        new_state: sk.state(),
        err: 0,
        cookie: sk.cookie(),
        task: Task::Unrelated,
    };
    sk.emit(head)
}
