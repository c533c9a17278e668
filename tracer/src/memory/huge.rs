//! Huge pages for the agent's big tables, collapsed from a thread of its
//! own once the tables are resident.
//!
//! The engine's store is tens of MiB read at random, and in a VM each TLB
//! miss walks two page tables: with 4 KiB pages, most of what a running
//! agent spends per event is that walk (see the module above). On hosts
//! whose transparent huge pages are in `madvise` mode (Debian's and
//! Ubuntu's default) the agent's memory gets none unless it asks.
//!
//! Asking when memory is allocated (`MADV_HUGEPAGE`) was tried and not
//! kept: each 2 MiB page is then zeroed, and compacted for, at its first
//! touch, on the event loop, while the store grows. Here a thread asks
//! `MADV_COLLAPSE` (Linux 6.1) for each 2 MiB chunk of the process's
//! private anonymous memory that is already resident but for at most
//! [`SPARSE_MAX`] pages: the kernel copies the chunk into a huge page in
//! this thread, and the event loop waits only if it touches that chunk
//! during the copy. A chunk that is mostly unused is left alone, so the
//! agent's resident memory grows by at most [`SPARSE_MAX`] pages a chunk.
//! A chunk already huge costs a pass a `mincore` and a `madvise` that
//! finds it so.
//!
//! - The first pass comes [`FIRST_PASS`] after start, one TIME_WAIT
//!   lifetime: by then the store holds every socket the churn keeps alive
//!   and its tables have stopped growing, so chunks copied are not
//!   reallocated soon after. Then one every [`PASS`].
//! - The copy is the cost: 9–13 ms of CPU per chunk in the 2-vCPU VM the
//!   project is measured in (0.3–0.45 s for the 66 MiB of an agent at
//!   10,000 connections a second), once per chunk. It saves about 30 ns
//!   per event there (BENCHMARKS.md, "Huge pages collapsed in the
//!   background").
//! - The thread keeps the default priority: the kernel holds the process's
//!   mapping lock while it copies, and at nice 19 single collapses took
//!   25–35 ms of wall time, long enough to hold up the event loop's faults
//!   if it was preempted there.
//!
//! Nothing happens where the host's `transparent_hugepage/enabled` is
//! `never` (the operator's switch), where the process may not have huge
//! pages (`PR_SET_THP_DISABLE`), or on kernels without `MADV_COLLAPSE`.
use std::{io, ops::Range, time::Duration};

/// A huge page.
const HUGE: usize = 2 << 20;
/// A base page.
const PAGE: usize = 4096;
/// Pages of a chunk that may be missing for it to be collapsed: what the
/// collapse may add to the resident memory, per 2 MiB.
pub(crate) const SPARSE_MAX: usize = 8;
/// Time from start to the first pass.
pub(crate) const FIRST_PASS: Duration = Duration::from_secs(60);
/// Time between passes.
pub(crate) const PASS: Duration = Duration::from_secs(10);
/// Pause after each collapse, so the copies come in short bites.
const BITE: Duration = Duration::from_millis(10);

/// Start the collapsing thread, unless huge pages are off for this process
/// or the kernel cannot collapse.
pub fn spawn() {
    if let Some(why) = unavailable() {
        tracing::debug!("no huge pages for the agent's tables: {why}");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("tracer-huge".into())
        .spawn(run);
    if let Err(e) = spawned {
        tracing::debug!("no huge pages for the agent's tables: starting their thread: {e}");
    }
}

/// Why this process gets no huge pages, or `None` when it may.
fn unavailable() -> Option<&'static str> {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    if mode.is_ok_and(|m| m.contains("[never]")) {
        return Some("the host's transparent_hugepage/enabled is never");
    }
    // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
    if unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) } == 1 {
        return Some("they are disabled for this process (PR_SET_THP_DISABLE)");
    }
    // An empty range: the kernel checks the advice and does nothing else.
    // SAFETY: a zero-length madvise touches no memory.
    if unsafe { libc::madvise(HUGE as *mut libc::c_void, 0, libc::MADV_COLLAPSE) } != 0 {
        return Some("the kernel has no MADV_COLLAPSE (Linux 6.1)");
    }
    None
}

fn run() {
    let mut huge = 0;
    std::thread::sleep(FIRST_PASS);
    loop {
        let ranges = match anonymous_ranges() {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("huge pages: reading /proc/self/maps: {e}; stopping");
                return;
            }
        };
        let n = collapse(&ranges, BITE);
        if n != huge {
            tracing::debug!(
                "{} MiB of the agent's memory in huge pages",
                (n * HUGE) >> 20
            );
            huge = n;
        }
        std::thread::sleep(PASS);
    }
}

/// The private, writable, anonymous mappings of this process, the heap
/// included.
fn anonymous_ranges() -> procfs::ProcResult<Vec<Range<usize>>> {
    use procfs::process::{MMPermissions, MMapPath, Process};
    let want = MMPermissions::READ | MMPermissions::WRITE | MMPermissions::PRIVATE;
    Ok(Process::myself()?
        .maps()?
        .into_iter()
        .filter(|m| {
            m.perms.contains(want) && matches!(m.pathname, MMapPath::Anonymous | MMapPath::Heap)
        })
        .map(|m| m.address.0 as usize..m.address.1 as usize)
        .collect())
}

/// Collapse every 2 MiB chunk within `ranges` that is resident but for at
/// most [`SPARSE_MAX`] pages, pausing `bite` after each; returns how many
/// chunks are huge pages now (collapsed now or before).
pub(crate) fn collapse(ranges: &[Range<usize>], bite: Duration) -> usize {
    let mut huge = 0;
    let mut resident = [0u8; HUGE / PAGE];
    for r in ranges {
        let mut chunk = r.start.next_multiple_of(HUGE);
        while chunk.saturating_add(HUGE) <= r.end {
            if dense(chunk, &mut resident) && collapse_chunk(chunk).is_ok() {
                huge += 1;
                std::thread::sleep(bite);
            }
            chunk += HUGE;
        }
    }
    huge
}

/// Whether the chunk at `at` is resident but for at most [`SPARSE_MAX`]
/// pages (false when it is not mapped any more).
fn dense(at: usize, resident: &mut [u8; HUGE / PAGE]) -> bool {
    // SAFETY: mincore only reads the page tables of the range, and writes
    // one byte per page into `resident`, which has one per page of it.
    let r = unsafe { libc::mincore(at as *mut libc::c_void, HUGE, resident.as_mut_ptr()) };
    r == 0 && resident.iter().filter(|&&b| b & 1 == 0).count() <= SPARSE_MAX
}

/// Ask the kernel to back the chunk at `at` with a huge page.
fn collapse_chunk(at: usize) -> io::Result<()> {
    // SAFETY: MADV_COLLAPSE keeps the contents: it copies the chunk's
    // pages into a huge page and maps it in their place.
    let r = unsafe { libc::madvise(at as *mut libc::c_void, HUGE, libc::MADV_COLLAPSE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `AnonHugePages` of the mapping holding `at`, in KiB.
    fn anon_huge_kib(at: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split(' ').next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&at);
            } else if inside && let Some(v) = line.strip_prefix("AnonHugePages:") {
                return v.trim().trim_end_matches(" kB").parse().unwrap();
            }
        }
        panic!("no mapping holds {at:#x}");
    }

    fn resident_pages(at: usize) -> usize {
        let mut resident = [0u8; HUGE / PAGE];
        // SAFETY: as in `dense`.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, HUGE, resident.as_mut_ptr()) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        resident.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn dense_chunks_become_huge_pages_and_sparse_ones_stay_as_they_are() {
        if let Some(why) = unavailable() {
            // The test machines run 6.1 or later with huge pages on madvise.
            panic!("huge pages unavailable here: {why}");
        }
        // Five chunks' worth, so that four whole chunks fit aligned.
        let len = 5 * HUGE;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let start = (base as usize).next_multiple_of(HUGE);
        let chunks: Vec<usize> = (0..4).map(|i| start + i * HUGE).collect();
        let touch = |at: usize, pages: usize| {
            for p in 0..pages {
                // SAFETY: within the mapping, which is writable.
                unsafe { ((at + p * PAGE) as *mut u64).write_volatile(p as u64 + 1) };
            }
        };
        // Two whole chunks, one missing SPARSE_MAX pages, one half used;
        // the last untouched.
        touch(chunks[0], HUGE / PAGE);
        touch(chunks[1], HUGE / PAGE - SPARSE_MAX);
        touch(chunks[2], HUGE / PAGE / 2);
        let mut huge = 0;
        for _ in 0..5 {
            // Another test's memory may be busy; the kernel says try again.
            let mine = start..start + 4 * HUGE;
            huge = collapse(std::slice::from_ref(&mine), Duration::ZERO);
            if huge == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(huge, 2, "the two dense chunks");
        assert!(anon_huge_kib(chunks[0]) >= 4096);
        // Contents kept.
        for (at, pages) in [
            (chunks[0], HUGE / PAGE),
            (chunks[1], HUGE / PAGE - SPARSE_MAX),
        ] {
            for p in 0..pages {
                // SAFETY: within the mapping.
                let v = unsafe { ((at + p * PAGE) as *const u64).read_volatile() };
                assert_eq!(v, p as u64 + 1);
            }
        }
        assert_eq!(
            resident_pages(chunks[2]),
            HUGE / PAGE / 2,
            "sparse: not filled in"
        );
        assert_eq!(resident_pages(chunks[3]), 0, "untouched: not filled in");
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, len) };
    }
}
