//! The event lanes, the error counters, and the one way events leave the kernel.
//!
//! [`emit`] takes the next slot of its CPU's lane of `EVENTS` (see
//! `tracer_common::Slot`), writes each field of the event once, and commits
//! it: nothing is built on the stack and copied, nothing is zeroed that is
//! written anyway, and no lock or cache line is shared with another CPU.
use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg},
    mem::offset_of,
};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, PerCpuArray},
};
use aya_log_ebpf::{error, warn};
use tracer_common::{
    ABI_VERSION, COUNTER_READ_ERROR, COUNTER_RINGBUF_FULL, COUNTER_SLOTS, Event, FAMILY_NONE,
    KIND_STATE, LaneHead, LaneLayout, Slot,
};

use crate::sock::{self, Sock};

/// Two lanes per CPU, each a `LaneHead` and its slots, laid out as
/// `LANE_LAYOUT` says. The agent sizes it at load time (`--ring-bytes`) and
/// maps it into its memory.
#[map]
static EVENTS: Array<Slot> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Where the lanes lie in `EVENTS`. Set by the agent at load time.
#[unsafe(no_mangle)]
static LANE_LAYOUT: LaneLayout = LaneLayout {
    state_slots: 0,
    other_slots: 0,
    other_base: 0,
    state_alone: 0,
};

/// Per-CPU failure counters, indexed by `tracer_common::COUNTER_*`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Why an event was not sent. Each is counted; none is silent.
///
/// Two plain words rather than an enum with a payload: LLVM may read an
/// enum's unused payload register, which the verifier refuses.
#[derive(Clone, Copy)]
pub struct Fail {
    code: u32,
    detail: u32,
}

impl Fail {
    /// The agent did not fill in `SOCK_OFFSETS`.
    pub const OFFSETS: Fail = Fail { code: 0, detail: 0 };
    /// A helper read of kernel memory failed.
    pub const READ: Fail = Fail { code: 1, detail: 0 };
    /// The CPU's lane of `EVENTS` had no room.
    pub const RING_FULL: Fail = Fail { code: 3, detail: 0 };

    /// The socket's address family is neither IPv4 nor IPv6.
    #[inline(always)]
    pub fn family(family: u16) -> Fail {
        Fail {
            code: 2,
            detail: u32::from(family),
        }
    }

    /// Count it in its `COUNTERS` slot.
    #[inline(always)]
    fn count(self) {
        let slot = if self.code == Fail::RING_FULL.code {
            COUNTER_RINGBUF_FULL
        } else {
            COUNTER_READ_ERROR
        };
        if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *ptr += 1 };
        }
    }
}

/// Whose context the hook runs in, which decides whether the current task
/// is worth recording.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A syscall of the socket's owner: record pid, tid and comm.
    Owner,
    /// Softirq or a timer: the current task is whoever was interrupted.
    /// Leave pid, tid and comm zero (reading comm is a third of what an
    /// event otherwise costs).
    Unrelated,
}

/// What an event says, apart from the socket it reads.
pub struct Head {
    /// One of `tracer_common::KIND_*`.
    pub kind: u8,
    /// State before a state change; 0 otherwise.
    pub old_state: u8,
    /// State after a state change, or the socket's state.
    pub new_state: u8,
    /// A change to `close`: the socket's `sk_err`; 0 otherwise.
    pub err: u8,
    /// The socket cookie.
    pub cookie: u64,
    /// Whose task the hook runs in.
    pub task: Task,
}

/// The socket an event is about, as far as it is read before a slot is
/// taken: what can fail (the family, the helper read of the local port).
/// The rest of the tuple is loaded straight into the slot
/// ([`Sock::fill`]), so nothing is built on the stack and copied.
///
/// Always built whole (never an `Option`): LLVM reads the payload of a
/// `None` as well, from a stack slot nothing wrote, which Linux 6.1's
/// verifier refuses.
#[derive(Clone, Copy)]
pub struct Source {
    /// The socket; read only when `family` is not `FAMILY_NONE`.
    pub sk: Sock,
    /// `FAMILY_INET`, `FAMILY_INET6`, or `FAMILY_NONE` for no socket.
    pub family: u8,
    /// Local port, host order.
    pub sport: u16,
    /// With no socket: the namespace the event happened in, when known
    /// otherwise (0 when not); with a socket, the socket's is read.
    pub netns: u32,
}

impl Source {
    /// No socket: family `FAMILY_NONE`, and every field of the tuple zero.
    pub const NONE: Source = Source {
        sk: Sock::NULL,
        family: FAMILY_NONE,
        sport: 0,
        netns: 0,
    };
}

/// Write `v` at byte `at` of the event at `ev`.
///
/// # Safety
/// `ev` points to a whole `Event`, and `at` is the offset of a field of
/// type `T`.
#[inline(always)]
pub unsafe fn put<T>(ev: *mut Event, at: usize, v: T) {
    // SAFETY: per the contract; Event is 8-aligned and so is every field
    // offset a u64 is written at. Volatile, so LLVM does not merge adjacent
    // zero stores into a call to a byte-at-a-time memset.
    unsafe { ev.cast::<u8>().add(at).cast::<T>().write_volatile(v) }
}

/// Take the next index of a lane: the index, or `None` when the lane is
/// full.
///
/// When `alone`, no other program writes this lane on this CPU while this
/// one runs (`LaneLayout::state_alone`): a plain store takes the index.
/// Otherwise a compare-and-swap does, rather than an add, so a full lane is
/// left as it was; it fails only when another program on this CPU
/// interrupted this one between the load and the swap and took the index
/// first. The swap is a locked instruction, about 9 ns of the state
/// program's time (BENCHMARKS.md, issue 9).
///
/// The BPF target offers atomics only as intrinsics (`core::sync::atomic`
/// has no read-modify-write there); LLVM emits `BPF_CMPXCHG` (Linux 5.12).
#[inline(always)]
fn reserve(head: *mut LaneHead, slots: u64, alone: bool) -> Option<u64> {
    // SAFETY: `head` points into the lane's map value, 8-aligned. Only
    // the programs of this CPU write `reserved`, through the store or the
    // swap below; user space writes `consumed`, we only read it.
    unsafe {
        let reserved = &raw mut (*head).reserved;
        let i = core::ptr::read_volatile(reserved);
        let consumed = core::ptr::read_volatile(&raw const (*head).consumed);
        if i.wrapping_sub(consumed) >= slots {
            return None;
        }
        if alone {
            core::ptr::write_volatile(reserved, i + 1);
            return Some(i);
        }
        let (_, swapped) = atomic_cxchg::<
            u64,
            { AtomicOrdering::SeqCst },
            { AtomicOrdering::Relaxed },
        >(reserved, i, i + 1);
        swapped.then_some(i)
    }
}

/// Commit slot `i` of a lane, whose event is written: store `i + 1` into
/// its `seq`, after every store of the event.
///
/// # Safety
/// `seq` is the 8-aligned `seq` of the slot this program reserved.
#[inline(always)]
unsafe fn commit(seq: *mut u64, i: u64) {
    // x86-64 keeps stores in program order (TSO) and the JIT turns each BPF
    // store into one store, so a plain store after the event's is a
    // release. A locked exchange would be one too, but it also waits for
    // the slot's cache line, which the reader on another CPU held last:
    // about 40 ns of the program's ~320 (BENCHMARKS.md, issue 9).
    #[cfg(bpf_target_arch = "x86_64")]
    // SAFETY: per the contract.
    unsafe {
        core::ptr::write_volatile(seq, i + 1)
    };
    // Elsewhere stores may pass one another: a full barrier (`BPF_XCHG`,
    // Linux 5.12).
    #[cfg(not(bpf_target_arch = "x86_64"))]
    // SAFETY: per the contract.
    unsafe {
        core::intrinsics::atomic_xchg::<u64, { AtomicOrdering::SeqCst }>(seq, i + 1)
    };
}

/// Send one event about the socket `src`.
#[inline(always)]
pub fn emit(head: Head, src: Source) -> Result<(), Fail> {
    // SAFETY: reads of a global the loader wrote; volatile so the compiler
    // does not fold the zero initializer.
    let (slots, base, alone) = unsafe {
        let layout = &raw const LANE_LAYOUT;
        if head.kind == KIND_STATE {
            (
                core::ptr::read_volatile(&raw const (*layout).state_slots),
                0,
                core::ptr::read_volatile(&raw const (*layout).state_alone) != 0,
            )
        } else {
            (
                core::ptr::read_volatile(&raw const (*layout).other_slots),
                core::ptr::read_volatile(&raw const (*layout).other_base),
                false,
            )
        }
    };
    // SAFETY: a helper without arguments.
    let lane = base + unsafe { bpf_get_smp_processor_id() } * (slots + 1);
    let Some(lane_head) = EVENTS.get_ptr_mut(lane) else {
        return Err(Fail::RING_FULL);
    };
    let lane_head = lane_head.cast::<LaneHead>();
    // Two tries: the second covers a program that interrupted this one.
    let Some(i) = reserve(lane_head, u64::from(slots), alone)
        .or_else(|| reserve(lane_head, u64::from(slots), alone))
    else {
        return Err(Fail::RING_FULL);
    };
    // In range whenever the lane's head is: the loader sizes the map to
    // whole lanes. Were it not, the index would never commit and user
    // space would see the lane stall, so it is checked, not assumed.
    let Some(slot) = EVENTS.get_ptr_mut(lane + 1 + (i as u32 & (slots - 1))) else {
        return Err(Fail::RING_FULL);
    };
    // SAFETY: `slot` is the map value of one whole, 8-aligned Slot that
    // this program alone owns until it commits it.
    let ev = unsafe { &raw mut (*slot).event };
    // SAFETY: `ev` is the slot's 8-aligned Event; every offset below is a
    // field's.
    unsafe {
        // kind, version, family, old_state, new_state and the padding, as
        // one little-endian word.
        let word = u64::from(head.kind)
            | u64::from(ABI_VERSION) << 8
            | u64::from(src.family) << 16
            | u64::from(head.old_state) << 24
            | u64::from(head.new_state) << 32
            | u64::from(head.err) << 40;
        put(ev, 0, word);
        put(ev, offset_of!(Event, cookie), head.cookie);
        put(ev, offset_of!(Event, sport), src.sport);
        if src.family == FAMILY_NONE {
            put(ev, offset_of!(Event, dport), 0u16);
            put(ev, offset_of!(Event, netns), src.netns);
            for at in (offset_of!(Event, saddr)..offset_of!(Event, comm)).step_by(8) {
                put(ev, at, 0u64);
            }
        } else {
            src.sk.fill(ev, src.family);
        }
        let comm = offset_of!(Event, comm);
        if head.task == Task::Owner {
            let (pid, name) = sock::current_task();
            put(ev, offset_of!(Event, pid), pid);
            put(ev, comm, name[0]);
            put(ev, comm + 8, name[1]);
        } else {
            put(ev, offset_of!(Event, pid), 0u64);
            put(ev, comm, 0u64);
            put(ev, comm + 8, 0u64);
        }
        // The clock last, right before the commit: an event is stamped
        // when it is whole, so the reader, which merges the lanes by stamp
        // and leaves the last millisecond for its next drain, never finds
        // a slot committed long after the stamp it carries.
        put(ev, offset_of!(Event, ts_ns), bpf_ktime_get_ns());
        commit(&raw mut (*slot).seq, i);
    }
    Ok(())
}

/// Per-CPU time of the last diagnostic sent through aya-log, so a failure
/// that repeats on every event logs once a second per CPU at most.
#[map]
static LOG_GATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// At most one diagnostic per this many nanoseconds per CPU.
const LOG_EVERY_NS: u64 = 1_000_000_000;

/// Run a hook body; count its failure, and say why through aya-log
/// (rate-limited). Every entry point ends here. The counter says how often,
/// the log says why; neither is on the path of an event that succeeds.
#[inline(always)]
pub fn finish<C: EbpfContext>(ctx: &C, hook: Hook, r: Result<(), Fail>) -> i32 {
    if let Err(e) = r {
        e.count();
        diagnose(ctx, hook as u32, e.code, e.detail);
    }
    0
}

/// Which hook failed, for the diagnostic: an index into
/// `tracer_common::names::HOOKS`, which the agent turns back into a name.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Hook {
    /// `sock:inet_sock_set_state`.
    State,
    /// `tcp:tcp_retransmit_skb`.
    Retransmit,
    /// `tcp:tcp_retransmit_synack`.
    SynackRetransmit,
    /// `tcp:tcp_send_reset`.
    ResetSent,
    /// `tcp:tcp_receive_reset`.
    ResetReceived,
}

/// Say why, rate-limited. Out of line: the events that succeed never run it.
#[inline(never)]
fn diagnose<C: EbpfContext>(ctx: &C, hook: u32, code: u32, detail: u32) {
    let Some(last) = LOG_GATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a helper without arguments; a per-CPU slot with no
    // concurrent writer on this CPU.
    unsafe {
        let now = bpf_ktime_get_ns();
        if *last != 0 && now.wrapping_sub(*last) < LOG_EVERY_NS {
            return;
        }
        *last = now;
    }
    match code {
        0 => error!(
            ctx,
            "hook {}: the agent did not fill in the socket offsets; no event is sent", hook
        ),
        1 => warn!(
            ctx,
            "hook {}: a kernel read failed (inet_sock.inet_sport); the event was dropped", hook
        ),
        2 => warn!(
            ctx,
            "hook {}: socket address family {} is neither IPv4 nor IPv6; the event was dropped",
            hook,
            detail
        ),
        _ => warn!(
            ctx,
            "hook {}: the event ring buffer is full; events are dropped until user space catches up",
            hook
        ),
    }
}
