//! The wire format between the kernel programs and the agent.
//!
//! Everything here is plain `#[repr(C)]` data with fixed-width fields, so the
//! eBPF object and the user-space decoder agree byte for byte. Layouts are
//! asserted at compile time; changing one means bumping [`ABI_VERSION`].
#![no_std]

/// Version written into every [`Event`]; the decoder rejects any other.
pub const ABI_VERSION: u8 = 3;

/// `Event::kind`: a TCP state change (`sock:inet_sock_set_state`).
pub const KIND_STATE: u8 = 1;
/// `Event::kind`: a data segment was retransmitted (`tcp:tcp_retransmit_skb`).
pub const KIND_RETRANSMIT: u8 = 2;
/// `Event::kind`: a SYN-ACK was retransmitted (`tcp:tcp_retransmit_synack`).
pub const KIND_SYNACK_RETRANSMIT: u8 = 3;
/// `Event::kind`: this host sent a RST (`tcp:tcp_send_reset`).
pub const KIND_RESET_SENT: u8 = 4;
/// `Event::kind`: this host received a RST (`tcp:tcp_receive_reset`).
pub const KIND_RESET_RECEIVED: u8 = 5;

/// `AF_INET`, as stored in `Event::family`.
pub const FAMILY_INET: u8 = 2;
/// `AF_INET6`, as stored in `Event::family`.
pub const FAMILY_INET6: u8 = 10;
/// `Event::family` when the kernel gave no socket (a RST answering a segment
/// that matched no socket); addresses and ports are zero.
pub const FAMILY_NONE: u8 = 0;

/// One event, as the kernel programs write it into a slot of `EVENTS`.
///
/// Addresses are in network byte order (an IPv4 address fills the first four
/// bytes); ports are in host byte order. `pid` is the thread-group id and
/// `tid` the thread id of the task that was running when the hook fired.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// One of the `KIND_*` constants.
    pub kind: u8,
    /// Always [`ABI_VERSION`].
    pub version: u8,
    /// `FAMILY_INET`, `FAMILY_INET6` or `FAMILY_NONE`.
    pub family: u8,
    /// Kernel `TCP_*` state before a state change; 0 for other kinds.
    pub old_state: u8,
    /// Kernel `TCP_*` state after a state change; for other kinds, the
    /// socket's state when the event fired.
    pub new_state: u8,
    /// A state change to `close`: the socket's `sk_err` then (the errno a
    /// failed `connect()` returns: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH,
    /// ...), 0 when none; 0 for other changes and kinds.
    pub err: u8,
    /// Explicit padding; always zero.
    pub pad0: [u8; 2],
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// The socket cookie (`ss -e` shows it as `sk:<hex>`); 0 when unknown.
    pub cookie: u64,
    /// Thread-group id of the current task.
    pub pid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    /// Local port, host byte order.
    pub sport: u16,
    /// Remote port, host byte order.
    pub dport: u16,
    /// Inode number of the socket's network namespace (what
    /// `stat -L -c %i /proc/<pid>/ns/net` prints); 0 when unknown.
    pub netns: u32,
    /// Local address, network byte order.
    pub saddr: [u8; 16],
    /// Remote address, network byte order.
    pub daddr: [u8; 16],
    /// `comm` of the current task, up to its first NUL (what follows the
    /// NUL means nothing).
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Event>() == 88);
const _: () = assert!(core::mem::align_of::<Event>() == 8);
const _: () = assert!(core::mem::offset_of!(Event, ts_ns) == 8);
const _: () = assert!(core::mem::offset_of!(Event, cookie) == 16);
const _: () = assert!(core::mem::offset_of!(Event, sport) == 32);
const _: () = assert!(core::mem::offset_of!(Event, saddr) == 40);
const _: () = assert!(core::mem::offset_of!(Event, comm) == 72);

impl Event {
    /// An all-zero event, the starting point the kernel programs fill in.
    pub const ZERO: Event = Event {
        kind: 0,
        version: 0,
        family: 0,
        old_state: 0,
        new_state: 0,
        err: 0,
        pad0: [0; 2],
        ts_ns: 0,
        cookie: 0,
        pid: 0,
        tid: 0,
        sport: 0,
        dport: 0,
        netns: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        comm: [0; 16],
    };
}

/// One slot of an event lane: the commit word, then the event.
///
/// The events travel through `EVENTS`, an mmapable array map cut into
/// lanes, two per CPU (see [`LaneLayout`]): one for the state program, which
/// writes nearly every event, and one for the four other hooks. A lane is a
/// [`LaneHead`] followed by a power-of-two number of slots. A program takes
/// the next index `i` of its CPU's lane through `LaneHead::reserved`, writes
/// the event into slot `i mod slots`, and commits it by storing `i + 1` into
/// `seq` after the event's stores (a plain store on x86-64, which keeps
/// stores in order; an atomic exchange elsewhere). User space reads the
/// lanes through a shared mapping, takes slot `i` once its `seq` reads
/// `i + 1`, merges the lanes by the events' timestamps, and hands the slots
/// back by advancing `LaneHead::consumed`. No lock is shared between CPUs
/// and nothing wakes user space: it reads the lanes on its drain interval.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The index of the event in its lane, plus one, once it is written.
    pub seq: u64,
    /// The event.
    pub event: Event,
}

/// The first element of each lane of `EVENTS`, in a slot's place.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneHead {
    /// Indexes the CPU's programs have taken (only they write it).
    pub reserved: u64,
    /// Indexes user space has read and handed back (only it writes it).
    pub consumed: u64,
    /// Up to the size of a slot.
    pub pad: [u64; 10],
}

/// Where the lanes lie in `EVENTS`, as the loader sizes them
/// (`LANE_LAYOUT`, a read-only global).
///
/// First the state program's lanes, CPU by CPU, each a head and
/// `state_slots` slots; then, from element `other_base`, the other hooks'
/// lanes, each a head and `other_slots` slots.
///
/// Why two lanes per CPU: a program nested in another on the same CPU
/// (a softirq's event interrupting a syscall's) must not take the index the
/// interrupted one is taking. On Linux 6.1 and later the kernel never runs
/// a BTF tracepoint program inside itself on one CPU (it skips the run and
/// counts a `recursion_miss`; on x86-64: see `programs_never_nest` in the
/// agent for arm64), so a lane that one program alone writes
/// needs no atomic to take an index: a plain load and store do. That is the
/// state program's lane there (`state_alone`). The other hooks may
/// interrupt one another, and before 6.1 the state program may interrupt
/// itself: those lanes take indexes with a compare-and-swap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneLayout {
    /// Slots per state lane, a power of two.
    pub state_slots: u32,
    /// Slots per lane of the other hooks, a power of two.
    pub other_slots: u32,
    /// The element of `EVENTS` where the other hooks' lanes begin.
    pub other_base: u32,
    /// 1 when the state program is alone on its lane (Linux 6.1+ on x86-64), 0 when
    /// it takes indexes with a compare-and-swap.
    pub state_alone: u32,
}

impl LaneLayout {
    /// Elements of `EVENTS` for `cpus` CPUs.
    pub const fn elements(&self, cpus: u32) -> u32 {
        cpus * (self.state_slots + 1) + cpus * (self.other_slots + 1)
    }
}

const _: () = assert!(core::mem::size_of::<Slot>() == 96);
const _: () = assert!(core::mem::size_of::<LaneHead>() == core::mem::size_of::<Slot>());
const _: () = assert!(core::mem::offset_of!(Slot, event) == 8);

/// Slot in the `COUNTERS` per-CPU array: events dropped because their CPU's
/// lane of `EVENTS` was full.
pub const COUNTER_RINGBUF_FULL: u32 = 0;
/// Slot in `COUNTERS`: an event was not sent because a kernel read failed,
/// or gave a value the programs cannot use (an address family other than
/// IPv4 and IPv6, offsets the agent never filled in).
pub const COUNTER_READ_ERROR: u32 = 1;
/// Number of slots in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = 4;

/// Byte offsets into kernel structures, read from `/sys/kernel/btf/vmlinux`
/// by the agent at load time and handed to the programs as a read-only global
/// (`SOCK_OFFSETS`). Rust eBPF has no CO-RE relocations yet; this replaces them.
///
/// The global lives in a frozen read-only map, so the verifier knows every
/// offset as a constant and checks each load through a BTF-typed socket
/// pointer against the kernel's own type: the programs read kernel memory
/// with plain loads instead of `bpf_probe_read_kernel` calls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    /// Must equal [`SockOffsets::MAGIC`]; the programs refuse to run on zeros.
    pub magic: u32,
    /// `sock_common.skc_daddr` (`__be32`).
    pub skc_daddr: u32,
    /// `sock_common.skc_rcv_saddr` (`__be32`).
    pub skc_rcv_saddr: u32,
    /// `sock_common.skc_dport` (`__be16`).
    pub skc_dport: u32,
    /// `sock_common.skc_num` (`__u16`, host order).
    pub skc_num: u32,
    /// `sock_common.skc_family` (`unsigned short`).
    pub skc_family: u32,
    /// `sock_common.skc_state` (`volatile unsigned char`).
    pub skc_state: u32,
    /// `sock_common.skc_v6_daddr` (`struct in6_addr`, 8-byte aligned).
    pub skc_v6_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr` (`struct in6_addr`, 8-byte aligned).
    pub skc_v6_rcv_saddr: u32,
    /// `sock.sk_protocol` (`u16`, kernel 5.6 and later).
    pub sk_protocol: u32,
    /// `inet_sock.inet_sport` (`__be16`). Unlike `skc_num`, it survives the
    /// port release that precedes the move to `close`.
    pub inet_sport: u32,
    /// `sock_common.skc_net`: a `possible_net_t`, whose first (only) member
    /// is the `struct net *`.
    pub skc_net: u32,
    /// `struct net` -> `ns.inum`: the namespace's inode number.
    pub net_inum: u32,
    /// `struct net` -> `net_cookie` (`u64`, or `atomic64_t` before Linux
    /// 5.14): the namespace's cookie, which is never reused while the
    /// system is up. 0 when the kernel has none; the programs then read
    /// `ns.inum` on every event.
    pub net_cookie: u32,
    /// `sock_common.skc_cookie` (`atomic64_t`, 8-byte aligned): a cookie
    /// already made is read here, without the helper's call.
    pub skc_cookie: u32,
    /// `sock.sk_err` (`int`): the socket's pending error, read on a change
    /// to `close`.
    pub sk_err: u32,
    /// `task_struct.tgid` (`pid_t`): the owner's process id.
    pub task_tgid: u32,
    /// `task_struct.pid` (`pid_t`): the owner's thread id.
    pub task_pid: u32,
    /// `task_struct.comm` (`char[16]`), read as two 8-byte words.
    pub task_comm: u32,
    /// `sk_buff.dev` (`struct net_device *`): for a reset that answers a
    /// segment no socket matched, the device it came in on.
    pub skb_dev: u32,
    /// `net_device.nd_net`: a `possible_net_t`, like `skc_net`; that
    /// device's namespace, the one the reset is sent from.
    pub dev_nd_net: u32,
}

const _: () = assert!(core::mem::size_of::<SockOffsets>() == 84);

impl SockOffsets {
    /// The value of `magic` in offsets that were really filled in.
    pub const MAGIC: u32 = 0x7472_6372;
}

/// Names shared by the kernel object and the loader.
pub mod names {
    /// The per-CPU lanes every event goes through (see [`super::Slot`]).
    pub const EVENTS: &str = "EVENTS";
    /// The per-CPU error counters, indexed by `COUNTER_*`.
    pub const COUNTERS: &str = "COUNTERS";
    /// The read-only global holding [`super::SockOffsets`].
    pub const SOCK_OFFSETS: &str = "SOCK_OFFSETS";
    /// The read-only global holding [`super::LaneLayout`].
    pub const LANE_LAYOUT: &str = "LANE_LAYOUT";
    /// Each hook as (program name in the object, `subsystem/event`), in the
    /// order of the hook numbers the programs' diagnostics carry.
    pub const HOOKS: [(&str, &str); 5] = [
        ("inet_sock_set_state", "sock/inet_sock_set_state"),
        ("tcp_retransmit_skb", "tcp/tcp_retransmit_skb"),
        ("tcp_retransmit_synack", "tcp/tcp_retransmit_synack"),
        ("tcp_send_reset", "tcp/tcp_send_reset"),
        ("tcp_receive_reset", "tcp/tcp_receive_reset"),
    ];
}

#[cfg(feature = "user")]
// SAFETY: SockOffsets is #[repr(C)], made only of u32s, with no padding.
unsafe impl aya::Pod for SockOffsets {}

#[cfg(feature = "user")]
// SAFETY: LaneLayout is #[repr(C)], made only of u32s, with no padding.
unsafe impl aya::Pod for LaneLayout {}
