//! Hints about memory, to the CPU and to the kernel. On a busy host the
//! engine's store spans tens of MiB touched at random (a cookie's index
//! entry, a record a minute old), and the event lanes are written by the
//! kernel on other CPUs, so what an event costs is mostly the wait for
//! memory: for the cache line, and before that for the address
//! translation, which in a VM walks two page tables.
//!
//! - [`prefetch`]: ask for a line before it is read, where the reader knows
//!   what it reads next: the next slots of an event lane, the next
//!   TIME_WAIT timers, the next finished records to drop. (Asking for each
//!   event's index entries a few events ahead of applying it was tried
//!   too, and measured no gain.)
//! - [`advise_huge`]: back the big arrays with 2 MiB pages where the
//!   kernel allows it (`transparent_hugepage` set to `madvise` or
//!   `always`), so that one TLB entry covers 512 times the memory. Where it
//!   does not, nothing changes.

/// Ask the CPU to bring the cache line holding `r` into its caches; a
/// hint, a no-op where the target has no such instruction.
#[inline]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault; `r` is a valid
    // reference anyway.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// Huge pages start at this size: smaller arrays fit the TLB anyway.
const HUGE: usize = 2 << 20;

/// Ask the kernel to back the whole capacity of `v` with huge pages: the
/// 2 MiB-aligned part of it, best before it is first written (a page
/// already faulted in is only merged later, if ever). Errors are ignored:
/// it is advice, and a kernel without transparent huge pages refuses it.
pub(crate) fn advise_huge<T>(v: &Vec<T>) {
    let bytes = v.capacity() * size_of::<T>();
    if bytes < HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let (from, to) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
    if to > from {
        // SAFETY: the range lies within `v`'s allocation, and MADV_HUGEPAGE
        // changes how its pages are backed, never what they hold.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}
