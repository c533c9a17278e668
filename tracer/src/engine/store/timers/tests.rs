//! The timer queue alone, with a table of slots standing in for the
//! store's records: out-of-order pushes, the slack of inferred timers,
//! reused slots, the tick wrap, and a random mix against a sorted set.
use std::collections::BTreeSet;

use super::*;

/// Slots' timers, standing in for the store's records.
#[derive(Default)]
struct Keys(Vec<Option<Timer>>);

impl Keys {
    fn key(&self) -> impl Fn(u32) -> Option<Timer> + '_ {
        |s| self.0.get(s as usize).copied().flatten()
    }
    fn get(&self, slot: u32) -> Option<Timer> {
        self.0.get(slot as usize).copied().flatten()
    }
    fn set(&mut self, slot: u32, t: Option<Timer>) {
        if self.0.len() <= slot as usize {
            self.0.resize(slot as usize + 1, None);
        }
        self.0[slot as usize] = t;
    }
}

/// A confirmed timer based at `base_ns`, cookie `slot + 100`.
fn timer(slot: u32, base_ns: u64) -> Timer {
    Timer {
        base_ns,
        end_ns: base_ns,
        cookie: u64::from(slot) + 100,
        grace: false,
    }
}

/// Arm the timers in order, in slots `0..`.
fn armed(timers: &[Timer]) -> (TimerQueue, Keys) {
    let (mut q, mut keys) = (TimerQueue::new(), Keys::default());
    for (slot, &t) in timers.iter().enumerate() {
        keys.set(slot as u32, Some(t));
        q.push(slot as u32, &keys.key());
        q.check(&keys.key());
    }
    (q, keys)
}

/// Pop everything due at `now`, as the engine does (a fired record
/// loses its timer).
fn pop_all(q: &mut TimerQueue, keys: &mut Keys, now: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    loop {
        let Some((slot, d)) = q.pop(now, &keys.key()) else {
            break;
        };
        assert_eq!(keys.get(slot).map(|t| t.deadline_ns()), Some(d));
        keys.set(slot, None);
        out.push((slot, d));
    }
    q.check(&keys.key());
    out
}

/// `(slot, deadline)` of `timers` (in slots `0..`) in firing order.
fn in_order(timers: &[Timer]) -> Vec<(u32, u64)> {
    let mut v: Vec<(u64, u64, u32)> = timers
        .iter()
        .enumerate()
        .map(|(s, t)| (t.deadline_ns(), t.cookie, s as u32))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(d, _, s)| (s, d)).collect()
}

const T: u64 = 1_000 << TICK_SHIFT;

#[test]
fn out_of_order_pushes_pop_in_deadline_order() {
    // Armed at scrambled times: some just before the back, some far
    // back (the side list), several in one tick or at one time (then by
    // cookie); every third one inferred.
    let timers: Vec<Timer> = (0..200u32)
        .map(|i| Timer {
            grace: i % 3 == 0,
            ..timer(i, T + u64::from(i * 7919 % 173) * 40_000)
        })
        .collect();
    let (mut q, mut keys) = armed(&timers);
    assert!(!q.late.is_empty(), "some went to the side list");
    let want = in_order(&timers);
    let mut got = pop_all(&mut q, &mut keys, T + 3_000_000);
    assert!(!q.grace.is_empty(), "inferred ones wait out the slack");
    got.extend(pop_all(&mut q, &mut keys, u64::MAX));
    assert_eq!(got, want);
    assert!(q.queue.is_empty() && q.late.is_empty() && q.grace.is_empty());
}

#[test]
fn never_fires_before_the_exact_deadline() {
    // Three deadlines in one tick, armed latest first.
    let (a, b, c) = (T + 1_000, T + 500_000, T + 900_000);
    let (mut q, mut keys) = armed(&[timer(0, c), timer(1, b), timer(2, a)]);
    assert_eq!(pop_all(&mut q, &mut keys, a - 1), []);
    assert_eq!(pop_all(&mut q, &mut keys, a), [(2, a)]);
    assert_eq!(pop_all(&mut q, &mut keys, b - 1), []);
    assert_eq!(pop_all(&mut q, &mut keys, c - 1), [(1, b)]);
    assert_eq!(pop_all(&mut q, &mut keys, c), [(0, c)]);
}

#[test]
fn an_inferred_timer_waits_out_the_slack_unless_confirmed() {
    // 0 and 1 inferred, 2 confirmed later than their bases.
    let slack = TIME_WAIT_SLACK_NS;
    let inferred = |slot, base| Timer {
        grace: true,
        ..timer(slot, base)
    };
    let (mut q, mut keys) = armed(&[inferred(0, T), inferred(1, T + 1_000), timer(2, T + 2_000)]);
    assert_eq!(pop_all(&mut q, &mut keys, T + 1_999), []);
    assert_eq!(pop_all(&mut q, &mut keys, T + 2_000), [(2, T + 2_000)]);
    // A dump confirms 1 while it waits: due at once, at its base.
    keys.set(1, Some(timer(1, T + 1_000)));
    q.confirmed(1, T + 1_000, &keys.key());
    assert_eq!(pop_all(&mut q, &mut keys, T + 3_000), [(1, T + 1_000)]);
    assert_eq!(pop_all(&mut q, &mut keys, T + slack - 1), []);
    assert_eq!(pop_all(&mut q, &mut keys, T + slack), [(0, T + slack)]);
}

#[test]
fn a_reused_slot_fires_at_its_own_deadline() {
    // Slot 0 cancels its timer; a new record in slot 0 arms a later one
    // in the same tick; slot 1's record went without a timer.
    let (a, b, c) = (T + 1_000, T + 600_000, T + 700_000);
    let (mut q, mut keys) = armed(&[timer(0, a), timer(1, T + 300_000), timer(2, c)]);
    assert!(q.remove(0, a));
    keys.set(0, Some(timer(7, b)));
    q.push(0, &keys.key());
    assert!(q.remove(1, T + 300_000));
    keys.set(1, None);
    q.check(&keys.key());
    assert!(!q.remove(1, T + 300_000), "slot 1's entry is gone");
    assert_eq!(pop_all(&mut q, &mut keys, b - 1), []);
    assert_eq!(pop_all(&mut q, &mut keys, b), [(0, b)]);
    assert_eq!(pop_all(&mut q, &mut keys, c), [(2, c)]);
}

#[test]
fn ticks_wrap() {
    // Ticks wrap to 0 at 2^52 ns (52 days of uptime).
    let wrap = 1u64 << (32 + TICK_SHIFT);
    assert_eq!(tick(wrap - 1), u32::MAX);
    assert_eq!(tick(wrap), 0);
    assert_eq!(serial(tick(wrap - 1), tick(wrap + 1)), Ordering::Less);
    let timers: Vec<Timer> = (0..100u32)
        .map(|i| timer(i, wrap - 30_000_000 + u64::from(i * 37 % 100) * 600_000))
        .collect();
    let (mut q, mut keys) = armed(&timers);
    let mut got = pop_all(&mut q, &mut keys, wrap - 1);
    assert!(got.iter().all(|&(_, d)| d < wrap));
    got.extend(pop_all(&mut q, &mut keys, u64::MAX));
    assert_eq!(got, in_order(&timers));
}

/// A random mix of arming, cancelling, confirming, moving and popping,
/// around `t0`, against a set ordered by `(deadline, cookie)`.
fn against_a_model(t0: u64, seed: u64) {
    let mut rng = seed;
    let mut rand = |n: u64| {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    const SLOTS: u32 = 64;
    let (mut q, mut keys) = (TimerQueue::new(), Keys::default());
    keys.set(SLOTS - 1, None);
    let mut model = BTreeSet::new();
    let entry = |s: u32, t: Timer| (t.deadline_ns(), t.cookie, s);
    let (mut now, mut cookie) = (t0, 0);
    for _ in 0..30_000 {
        let slot = rand(u64::from(SLOTS)) as u32;
        match (rand(12), keys.get(slot)) {
            (0..4, None) => {
                // Mostly just ahead (many share a tick), some behind,
                // some a minute out; half inferred.
                let base = match rand(8) {
                    0 => now.saturating_sub(rand(2_000_000_000)),
                    1 => now + 60_000_000_000 + rand(1_000_000_000),
                    _ => now + rand(5_000_000),
                };
                cookie += 1;
                let t = Timer {
                    base_ns: base,
                    end_ns: base,
                    cookie,
                    grace: rand(2) == 0,
                };
                keys.set(slot, Some(t));
                q.push(slot, &keys.key());
                model.insert(entry(slot, t));
            }
            (4..6, Some(t)) => {
                assert!(q.remove(slot, t.base_ns));
                keys.set(slot, None);
                model.remove(&entry(slot, t));
            }
            (8, Some(t)) if t.grace => {
                let c = Timer { grace: false, ..t };
                keys.set(slot, Some(c));
                q.confirmed(slot, t.base_ns, &keys.key());
                model.remove(&entry(slot, t));
                model.insert(entry(slot, c));
            }
            _ => {
                let far = rand(50) == 0;
                now += rand(if far { 2_000_000_000 } else { 3_000_000 });
                let due: Vec<(u32, u64)> = model
                    .iter()
                    .take_while(|&&(d, _, _)| d <= now)
                    .map(|&(d, _, s)| (s, d))
                    .collect();
                model.retain(|&(d, _, _)| d > now);
                assert_eq!(pop_all(&mut q, &mut keys, now), due);
            }
        }
        let mut live = q.check(&keys.key());
        live.sort_unstable();
        let mut want: Vec<(u32, u32)> = (0..SLOTS)
            .filter_map(|s| keys.get(s).map(|t| (s, tick(t.base_ns))))
            .collect();
        want.sort_unstable();
        assert_eq!(live, want);
    }
}

#[test]
fn agrees_with_a_sorted_set() {
    against_a_model(1_000_000_000, 0x9e37_79b9_7f4a_7c15);
    // Across the tick wrap.
    against_a_model((1 << (32 + TICK_SHIFT)) - 20_000_000_000, 42);
}

#[test]
fn many_bases_ending_in_one_bucket_fire_together_and_never_early() {
    // The kernel's timer wheel ends every stay based within one 2.048 s
    // bucket at its boundary: distinct bases (found by binary search),
    // one end.
    const BUCKET: u64 = 2_048_000_000;
    let timers: Vec<Timer> = (0..3_000u32)
        .map(|i| {
            let base = 60_000_000_000 + u64::from(i) * 1_000_000;
            Timer {
                end_ns: (base / BUCKET + 1) * BUCKET,
                ..timer(i, base)
            }
        })
        .collect();
    let (mut q, mut keys) = armed(&timers);
    let first_end = timers[0].end_ns;
    assert!(q.not_before() <= first_end);
    assert!(pop_all(&mut q, &mut keys, first_end - 1).is_empty());
    let fired = pop_all(&mut q, &mut keys, first_end);
    let want = timers.iter().filter(|t| t.end_ns == first_end).count();
    assert_eq!(fired.len(), want);
    assert!(fired.iter().all(|&(_, d)| d == first_end));
    assert!(q.not_before() > first_end, "sleeps until the next bucket");
    // Cancelling one of thousands sharing an end is a binary search away.
    let (slot, t) = (2_000u32, timers[2_000]);
    assert!(q.remove(slot, t.base_ns));
    keys.set(slot, None);
    let rest = pop_all(&mut q, &mut keys, u64::MAX);
    assert_eq!(rest.len(), timers.len() - want - 1);
}
