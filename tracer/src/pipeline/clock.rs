//! The clocks the pipeline reads: CLOCK_MONOTONIC, the clock of the kernel
//! programs' timestamps; this thread's CPU time, which dump budgets are
//! measured in; and the kernel's jiffies, which decide when a timewait
//! socket's timer fires (see `engine::TimeWaitClock`).
use crate::engine::TimeWaitClock;

/// `clock` (a `CLOCK_*` id) in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub use crate::wall::monotonic_ns;

/// CPU time this thread has used, in nanoseconds (user and system).
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// One reading of `/proc/timer_list`: the monotonic time it was printed at,
/// `jiffies`, and when the next tick is due (the tick grid's phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimerList {
    now_ns: u64,
    jiffies: u64,
    tick_due_ns: Option<u64>,
}

/// Parse `/proc/timer_list`: its `now at N nsecs` header, the first
/// `jiffies: J` line, and the expiry of the first tick timer
/// (`tick_nohz_handler` on newer kernels, `tick_sched_timer` before).
fn parse_timer_list(text: &str) -> Option<TimerList> {
    let mut lines = text.lines();
    let now_ns = lines.by_ref().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .parse()
            .ok()
    })?;
    let (mut jiffies, mut tick_due_ns, mut tick_next) = (None, None, false);
    for l in lines {
        if jiffies.is_none()
            && let Some(j) = l.strip_prefix("jiffies: ")
        {
            jiffies = j.trim().parse().ok();
        }
        if tick_next && tick_due_ns.is_none() {
            tick_due_ns = l
                .trim_start()
                .strip_prefix("# expires at ")
                .and_then(|r| r.split('-').next()?.parse().ok());
        }
        tick_next = l.contains("tick_nohz_handler") || l.contains("tick_sched_timer");
    }
    Some(TimerList {
        now_ns,
        jiffies: jiffies?,
        tick_due_ns,
    })
}

/// The kernel's clock from readings of `/proc/timer_list`: `first`, then
/// `rest` taken at least 50 ms later. HZ from how far jiffies moved
/// (snapped to the values kernels are built with), the grid's phase from
/// a tick timer's expiry, and the offset as the median over `rest` (a tick
/// between the two lines of one reading makes that one off by one).
fn clock_from(first: TimerList, rest: &[TimerList]) -> Option<TimeWaitClock> {
    let last = rest.last()?;
    let elapsed = last.now_ns.checked_sub(first.now_ns)?;
    if elapsed < 50_000_000 {
        return None;
    }
    let rate = last.jiffies.checked_sub(first.jiffies)? as f64 * 1e9 / elapsed as f64;
    let hz = [100u64, 250, 300, 1000].into_iter().min_by(|a, b| {
        (*a as f64 - rate)
            .abs()
            .total_cmp(&(*b as f64 - rate).abs())
    })?;
    if (hz as f64 - rate).abs() > hz as f64 * 0.1 {
        return None;
    }
    let tick = 1_000_000_000 / hz;
    let phase = rest
        .iter()
        .chain([&first])
        .find_map(|r| r.tick_due_ns)
        .map_or(0, |t| t % tick);
    let mut clocks: Vec<TimeWaitClock> = rest
        .iter()
        .filter_map(|r| TimeWaitClock::new(hz, phase, r.now_ns, r.jiffies))
        .collect();
    clocks.sort_by_key(|c| c.end_ns(first.now_ns));
    clocks.get(clocks.len() / 2).copied()
}

/// Read the kernel's clock from `/proc/timer_list` (root only), taking
/// about 100 ms. `None` when it cannot be read or makes no sense; TIME_WAIT
/// stays then end after exactly 60 s, up to one timer-wheel bucket (2 s at
/// HZ=250) before the kernel ends them.
pub fn time_wait_clock() -> Option<TimeWaitClock> {
    let read = || parse_timer_list(&std::fs::read_to_string("/proc/timer_list").ok()?);
    let first = read()?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let rest: Vec<TimerList> = (0..5).filter_map(|_| read()).collect();
    clock_from(first, &rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 11320180779352 nsecs\n\ncpu: 0\n clock 0:\n  .base:       00000000519aef60\nactive timers:\n #0: <0000000003d9a421>, tick_nohz_handler, S:01\n # expires at 11320184000000-11320184000000 nsecs [in 3220648 to 3220648 nsecs]\n #1: <000000000abc8204>, timerfd_tmrproc, S:01\n # expires at 11320257132431-11320257132431 nsecs [in 76353079 to 76353079 nsecs]\n  .idle_jiffies   : 4297722152\njiffies: 4297722261\n";

    #[test]
    fn reads_now_jiffies_and_the_tick_from_timer_list() {
        assert_eq!(
            parse_timer_list(SAMPLE),
            Some(TimerList {
                now_ns: 11_320_180_779_352,
                jiffies: 4_297_722_261,
                tick_due_ns: Some(11_320_184_000_000),
            })
        );
        assert_eq!(parse_timer_list("garbage"), None);
        let old = SAMPLE.replace("tick_nohz_handler", "tick_sched_timer");
        assert!(parse_timer_list(&old).unwrap().tick_due_ns.is_some());
    }

    #[test]
    fn hz_phase_and_offset_from_readings() {
        let at = |ns: u64| TimerList {
            now_ns: ns,
            jiffies: 4_294_892_296 + (ns - 1_000_000) / 4_000_000,
            tick_due_ns: Some(9_001_000_000),
        };
        let c = clock_from(at(5_000_000_000), &[at(5_100_500_000), at(5_101_000_000)]).unwrap();
        assert_eq!(c.hz(), 250);
        assert_eq!(
            (c.end_ns(7_000_000_000) - 1_000_000) % 4_000_000,
            0,
            "on the grid"
        );
        // Too close together to tell HZ.
        assert!(clock_from(at(5_000_000_000), &[at(5_010_000_000)]).is_none());
        // A jiffies rate no kernel has.
        let odd = TimerList {
            jiffies: at(5_100_000_000).jiffies + 500,
            ..at(5_100_000_000)
        };
        assert!(clock_from(at(5_000_000_000), &[odd]).is_none());
    }

    /// On this machine, as root: the clock predicts when the kernel's
    /// timer wheel ends a stay within its own bounds.
    #[test]
    fn this_kernels_clock_when_readable() {
        let Some(c) = time_wait_clock() else {
            return; // not root, or no /proc/timer_list
        };
        assert!([100, 250, 300, 1000].contains(&c.hz()));
        let now = monotonic_ns();
        let end = c.end_ns(now);
        assert!(end >= now + 60_000_000_000 && end <= now + 66_000_000_000);
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > before);
    }

    #[test]
    fn monotonic_time_never_goes_back() {
        let a = monotonic_ns();
        assert!(monotonic_ns() >= a);
    }
}
