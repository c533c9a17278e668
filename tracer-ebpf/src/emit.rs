//! The ring buffer, the error counters, and the one way events leave the kernel.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use tracer_common::{ABI_VERSION, COUNTER_RINGBUF_FULL, COUNTER_SLOTS, Event};

/// Default size; the agent resizes it at load time (`--ring-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Wake user space only once this many bytes wait in the ring buffer; below
/// it, records are written without a wake-up and the agent collects them on
/// its drain interval. 0 keeps the kernel's default (wake when the reader
/// has caught up). Set by the agent at load time.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// Per-CPU failure counters, indexed by `tracer_common::COUNTER_*`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Add one to a `COUNTER_*` slot.
#[inline(always)]
pub fn count(slot: u32) {
    if let Some(ptr) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *ptr += 1 };
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

/// Stamp the header (and the current task, for [`Task::Owner`]) into `ev`,
/// then send it.
#[inline(always)]
pub fn send(ev: &mut Event, kind: u8, task: Task) {
    ev.kind = kind;
    ev.version = ABI_VERSION;
    // SAFETY: helpers with no pointer arguments.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    if task == Task::Owner {
        let pid_tgid = bpf_get_current_pid_tgid();
        ev.pid = (pid_tgid >> 32) as u32;
        ev.tid = pid_tgid as u32;
        if let Ok(comm) = bpf_get_current_comm() {
            ev.comm = comm;
        }
    }
    // SAFETY: a read of a global the loader wrote; volatile so the compiler
    // does not fold the zero initializer.
    let wakeup = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    let flags = if wakeup == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    };
    if EVENTS.output::<Event>(&*ev, flags).is_err() {
        count(COUNTER_RINGBUF_FULL);
    }
}
