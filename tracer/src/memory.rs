//! The process's allocator: the system's, asking for transparent huge pages
//! on the engine's big tables.
//!
//! The engine's tables (the record slab and the two indexes) reach tens of
//! MiB on a busy host, and every event looks a socket up in them at a
//! random place. With 4 KiB pages nearly every such lookup also misses the
//! TLB, and in a virtual machine a TLB miss walks two sets of page tables.
//! Backed by 2 MiB pages the same tables need a few dozen TLB entries
//! instead of thousands: at 10,000 conn/s the agent's user CPU per event
//! fell by about a seventh (BENCHMARKS.md, issue 9).
//!
//! Most distributions set `/sys/kernel/mm/transparent_hugepage/enabled` to
//! `madvise`, which gives huge pages only to memory that asks with
//! `madvise(MADV_HUGEPAGE)`. The tables ask when they grow: the store makes
//! room inside [`huge`], and [`HugeTables`] advises the whole 2 MiB pages
//! of what is allocated there. With `never` the request does nothing, and
//! with `always` every allocation gets huge pages anyway: the host's
//! setting stays the operator's.
//!
//! Nothing else asks. Advising every big allocation was tried: the
//! short-lived ones (a dump's sockets, a response) then took huge pages
//! too, fresh ones at each dump, which glibc's heap kept resident after the
//! free; peak resident memory rose by a third.
//!
//! The binary installs the allocator (`src/main.rs`); the library does not,
//! so that tests and benches keep their own counting allocators, and
//! [`huge`] is then only a scope.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The huge page size on x86-64 and on arm64 with 4 KiB pages.
const HUGE_PAGE: usize = 2 << 20;

thread_local! {
    /// Inside [`huge`] on this thread.
    static ASKING: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, asking for huge pages on what it allocates (see the module
/// docs). For the growth of a table that lasts.
pub fn huge<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the flag back as it was, also when `f` unwinds.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ASKING.set(self.0);
        }
    }
    let _restore = Restore(ASKING.replace(true));
    f()
}

/// Whether this thread is inside [`huge`]; false while the thread exits.
fn asking() -> bool {
    ASKING.try_with(Cell::get).unwrap_or(false)
}

/// [`System`], plus `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages of
/// every allocation made inside [`huge`]. See the module docs.
pub struct HugeTables;

// SAFETY: every call is forwarded to `System` unchanged; the advice only
// marks memory that the allocation owns, and never fails the allocation.
unsafe impl GlobalAlloc for HugeTables {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { System.alloc(layout) };
        if asking() {
            advise(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if asking() {
            advise(p, layout.size());
        }
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
        if asking() {
            advise(p, new_size);
        }
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
    fn a_big_allocation_is_backed_by_huge_pages_when_asked_and_the_host_allows() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if !mode.contains("[madvise]") {
            eprintln!("skipped: transparent huge pages are not in madvise mode here");
            return;
        }
        assert!(
            huge_kib_of_a_touched_allocation(true) > 0,
            "asked, and none"
        );
    }

    /// What is allocated outside [`huge`] is not advised. (Not checked
    /// through the pages: memory freed in a range advised before, by
    /// another test's table, keeps the advice when glibc hands it out
    /// again.)
    #[test]
    fn only_allocations_inside_huge_ask() {
        assert!(!asking());
        huge(|| {
            assert!(asking());
            huge(|| assert!(asking()));
            assert!(asking(), "a nested scope leaves the outer one asking");
        });
        assert!(!asking());
        std::thread::spawn(|| huge(|| ())).join().unwrap();
        assert!(!asking(), "another thread's scope is its own");
        let unwound = std::panic::catch_unwind(|| huge(|| panic!("inside the scope")));
        assert!(unwound.is_err());
        assert!(!asking(), "a scope left by a panic is closed");
    }

    /// Allocate 64 MiB (inside [`huge`] or not), touch the first 8 MiB of
    /// its whole huge pages, and return how much of that huge pages back.
    /// 64 MiB is past glibc's largest mmap threshold (32 MiB), so the memory
    /// is a fresh mapping: memory reused from the heap may have been
    /// faulted in with small pages already, which advice does not change.
    fn huge_kib_of_a_touched_allocation(asked: bool) -> u64 {
        let layout = Layout::from_size_align(64 * M, 8).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let alloc = || unsafe { HugeTables.alloc(layout) };
        let p = if asked { huge(alloc) } else { alloc() };
        assert!(!p.is_null());
        let (start, _) = huge_span(p as usize, 64 * M).unwrap();
        let len = 8 * M;
        for off in (0..len).step_by(4096) {
            // SAFETY: inside the allocation (its whole huge pages start
            // less than 2 MiB in, and span at least 62 MiB).
            unsafe { (start as *mut u8).add(off).write_volatile(1) };
        }
        let kib = anon_huge_kib(start, len);
        // SAFETY: allocated above with this layout.
        unsafe { HugeTables.dealloc(p, layout) };
        kib
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
