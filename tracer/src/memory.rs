//! The process's allocator: the system's, asking for transparent huge pages
//! on the big tables.
//!
//! The engine's tables (the record slab, the cookie indexes, the timer
//! queue) reach tens of MiB on a busy host, and every event looks a socket
//! up in them at a random place. With 4 KiB pages nearly every such lookup
//! also misses the TLB, and in a virtual machine a TLB miss walks two sets
//! of page tables. Backed by 2 MiB pages the same tables need a few hundred
//! TLB entries instead of thousands: at 10,000 conn/s the agent's user CPU
//! per event fell by about a fifth (BENCHMARKS.md, issue 9).
//!
//! Most distributions set `/sys/kernel/mm/transparent_hugepage/enabled` to
//! `madvise`, which gives huge pages only to memory that asks with
//! `madvise(MADV_HUGEPAGE)`. [`HugeTables`] asks, for each allocation big
//! enough to hold a whole aligned 2 MiB page, over the aligned part. Small
//! allocations are left alone, so memory that is mostly empty never takes a
//! whole huge page. With `never` the request does nothing, and with
//! `always` every allocation gets huge pages anyway: the host's setting
//! stays the operator's.
//!
//! Only memory of its own mapping is advised. glibc serves big allocations
//! from the heap once big ones have been freed (its mmap threshold rises
//! to the largest freed, up to 32 MiB), and a huge page advised there stays
//! resident, whole, after the allocation is freed: the agent's peak
//! resident memory rose by a third that way. [`HugeTables::init`] pins the
//! threshold at 2 MiB instead, so every allocation big enough to be
//! advised has a mapping of its own, given back whole when it is freed.
//!
//! The binary installs it (`src/main.rs`); the library does not, so that
//! tests and benches keep their own counting allocators.
use std::alloc::{GlobalAlloc, Layout, System};

/// The huge page size on x86-64 and on arm64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

/// [`System`], plus `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages of
/// every allocation that spans one. See the module docs.
pub struct HugeTables;

impl HugeTables {
    /// Give every allocation of 2 MiB or more a mapping of its own (see
    /// the module docs). Call once, first thing in `main`.
    pub fn init() {
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only changes glibc's thresholds; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HUGE_PAGE as libc::c_int);
        }
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the advice only
// marks memory that the allocation owns, and never fails the allocation.
unsafe impl GlobalAlloc for HugeTables {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        // A block that grew past a huge page, or moved, needs the advice
        // (again): `mremap` keeps it, a copy to a new mapping does not.
        advise(p, new_size);
        p
    }
}

/// The whole huge pages inside `len` bytes at `p`, as (start, length), or
/// `None` when there is none.
fn huge_span(p: usize, len: usize) -> Option<(usize, usize)> {
    let start = p.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let end = p.checked_add(len)? & !(HUGE_PAGE - 1);
    (end > start).then(|| (start, end - start))
}

/// Ask for huge pages over the whole 2 MiB pages of a new allocation. A
/// hint: a kernel without transparent huge pages refuses it (`EINVAL`),
/// which changes nothing, so the result is not checked.
fn advise(p: *mut u8, len: usize) {
    if p.is_null() || len < HUGE_PAGE {
        return;
    }
    if let Some((start, len)) = huge_span(p as usize, len) {
        // SAFETY: the range lies inside an allocation the caller now owns;
        // MADV_HUGEPAGE changes how it is backed, never its contents.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = 1 << 20;

    #[test]
    fn only_whole_aligned_huge_pages_are_advised() {
        // Aligned start, three whole pages.
        assert_eq!(huge_span(4 * M, 6 * M), Some((4 * M, 6 * M)));
        // Unaligned at both ends: the whole pages inside, no more.
        assert_eq!(huge_span(4 * M + 16, 6 * M), Some((6 * M, 4 * M)));
        // Spans a boundary but holds no whole page.
        assert_eq!(huge_span(3 * M, 2 * M), None);
        assert_eq!(huge_span(4 * M + 1, 2 * M), None);
        // No overflow at the top of the address space.
        assert_eq!(huge_span(usize::MAX - M, 4 * M), None);
    }

    #[test]
    fn a_big_allocation_is_backed_by_huge_pages_when_the_host_allows() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !mode.contains("[madvise]") {
            eprintln!("skipped: transparent huge pages are not in madvise mode here");
            return;
        }
        let layout = Layout::from_size_align(16 * M, 8).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let p = unsafe { HugeTables.alloc_zeroed(layout) };
        assert!(!p.is_null());
        let (start, len) = huge_span(p as usize, 16 * M).unwrap();
        // Touch every page, then ask the kernel how the range is backed.
        for off in (0..16 * M).step_by(4096) {
            // SAFETY: inside the allocation.
            unsafe { p.add(off).write_volatile(1) };
        }
        let huge = anon_huge_kib(start, len);
        // SAFETY: allocated above with this layout.
        unsafe { HugeTables.dealloc(p, layout) };
        assert!(
            huge > 0,
            "no huge page backs a 16 MiB allocation advised with MADV_HUGEPAGE"
        );
    }

    /// `AnonHugePages` of the mappings of this process that overlap
    /// `[start, start + len)`, in KiB.
    fn anon_huge_kib(start: usize, len: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo < start + len && start < hi;
            } else if inside && let Some(v) = line.strip_prefix("AnonHugePages:") {
                kib += v
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
        kib
    }
}
