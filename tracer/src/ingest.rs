//! Event lanes -> decoded events, without allocating per event.
use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};

use tracer_common::Event;

use crate::{
    bpf::{DRAIN_FILL, DRAIN_INTERVAL, LOOK_INTERVAL, Stream, klog::KernelLogger, lanes::Lanes},
    event::SockEvent,
    wall::monotonic_ns,
};

/// Events stamped less than this long before a drain wait for the next one.
/// A program on another CPU may still be writing an event it stamped just
/// before: handing out the newer ones first would put them out of order.
pub const HOLD_BACK: Duration = Duration::from_millis(1);

/// Where a drain now stops: every event stamped before it is in the lanes
/// (or read), bar one a program is still writing, [`HOLD_BACK`] ago.
pub fn horizon_ns() -> u64 {
    monotonic_ns().saturating_sub(HOLD_BACK.as_nanos() as u64)
}

/// Bytes of one record in the lanes.
const EVENT_BYTES: usize = size_of::<Event>();

/// Events [`Ingest::spill`] may hold, in units of the lanes' own capacity:
/// the memory it may take is at most twice the kernel's (`--ring-bytes`).
const SPILL_LANES: usize = 2;

/// The shortest gap between two looks at the lanes, when they fill fastest.
const MIN_LOOK: Duration = LOOK_INTERVAL.checked_div(10).expect("ten");

/// When to look at the lanes next, `since_drain` after the last read found
/// the fullest `fill` full: half way to [`DRAIN_FILL`] at the rate they
/// filled, between [`MIN_LOOK`] and [`LOOK_INTERVAL`]. At peak churn on two
/// CPUs a state lane fills in about 150 ms: looks then come every ~18 ms
/// and reads every ~36 ms.
fn next_look(fill: f64, since_drain: Duration) -> Duration {
    if fill <= 0.0 {
        return LOOK_INTERVAL;
    }
    let to_drain_fill = since_drain.as_secs_f64() * (DRAIN_FILL - fill).max(0.0) / fill;
    Duration::from_secs_f64(to_drain_fill / 2.0).clamp(MIN_LOOK, LOOK_INTERVAL)
}

/// Reads the kernel's event lanes on a timer, and when asked, and hands
/// the events out decoded, oldest first.
pub struct Ingest {
    lanes: Lanes,
    /// The programs' diagnostics, forwarded to the log on every drain.
    logs: Option<KernelLogger>,
    /// When the next look at the lanes is due.
    due: Instant,
    /// When the lanes were last read (or spilled).
    drained_at: Instant,
    /// Asks from other threads to read the lanes now.
    asks: Arc<Drain>,
    /// Records that could not be decoded (another ABI version, corruption).
    pub decode_errors: u64,
    /// Sees every record's bytes before it is decoded (a recording).
    tap: Option<Tap>,
    /// Records taken out of the lanes by [`Ingest::spill`] and not handed
    /// out yet, oldest first. Its memory is kept for the next spill.
    spilled: Vec<[u8; EVENT_BYTES]>,
}

/// What a recording taps the ring buffer with: the bytes of each record
/// read, before decoding.
pub type Tap = Box<dyn FnMut(&[u8]) + Send>;

/// Lets another thread (the HTTP server, before a scrape) ask the event
/// loop to read the lanes now, and wait a bounded time until what it read
/// has been applied and published. Between drains (up to [`DRAIN_INTERVAL`])
/// a busy host writes enough events to move a gauge past `ss`'s count.
#[derive(Default)]
pub struct Drain {
    asked: Notify,
    done: Notify,
}

impl Drain {
    /// Ask for a drain and wait until it is done, at most `within`.
    /// Returns whether it was done in time.
    pub async fn now(&self, within: Duration) -> bool {
        let done = self.done.notified();
        tokio::pin!(done);
        // Registered before asking, so the answer cannot be missed.
        done.as_mut().enable();
        self.asked.notify_one();
        tokio::time::timeout(within, done).await.is_ok()
    }

    /// The event loop has applied and published a drain that was asked for.
    pub fn done(&self) {
        self.done.notify_waiters();
    }
}

impl Ingest {
    /// Read the programs' stream; must be called inside a tokio runtime.
    pub fn new(stream: Stream) -> Ingest {
        let Stream { events, logs } = stream;
        Ingest {
            lanes: events,
            logs,
            // The first drain comes at once: the programs are attached.
            due: Instant::now(),
            drained_at: Instant::now()
                .checked_sub(DRAIN_INTERVAL)
                .unwrap_or_else(Instant::now),
            asks: Arc::default(),
            decode_errors: 0,
            tap: None,
            spilled: Vec::new(),
        }
    }

    /// Hand the bytes of every record read from now on to `tap` too.
    pub fn tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The handle other threads ask for a drain with.
    pub fn drain_handle(&self) -> Arc<Drain> {
        self.asks.clone()
    }

    /// A drain asked for has been applied and published.
    pub fn drained(&self) {
        self.asks.done();
    }

    /// Wait until a drain is due or asked for, then hand every event ready
    /// to `f` (see [`Ingest::drain_now`]). Returns how many, and whether
    /// the drain was asked for (answer it with [`Drain::done`] once the
    /// batch is published). Between drains it looks at how full the lanes
    /// are: a drain is due once a lane is [`DRAIN_FILL`] full, or
    /// [`DRAIN_INTERVAL`] after the last, or at the first look after a
    /// spill.
    pub async fn next_batch(&mut self, f: impl FnMut(&SockEvent)) -> (usize, bool) {
        // The fullest lane's fill and the time since the last drain, as
        // the drain finds them: the rate the next look is set from.
        let (asked, fill, since) = loop {
            let asked = tokio::select! {
                () = tokio::time::sleep_until(self.due) => false,
                () = self.asks.asked.notified() => true,
            };
            let (fill, now) = (self.lanes.fill(), Instant::now());
            let since = now.saturating_duration_since(self.drained_at);
            // Spilled events (the adoption's, a reconcile's) go out at once:
            // up to twice the lanes wait there, and handing them out later
            // together with a quarter of the lanes held the loop long
            // enough for the lanes to fill.
            if asked || fill >= DRAIN_FILL || since >= DRAIN_INTERVAL || !self.spilled.is_empty() {
                break (asked, fill, since);
            }
            self.due = (now + next_look(fill, since)).min(self.drained_at + DRAIN_INTERVAL);
        };
        if let Some(l) = &mut self.logs {
            l.flush();
        }
        let n = self.drain_now(f);
        self.due = Instant::now() + next_look(fill, since);
        (n, asked)
    }

    /// Hand every event ready in the lanes to `f`, without waiting: all
    /// but the last [`HOLD_BACK`] of them.
    pub fn drain_now(&mut self, f: impl FnMut(&SockEvent)) -> usize {
        self.drain_before(horizon_ns(), f)
    }

    /// Hand every event in the lanes to `f`, the newest too: the last read,
    /// when the programs are about to be detached.
    pub fn drain_all(&mut self, f: impl FnMut(&SockEvent)) -> usize {
        self.drain_before(u64::MAX, f)
    }

    /// Move the events ready in the lanes (all but the last [`HOLD_BACK`])
    /// into memory, without handing them out: the next drain hands them out
    /// first. For long work on the event loop (the reconcile of a full dump,
    /// which under load takes a few hundred milliseconds of wall time), so
    /// that the kernel's lanes do not fill meanwhile and drop events. Holds
    /// at most twice what the lanes do; past that the rest stay in the lanes.
    /// A recording taps them when they are handed out, so that it has them
    /// in the order they were applied: after the work that spilled them.
    pub fn spill(&mut self) {
        self.drained_at = Instant::now();
        let room = (self.lanes.capacity() * SPILL_LANES).saturating_sub(self.spilled.len());
        let horizon = horizon_ns();
        let Ingest { lanes, spilled, .. } = self;
        lanes.drain(horizon, room, |bytes| {
            let mut record = [0u8; EVENT_BYTES];
            let n = bytes.len().min(EVENT_BYTES);
            record[..n].copy_from_slice(&bytes[..n]);
            spilled.push(record);
        });
    }

    /// Hand every event stamped before `horizon` (monotonic ns) to `f`:
    /// the spilled ones first (they are older than any in the lanes), and
    /// those in the lanes only when every spilled one went: a spilled
    /// event stamped at or after `horizon` keeps its place, and the lanes'
    /// newer ones wait behind it.
    pub fn drain_before(&mut self, horizon: u64, mut f: impl FnMut(&SockEvent)) -> usize {
        self.drained_at = Instant::now();
        let Ingest {
            lanes,
            decode_errors,
            tap,
            spilled,
            ..
        } = self;
        let mut decoded = |bytes: &[u8]| {
            if let Some(tap) = tap {
                tap(bytes);
            }
            match SockEvent::decode(bytes) {
                Ok(ev) => f(&ev),
                Err(_) => *decode_errors += 1,
            }
        };
        // Spilled in stamp order; one that does not decode goes with
        // those before it (and is counted).
        let due =
            spilled.partition_point(|r| SockEvent::decode(r).map_or(true, |e| e.ts_ns < horizon));
        for record in &spilled[..due] {
            decoded(record);
        }
        spilled.drain(..due);
        if !spilled.is_empty() {
            return due;
        }
        due + lanes.drain(horizon, usize::MAX, decoded)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tracer_common::{ABI_VERSION, Event, FAMILY_INET, KIND_STATE};

    use tokio::time::Instant;

    use super::{Drain, Ingest, MIN_LOOK, next_look};
    use crate::bpf::{DRAIN_INTERVAL, LOOK_INTERVAL, Stream, lanes::Lanes};

    /// A state event of `cookie`, stamped `ts_ns`.
    fn event(ts_ns: u64, cookie: u64) -> Event {
        Event {
            kind: KIND_STATE,
            version: ABI_VERSION,
            family: FAMILY_INET,
            old_state: 2,
            new_state: 1,
            ts_ns,
            cookie,
            ..Event::ZERO
        }
    }

    /// Write a state event of each cookie of `cookies` into lane 0, stamped
    /// `1_000 + cookie`.
    fn write(ingest: &mut Ingest, cookies: std::ops::Range<u64>) {
        for k in cookies {
            assert!(
                ingest.lanes.write(0, event(1_000 + k, k), true),
                "room for {k}"
            );
        }
    }

    /// The cookies a drain of everything hands out, in order.
    fn drain_all(ingest: &mut Ingest) -> Vec<u64> {
        let mut out = Vec::new();
        ingest.drain_all(|ev| out.push(ev.cookie));
        out
    }

    #[tokio::test]
    async fn spilled_events_free_their_slots_and_come_out_first() {
        // Two lanes of 16 slots, each full.
        let mut lanes = Lanes::owned(&[16; 2]);
        for k in 0..32u64 {
            assert!(lanes.write((k % 2) as usize, event(1_000 + k, k), true));
        }
        assert!(!lanes.write(0, event(2_000, 99), true), "full");
        let mut ingest = Ingest::new(Stream {
            events: lanes,
            logs: None,
        });
        ingest.spill();
        assert_eq!(ingest.lanes.fill(), 0.0, "every slot given back");
        // Newer events land in the freed slots meanwhile.
        for k in 32..40u64 {
            assert!(
                ingest
                    .lanes
                    .write((k % 2) as usize, event(1_000 + k, k), true)
            );
        }
        assert_eq!(drain_all(&mut ingest), (0..40).collect::<Vec<_>>());
        assert!(drain_all(&mut ingest).is_empty(), "each event once");
    }

    /// A drain up to a horizon hands out the spilled events stamped before
    /// it, and keeps the later ones, and the lanes' newer ones, in order.
    #[tokio::test]
    async fn a_drain_before_a_horizon_keeps_the_later_spilled_events() {
        let mut ingest = Ingest::new(Stream {
            events: Lanes::owned(&[16]),
            logs: None,
        });
        write(&mut ingest, 0..16);
        ingest.spill();
        write(&mut ingest, 16..20);
        let mut before = Vec::new();
        let n = ingest.drain_before(1_008, |ev| before.push(ev.cookie));
        assert_eq!((n, before), (8, (0..8).collect::<Vec<_>>()));
        assert_eq!(drain_all(&mut ingest), (8..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_spill_holds_at_most_twice_the_lanes() {
        let mut ingest = Ingest::new(Stream {
            events: Lanes::owned(&[16; 1]),
            logs: None,
        });
        let mut k = 0u64;
        for _ in 0..3 {
            while ingest.lanes.write(0, event(1_000 + k, k), true) {
                k += 1;
            }
            ingest.spill();
        }
        // 48 written; the third spill found room for 0 of its 16.
        assert_eq!(k, 48);
        assert_eq!(ingest.spilled.len(), 32);
        assert_eq!(ingest.lanes.fill(), 1.0, "the rest wait in the lane");
        assert_eq!(drain_all(&mut ingest), (0..48).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_drain_nobody_answers_times_out() {
        let d = Drain::default();
        assert!(!d.now(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn a_drain_is_answered_once_the_loop_has_read() {
        let d = Arc::new(Drain::default());
        let event_loop = {
            let d = d.clone();
            tokio::spawn(async move {
                // As the loop does: wake on the ask, read, then answer.
                d.asked.notified().await;
                d.done();
            })
        };
        assert!(d.now(Duration::from_secs(5)).await);
        event_loop.await.unwrap();
    }

    /// An ingest over one lane of 16 slots, after its first drain (which
    /// comes at once).
    async fn drained_once() -> Ingest {
        let mut ingest = Ingest::new(Stream {
            events: Lanes::owned(&[16]),
            logs: None,
        });
        let t0 = Instant::now();
        assert_eq!(ingest.next_batch(|_| {}).await, (0, false));
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "the first drain comes at once"
        );
        ingest
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_lane_is_read_every_drain_interval() {
        let mut ingest = drained_once().await;
        for round in 0..3u64 {
            write(&mut ingest, round..round + 1);
            let t0 = Instant::now();
            let mut read = Vec::new();
            let (n, asked) = ingest.next_batch(|ev| read.push(ev.cookie)).await;
            assert_eq!((n, asked, read), (1, false, vec![round]));
            assert_eq!(t0.elapsed(), DRAIN_INTERVAL, "round {round}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_a_quarter_full_is_read_at_the_next_look() {
        let mut ingest = drained_once().await;
        write(&mut ingest, 0..4);
        let t0 = Instant::now();
        assert_eq!(ingest.next_batch(|_| {}).await, (4, false));
        assert_eq!(t0.elapsed(), LOOK_INTERVAL);
        // It filled a quarter in one look: the next looks come sooner.
        write(&mut ingest, 4..8);
        let t0 = Instant::now();
        assert_eq!(ingest.next_batch(|_| {}).await, (4, false));
        assert_eq!(t0.elapsed(), MIN_LOOK);
    }

    #[tokio::test(start_paused = true)]
    async fn an_asked_drain_does_not_wait_for_the_lanes_to_fill() {
        let mut ingest = drained_once().await;
        write(&mut ingest, 7..8);
        ingest.drain_handle().asked.notify_one();
        let t0 = Instant::now();
        assert_eq!(ingest.next_batch(|_| {}).await, (1, true));
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }

    #[test]
    fn looks_come_half_way_to_a_quarter_full_at_the_rate_the_lanes_filled() {
        let ms = Duration::from_millis;
        assert_eq!(next_look(0.0, ms(50)), LOOK_INTERVAL, "nothing came");
        // 5 % in 50 ms: a quarter in another 200 ms; look in 50 at most.
        assert_eq!(next_look(0.05, ms(50)), LOOK_INTERVAL);
        // 10 % in 20 ms: a quarter in another 30 ms; look in 15.
        assert_eq!(next_look(0.10, ms(20)), ms(15));
        // Past a quarter already: as soon as looks go.
        assert_eq!(next_look(0.5, ms(50)), MIN_LOOK);
    }

    #[tokio::test(start_paused = true)]
    async fn spilled_events_go_out_at_the_next_look() {
        let mut ingest = drained_once().await;
        write(&mut ingest, 7..8);
        ingest.spill();
        let t0 = Instant::now();
        assert_eq!(ingest.next_batch(|_| {}).await, (1, false));
        assert!(t0.elapsed() <= LOOK_INTERVAL, "{:?}", t0.elapsed());
    }
}
