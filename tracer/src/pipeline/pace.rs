//! When to take the next sock_diag dump.
//!
//! A dump is not free, and its cost does not depend on what it returns:
//! the kernel walks the whole established hash, timewait sockets included,
//! even when the request leaves them out. Beside 131,072 TIME_WAIT sockets
//! one walk costs 15–30 ms of kernel time, so a dump every second is several
//! percent of a core spent confirming what the events already said.
//!
//! Each kind of dump therefore has a [`Pace`]: it runs every `interval`
//! (`--reconcile-interval`, `--time-wait-interval`), unless the last one
//! cost more than its share of the budget over that interval; then the gap
//! grows until it does not (`cost / share`). `--reconcile-budget` is what
//! all dumps together may use: live dumps get [`LIVE_SHARE`] of it, full
//! ones the rest. A dump is still taken at the next tick whenever events
//! may have been lost: healing is what the reconcile is for, and it must
//! not wait for the budget (a full one, once its configured interval has
//! passed).
//!
//! The first dump of each kind does not set the pace alone: it adopts
//! every socket, opens every namespace and fills the owner caches, so its
//! cost overstates the steady state (on a slow machine it was 100 times a
//! later one, and stretched the next dump past a minute). A first live
//! dump keeps the configured interval. A first full dump may stretch the
//! gap to the second up to [`FIRST_FULL_STRETCH`] intervals: beside
//! 131,072 TIME_WAIT sockets the second full walk costs 60–100 ms, as
//! much as the first, and at the configured 10 s it came inside the
//! agent's first half minute whatever the budget said.
//!
//! [`Paces`] also learns what live walks and live lookups cost, and says
//! which the next live dump should do ([`Paces::look_up`]): lookups when
//! a walk does not fit the budget and the lookups cost less. The first
//! lookups run cold and do not set the pace, and neither does the walk
//! that shows walks no longer fit: in a VM without KVM, where the first
//! run of any code path is translated, those two stretched live dumps to
//! 4–9 s apart, and a half-open peer went unflagged past its deadline.
use std::time::Duration;

use crate::diag::dump::LOOKUP_BATCH;

/// The schedule of one kind of dump.
#[derive(Clone, Debug)]
pub struct Pace {
    base_ns: u64,
    /// Fraction of one core; 0 disables the budget.
    budget: f64,
    interval_ns: u64,
    next_ns: u64,
    /// How early a dump still counts as due: a quarter of the period of
    /// the timer the caller asks on.
    slack_ns: u64,
    /// No dump has been recorded yet.
    first: bool,
    /// How many intervals the first dump's cost may stretch the gap to the
    /// second (0 or 1: not at all).
    first_stretch: u64,
}

/// How many intervals a first full dump may stretch the gap to the second.
pub const FIRST_FULL_STRETCH: u64 = 3;

/// The live dumps' part of `--reconcile-budget` when there are full dumps;
/// full dumps get the rest. Live dumps heal lost events and judge leaks
/// and half-open peers, which a user waits for; a full dump confirms
/// TIME_WAIT sockets, which a dump every half minute still sees before
/// their 60 s end. Beside 131,072 of them a full dump costs 60–100 ms, so
/// at 10,000 conn/s an even split spent 0.5% of a core on full dumps
/// alone (50 ns per event) while lookups kept live dumps far below theirs.
pub const LIVE_SHARE: f64 = 0.75;

impl Pace {
    /// A pace of one dump every `interval`, spending at most `budget_percent`
    /// of one core on it (0: no limit), asked on a timer of that interval.
    /// The first dump is due at once.
    pub fn new(interval: Duration, budget_percent: f64) -> Pace {
        let base_ns = interval.as_nanos() as u64;
        Pace {
            base_ns,
            budget: budget_percent / 100.0,
            interval_ns: base_ns,
            next_ns: 0,
            slack_ns: base_ns / 4,
            first: true,
            first_stretch: 0,
        }
    }

    /// The same pace, whose first dump may stretch the gap to the second up
    /// to `n` intervals when it cost more than the budget allows.
    pub fn first_stretches(mut self, n: u64) -> Pace {
        self.first_stretch = n;
        self
    }

    /// The same pace, asked on a timer of period `tick` instead.
    pub fn ticked_by(mut self, tick: Duration) -> Pace {
        self.slack_ns = tick.as_nanos() as u64 / 4;
        self
    }

    /// True when a dump is due at `now_ns`. The caller asks on a timer
    /// whose ticks wander against the dumps' start times by a little: a
    /// dump due within a quarter of the timer's period counts as due, or
    /// every other tick would be missed. Not when the budget set the gap:
    /// a dump taken early there spends more than the budget allows, and
    /// one a tick late spends less.
    pub fn due(&self, now_ns: u64) -> bool {
        let slack = if self.interval_ns > self.base_ns {
            0
        } else {
            self.slack_ns
        };
        now_ns.saturating_add(slack) >= self.next_ns
    }

    /// True when a dump would be due at `now_ns` had the budget not
    /// stretched the gap: the configured interval has passed since the
    /// last one started.
    pub fn due_unbudgeted(&self, now_ns: u64) -> bool {
        let last_start = self.next_ns.saturating_sub(self.interval_ns);
        now_ns.saturating_add(self.slack_ns) >= last_start.saturating_add(self.base_ns)
    }

    /// Record a dump that started at `start_ns` and cost `cost_ns` of CPU
    /// time (the kernel's walk plus the engine's reconcile). The first
    /// dump stretches the gap no further than its `first_stretches` allow
    /// (by default not at all), whatever it cost.
    pub fn done(&mut self, start_ns: u64, cost_ns: u64) {
        let first = std::mem::replace(&mut self.first, false);
        self.interval_ns = if self.budget > 0.0 {
            let stretched = (cost_ns as f64 / self.budget).min(u64::MAX as f64) as u64;
            let cap = if first {
                self.base_ns.saturating_mul(self.first_stretch)
            } else {
                u64::MAX
            };
            self.base_ns.max(stretched.min(cap))
        } else {
            self.base_ns
        };
        self.next_ns = start_ns.saturating_add(self.interval_ns);
    }

    /// Push the next dump one interval past `start_ns`, keeping the interval:
    /// a dump of another kind covered this one's ground.
    pub fn covered(&mut self, start_ns: u64) {
        self.next_ns = self.next_ns.max(start_ns.saturating_add(self.interval_ns));
    }

    /// The gap between dumps in force: the configured interval, or longer
    /// when the budget stretched it.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// True once a dump has been recorded: the next one's cost tells
    /// the steady state (the first's does not).
    fn settled(&self) -> bool {
        !self.first
    }

    /// The configured interval.
    pub fn configured(&self) -> Duration {
        Duration::from_nanos(self.base_ns)
    }

    /// True when a dump that costs `cost_ns` fits the budget at the
    /// configured interval (always, without a budget).
    pub fn fits(&self, cost_ns: u64) -> bool {
        self.budget <= 0.0 || cost_ns as f64 <= self.budget * self.base_ns as f64
    }
}

/// The schedules of both kinds of dump: "live" (every state but
/// TIME_WAIT) and, when asked for, "full" (everything).
#[derive(Clone, Debug)]
pub struct Paces {
    /// Every state but TIME_WAIT, every reconcile interval.
    live: Pace,
    /// Everything, every TIME_WAIT interval; `None`: live dumps only.
    full: Option<Pace>,
    /// CPU the last live walk took (the kernel's and the reconcile's),
    /// 0 before one that counts.
    walk_ns: u64,
    /// CPU per lookup the last live lookups took, counted in
    /// [`lookup_units`]: `None` before any, 0 after only the first.
    lookup_each_ns: Option<u64>,
}

/// What `n` lookups cost in units of one: at least a datagram's worth,
/// since a live dump that looks up also walks the listening tables and
/// pays a round trip however few it asks for.
fn lookup_units(n: usize) -> u64 {
    n.max(LOOKUP_BATCH) as u64
}

impl Paces {
    /// Live dumps every `live`, full ones every `full` (none if `None`),
    /// both together within `budget_percent` of one core: [`LIVE_SHARE`]
    /// of it for live dumps when there are full dumps, all of it when not.
    pub fn new(live: Duration, full: Option<Duration>, budget_percent: f64) -> Paces {
        let live_share = if full.is_some() { LIVE_SHARE } else { 1.0 };
        Paces {
            live: Pace::new(live, budget_percent * live_share),
            // Asked on the live dumps' timer.
            full: full.map(|f| {
                Pace::new(f, budget_percent * (1.0 - LIVE_SHARE))
                    .ticked_by(live)
                    .first_stretches(FIRST_FULL_STRETCH)
            }),
            walk_ns: 0,
            lookup_each_ns: None,
        }
    }

    /// What to dump at `now_ns`: `Some(true)` for a full dump, `Some(false)`
    /// for a live one, `None` for nothing yet. `lost`: events were lost
    /// since the last dump, so one is due regardless of the budget: a full
    /// one when its configured interval has passed (lost events may have
    /// hidden sockets that went to TIME_WAIT, which only a full dump
    /// lists), else a live one.
    pub fn next(&self, now_ns: u64, lost: bool) -> Option<bool> {
        if self
            .full
            .as_ref()
            .is_some_and(|f| f.due(now_ns) || (lost && f.due_unbudgeted(now_ns)))
        {
            Some(true)
        } else if lost || self.live.due(now_ns) {
            Some(false)
        } else {
            None
        }
    }

    /// Account for a dump and schedule the next one of its kind; returns
    /// the gap now in force for that kind. A full dump also covers a live one.
    pub fn done(&mut self, full: bool, start_ns: u64, cpu_ns: u64) -> Duration {
        let pace = match (full, self.full.as_mut()) {
            (true, Some(f)) => {
                self.live.covered(start_ns);
                f
            }
            _ => &mut self.live,
        };
        pace.done(start_ns, cpu_ns);
        pace.interval()
    }

    /// Account for a walk that listed its sockets, learning what live walks
    /// cost, and schedule the next dump of its kind as [`Paces::done`] does.
    /// The walk that shows live walks no longer fit does not set the pace:
    /// lookups come next, and they do.
    pub fn walked(&mut self, full: bool, start_ns: u64, cpu_ns: u64) -> Duration {
        let mut paced_ns = cpu_ns;
        // The first dump of a kind opens sockets and fills caches: it says
        // nothing of what the next walk costs.
        if self.settled(full) {
            if !full {
                let could = self.may_look_up();
                self.walk_ns = cpu_ns;
                if !could && self.may_look_up() {
                    paced_ns = 0;
                }
            } else if self.live.fits(cpu_ns) {
                // A full walk fits the live dumps' budget now (the host
                // calmed down): so would a live one.
                self.walk_ns = 0;
            }
        }
        self.done(full, start_ns, paced_ns)
    }

    /// Account for a live dump that looked `n` sockets up, learning what a
    /// lookup costs, and schedule the next live dump. The first lookups
    /// run cold (new code paths; in a VM, code translated for the first
    /// time): like the first dump of a kind, they do not set the pace.
    pub fn looked_up(&mut self, n: usize, start_ns: u64, cpu_ns: u64) -> Duration {
        let cold = self.lookup_each_ns.is_none();
        self.lookup_each_ns = Some(if cold { 0 } else { cpu_ns / lookup_units(n) });
        self.done(false, start_ns, if cold { 0 } else { cpu_ns })
    }

    /// Whether live dumps may look the engine's sockets up rather than
    /// walk the kernel's tables: when walking every interval would not
    /// fit the budget, and full dumps (complete views) come anyway.
    pub fn may_look_up(&self) -> bool {
        self.full.is_some() && !self.live.fits(self.walk_ns)
    }

    /// Whether the next live dump should look `n` sockets up: it may, and
    /// that costs less than a walk (on a slow machine with few sockets,
    /// where every request is dear, it may not).
    pub fn look_up(&self, n: usize) -> bool {
        let each = self.lookup_each_ns.unwrap_or(0);
        self.may_look_up() && each.saturating_mul(lookup_units(n)) < self.walk_ns
    }

    /// The pace of a kind of dump (a full one is live without full dumps).
    fn of(&self, full: bool) -> &Pace {
        match (full, &self.full) {
            (true, Some(f)) => f,
            _ => &self.live,
        }
    }

    /// True when a dump of this kind has been recorded before: one done
    /// now costs what the steady state does.
    fn settled(&self, full: bool) -> bool {
        self.of(full).settled()
    }

    /// The configured interval of a kind of dump.
    pub fn configured(&self, full: bool) -> Duration {
        self.of(full).configured()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    #[test]
    fn cheap_dumps_keep_the_configured_interval() {
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        assert!(p.due(0), "the first dump is due at once");
        p.done(0, MS);
        p.done(5 * S, 2 * MS); // 2 ms: 0.2% of a core at 1 s
        assert_eq!(p.interval(), Duration::from_secs(1));
        assert!(!p.due(5 * S + 700 * MS));
        assert!(p.due(6 * S));
    }

    #[test]
    fn ticks_a_little_early_still_dump_every_interval() {
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        // The dump started 300 µs after its tick; the next tick comes
        // exactly 1 s after the previous one.
        p.done(0, MS);
        p.done(S + 300_000, MS);
        assert!(p.due(2 * S), "a tick 300 µs early is not skipped");
        assert!(!p.due(S + 700 * MS));
    }

    #[test]
    fn expensive_dumps_stretch_the_interval_to_the_budget() {
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        p.done(0, MS);
        p.done(10 * S, 40 * MS); // 40 ms at 1% of a core: every 4 s
        assert_eq!(p.interval(), Duration::from_secs(4));
        assert!(!p.due(13 * S));
        assert!(!p.due(14 * S - 100 * MS), "never early on the budget's gap");
        assert!(p.due(14 * S));
        // The walk got cheap again (TIME_WAIT drained): back to 1 s.
        p.done(14 * S, 3 * MS);
        assert_eq!(p.interval(), Duration::from_secs(1));
        assert!(p.due(15 * S));
    }

    #[test]
    fn ticks_wandering_early_keep_a_stretched_pace_within_its_budget() {
        // A live dump costing 22 ms at 1% of a core: one every 2.2 s at
        // most. The caller's ticks come every second, each a little early
        // against the dumps' start times (which come a little after their
        // tick).
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        p.done(0, MS);
        let (mut spent, mut dumps) = (0u64, 0u32);
        let mut tick = S;
        let end = 600 * S;
        while tick < end {
            if p.due(tick) {
                p.done(tick + 300_000, 22 * MS);
                spent += 22 * MS;
                dumps += 1;
            }
            tick += S - 1_000;
        }
        let share = spent as f64 / end as f64;
        assert!(share <= 0.01, "{:.3}% of a core", share * 100.0);
        assert!(
            share > 0.005,
            "{:.3}% of a core: the budget is a cap, not a target",
            share * 100.0
        );
        assert!(dumps > 150, "{dumps} dumps in 600 s");
    }

    #[test]
    fn losses_bring_the_full_dump_back_to_its_configured_interval() {
        // Full dumps of 200 ms at a quarter of 1%: one every 80 s.
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        assert_eq!(p.next(0, false), Some(true));
        p.done(true, 0, MS);
        p.done(true, 10 * S, 200 * MS);
        // Losses 5 s after the last full dump: a live dump heals the rest.
        assert_eq!(p.next(15 * S, true), Some(false));
        // 10 s after it: a full one, long before the budget's 80 s.
        assert_eq!(p.next(20 * S, true), Some(true));
        assert_eq!(
            p.next(20 * S, false),
            Some(false),
            "without losses, a live one"
        );
        p.done(true, 20 * S, 200 * MS);
        assert_eq!(p.next(25 * S, true), Some(false), "not again within 10 s");
    }

    #[test]
    fn both_kinds_together_stay_within_the_budget() {
        // Live dumps cost 20 ms and full ones 60 ms, both over their share
        // of a 1% budget: together they spend at most 1% of a core.
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        let (mut spent, mut tick) = (0u64, 0u64);
        let end = 1200 * S;
        while tick < end {
            if let Some(full) = p.next(tick, false) {
                let cost = if full { 60 * MS } else { 20 * MS };
                p.done(full, tick, cost);
                spent += cost;
            }
            tick += S;
        }
        let share = spent as f64 / end as f64;
        assert!(share <= 0.0101, "{:.3}% of a core", share * 100.0);
        assert!(share > 0.008, "{:.3}% of a core", share * 100.0);
        // Without full dumps the live ones have all of it: 20 ms every 2 s.
        let mut live_only = Paces::new(Duration::from_secs(1), None, 1.0);
        live_only.done(false, 0, MS);
        assert_eq!(live_only.done(false, S, 20 * MS), Duration::from_secs(2));
    }

    #[test]
    fn full_dumps_keep_their_interval_on_the_live_dumps_ticks() {
        // Full dumps every 10 s, cheap, asked every second (the live
        // interval); the ticks wander a little early.
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        let (mut last_full, mut fulls) = (None, 0);
        let mut tick = 0;
        while tick < 300 * S {
            if let Some(full) = p.next(tick, false) {
                if full {
                    fulls += 1;
                    if let Some(last) = last_full.replace(tick) {
                        let gap = tick - last;
                        assert!(gap > 9 * S + 500 * MS, "full dumps {gap} ns apart");
                        assert!(gap < 10 * S + 500 * MS, "full dumps {gap} ns apart");
                    }
                }
                p.done(full, tick + 300_000, MS);
            }
            tick += S - 1_000;
        }
        // At 0, 10, ..., 300 s (the ticks run a little early).
        assert_eq!(fulls, 31, "full dumps in 300 s");
    }

    #[test]
    fn the_first_dump_does_not_set_the_pace() {
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        p.done(0, 175 * MS); // adoption: 17.5 s at 1% if it counted
        assert_eq!(p.interval(), Duration::from_secs(1));
        assert!(p.due(S));
        p.done(S, 175 * MS); // the second one does
        assert_eq!(p.interval(), Duration::from_millis(17_500));
    }

    #[test]
    fn a_first_full_dump_stretches_the_gap_to_the_second_three_intervals_at_most() {
        let first_full = |cost_ns| {
            let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
            p.done(true, 0, cost_ns)
        };
        // 62 ms at a quarter of 1%: 24.8 s.
        assert_eq!(first_full(62 * MS), Duration::from_millis(24_800));
        assert_eq!(first_full(2 * MS), Duration::from_secs(10), "cheap");
        assert_eq!(first_full(5 * S), Duration::from_secs(30), "capped");
        // A first live dump keeps its interval, however dear.
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        assert_eq!(p.done(false, 0, 5 * S), Duration::from_secs(1));
        // Without a budget, nothing stretches.
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 0.0);
        assert_eq!(p.done(true, 0, 5 * S), Duration::from_secs(10));
    }

    /// Paces whose first dump of each kind is done: the next ones count.
    fn settled(live: u64, full: Option<u64>, budget: f64) -> Paces {
        let mut p = Paces::new(
            Duration::from_secs(live),
            full.map(Duration::from_secs),
            budget,
        );
        p.walked(true, 0, MS);
        p.walked(false, 0, MS);
        p
    }

    #[test]
    fn live_dumps_look_up_only_when_a_walk_would_not_fit() {
        // Three quarters of 1%: 7.5 ms a second for live dumps.
        let mut p = settled(1, Some(10), 1.0);
        p.walked(false, S, 7 * MS);
        assert!(!p.may_look_up());
        p.walked(false, 2 * S, 8 * MS);
        assert!(p.may_look_up() && p.look_up(1000));
        // Without full dumps nothing else would find new sockets.
        let mut live_only = settled(1, None, 1.0);
        live_only.walked(false, S, 1000 * MS);
        assert!(!live_only.may_look_up());
        // Without a budget every walk fits.
        let mut unlimited = settled(1, Some(10), 0.0);
        unlimited.walked(false, S, 1000 * MS);
        assert!(!unlimited.may_look_up());
        // A full walk that fits the live budget says a live one would.
        p.walked(true, 3 * S, 7 * MS);
        assert!(!p.may_look_up());
    }

    #[test]
    fn the_first_walk_of_a_kind_does_not_decide() {
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        p.walked(true, 0, 100 * MS);
        p.walked(false, 0, 100 * MS);
        assert!(!p.may_look_up(), "both ran cold");
    }

    #[test]
    fn the_walk_that_turns_to_lookups_and_the_first_lookups_keep_the_interval() {
        let mut p = settled(1, Some(10), 1.0);
        // 75 ms: every 10 s had it set the pace.
        assert_eq!(p.walked(false, S, 75 * MS), Duration::from_secs(1));
        assert!(p.look_up(100));
        // Cold: 30 ms would have meant every 4 s.
        assert_eq!(p.looked_up(100, 2 * S, 30 * MS), Duration::from_secs(1));
        assert_eq!(p.looked_up(100, 3 * S, MS), Duration::from_secs(1));
        assert_eq!(p.looked_up(100, 4 * S, 15 * MS), Duration::from_secs(2));
        // Another walk (lookups could not list something) sets the pace.
        assert_eq!(p.walked(false, 6 * S, 75 * MS), Duration::from_secs(10));
    }

    #[test]
    fn lookups_give_way_when_they_cost_more_than_a_walk() {
        let mut p = settled(1, Some(10), 1.0);
        p.walked(false, S, 8 * MS);
        p.looked_up(10, 2 * S, MS); // cold
        // In a VM: 10 lookups (at least a datagram's worth) cost 10 ms.
        p.looked_up(10, 3 * S, 10 * MS);
        assert!(p.may_look_up());
        assert!(!p.look_up(10), "10 ms of lookups against an 8 ms walk");
        // Beside many TIME_WAIT sockets the walk grows past them.
        p.walked(false, 4 * S, 45 * MS);
        assert!(p.look_up(100) && !p.look_up(1000));
    }

    #[test]
    fn zero_budget_means_no_limit() {
        let mut p = Pace::new(Duration::from_millis(500), 0.0);
        p.done(S, 10 * S);
        assert_eq!(p.interval(), Duration::from_millis(500));
        assert!(p.due(S + 500 * MS));
    }

    #[test]
    fn a_covering_dump_postpones_but_never_advances() {
        let mut p = Pace::new(Duration::from_secs(1), 1.0);
        p.done(0, MS);
        p.done(0, 20 * MS); // every 2 s
        p.covered(S); // a full dump at 1 s covered the ground
        assert!(!p.due(2 * S + 700 * MS));
        assert!(p.due(3 * S));
        p.covered(0); // an older covering dump changes nothing
        assert!(!p.due(2 * S + 700 * MS));
    }

    #[test]
    fn absurd_costs_do_not_overflow() {
        let mut p = Pace::new(Duration::from_secs(1), 0.001);
        p.done(0, MS);
        p.done(u64::MAX - 5, u64::MAX);
        assert!(!p.due(0));
        assert!(p.due(u64::MAX));
    }

    #[test]
    fn full_dumps_come_first_and_cover_live_ones() {
        let mut p = Paces::new(Duration::from_secs(1), Some(Duration::from_secs(10)), 1.0);
        assert_eq!(p.next(0, false), Some(true), "a full dump first");
        p.done(true, S, MS);
        assert_eq!(p.next(S + 500 * MS, false), None);
        assert_eq!(p.next(S + 500 * MS, true), Some(false), "lost events");
        assert_eq!(p.next(2 * S, false), Some(false));
        let live_only = Paces::new(Duration::from_secs(1), None, 1.0);
        assert_eq!(live_only.next(0, false), Some(false));
    }
}
