//! tracer's kernel programs.
//!
//! Five BTF tracepoints (`tp_btf`), one per file. Each reads the socket it is
//! given and writes one [`Event`] into its CPU's lane of `EVENTS`. Any
//! failure is counted in `COUNTERS`, which the agent reads and exports.
//! Everything else (state machines, durations, leaks) happens in user space.
//!
//! BTF tracepoints need Linux 5.5; the lanes' atomics need 5.12. `tp_btf` hands
//! us the `struct sock *` itself, which `bpf_get_socket_cookie` needs, and it
//! does not depend on tracefs being mounted.
#![no_std]
#![no_main]
// Atomic read-modify-write on the BPF target (see `emit::reserve`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod emit;
mod reset_received;
mod reset_sent;
mod retransmit;
mod sock;
mod state;
mod synack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
