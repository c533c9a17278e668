//! The files a run writes besides BENCHMARKS.md text: the SVG plots,
//! bench/last-run.csv with every raw sample (with each sample's agent CPU
//! ns per event, its kernel programs' bpf_stats deltas and its worst
//! TIME_WAIT gauge deviation), and bench/time-wait-truth.csv with every
//! TIME_WAIT sample.
use std::{fmt::Write as _, path::Path};

use super::{
    agent::Variant, doc::write, kprog::ProgCost, measure::Scenario, measure::VariantSummary,
    report::Report, svg, truth::Worst,
};

impl Report {
    pub(super) fn write_plots(&self, root: &Path) -> anyhow::Result<()> {
        // Evenly spaced categories: each sweep rate, then the peak ("max").
        let mut scenarios: Vec<&Scenario> = self.sweep.iter().collect();
        scenarios.sort_by_key(|s| s.cfg.rate.unwrap_or(u64::MAX));
        scenarios.extend(self.main.as_ref().filter(|m| m.cfg.rate.is_none()));
        let categories: Vec<String> = scenarios
            .iter()
            .map(|sc| match sc.cfg.rate {
                Some(r) if r % 1000 == 0 => format!("{}k", r / 1000),
                Some(r) => format!("{:.1}k", r as f64 / 1000.0),
                None => sc.summary(Variant::Baseline).map_or("max".into(), |b| {
                    format!("max ({:.1}k)", b.conn_rate.median / 1000.0)
                }),
            })
            .collect();
        let plot =
            |f: &dyn Fn(&VariantSummary) -> Option<f64>, skip_base: bool| -> Vec<svg::Series> {
                Variant::ALL
                    .into_iter()
                    .filter(|v| !(skip_base && *v == Variant::Baseline))
                    .map(|v| {
                        let points = scenarios
                            .iter()
                            .enumerate()
                            .filter_map(|(i, sc)| Some((i as f64, f(&sc.summary(v)?)?)))
                            .collect();
                        svg::Series {
                            name: v.name().to_string(),
                            points,
                            color: v as usize,
                        }
                    })
                    .filter(|s: &svg::Series| !s.points.is_empty())
                    .collect()
            };
        let ratio = svg::Chart {
            title: "Throughput with a tracer, relative to no tracer",
            x_label: "target connections/s (open loop); max: as fast as possible (baseline median)",
            y_label: "throughput ratio to baseline",
            series: plot(&|v| v.ratio.map(|r| r.median), false),
            reference: Some((0.97, "target 0.97")),
            y_include: &[1.0],
            x_categories: categories.clone(),
        };
        write(
            &root.join("bench/throughput-ratio.svg"),
            &svg::render(&ratio),
        )?;
        let cpu = svg::Chart {
            title: "Agent CPU (user + system), % of one core",
            x_label: "target connections/s (open loop); max: as fast as possible",
            y_label: "% of one core",
            series: plot(&|v| v.cpu_pct.map(|c| c.median), true),
            reference: Some((10.0, "target at 10k/s")),
            y_include: &[0.0],
            x_categories: categories,
        };
        write(&root.join("bench/agent-cpu.svg"), &svg::render(&cpu))
    }

    pub(super) fn write_csv(&self, root: &Path) -> anyhow::Result<()> {
        let mut s = String::from(
            "scenario,target_rate,variant,round,conn_per_s,completed,errors,secs,events,lost,corrections,agent_cpu_pct,agent_ctx_per_s,agent_hwm_kib,machine_busy_pct,other_pct,agent_ns_per_event,bpf_programs,sources,tw_samples,tw_kernel_peak,tw_gauge_dev_worst,tw_gauge_dev_worst_pct\n",
        );
        let mut truth = String::from(
            "scenario,target_rate,sources,variant,round,t_secs,kernel_before,gauge,kernel_after,deviation,deviation_pct,sockstat_tw_before,sockstat_tw_after\n",
        );
        for (name, sc) in self.scenarios() {
            for x in &sc.samples {
                let a = x.agent.as_ref();
                let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
                let worst = Worst::of(&x.truth);
                let _ = writeln!(
                    s,
                    "{name},{},{:?},{},{:.1},{},{},{:.3},{},{},{},{},{},{},{:.1},{:.1},{},{},{:?},{},{},{},{}",
                    sc.cfg.rate.unwrap_or(0),
                    x.variant,
                    x.round,
                    x.churn.rate(),
                    x.churn.completed,
                    x.churn.errors,
                    x.secs(),
                    opt(a.and_then(|a| a.events)),
                    opt(a.and_then(|a| a.lost)),
                    opt(a.and_then(|a| a
                        .corrections
                        .as_ref()
                        .map(|c| c.iter().map(|(_, n)| n).sum()))),
                    opt(x.cpu_pct()),
                    opt(x.ctx_per_sec()),
                    a.and_then(|a| a.hwm_kib)
                        .map_or(String::new(), |k| k.to_string()),
                    x.machine_busy_pct,
                    x.other_pct,
                    opt(x.agent_ns_per_event()),
                    progs_field(&x.progs),
                    sc.cfg.sources,
                    x.truth.len(),
                    x.tw_peak().map_or(String::new(), |n| n.to_string()),
                    opt(worst.map(|w| w.abs)),
                    opt(worst.map(|w| w.pct)),
                );
                for p in &x.truth {
                    let _ = writeln!(
                        truth,
                        "{name},{},{:?},{:?},{},{:.2},{},{},{},{},{},{},{}",
                        sc.cfg.rate.unwrap_or(0),
                        sc.cfg.sources,
                        x.variant,
                        x.round,
                        p.t_secs,
                        p.ss_before,
                        opt(p.gauge),
                        p.ss_after,
                        opt(p.deviation()),
                        p.deviation_pct()
                            .map_or(String::new(), |v| format!("{v:.2}")),
                        p.sockstat.map_or(String::new(), |t| t[0].to_string()),
                        p.sockstat.map_or(String::new(), |t| t[1].to_string()),
                    );
                }
            }
        }
        write(&root.join("bench/last-run.csv"), &s)?;
        write(&root.join("bench/time-wait-truth.csv"), &truth)
    }

    /// Every churn scenario with its CSV name: `peak`, `reuse`, `sweep`,
    /// `steady` (one running agent; `round` is the window).
    fn scenarios(&self) -> impl Iterator<Item = (&'static str, &Scenario)> {
        self.main
            .iter()
            .map(|m| ("peak", m))
            .chain(self.reuse.iter().map(|m| ("reuse", m)))
            .chain(self.sweep.iter().map(|m| ("sweep", m)))
            .chain(self.steady.iter().map(|m| ("steady", m)))
    }
}

/// The `bpf_programs` CSV field: `name:runs:run_time_ns` of each of the
/// variant's programs over the window, space-separated.
fn progs_field(progs: &[ProgCost]) -> String {
    let items: Vec<String> = progs
        .iter()
        .map(|p| format!("{}:{}:{}", p.name, p.run_cnt, p.run_time_ns))
        .collect();
    items.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_counters_fit_one_csv_field() {
        let p = |name: &str, rc, rt| ProgCost {
            name: name.into(),
            kind: "tracing".into(),
            run_time_ns: rt,
            run_cnt: rc,
        };
        let f = progs_field(&[
            p("inet_sock_set_state", 10, 5000),
            p("tcp_send_reset", 0, 0),
        ]);
        assert_eq!(f, "inet_sock_set_state:10:5000 tcp_send_reset:0:0");
        assert!(!f.contains(','));
    }
}
