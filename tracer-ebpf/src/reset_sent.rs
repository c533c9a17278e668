//! `tcp:tcp_send_reset`: this host sent a RST.
//!
//! Kernel: `tcp_v4_send_reset()`, `tcp_v6_send_reset()` and
//! `tcp_send_active_reset()`, traced since Linux 4.15. BTF arguments start
//! with `(const struct sock *sk, const struct sk_buff *skb, ...)`; `sk` is
//! NULL when the RST answers a segment that matched no socket (a refused
//! connect, seen from the refusing side). Then the event has no cookie and
//! no tuple, and its namespace is that of the device the segment came in
//! on (`skb->dev`), so a reset of no socket still counts in its namespace.
//! `sk` may also be a timewait or request socket; both start with `struct
//! sock_common`, which is all we read.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::KIND_RESET_SENT;

use crate::{
    emit::{self, Fail, Head, Hook, Source, Task},
    sock::{self, Sock},
};

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    emit::finish(&ctx, Hook::ResetSent, try_tcp_send_reset(&ctx))
}

#[inline(always)]
fn try_tcp_send_reset(ctx: &BtfTracePointContext) -> Result<(), Fail> {
    let sk = Sock::new(ctx.arg(0))?;
    let head = Head {
        kind: KIND_RESET_SENT,
        old_state: 0,
        new_state: if sk.is_null() { 0 } else { sk.state() },
        err: 0,
        cookie: sk.cookie(),
        task: Task::Owner,
    };
    if sk.is_null() {
        let netns = sock::skb_netns(ctx.arg(1));
        emit::emit(
            head,
            Source {
                netns,
                ..Source::NONE
            },
        )
    } else {
        sk.emit(head)
    }
}
