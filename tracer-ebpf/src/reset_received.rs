//! `tcp:tcp_receive_reset`: a RST arrived for one of our sockets.
//!
//! Kernel: `tcp_reset()` in net/ipv4/tcp_input.c, traced since Linux 4.15.
//! BTF arguments: `(struct sock *sk)`. Runs in softirq: the current task is
//! whoever was interrupted, not the socket's owner.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{Event, KIND_RESET_RECEIVED};

use crate::{
    emit::{self, Task},
    sock,
};

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let _ = try_tcp_receive_reset(&ctx);
    0
}

fn try_tcp_receive_reset(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let off = sock::offsets().ok_or(())?;
    let sk: *const u8 = ctx.arg(0);
    let mut ev = Event::ZERO;
    let common = sock::Common::read(sk, &off)?;
    ev.new_state = common.state();
    ev.cookie = sock::cookie(sk);
    common.fill_tuple(&mut ev)?;
    emit::send(&mut ev, KIND_RESET_RECEIVED, Task::Unrelated);
    Ok(())
}
