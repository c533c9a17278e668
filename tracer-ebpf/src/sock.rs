//! Reading a `struct sock_common` with offsets taken from the running kernel's BTF.
//!
//! Every field an event needs from `sock_common` comes from one
//! `bpf_probe_read_kernel` of its first [`SOCK_BLOCK_LEN`] bytes ([`Common`]);
//! a read per field cost more than everything else an event does.
use core::mem::{MaybeUninit, size_of};

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, generated::bpf_get_socket_cookie,
    generated::bpf_probe_read_kernel as raw_read,
};
use tracer_common::{
    COUNTER_READ_ERROR, Event, FAMILY_INET, FAMILY_INET6, SOCK_BLOCK_LEN, SockOffsets,
};

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
    block_start: 0,
};

const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;
const BLOCK: usize = SOCK_BLOCK_LEN as usize;
/// Offsets into the copy are masked to 0..=127 so the verifier can bound
/// them; the copy is padded so a 16-byte field at any masked offset fits.
const MASK: usize = 127;
const PADDED: usize = MASK + 1 + 16;

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

/// The socket cookie, generated on first use; 0 for a NULL socket.
#[inline(always)]
pub fn cookie(sk: *const u8) -> u64 {
    if sk.is_null() {
        return 0;
    }
    // SAFETY: sk is the BTF-typed socket pointer the tracepoint handed us.
    unsafe { bpf_get_socket_cookie(sk as *mut _) }
}

/// A copy of the start of a socket's `sock_common`.
#[repr(C, align(8))]
pub struct Common<'a> {
    bytes: [u8; PADDED],
    sk: *const u8,
    off: &'a SockOffsets,
}

impl<'a> Common<'a> {
    /// Copy `sk`'s `sock_common` prefix. Counts a failed read.
    #[inline(always)]
    pub fn read(sk: *const u8, off: &'a SockOffsets) -> Result<Common<'a>, ()> {
        let mut bytes = MaybeUninit::<[u8; PADDED]>::uninit();
        // SAFETY: the helper writes the first BLOCK bytes or fails (then we
        // never look at them); the padding is zeroed below.
        let rc = unsafe {
            raw_read(
                bytes.as_mut_ptr().cast(),
                SOCK_BLOCK_LEN,
                sk.wrapping_add(off.block_start as usize).cast(),
            )
        };
        if rc != 0 {
            count(COUNTER_READ_ERROR);
            return Err(());
        }
        // SAFETY: BLOCK..PADDED is inside the array.
        unsafe {
            core::ptr::write_bytes(
                bytes.as_mut_ptr().cast::<u8>().add(BLOCK),
                0,
                PADDED - BLOCK,
            )
        };
        Ok(Common {
            // SAFETY: initialised by the read and the zeroing above.
            bytes: unsafe { bytes.assume_init() },
            sk,
            off,
        })
    }

    /// The field at socket offset `at`, which the agent checked lies in the block.
    #[inline(always)]
    fn get<T: Copy>(&self, at: u32) -> T {
        // The agent checked that the field lies inside the block; the mask
        // only proves the bound to the verifier.
        let rel = at.wrapping_sub(self.off.block_start) as usize & MASK;
        const { assert!(size_of::<T>() < PADDED - MASK) };
        // SAFETY: rel + size_of::<T>() <= PADDED.
        unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(rel).cast::<T>()) }
    }

    /// `skc_state`.
    #[inline(always)]
    pub fn state(&self) -> u8 {
        self.get::<u8>(self.off.skc_state)
    }

    /// Fill family, addresses, ports and namespace of `ev`. Counts and
    /// returns an error when a read fails.
    #[inline(always)]
    pub fn fill_tuple(&self, ev: &mut Event) -> Result<(), ()> {
        let r = self.fill_tuple_inner(ev);
        if r.is_err() {
            count(COUNTER_READ_ERROR);
        }
        r
    }

    #[inline(always)]
    fn fill_tuple_inner(&self, ev: &mut Event) -> Result<(), ()> {
        let off = self.off;
        let state = self.state();
        let num = self.get::<u16>(off.skc_num);
        // skc_num is the bound port; the kernel zeroes it when it releases
        // the port just before ->close, but a full socket keeps
        // inet_sport. Timewait and request sockets have no inet_sock part.
        ev.sport = if num != 0 || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
            num
        } else {
            u16::from_be(read::<u16>(self.sk, off.inet_sport)?)
        };
        ev.dport = u16::from_be(self.get::<u16>(off.skc_dport));
        let net = self.get::<u64>(off.skc_net) as *const u8;
        ev.netns = read::<u32>(net, off.net_inum)?;
        if self.get::<u16>(off.skc_family) == FAMILY_INET6 as u16 {
            ev.family = FAMILY_INET6;
            ev.saddr = self.get::<[u8; 16]>(off.skc_v6_rcv_saddr);
            ev.daddr = self.get::<[u8; 16]>(off.skc_v6_daddr);
        } else {
            ev.family = FAMILY_INET;
            let s = self.get::<[u8; 4]>(off.skc_rcv_saddr);
            let d = self.get::<[u8; 4]>(off.skc_daddr);
            ev.saddr[..4].copy_from_slice(&s);
            ev.daddr[..4].copy_from_slice(&d);
        }
        Ok(())
    }
}
