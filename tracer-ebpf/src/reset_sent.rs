//! `tcp:tcp_send_reset`: this host sent a RST.
//!
//! Kernel: `tcp_v4_send_reset()`, `tcp_v6_send_reset()` and
//! `tcp_send_active_reset()`, traced since Linux 4.15. BTF arguments start
//! with `(const struct sock *sk, const struct sk_buff *skb, ...)`; `sk` is
//! NULL when the RST answers a segment that matched no socket (a refused
//! connect, seen from the refusing side). Then the event has no cookie and
//! no tuple. `sk` may also be a timewait or request socket; both start with
//! `struct sock_common`, which is all we read.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{Event, KIND_RESET_SENT};

use crate::{
    emit::{self, Task},
    sock,
};

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let _ = try_tcp_send_reset(&ctx);
    0
}

fn try_tcp_send_reset(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = sock::offsets().ok_or(())?;
    let sk: *const u8 = ctx.arg(0);
    let mut ev = Event::ZERO;
    if !sk.is_null() {
        let common = sock::Common::read(sk, &off)?;
        ev.new_state = common.state();
        ev.cookie = sock::cookie(sk);
        common.fill_tuple(&mut ev)?;
    }
    emit::send(&mut ev, KIND_RESET_SENT, Task::Owner);
    Ok(())
}
