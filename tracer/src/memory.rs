//! Hints about memory to the CPU. On a busy host the engine's store spans
//! tens of MiB touched at random (a cookie's index entry, a record a
//! minute old), and the event lanes are written by the kernel on other
//! CPUs, so what an event costs is mostly the wait for memory: for the
//! cache line, and before that for the address translation, which in a VM
//! walks two page tables.
//!
//! - [`prefetch`]: ask for a line before it is read, where the reader knows
//!   what it reads next: the next slots of an event lane, the next
//!   TIME_WAIT timers, the next finished records to drop, and each event's
//!   index entries a few events before it is applied
//!   (`Engine::prefetch`, called by the pipeline's `Batch`).
//!
//! - [`huge`]: back what is resident with huge pages, from a thread of its
//!   own (`MADV_COLLAPSE`), so fewer of those reads miss the TLB. Asking at
//!   allocation (`MADV_HUGEPAGE`) was tried and not kept: while the store
//!   grows, each 2 MiB page is zeroed (and compacted for) at its first
//!   touch, on the event loop, and a fresh agent at peak churn spent about
//!   15% more per event and lost events.

pub mod huge;

/// Ask the CPU to bring the cache line holding the start of `*p` into its
/// caches; a hint, a no-op where the target has no such instruction.
#[inline]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault, whatever the
    // address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// [`prefetch`] every cache line `*p` spans (a value that straddles more
/// lines than its size suggests included).
#[inline]
pub(crate) fn prefetch_all<T>(p: *const T) {
    let bytes = p.cast::<u8>();
    for off in (0..size_of::<T>())
        .step_by(64)
        .chain([size_of::<T>().saturating_sub(1)])
    {
        prefetch(bytes.wrapping_add(off));
    }
}
