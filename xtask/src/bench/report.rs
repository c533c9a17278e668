//! Results as Markdown: printed, and written into the generated blocks of
//! BENCHMARKS.md (the files beside it are in `output`, block replacement
//! and file writing in `doc`, the per-event cost table in `progcost`, the
//! targets list in `targets`; a `Scenario`'s samples are `measure`'s).
use std::{fmt::Write as _, path::Path, time::Duration};

use super::{
    BenchArgs,
    doc::{replace_block, write},
    faults, machine,
    measure::{Scenario, VariantSummary},
    micro, progcost, soak,
    stats::fmt_opt,
    truth::fmt_worst,
};

/// Everything one `cargo xtask bench` measured.
pub struct Report {
    quick: bool,
    note: Option<String>,
    command: String,
    binary: Option<String>,
    /// CPUs of the machine the run measured.
    pub cpus: usize,
    /// The peak-churn scenario.
    pub main: Option<Scenario>,
    /// The main scenario from one source address: ports reused from TIME_WAIT.
    pub reuse: Option<Scenario>,
    /// The rate sweep.
    pub sweep: Vec<Scenario>,
    /// One agent that has run for a while, measured in windows in a row.
    pub steady: Option<Scenario>,
    /// The engine microbenchmarks.
    pub micro: Option<micro::Results>,
    /// The long run.
    pub soak: Option<soak::Results>,
    /// The fault soak.
    pub faults: Option<faults::Results>,
}

impl Report {
    /// An empty report for a run with these flags.
    pub fn new(args: &BenchArgs) -> Report {
        let argv: Vec<String> = std::env::args()
            .skip(1)
            .map(|a| if a.contains(' ') { format!("{a:?}") } else { a })
            .collect();
        Report {
            quick: args.quick,
            note: args.note.clone(),
            command: format!("cargo xtask {}", argv.join(" ")),
            binary: args.tracer_bin.as_ref().map(|p| p.display().to_string()),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            main: None,
            reuse: None,
            sweep: Vec::new(),
            steady: None,
            micro: None,
            soak: None,
            faults: None,
        }
    }

    /// The results as Markdown for the terminal.
    pub fn terminal(&self) -> String {
        let mut s = String::new();
        for block in [
            self.results_md(),
            self.micro_md(),
            self.soak.as_ref().map(soak::Results::markdown),
            self.faults.as_ref().map(faults::Results::markdown),
        ]
        .into_iter()
        .flatten()
        {
            s.push_str(&block);
            s.push('\n');
        }
        s
    }

    /// Update BENCHMARKS.md, the plots and bench/last-run.csv.
    pub fn write(&self, root: &Path, took: Duration) -> anyhow::Result<()> {
        let path = root.join("BENCHMARKS.md");
        let mut doc =
            std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
        let mode = match (self.soak.is_some(), self.faults.is_some(), self.quick) {
            (true, _, _) => "`--soak`",
            (false, true, _) => "`--soak-faults`",
            (false, false, true) => "`--quick`",
            (false, false, false) => "full",
        };
        let stamp = format!(
            "_Measured {} by `{}` ({mode} run, {:.0} s after the build; work tree at {}){}{}._\n\n",
            machine::now_utc(),
            self.command,
            took.as_secs_f64(),
            machine::commit(),
            self.binary
                .as_ref()
                .map_or(String::new(), |b| format!("; tracer binary {b}")),
            self.note
                .as_ref()
                .map_or(String::new(), |n| format!("; {n}"))
        );
        doc = replace_block(
            &doc,
            "machine",
            &machine::describe_md(self.binary.as_deref()),
        );
        if let Some(md) = self.results_md() {
            doc = replace_block(&doc, "results", &format!("{stamp}{md}"));
            self.write_plots(root)?;
            self.write_csv(root)?;
        }
        if let Some(md) = self.micro_md() {
            doc = replace_block(&doc, "micro", &format!("{stamp}{md}"));
        }
        if let Some(soak) = &self.soak {
            doc = replace_block(&doc, "soak", &format!("{stamp}{}", soak.markdown()));
            write(&root.join("bench/soak-rss.svg"), &soak.chart_svg())?;
            write(&root.join("bench/soak.csv"), &soak::csv(&soak.points))?;
        }
        if let Some(f) = &self.faults {
            doc = replace_block(&doc, "faults", &format!("{stamp}{}", f.markdown()));
        }
        write(&path, &doc)?;
        eprintln!("xtask: wrote {}", path.display());
        Ok(())
    }

    fn results_md(&self) -> Option<String> {
        let main = self.main.as_ref()?;
        let mut s = String::new();
        let _ = writeln!(s, "### Peak churn: {}\n", main.describe());
        s.push_str(&variant_table(&main.summaries()));
        s.push_str(
            "\nMedian (min–max) over rounds. The ratio is taken per round against the same round's \
             baseline. Lost events and corrections are totals over all rounds. Agent CPU is user + \
             system time from /proc/<pid>/stat over the churn window; kernel-side BPF time is charged \
             to the workload and shows in the ratio. \"Other load\" is machine busy time not spent by \
             the workload or the agent: other processes sharing the machine. The TIME_WAIT columns \
             come from samples taken during the churn: the kernel's count (sock_diag, as `ss -tan state \
             time-wait` lists it, in the churn's network namespace) read right before and after a scrape \
             of `tracer_tcp_sockets{state=\"time_wait\"}`, and inside those the namespace's timewait \
             sockets from /proc/net/sockstat, an instant count; the deviation is the gauge's distance \
             from the band the four reads span (its top the higher instant count), worst over all \
             samples of all rounds, in sockets and in % of the kernel's count.\n\n",
        );
        if let Some(r) = &self.reuse {
            let _ = writeln!(s, "### Port reuse: {}\n", r.describe());
            s.push_str(&variant_table(&r.summaries()));
            s.push('\n');
        }
        if let Some(r) = &self.steady {
            let _ = writeln!(s, "### A running agent: {}\n", r.describe());
            s.push_str(&variant_table(&r.summaries()));
            s.push_str(
                "\nMedian (min–max) over the windows. The agent is started once; the warm-up \
                 covers its adoption of the TIME_WAIT sockets already there and the first full \
                 dump the reconcile budget paces, which each sweep round's fresh agent pays inside \
                 its own window.\n\n",
            );
        }
        s.push_str(&progcost::markdown(
            main,
            &self.sweep,
            self.steady.as_ref(),
            self.quick,
        ));
        s.push_str(&self.targets_md());
        if !self.sweep.is_empty() {
            let _ = writeln!(s, "\n### Rate sweep: {}\n", self.sweep[0].describe());
            s.push_str("![throughput ratio against connection rate](bench/throughput-ratio.svg)\n");
            s.push_str("![agent CPU against connection rate](bench/agent-cpu.svg)\n\n");
            s.push_str("| target conn/s | variant | conn/s | ratio to baseline | events/s | lost | agent CPU % | agent context switches/s | TIME_WAIT gauge − ss, worst: sockets / % |\n");
            s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
            for sc in &self.sweep {
                for v in sc.summaries() {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        sc.cfg.rate.unwrap_or(0),
                        v.variant.name(),
                        v.conn_rate.fmt(0),
                        fmt_opt(v.ratio, 3),
                        fmt_opt(v.events_rate, 0),
                        v.lost.map_or("–".into(), |l| format!("{l:.0}")),
                        fmt_opt(v.cpu_pct, 1),
                        fmt_opt(v.ctx_rate, 0),
                        fmt_worst(v.tw_worst)
                    );
                }
            }
        }
        Some(s)
    }

    fn micro_md(&self) -> Option<String> {
        let m = self.micro.as_ref()?;
        let mut s = format!(
            "### Engine microbenchmarks (criterion{}, one core)\n\n| benchmark | time per iteration | events/s |\n|---|---:|---:|\n",
            if m.quick { ", quick settings" } else { "" }
        );
        for r in &m.rows {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                r.id,
                human_ns(r.ns_per_iter),
                r.per_sec()
                    .map_or("–".into(), |e| format!("{:.2} M", e / 1e6))
            );
        }
        if let Some((bytes, n)) = m.memory {
            let _ = writeln!(
                s,
                "\nMemory (`engine_memory`, counting global allocator, {n} synthetic sockets): \
                 **{bytes:.1} heap bytes per tracked socket** in the worse population. `peak` is the high-water mark while the tables grew; \
                 `allocations_per_event_at_cap` counts allocator calls per event once the store is full.\n\n\
                 | measure | value |\n|---|---:|"
            );
            for (k, v) in m
                .memory_detail
                .iter()
                .filter(|(k, _)| k.contains("_per_") && k != "bytes_per_socket")
            {
                let _ = match k.contains("allocations") {
                    true => writeln!(s, "| `{k}` | {v:.4} |"),
                    false => writeln!(s, "| `{k}` | {v:.1} |"),
                };
            }
        }
        Some(s)
    }
}

fn variant_table(vs: &[VariantSummary]) -> String {
    let mut s = String::from(
        "| variant | conn/s | ratio to baseline | tracer events/s | lost in kernel | reconcile corrections (of which at the TIME_WAIT limit) | agent CPU % of 1 core | agent context switches/s | agent peak RSS MiB | other load % of 1 core | failed conns | kernel TIME_WAIT, peak | TIME_WAIT gauge − ss, worst: sockets / % |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in vs {
        let corr = v.corrections.as_ref().map_or("–".into(), |c| {
            let (lost_related, tw) = split_corrections(c);
            format!("{:.0} ({tw:.0})", lost_related + tw)
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.variant.name(),
            v.conn_rate.fmt(0),
            fmt_opt(v.ratio, 3),
            fmt_opt(v.events_rate, 0),
            v.lost.map_or("–".into(), |l| format!("{l:.0}")),
            corr,
            fmt_opt(v.cpu_pct, 1),
            fmt_opt(v.ctx_rate, 0),
            fmt_opt(v.hwm_mib, 1),
            v.other_pct.fmt(0),
            v.errors,
            v.tw_peak.map_or("–".into(), |n| n.to_string()),
            fmt_worst(v.tw_worst)
        );
    }
    s
}

/// Reasons of the corrections that come from the `tcp_max_tw_buckets`
/// limit, not from lost events: a close judged to leave a timewait socket
/// that never appeared, and one judged an overflow whose timewait socket
/// did appear.
pub(super) const TW_LIMIT: [&str; 2] = ["time_wait_never_appeared", "time_wait_at_limit"];

/// (corrections from anything but the TIME_WAIT limit, those from it).
pub(super) fn split_corrections(c: &[(String, f64)]) -> (f64, f64) {
    c.iter().fold((0.0, 0.0), |(o, t), (r, n)| {
        if TW_LIMIT.contains(&r.as_str()) {
            (o, t + n)
        } else {
            (o + n, t)
        }
    })
}

fn human_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}
