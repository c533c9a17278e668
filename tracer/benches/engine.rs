//! Engine microbenchmarks (criterion): how many events per second one core
//! turns from ring-buffer bytes into engine state and metrics, each stage
//! measured alone so that a regression is easy to place.
//!
//! - `decode`: raw 88-byte records -> `SockEvent`.
//! - `metrics`: the per-event metric updates (`event`, and the recorders'
//!   `transition` and `stay`) alone.
//! - `apply`: decoded events -> `Engine::apply` with a no-op observer.
//! - `apply_metrics`: the same with the metrics' recorders as the observer.
//! - `decode_engine`: bytes -> decode -> apply: the issue-5 target
//!   (2,000,000 events/s on one core).
//! - `pipeline`: bytes -> decode -> count the event -> apply with the recorders:
//!   what the agent's ring-buffer callback does, less the dwell window.
//! - `pipeline_host`: the same on the running agent's host in `cargo xtask
//!   bench`: the namespace at `tcp_max_tw_buckets` (131,072 TIME_WAIT
//!   records held, most closes leaving none), 32 connections open at once
//!   with their events interleaved, ports scattered, live reconciles
//!   (`Feed::at_host_limit`).
//!
//! - `reconcile/full`: `Engine::reconcile` with a full dump that lists
//!   every one of 100,000 TIME_WAIT sockets the engine holds (beside their
//!   100,000 finished server sockets), per socket in the dump.
//! - `reconcile/live`: the same engine with a live dump (TIME_WAIT left
//!   out) that lists nothing, per record held: the cost of the pass over
//!   records a dump did not show.
//! - `reconcile/port_forecast`: the port forecast the agent makes after
//!   each dump, over the same engine, per record held.
//!
//! The stateful benches feed a steady stream at 20,000 client-closes-first
//! connections/s of event time (ten events each, fresh cookies and tuples),
//! and every simulated second run a reconcile with an empty dump, as the
//! agent does when `tcp_max_tw_buckets` overflows; event generation and the
//! reconcile are outside the timed region.
mod synth;

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tracer::{
    engine::{Config, Engine, NS_PER_SEC, Observer, TimeWaitClock},
    event::SockEvent,
    export::metrics::Metrics,
    forecast::{Forecaster, PortSettings, PortSettingsByNetns, TOP},
    snapshot::{SocketSnapshot, TimerKind},
    tcp::{Family, TcpState},
};

/// Connections per timed iteration (ten events each).
const CONNS: u64 = 1_000;
/// 20,000 connections/s of event time.
const GAP_NS: u64 = 50_000;

/// An engine fed an endless stream of fresh connections.
struct Feed {
    engine: Engine,
    next_conn: u64,
    last_reconcile_ns: u64,
    /// Fed as [`Feed::at_host_limit`] says.
    host: bool,
}

/// The running agent's host in `cargo xtask bench`: its
/// `tcp_max_tw_buckets`, the kernel's default there (half the slots of
/// its hash table of established sockets).
const HOST_TW_LIMIT: u32 = 131_072;

/// Connections open at once in [`Feed::at_host_limit`]'s stream.
const OVERLAP: u64 = 32;

impl Feed {
    fn new() -> Feed {
        Feed {
            engine: Engine::new(Config::default()),
            next_conn: 0,
            last_reconcile_ns: 0,
            host: false,
        }
    }

    /// The engine as the running agent has it on the bench's host, warmed
    /// up for 70 s of event time (untimed): the namespace holds
    /// [`HOST_TW_LIMIT`] TIME_WAIT records, so most closes leave none;
    /// connections overlap and their ports are scattered
    /// (`synth::interleaved`); and the reconciles between full dumps are
    /// live ones, which leave TIME_WAIT records alone. (The plain feed's
    /// empty full dumps end every TIME_WAIT record past the slack: it
    /// holds 40,000 of them, two seconds' worth.)
    fn at_host_limit(metrics: &Metrics) -> Feed {
        let mut feed = Feed {
            // The timer wheel of a kernel at 250 Hz: TIME_WAIT stays end in
            // bursts, every 2 s.
            engine: Engine::new(Config {
                time_wait_clock: TimeWaitClock::new(250, 0, 0, 0),
                ..Config::default()
            }),
            host: true,
            ..Feed::new()
        };
        feed.engine.set_time_wait_limit(0, HOST_TW_LIMIT);
        let warm = 70 * NS_PER_SEC / GAP_NS / CONNS;
        for _ in 0..warm {
            let raw = feed.next_raw();
            decode_apply(&mut feed.engine, &raw, &mut (), |_| {});
            feed.maybe_reconcile(metrics);
        }
        let held = feed.engine.counts_by_state()[TcpState::TimeWait.index()];
        assert_eq!(
            held,
            u64::from(HOST_TW_LIMIT),
            "the namespace is at its limit"
        );
        feed
    }

    /// The next batch of raw records (untimed).
    fn next_raw(&mut self) -> Vec<[u8; 88]> {
        let evs = if self.host {
            synth::interleaved(self.next_conn, CONNS, GAP_NS, OVERLAP)
        } else {
            synth::connections(self.next_conn, CONNS, GAP_NS)
        };
        self.next_conn += CONNS;
        evs.iter().map(synth::bytes).collect()
    }

    /// Reconcile once per simulated second (untimed), like the agent.
    fn maybe_reconcile(&mut self, metrics: &Metrics) {
        let now = 1_000_000_000 + self.next_conn * GAP_NS;
        if now - self.last_reconcile_ns >= NS_PER_SEC {
            let empty: &[SocketSnapshot] = &[];
            self.engine
                .reconcile(empty, now, !self.host, &mut metrics.recorders());
            self.last_reconcile_ns = now;
        }
    }

    /// Time `stage` over `iters` fresh batches, each first turned into its
    /// input by `prep` (untimed).
    fn time<T>(
        &mut self,
        iters: u64,
        metrics: &Metrics,
        prep: impl Fn(Vec<[u8; 88]>) -> T,
        mut stage: impl FnMut(&mut Engine, &T),
    ) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let input = prep(self.next_raw());
            let t = Instant::now();
            stage(&mut self.engine, &input);
            total += t.elapsed();
            self.maybe_reconcile(metrics);
        }
        total
    }
}

/// Decode each record, hand it to `count`, and apply it.
fn decode_apply(
    engine: &mut Engine,
    raw: &[[u8; 88]],
    obs: &mut impl Observer,
    mut count: impl FnMut(&SockEvent),
) {
    for r in raw {
        if let Ok(ev) = SockEvent::decode(black_box(r)) {
            count(&ev);
            engine.apply(&ev, obs);
        }
    }
}

fn decode_all(raw: &[[u8; 88]]) -> Vec<SockEvent> {
    raw.iter()
        .filter_map(|r| SockEvent::decode(r).ok())
        .collect()
}

fn benches(c: &mut Criterion) {
    let metrics = Metrics::new();
    let events = CONNS * synth::EVENTS_PER_CONN as u64;
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(events));

    let raw: Vec<[u8; 88]> = synth::connections(0, CONNS, GAP_NS)
        .iter()
        .map(synth::bytes)
        .collect();
    g.bench_function("decode", |b| {
        b.iter(|| {
            for r in &raw {
                let _ = black_box(SockEvent::decode(black_box(r)));
            }
        })
    });

    let decoded = decode_all(&raw);
    let mut recorders = metrics.recorders();
    let mut read = [0u64; 5];
    g.bench_function("metrics", |b| {
        b.iter(|| {
            for ev in &decoded {
                read[ev.kind as usize] += 1;
                if let (Some(from), Some(to)) = (ev.old_state, ev.new_state) {
                    recorders.transition(0, from, to);
                    recorders.stay(0, from, black_box(6_000), false);
                }
            }
            // The agent folds its counts in once per drain.
            metrics.agent.events_read(&mut read);
            recorders.flush();
        })
    });

    let mut feed = Feed::new();
    g.bench_function("apply", |b| {
        b.iter_custom(|iters| {
            let prep = |raw: Vec<[u8; 88]>| decode_all(&raw);
            feed.time(iters, &metrics, prep, |engine, evs| {
                for ev in evs {
                    engine.apply(black_box(ev), &mut ());
                }
            })
        })
    });

    let mut feed = Feed::new();
    g.bench_function("apply_metrics", |b| {
        b.iter_custom(|iters| {
            let prep = |raw: Vec<[u8; 88]>| decode_all(&raw);
            feed.time(iters, &metrics, prep, |engine, evs| {
                for ev in evs {
                    engine.apply(black_box(ev), &mut recorders);
                }
                recorders.flush();
            })
        })
    });

    let mut feed = Feed::new();
    g.bench_function("decode_engine", |b| {
        b.iter_custom(|iters| {
            feed.time(
                iters,
                &metrics,
                |raw| raw,
                |engine, raw| decode_apply(engine, raw, &mut (), |_| {}),
            )
        })
    });

    // The agent's pipeline on each feed.
    let feeds = [
        ("pipeline", Feed::new()),
        ("pipeline_host", Feed::at_host_limit(&metrics)),
    ];
    for (name, mut feed) in feeds {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                feed.time(
                    iters,
                    &metrics,
                    |raw| raw,
                    |engine, raw| {
                        let count = |ev: &SockEvent| read[ev.kind as usize] += 1;
                        decode_apply(engine, raw, &mut recorders, count);
                        metrics.agent.events_read(&mut read);
                        recorders.flush();
                    },
                )
            })
        });
        // Keep the state gauge honest: the stream really reached steady
        // state, and the host's namespace is still at its limit.
        let held = feed.engine.counts_by_state()[TcpState::TimeWait.index()];
        if feed.host {
            assert_eq!(held, u64::from(HOST_TW_LIMIT), "still at the limit");
        }
        black_box(held);
    }
    g.finish();
}

/// TIME_WAIT client sockets held by the reconcile benches.
const HELD: u64 = 100_000;

/// The full dump's entry for the client socket of connection `k` of
/// `synth::connections`: its timewait socket, 55 s left.
fn time_wait_entry(k: u64) -> SocketSnapshot {
    let src = [127, 1, (k / 254 % 256) as u8, (k % 254 + 1) as u8];
    SocketSnapshot {
        cookie: 2 * k + 1,
        family: Family::Ipv4,
        state: TcpState::TimeWait,
        timewait: true,
        saddr: IpAddr::V4(Ipv4Addr::from(src)),
        sport: 32768 + (k % 28000) as u16,
        daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        dport: synth::SERVER_PORT,
        inode: 0,
        uid: 0,
        timer: TimerKind::TimeWait,
        expires_ms: 55_000,
        timer_retrans: 0,
        rqueue: 0,
        wqueue: 0,
        info: None,
        netns: 0,
        ifindex: 0,
    }
}

fn reconcile_benches(c: &mut Criterion) {
    let mut engine = Engine::new(Config {
        retention_ns: 3600 * NS_PER_SEC,
        ..Config::default()
    });
    for ev in &synth::connections(0, HELD, GAP_NS) {
        if let Ok(ev) = SockEvent::decode(&synth::bytes(ev)) {
            engine.apply(&ev, &mut ());
        }
    }
    // In the kernel's order: it walks its established hash, so the sockets
    // come scattered over the store, each a cold lookup, not in the order
    // their records were made.
    let mut dump: Vec<SocketSnapshot> = (0..HELD).map(time_wait_entry).collect();
    dump.sort_by_key(|d| d.cookie.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // A second after the last connection: every record is past the slack.
    let mut now = 1_000_000_000 + HELD * GAP_NS + NS_PER_SEC;
    let first = engine.reconcile(&dump, now, true, &mut ());
    assert_eq!(
        first.time_wait_confirmed, HELD,
        "the dump matches the records"
    );
    let held = engine.tracked() as u64;
    assert_eq!(held, 2 * HELD, "client and server records are all held");

    let mut g = c.benchmark_group("reconcile");
    g.throughput(Throughput::Elements(HELD));
    g.bench_function("full", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(engine.reconcile(black_box(&dump), now, true, &mut ()))
        })
    });
    g.throughput(Throughput::Elements(held));
    g.bench_function("live", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(engine.reconcile(&[], now, false, &mut ()))
        })
    });
    let mut forecaster = Forecaster::default();
    let mut settings = PortSettingsByNetns::default();
    settings.insert(1, PortSettings::DEFAULT);
    let ports = forecaster.engine_ports(&engine, 1, now, &settings);
    assert_eq!(ports.len(), TOP, "the busiest endpoints are forecast");
    g.bench_function("port_forecast", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(forecaster.engine_ports(&engine, 1, now, &settings))
        })
    });
    g.finish();
    assert_eq!(engine.tracked() as u64, held, "no record ended");
}

criterion_group!(engine, benches, reconcile_benches);
criterion_main!(engine);
