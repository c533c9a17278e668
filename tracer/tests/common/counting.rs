//! The one counting global allocator, for tests and benches that measure
//! the heap: live bytes, their high-water mark and allocation calls of the
//! whole process, and allocation calls of threads that opted in. It
//! forwards every call to the system allocator unchanged.
//!
//! A user installs it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The counting allocator.
pub struct Counting;

/// Live heap bytes of the process.
pub static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The high-water mark of [`LIVE`]; a user resets it to start a window.
pub static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Successful allocation calls of the process.
pub static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set by a thread to count its own allocation calls in [`ALLOCS`].
    pub static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocation calls this thread made while [`COUNTING`] was set.
    pub static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            CALLS.fetch_add(1, Ordering::Relaxed);
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
