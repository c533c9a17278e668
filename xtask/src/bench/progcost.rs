//! What one event costs, per variant and per program: the kernel programs'
//! Δrun_time_ns / Δrun_cnt from bpf_stats ([`super::kprog`]), each
//! beside the empty program (the floor) of the same round, and the agent's
//! CPU per event; summarised over rounds and written as the "Kernel
//! programs, ns per event" table.
use std::fmt::Write as _;

use super::{
    agent::Variant,
    kprog::{self, MIN_RUNS},
    measure::Sample,
    measure::Scenario,
    stats::{Summary, fmt_opt},
};

/// What a row measures.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// A kernel program, by the name and type bpftool shows.
    Prog {
        /// Program name.
        name: String,
        /// Program type.
        kind: String,
    },
    /// The agent process: its CPU time per event it handled.
    Agent,
    /// Of [`Subject::Agent`], the sock_diag dumps (`tracer run` only).
    AgentDumps,
    /// Of [`Subject::Agent`], everything but the dumps: reading the
    /// events and applying them (`tracer run` only).
    AgentRest,
}

/// One variant × program (or the agent), over the rounds of one scenario.
#[derive(Clone, Debug)]
pub struct CostRow {
    /// Which variant.
    pub variant: Variant,
    /// Which program, or the agent.
    pub subject: Subject,
    /// Nanoseconds per event, median (min–max) over rounds.
    pub ns: Summary,
    /// Events counted over all rounds (program runs, or agent events).
    pub events: f64,
    /// Per-round ratio to the same round's floor (kernel programs only).
    pub to_floor: Option<Summary>,
}

impl CostRow {
    /// Whether this is the tracer's state program (on `inet_sock_set_state`;
    /// the kernel keeps 15 characters of a name, bpftool shows the BTF name).
    pub fn is_state_prog(&self) -> bool {
        matches!(&self.subject, Subject::Prog { name, .. } if name.starts_with("inet_sock_set_s"))
    }
}

/// Which variant the kernel programs are held against: bpftrace's empty
/// program, the floor issue 9 measures against, or where bpftrace did not
/// run, the empty raw tracepoint program.
pub fn floor_variant(samples: &[Sample]) -> Option<Variant> {
    [Variant::Empty, Variant::EmptyRaw]
        .into_iter()
        .find(|&v| samples.iter().any(|s| s.variant == v))
}

/// The rows of one scenario: for each variant in report order, its programs
/// that ran at least [`MIN_RUNS`] times in some round (most runs first),
/// then, for the tracer's variants, the agent.
pub fn rows(samples: &[Sample]) -> Vec<CostRow> {
    let floor_variant = floor_variant(samples);
    let floor = |round: usize| {
        samples
            .iter()
            .find(|s| Some(s.variant) == floor_variant && s.round == round)
            .and_then(|s| kprog::busiest(&s.progs)?.ns_per_event())
    };
    let mut out = Vec::new();
    for v in Variant::ALL {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.variant == v).collect();
        // Program (name, type) with its runs over all rounds.
        let mut progs: Vec<(String, String, u64)> = Vec::new();
        for p in mine.iter().flat_map(|s| &s.progs) {
            match progs
                .iter_mut()
                .find(|(n, k, _)| *n == p.name && *k == p.kind)
            {
                Some((_, _, runs)) => *runs += p.run_cnt,
                None => progs.push((p.name.clone(), p.kind.clone(), p.run_cnt)),
            }
        }
        progs.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        for (name, kind, runs) in progs {
            // (ns per event, ratio to that round's floor) of each round.
            let per_round: Vec<(f64, Option<f64>)> = mine
                .iter()
                .filter_map(|s| {
                    let p = s.progs.iter().find(|p| p.name == name && p.kind == kind)?;
                    let ns = p.ns_per_event()?;
                    Some((ns, floor(s.round).map(|f| ns / f)))
                })
                .collect();
            let Some(ns) = Summary::of(per_round.iter().map(|r| r.0)) else {
                continue;
            };
            out.push(CostRow {
                variant: v,
                subject: Subject::Prog { name, kind },
                ns,
                events: runs as f64,
                to_floor: Summary::of(per_round.iter().filter_map(|r| r.1)),
            });
        }
        if !matches!(v, Variant::Run | Variant::Reading | Variant::Events) {
            continue;
        }
        let events: f64 = mine.iter().filter_map(|s| s.agent.as_ref()?.events).sum();
        let rest = |s: &Sample| Some(s.agent_ns_per_event()? - s.agent_dump_ns_per_event()?);
        let parts: [(Subject, Option<Summary>); 3] = [
            (
                Subject::Agent,
                Summary::of(mine.iter().filter_map(|s| s.agent_ns_per_event())),
            ),
            (
                Subject::AgentDumps,
                Summary::of(mine.iter().filter_map(|s| s.agent_dump_ns_per_event())),
            ),
            (
                Subject::AgentRest,
                Summary::of(mine.iter().filter_map(|s| rest(s))),
            ),
        ];
        for (subject, ns) in parts {
            if let Some(ns) = ns {
                out.push(CostRow {
                    variant: v,
                    subject,
                    ns,
                    events,
                    to_floor: None,
                });
            }
        }
    }
    out
}

/// A variant's agent over all rounds together: (CPU per event, of which
/// the dumps), in ns, as the sums of CPU over the sum of events. For one
/// running agent measured in windows this is the figure that counts: a
/// full dump comes every half minute or so beside many TIME_WAIT
/// sockets, so most windows hold none and their median leaves it out.
pub fn pooled(samples: &[Sample], v: Variant) -> Option<(f64, Option<f64>)> {
    let agents: Vec<_> = samples
        .iter()
        .filter(|s| s.variant == v)
        .filter_map(|s| s.agent.as_ref())
        .collect();
    let events: f64 = agents.iter().filter_map(|a| a.events).sum();
    if agents.is_empty() || events <= 0.0 {
        return None;
    }
    let per_event = |secs: f64| secs * 1e9 / events;
    let cpu: f64 = agents.iter().map(|a| a.cpu_secs).sum();
    let dumps: Option<f64> = agents.iter().map(|a| a.dump_cpu_secs).sum();
    Some((per_event(cpu), dumps.map(per_event)))
}

/// The tracer run's state program row.
pub fn state_prog(rows: &[CostRow]) -> Option<&CostRow> {
    rows.iter()
        .find(|r| r.variant == Variant::Run && r.is_state_prog())
}

/// The busiest program of a variant (rows are sorted by runs).
pub fn first_prog(rows: &[CostRow], v: Variant) -> Option<&CostRow> {
    rows.iter()
        .find(|r| r.variant == v && matches!(r.subject, Subject::Prog { .. }))
}

/// The load column of the running agent's rows.
pub fn steady_load(sc: &Scenario) -> String {
    format!(
        "{} conn/s, running agent (after {:.0} s)",
        sc.cfg.rate.map_or("peak".into(), thousands),
        sc.warmup.unwrap_or_default().as_secs_f64()
    )
}

/// `10000` as `10,000`.
fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The agent row of a variant, or one of its parts.
pub fn agent(rows: &[CostRow], v: Variant, part: Subject) -> Option<&CostRow> {
    rows.iter().find(|r| r.variant == v && r.subject == part)
}

/// The table over the peak scenario, the 10,000 conn/s sweep point and the
/// running agent.
pub fn markdown(
    main: &Scenario,
    sweep: &[Scenario],
    steady: Option<&Scenario>,
    quick: bool,
) -> String {
    let mut s = String::from(
        "### Kernel programs, ns per event (bpf_stats)\n\n\
         | load | variant | program | ns per event | events counted | ratio to the floor |\n\
         |---|---|---|---:|---:|---:|\n",
    );
    let at10k = sweep.iter().find(|s| s.cfg.rate == Some(10_000));
    let mut any = false;
    let loads = [
        ("peak".to_string(), Some(main)),
        ("10,000 conn/s".to_string(), at10k),
        (steady.map(steady_load).unwrap_or_default(), steady),
    ];
    for (load, sc) in loads {
        let Some(sc) = sc else { continue };
        for r in rows(&sc.samples) {
            any = true;
            let what = match &r.subject {
                Subject::Prog { name, kind } => format!("`{name}` ({kind})"),
                Subject::Agent => "agent: CPU per event (user + system)".into(),
                Subject::AgentDumps => {
                    "agent: of which the sock_diag dumps (walk + reconcile)".into()
                }
                Subject::AgentRest => "agent: of which reading and applying events".into(),
            };
            let _ = writeln!(
                s,
                "| {load} | {} | {what} | {} | {:.0} | {} |",
                r.variant.name(),
                r.ns.fmt(0),
                r.events,
                match r.subject {
                    Subject::Prog { .. } => fmt_opt(r.to_floor, 2),
                    _ => "–".into(),
                }
            );
        }
    }
    if !any {
        return "### Kernel programs, ns per event (bpf_stats)\n\nNot measured \
                (`--no-bpf-stats`, or bpftool missing).\n"
            .into();
    }
    let _ = write!(
        s,
        "\nMedian (min–max) over rounds of Δ`run_time_ns` / Δ`run_cnt` of each program the variant's \
         process holds (`prog_id:` in /proc/<pid>/fdinfo, counters from `bpftool prog show -j`) over \
         the churn window, with `kernel.bpf_stats_enabled=1`, whose own cost (two clock reads per run) is in \
         every figure, the floor's too. Only programs that ran ≥ {MIN_RUNS} times in \
         a round. Events counted: runs summed over rounds. The floor is `bpftrace -e '{}'` \
         (tracepoint), as issue 9 measures it (where bpftrace did not run, `{raw}`); the ratio is \
         taken per round against that round's floor. `{raw}` (raw_tracepoint) is an empty program \
         on the same tracepoint that the kernel runs as it runs the tracer's BTF tracepoint \
         program, straight from the tracepoint's call, where for bpftrace's it first fills a \
         trace record (`cargo xtask bench --hold-floor-program` loads it): the floor of the \
         tracer's own kind of program. The kernel keeps 15 characters of a program \
         name; bpftool shows the full name when the program has BTF. The agent row is the agent's CPU \
         time (/proc/<pid>/stat, 10 ms ticks) over the window divided by the events it handled \
         (`tracer events`: its whole life's count). For `tracer run` it is split in two: the \
         sock_diag dumps (Δ`tracer_reconcile_cpu_seconds_total`: the kernel's walk of the socket \
         tables and the engine's reconcile, all dumps together capped by `--reconcile-budget`, 1% \
         of a core by default) and the rest; each part is its own median over rounds. The \
         reading-only floor is `tracer run` following an empty namespace: it reads every event \
         and applies none, and its dumps still walk the host's socket tables, which the \
         namespace shares. The `peak` and `10,000 conn/s` rows measure a fresh agent per round from its start; the \
         running agent's rows one agent after its warm-up, per window; its target is judged over \
         the windows together (CPU summed over events summed), since beside many TIME_WAIT \
         sockets a full dump comes only every half minute or so and most windows hold none.{}\n\n",
        super::agent::EMPTY_PROGRAM,
        if quick {
            " With `--quick` the windows are short and the figures rough."
        } else {
            ""
        },
        raw = super::floor::PROGRAM_NAME,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{agent::AgentStats, churn::ChurnResult, kprog::ProgCost};
    use std::time::Duration;

    fn sample(variant: Variant, round: usize, progs: &[(&str, u64, u64)]) -> Sample {
        Sample {
            variant,
            round,
            churn: ChurnResult {
                completed: 1000,
                errors: 0,
                elapsed: Duration::from_secs(1),
            },
            agent: Some(AgentStats {
                cpu_secs: 0.01,
                events: Some(20_000.0),
                dump_cpu_secs: (variant == Variant::Run).then_some(0.004),
                ..AgentStats::default()
            }),
            machine_busy_pct: 0.0,
            other_pct: 0.0,
            progs: progs
                .iter()
                .map(|&(name, rt, rc)| ProgCost {
                    name: name.into(),
                    kind: "tracing".into(),
                    run_time_ns: rt,
                    run_cnt: rc,
                })
                .collect(),
            truth: Vec::new(),
        }
    }

    #[test]
    fn rows_per_program_against_the_same_rounds_floor() {
        let samples = [
            sample(Variant::Empty, 0, &[("inet_sock_set_s", 1_000_000, 10_000)]),
            sample(Variant::Empty, 1, &[("inet_sock_set_s", 2_000_000, 10_000)]),
            sample(
                Variant::Run,
                0,
                &[
                    ("inet_sock_set_state", 3_000_000, 10_000),
                    ("tcp_retransmit_skb", 5_000, 10),
                ],
            ),
            sample(
                Variant::Run,
                1,
                &[("inet_sock_set_state", 4_000_000, 10_000)],
            ),
            // The reading-only floor loads the same program.
            sample(
                Variant::Reading,
                0,
                &[("inet_sock_set_state", 9_000_000, 10_000)],
            ),
        ];
        let rows = rows(&samples);
        // `tracer run`'s own state program, not the floor's.
        let st = state_prog(&rows).expect("state row");
        assert_eq!((st.ns.min, st.ns.max, st.events), (300.0, 400.0, 20_000.0));
        let floor = agent(&rows, Variant::Reading, Subject::Agent).expect("floor's agent row");
        assert_eq!(floor.ns.median, 500.0);
        // Round 0: 300/100, round 1: 400/200.
        let r = st.to_floor.expect("ratio");
        assert_eq!((r.min, r.max), (2.0, 3.0));
        // Ran fewer than MIN_RUNS times: no row.
        assert!(rows.iter().all(|r| !matches!(&r.subject,
            Subject::Prog { name, .. } if name == "tcp_retransmit_skb")));
        // 10 ms of agent CPU over 20,000 events.
        let a = agent(&rows, Variant::Run, Subject::Agent).expect("agent row");
        assert_eq!(a.ns.median, 500.0);
        // Of which 4 ms in dumps: 200 ns per event, and 300 for the rest.
        let part = |s| agent(&rows, Variant::Run, s).map(|r| r.ns.median);
        assert_eq!(part(Subject::AgentDumps), Some(200.0));
        assert_eq!(part(Subject::AgentRest), Some(300.0));
        assert_eq!(
            first_prog(&rows, Variant::Empty).map(|r| r.ns.median),
            Some(150.0)
        );
        assert!(agent(&rows, Variant::Empty, Subject::Agent).is_none());
    }

    #[test]
    fn bpftraces_empty_program_is_the_floor_and_the_raw_one_stands_in_without_it() {
        let samples = [
            sample(Variant::Empty, 0, &[("inet_sock_set_s", 2_000_000, 10_000)]),
            sample(Variant::EmptyRaw, 0, &[("empty_raw_tp", 1_000_000, 10_000)]),
            sample(
                Variant::Run,
                0,
                &[("inet_sock_set_state", 3_000_000, 10_000)],
            ),
        ];
        assert_eq!(floor_variant(&samples), Some(Variant::Empty));
        let st = |samples: &[Sample]| {
            let rows = rows(samples);
            state_prog(&rows).and_then(|r| r.to_floor).map(|r| r.median)
        };
        assert_eq!(st(&samples), Some(1.5));
        // The raw program's own row is held against bpftrace's too.
        let rows = rows(&samples);
        let raw = first_prog(&rows, Variant::EmptyRaw).expect("raw row");
        assert_eq!(raw.to_floor.map(|r| r.median), Some(0.5));
        // Without bpftrace, the raw program is the floor.
        assert_eq!(floor_variant(&samples[1..]), Some(Variant::EmptyRaw));
        assert_eq!(st(&samples[1..]), Some(3.0));
        assert_eq!(floor_variant(&samples[2..]), None);
    }

    #[test]
    fn pooled_counts_the_window_that_held_the_full_dump() {
        let window = |cpu_secs: f64, dump_cpu_secs: f64| {
            let mut s = sample(Variant::Run, 0, &[]);
            s.agent = Some(AgentStats {
                cpu_secs,
                events: Some(1_000_000.0),
                dump_cpu_secs: Some(dump_cpu_secs),
                ..AgentStats::default()
            });
            s
        };
        // Two quiet windows at 200 ns per event, and one that held a full
        // dump of 90 ms: the median leaves the dump out, the sum does not.
        let samples = [window(0.2, 0.0), window(0.29, 0.09), window(0.2, 0.0)];
        let rows = rows(&samples);
        let a = agent(&rows, Variant::Run, Subject::Agent).expect("agent row");
        assert_eq!(a.ns.median, 200.0);
        let (ns, dumps) = pooled(&samples, Variant::Run).expect("pooled");
        assert!((ns - 230.0).abs() < 1e-9, "{ns}");
        assert!((dumps.expect("dumps") - 30.0).abs() < 1e-9);
        assert!(pooled(&samples, Variant::Reading).is_none());
    }
}
