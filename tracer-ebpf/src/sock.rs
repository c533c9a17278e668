//! Reading a `struct sock_common` with offsets taken from the running kernel's BTF.
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_socket_cookie};
use tracer_common::{COUNTER_READ_ERROR, Event, FAMILY_INET, FAMILY_INET6, SockOffsets};

use crate::emit::count;

/// Filled in by the agent before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static SOCK_OFFSETS: SockOffsets = SockOffsets {
    magic: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: 0,
    inet_sport: 0,
    skc_net: 0,
    net_inum: 0,
};

const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// The offsets, or `None` when the agent did not fill them in.
#[inline(always)]
pub fn offsets() -> Option<SockOffsets> {
    // SAFETY: a read of a global the loader wrote; volatile so the compiler
    // does not fold the zero initializer.
    let off = unsafe { core::ptr::read_volatile(&SOCK_OFFSETS) };
    if off.magic == SockOffsets::MAGIC {
        Some(off)
    } else {
        count(COUNTER_READ_ERROR);
        None
    }
}

#[inline(always)]
fn read<T>(base: *const u8, off: u32) -> Result<T, ()> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }.map_err(|_| ())
}

/// `sk->sk_protocol`. Only valid on a full socket.
#[inline(always)]
pub fn protocol(sk: *const u8, off: &SockOffsets) -> Result<u16, ()> {
    read::<u16>(sk, off.sk_protocol)
}

/// `sk->skc_state`.
#[inline(always)]
pub fn state(sk: *const u8, off: &SockOffsets) -> Result<u8, ()> {
    read::<u8>(sk, off.skc_state)
}

/// The socket cookie, generated on first use; 0 for a NULL socket.
#[inline(always)]
pub fn cookie(sk: *const u8) -> u64 {
    if sk.is_null() {
        return 0;
    }
    // SAFETY: sk is the BTF-typed socket pointer the tracepoint handed us.
    unsafe { bpf_get_socket_cookie(sk as *mut _) }
}

/// Fill family, addresses and ports of `ev` from `sk`'s `sock_common`.
/// Counts and returns an error when a read fails.
#[inline(always)]
pub fn fill_tuple(ev: &mut Event, sk: *const u8, off: &SockOffsets) -> Result<(), ()> {
    let r = fill_tuple_inner(ev, sk, off);
    if r.is_err() {
        count(COUNTER_READ_ERROR);
    }
    r
}

#[inline(always)]
fn fill_tuple_inner(ev: &mut Event, sk: *const u8, off: &SockOffsets) -> Result<(), ()> {
    let family = read::<u16>(sk, off.skc_family)?;
    // Timewait and request sockets are not full sockets: no inet_sock part.
    let state = read::<u8>(sk, off.skc_state)?;
    ev.sport = if state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
        read::<u16>(sk, off.skc_num)?
    } else {
        u16::from_be(read::<u16>(sk, off.inet_sport)?)
    };
    ev.dport = u16::from_be(read::<u16>(sk, off.skc_dport)?);
    let net = read::<u64>(sk, off.skc_net)? as *const u8;
    ev.netns = read::<u32>(net, off.net_inum)?;
    if family == FAMILY_INET6 as u16 {
        ev.family = FAMILY_INET6;
        ev.saddr = read::<[u8; 16]>(sk, off.skc_v6_rcv_saddr)?;
        ev.daddr = read::<[u8; 16]>(sk, off.skc_v6_daddr)?;
    } else {
        ev.family = FAMILY_INET;
        let s = read::<[u8; 4]>(sk, off.skc_rcv_saddr)?;
        let d = read::<[u8; 4]>(sk, off.skc_daddr)?;
        ev.saddr[..4].copy_from_slice(&s);
        ev.daddr[..4].copy_from_slice(&d);
    }
    Ok(())
}
