//! `tcp:tcp_retransmit_skb`: a data segment was sent again.
//!
//! Kernel: `__tcp_retransmit_skb()` in net/ipv4/tcp_output.c, traced since
//! Linux 4.15. BTF arguments: `(const struct sock *sk, const struct sk_buff *skb)`,
//! plus `int err` from 6.17; we use only `sk`, so both layouts work.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{Event, KIND_RETRANSMIT};

use crate::{
    emit::{self, Task},
    sock,
};

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let _ = try_tcp_retransmit_skb(&ctx);
    0
}

fn try_tcp_retransmit_skb(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = sock::offsets().ok_or(())?;
    let sk: *const u8 = ctx.arg(0);
    let mut ev = Event::ZERO;
    let common = sock::Common::read(sk, &off)?;
    ev.new_state = common.state();
    ev.cookie = sock::cookie(sk);
    common.fill_tuple(&mut ev)?;
    emit::send(&mut ev, KIND_RETRANSMIT, Task::Unrelated);
    Ok(())
}
