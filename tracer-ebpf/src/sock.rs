//! Reading a socket, and the current task, with offsets taken from the
//! running kernel's BTF.
//!
//! A `tp_btf` program gets its socket as a BTF-typed pointer. A plain load
//! through it is checked by the verifier against the kernel's own type of
//! the struct and compiled to a guarded load: a bad address reads as zero
//! instead of faulting. That costs a few instructions where
//! `bpf_probe_read_kernel` costs a helper call and a copy.
//!
//! The verifier accepts such a load only at an offset it knows. The offsets
//! sit in `SOCK_OFFSETS`, a read-only global in a map the loader freezes, so
//! every offset read from it is a known constant to the verifier.
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_get_socket_cookie},
    },
    macros::map,
    maps::PerCpuArray,
};
use tracer_common::{Event, FAMILY_INET, FAMILY_INET6, SockOffsets};

use crate::emit::{self, Fail, Head, Source, put};

/// Filled in by the agent before load (`EbpfLoader::override_global`).
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
    net_cookie: 0,
    skc_cookie: 0,
    sk_err: 0,
    task_tgid: 0,
    task_pid: 0,
    task_comm: 0,
    skb_dev: 0,
    dev_nd_net: 0,
};

/// One field of `SOCK_OFFSETS`. A volatile load, so the compiler reads the
/// map (which the verifier then folds to a constant) instead of folding the
/// zero initializer itself.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a read of a field of a global.
        unsafe { core::ptr::read_volatile(&raw const SOCK_OFFSETS.$field) as usize }
    };
}

/// A load through the BTF-typed pointer `p` at byte `off`.
#[inline(always)]
fn load<T: Copy>(p: *const u8, off: usize) -> T {
    // SAFETY: an offset from `SOCK_OFFSETS`, which the verifier knows; it
    // checks the load against the kernel's type and the JIT guards it, so
    // a bad pointer reads as zero.
    unsafe { core::ptr::read_volatile(p.wrapping_add(off).cast::<T>()) }
}

/// The task the program runs in, as the event carries it: the pid in the
/// low half of the first word and the thread id in the high half, then
/// `comm` as two words. Plain loads through the task's BTF-typed pointer:
/// the pid and comm helpers would cost two calls and a string copy, which
/// was a fifth of the state program's time (BENCHMARKS.md, issue 9).
#[inline(always)]
pub fn current_task() -> (u64, [u64; 2]) {
    // SAFETY: a helper without arguments; it never returns NULL.
    let task = unsafe { bpf_get_current_task_btf() }
        .cast::<u8>()
        .cast_const();
    let tgid = load::<u32>(task, off!(task_tgid));
    let tid = load::<u32>(task, off!(task_pid));
    let comm = off!(task_comm);
    (
        u64::from(tgid) | u64::from(tid) << 32,
        [load::<u64>(task, comm), load::<u64>(task, comm + 8)],
    )
}

/// Slots of [`NETNS`] per CPU, a power of two.
const NETNS_SLOTS: u32 = 64;

/// Namespace inodes by namespace cookie, per CPU, direct-mapped by the
/// cookie's low bits: each slot holds the low half of a cookie in its high
/// half and that namespace's inode in its low half, as one word, so a
/// program that interrupts another on the same CPU never reads half an
/// update.
///
/// Why not read the inode: it shares a cache line with the namespace's
/// reference count, which every socket made or freed in the namespace
/// writes, so under churn the load waits for the line to come back from
/// the other CPU. That wait was a sixth of the state program's time
/// (BENCHMARKS.md, issue 9). The cookie sits on a line nothing writes
/// after the namespace is made, and unlike the `struct net` address it is
/// never reused while the system is up.
#[map]
static NETNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NETNS_SLOTS, 0);

/// The inode of the namespace of the device `skb` (a BTF-typed `struct
/// sk_buff *`, which the verifier makes us check for null) came in on: 0
/// without one (past the first pointer, a bad one reads as zero).
#[inline(always)]
pub fn skb_netns(skb: *const u8) -> u32 {
    if skb.is_null() {
        return 0;
    }
    let dev = load::<*const u8>(skb, off!(skb_dev));
    netns_inum(load::<*const u8>(dev, off!(dev_nd_net)))
}

/// The inode of the namespace `net` (a BTF-typed `struct net *`).
#[inline(always)]
pub fn netns_inum(net: *const u8) -> u32 {
    let inum = || load::<u32>(net, off!(net_inum));
    // The low half of the cookie; 0 when the kernel has no cookie, or (on
    // kernels that made it on first use) the namespace has none yet. 0
    // would match an empty slot, so it reads the inode.
    let at = off!(net_cookie);
    let tag = if at == 0 {
        0
    } else {
        load::<u64>(net, at) as u32
    };
    let slot = if tag != 0 {
        NETNS.get_ptr_mut(tag & (NETNS_SLOTS - 1))
    } else {
        None
    };
    let Some(slot) = slot else {
        return inum();
    };
    // SAFETY: this CPU's slot of a per-CPU map, 8-aligned; a nested
    // program on this CPU writes it only with whole words.
    let known = unsafe { core::ptr::read_volatile(slot) };
    if (known >> 32) as u32 == tag {
        return known as u32;
    }
    let v = inum();
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(slot, u64::from(tag) << 32 | u64::from(v)) };
    v
}

const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// A BTF-typed pointer to a `struct sock`, or to anything that starts with
/// a `struct sock_common` (a timewait or request socket).
#[derive(Clone, Copy)]
pub struct Sock(*const u8);

impl Sock {
    /// No socket.
    pub const NULL: Sock = Sock(core::ptr::null());

    /// Wrap the socket a tracepoint handed us. Fails (counted) when the
    /// agent never filled in the offsets.
    #[inline(always)]
    pub fn new(sk: *const u8) -> Result<Sock, Fail> {
        if off!(magic) as u32 != SockOffsets::MAGIC {
            return Err(Fail::OFFSETS);
        }
        Ok(Sock(sk))
    }

    /// Whether the tracepoint gave no socket.
    #[inline(always)]
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// Send one event about this socket.
    #[inline(always)]
    pub fn emit(self, head: Head) -> Result<(), Fail> {
        emit::emit(head, self.source()?)
    }

    #[inline(always)]
    fn load<T: Copy>(self, off: usize) -> T {
        load(self.0, off)
    }

    /// `sk->sk_err` as the event carries it: the errno, 255 past that.
    /// Only valid on a full socket.
    #[inline(always)]
    pub fn err(self) -> u8 {
        let e = self.load::<i32>(off!(sk_err));
        if (0..255).contains(&e) { e as u8 } else { 255 }
    }

    /// `sk->sk_protocol`. Only valid on a full socket.
    #[inline(always)]
    pub fn protocol(self) -> u16 {
        self.load::<u16>(off!(sk_protocol))
    }

    /// `skc_state`.
    #[inline(always)]
    pub fn state(self) -> u8 {
        self.load::<u8>(off!(skc_state))
    }

    /// The socket cookie, generated on first use; 0 for a NULL socket.
    /// Once generated it never changes, so every event after a socket's
    /// first reads it with one load instead of a helper call.
    #[inline(always)]
    pub fn cookie(self) -> u64 {
        if self.0.is_null() {
            return 0;
        }
        let known = self.load::<u64>(off!(skc_cookie));
        if known != 0 {
            return known;
        }
        self.new_cookie()
    }

    /// Ask the kernel for the socket's cookie, which generates it when the
    /// socket has none yet. Not NULL: callers check.
    #[inline(always)]
    fn new_cookie(self) -> u64 {
        // SAFETY: the BTF-typed socket pointer the tracepoint handed us.
        unsafe { bpf_get_socket_cookie(self.0 as *mut _) }
    }

    /// The cookie of a child socket the listener just cloned, announced in
    /// its move from listen to syn_recv. Kernels before 6.15 (seen:
    /// Debian's 6.1 and 6.12) copy the listener's whole socket, cookie
    /// included, into the child, announce the move, and only then give the
    /// child its peer's port and its own cookie: a cookie set here is the
    /// listener's, and asking for it would return that. The event then
    /// carries 0 ("not known yet"); the child's next event carries its own.
    /// From 6.15 (`inet_csk_clone_lock()`, "inet: consolidate ...") the
    /// kernel fills the child in first. The peer's port tells the two
    /// apart: a listener has none. Whether a cookie is already set does
    /// not: another tracer's program may have just made the child's own.
    #[inline(always)]
    pub fn child_cookie(self) -> u64 {
        if self.0.is_null() || self.load::<u16>(off!(skc_dport)) == 0 {
            0
        } else {
            self.cookie()
        }
    }

    /// The family and the local port: what can fail, read before a slot
    /// is taken.
    #[inline(always)]
    pub fn source(self) -> Result<Source, Fail> {
        let family = self.load::<u16>(off!(skc_family));
        if family != u16::from(FAMILY_INET) && family != u16::from(FAMILY_INET6) {
            return Err(Fail::family(family));
        }
        let state = self.state();
        let num = self.load::<u16>(off!(skc_num));
        // skc_num is the bound port; the kernel zeroes it when it releases
        // the port just before ->close, but a full socket keeps
        // inet_sport. Timewait and request sockets have no inet_sock part,
        // so that field lies outside what the verifier lets us load
        // directly: it takes a helper read, on that one transition only.
        let sport = if num != 0 || state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV {
            num
        } else {
            // SAFETY: the helper checks the address and fails cleanly.
            let p = self.0.wrapping_add(off!(inet_sport)).cast::<u16>();
            u16::from_be(unsafe { bpf_probe_read_kernel(p) }.map_err(|_| Fail::READ)?)
        };
        Ok(Source {
            sk: self,
            family: family as u8,
            sport,
            netns: 0,
        })
    }

    /// Load the remote port, the namespace and both addresses straight
    /// into the event at `ev`. `family` is what [`Sock::source`] read.
    ///
    /// # Safety
    /// `ev` points to a whole, 8-aligned `Event` this program owns.
    #[inline(always)]
    pub unsafe fn fill(self, ev: *mut Event, family: u8) {
        let dport = u16::from_be(self.load::<u16>(off!(skc_dport)));
        let netns = netns_inum(self.load::<*const u8>(off!(skc_net)));
        let saddr = core::mem::offset_of!(Event, saddr);
        let daddr = core::mem::offset_of!(Event, daddr);
        // SAFETY: per the contract; every offset is a field's.
        unsafe {
            put(ev, core::mem::offset_of!(Event, dport), dport);
            put(ev, core::mem::offset_of!(Event, netns), netns);
        }
        if family == FAMILY_INET6 {
            let (s, d) = (off!(skc_v6_rcv_saddr), off!(skc_v6_daddr));
            // SAFETY: as above.
            unsafe {
                put(ev, saddr, self.load::<u64>(s));
                put(ev, saddr + 8, self.load::<u64>(s + 8));
                put(ev, daddr, self.load::<u64>(d));
                put(ev, daddr + 8, self.load::<u64>(d + 8));
            }
        } else {
            let (s, d) = (off!(skc_rcv_saddr), off!(skc_daddr));
            // SAFETY: as above.
            unsafe {
                put(ev, saddr, u64::from(self.load::<u32>(s)));
                put(ev, saddr + 8, 0u64);
                put(ev, daddr, u64::from(self.load::<u32>(d)));
                put(ev, daddr + 8, 0u64);
            }
        }
    }
}
