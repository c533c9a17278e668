//! Every dashboard query against a real Prometheus scraping a real agent
//! during a real CLOSE_WAIT leak, TIME_WAIT churn, a half-open connection
//! and a stuck handshake. Privileged.

use std::time::{Duration, Instant};

use crate::common::{Agent, LeakyServer, Netns, NotAccepting, wait_until};
use crate::live::{LivePrometheus, Sample};
use crate::model::{Vars, dashboard, label_values, targets, variables};
use crate::promtool::rules_file;
use crate::scenario::{Blackholed, Churn};

/// The samples of query `ref_id` of the panel titled `title`.
fn panel_samples(prom: &LivePrometheus, vars: &Vars, title: &str, ref_id: &str) -> Vec<Sample> {
    let dash = dashboard();
    let t = targets(&dash)
        .into_iter()
        .find(|t| t.name.ends_with(&format!(" \"{title}\" / \"{ref_id}\"")))
        .unwrap_or_else(|| panic!("no panel {title:?} with a query {ref_id}"));
    prom.query(&vars.substitute(&t.expr))
        .unwrap_or_else(|e| panic!("{}: {e}", t.name))
}

/// The value of the sample whose `label` is `value`.
fn by_label(samples: &[Sample], label: &str, value: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.labels[label] == value)
        .map(|s| s.value)
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn every_dashboard_query_returns_data_from_a_real_agent_during_a_real_leak() {
    crate::common::require_root();
    // A namespace of our own: its sockets, its nft rule, and the agent,
    // the python3 server and Prometheus that live in it are this test's.
    let _ns = Netns::enter("dash");
    let agent = Agent::start(&[
        "--reconcile-interval",
        "250ms",
        "--time-wait-interval",
        "1s",
        "--close-wait-threshold",
        "1s",
        "--half-open-threshold",
        "2s",
        "--handshake-threshold",
        "2s",
    ]);
    let started = Instant::now();
    let churn = Churn::start();
    let mut leaky = LeakyServer::start(None);
    leaky.leak(3);
    let black = Blackholed::start();
    // Three clients: two fill the queue, the third waits in SYN_SENT.
    let full = NotAccepting::start(([127, 0, 0, 1], 0).into(), 3);
    let prom = LivePrometheus::start(agent.addr, &rules_file());
    let instance = agent.addr.to_string();
    let tw_buckets = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .expect("tcp_max_tw_buckets")
        .trim()
        .to_owned();
    let vars = Vars::for_agent(&instance, &tw_buckets);
    eprintln!(
        "agent {instance}, python3 pid {} leaking on port {}, churn on port {}, half-open to port {}, stuck handshake to port {}, full accept queue on port {}",
        leaky.pid(),
        leaky.port,
        churn.port,
        black.half_open_port,
        black.handshake_port,
        full.addr.port()
    );

    let up = wait_until(Duration::from_secs(30), || {
        prom.query("up{job=\"tracer\"}")
            .is_ok_and(|s| s.len() == 1 && s[0].value == 1.0)
    });
    assert!(up, "Prometheus never scraped the agent at {instance}");
    // The leak grows while Prometheus watches.
    std::thread::sleep(Duration::from_secs(3));
    leaky.leak(2);

    // Wait for what the scenario makes to reach Prometheus, and for the
    // first TIME_WAIT stays to end (60 s after the churn began).
    let leak_q =
        format!("tracer_close_wait_leaks_by_process{{instance=\"{instance}\",comm=\"python3\"}}");
    let wants = [
        (leak_q.as_str(), 5.0),
        (
            "sum(tracer_half_open_connections{reason=\"retransmitting\"})",
            1.0,
        ),
        ("sum(tracer_stuck_handshakes{kind=\"syn_sent\"})", 1.0),
        ("sum(tracer_stuck_handshakes{kind=\"syn_recv\"})", 1.0),
        (
            "sum(tracer_stuck_handshakes{kind=\"accept_queue_full\"})",
            1.0,
        ),
        ("sum(tracer_tcp_sockets{state=\"time_wait\"})", 100.0),
        // The forecasts' inputs: the leaking process's descriptors, and
        // the churn's ports.
        ("count(tracer_process_open_fds{comm=\"python3\"})", 1.0),
        ("count(tracer_ephemeral_ports_in_use)", 1.0),
        (
            "sum(increase(tracer_tcp_state_duration_seconds_count{state=\"time_wait\"}[20s]))",
            10.0,
        ),
    ];
    for (q, min) in wants {
        let ok = wait_until(Duration::from_secs(120), || {
            prom.query(q)
                .is_ok_and(|s| s.first().is_some_and(|s| s.value >= min))
        });
        let got = prom.query(q).map(|s| s.first().map(|s| s.value));
        assert!(
            ok,
            "{q}: wanted at least {min}, got {got:?} after {:?}",
            started.elapsed()
        );
    }
    eprintln!(
        "scenario visible in Prometheus after {:?}",
        started.elapsed()
    );

    // The variables, as Grafana's label_values() asks for them.
    let dash = dashboard();
    for v in variables(&dash) {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let Some((selector, label)) = label_values(q) else {
            continue;
        };
        let values = prom
            .label_values(&vars.substitute(selector), label)
            .unwrap_or_else(|e| panic!("variable {}: {e}", v["name"]));
        eprintln!("variable {}: {values:?}", v["name"]);
        assert!(!values.is_empty(), "variable {}: no values", v["name"]);
        if v["name"] == "instance" {
            assert!(values.contains(&instance), "{values:?}");
        }
    }

    // Every query of every panel returns data, and at least one number.
    let mut failures = Vec::new();
    let all = targets(&dash);
    for t in &all {
        let expr = vars.substitute(&t.expr);
        match prom.query(&expr) {
            Err(e) => failures.push(format!("{}: {e}\n    {expr}", t.name)),
            Ok(s) if s.is_empty() => failures.push(format!("{}: no data\n    {expr}", t.name)),
            Ok(s) if s.iter().all(|s| !s.value.is_finite()) => {
                failures.push(format!("{}: only NaN\n    {expr}", t.name))
            }
            Ok(s) => {
                let shown: Vec<String> = s
                    .iter()
                    .take(4)
                    .map(|s| format!("{}={}", s.labels, s.value))
                    .collect();
                eprintln!("ok {}: {} series: {}", t.name, s.len(), shown.join(" "));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );

    // The panels show the scenario itself.
    let leaks = panel_samples(&prom, &vars, "CLOSE_WAIT leaks by process", "A");
    assert!(by_label(&leaks, "comm", "python3").is_some_and(|v| v >= 5.0));
    let stuck = panel_samples(&prom, &vars, "Stuck handshakes by kind", "A");
    assert!(by_label(&stuck, "kind", "syn_sent").is_some_and(|v| v >= 1.0));
    assert!(by_label(&stuck, "kind", "syn_recv").is_some_and(|v| v >= 1.0));
    assert!(by_label(&stuck, "kind", "accept_queue_full").is_some_and(|v| v >= 1.0));
    let half = panel_samples(&prom, &vars, "Half-open connections by reason", "A");
    assert!(by_label(&half, "reason", "retransmitting").is_some_and(|v| v >= 1.0));
    // Loopback reuses TIME_WAIT 4-tuples (tcp_tw_reuse=2), so most stays
    // end early; none outlasts the 60 s timer and its wheel's tick.
    let dwell = panel_samples(&prom, &vars, "TIME_WAIT dwell (p50, p99)", "A");
    assert!(
        dwell
            .first()
            .is_some_and(|s| s.value > 0.0 && s.value <= 65.0),
        "TIME_WAIT p50: {:?}",
        dwell.first().map(|s| s.value)
    );

    // The alert rules: loaded, evaluated against the live data without
    // error, their expressions accepted by the query API, and the alerts
    // for what the scenario made pending (their `for:` is minutes long).
    let names = crate::alert_names();
    let evaluated = wait_until(Duration::from_secs(30), || {
        let rules = prom.rules();
        rules.len() == names.len()
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            })
    });
    let rules = prom.rules();
    assert!(evaluated, "rules not all evaluated and healthy: {rules:#?}");
    for r in &rules {
        let q = r["query"].as_str().expect("rule query");
        prom.query(q)
            .unwrap_or_else(|e| panic!("alert {}: {e}", r["name"]));
    }
    // What the scenario made must be pending (or firing) at an evaluation
    // that saw it: the data reached Prometheus above, but a rule group
    // evaluates on its own clock, up to an interval later.
    let expected = [
        ("TracerCloseWaitLeakGrowing", "comm", "python3"),
        ("TracerCloseWaitLeak", "job", "tracer"),
        ("TracerCloseWaitLeakInPod", "netns", "host"),
        ("TracerHalfOpenConnections", "reason", "retransmitting"),
        ("TracerStuckHandshakes", "kind", "syn_sent"),
        ("TracerStuckHandshakes", "kind", "syn_recv"),
        ("TracerAcceptQueueFull", "job", "tracer"),
    ];
    let pending = |rules: &[serde_json::Value], (name, label, value): (&str, &str, &str)| {
        rules.iter().any(|r| {
            r["name"] == name
                && r["alerts"].as_array().into_iter().flatten().any(|a| {
                    a["labels"]["instance"] == instance.as_str()
                        && a["labels"][label] == value
                        && (a["state"] == "pending" || a["state"] == "firing")
                })
        })
    };
    let mut rules = rules;
    wait_until(Duration::from_secs(30), || {
        rules = prom.rules();
        expected.iter().all(|e| pending(&rules, *e))
    });
    for e @ (name, label, value) in expected {
        assert!(
            pending(&rules, e),
            "{name}{{{label}=\"{value}\"}} not pending: {rules:#?}"
        );
    }
    for quiet in [
        "TracerAgentDown",
        "TracerAgentAbsent",
        "TracerTimeWaitBucketOverflow",
        "TracerTimeWaitNearBucketLimit",
    ] {
        let active: Vec<_> = rules
            .iter()
            .filter(|r| r["name"] == quiet)
            .flat_map(|r| r["alerts"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(
            active.is_empty(),
            "{quiet} active on a healthy agent: {active:#?}"
        );
    }

    // The TIME_WAIT timer: once the first stays expire (60 s after the
    // churn began), the dwell panel's p99 is the kernel's 60 s plus up to
    // one tick of its timer wheel.
    let q = "sum(increase(tracer_tcp_time_wait_ended_total{how=\"expired\"}[20s]))";
    let expired = wait_until(Duration::from_secs(100), || {
        prom.query(q)
            .is_ok_and(|s| s.first().is_some_and(|s| s.value >= 20.0))
    });
    assert!(
        expired,
        "{q}: {:?}",
        prom.query(q).map(|s| s.first().map(|s| s.value))
    );
    let p99 = panel_samples(&prom, &vars, "TIME_WAIT dwell (p50, p99)", "B");
    assert!(
        p99.first()
            .is_some_and(|s| (59.0..=65.0).contains(&s.value)),
        "TIME_WAIT p99: {:?}",
        p99.first().map(|s| s.value)
    );
    let ended = panel_samples(&prom, &vars, "TIME_WAIT ended, and overflows", "A");
    assert!(by_label(&ended, "how", "expired").is_some_and(|v| v > 0.0));
    eprintln!(
        "TIME_WAIT p99 {:?} s once the timers expire, after {:?}",
        p99.first().map(|s| s.value),
        started.elapsed()
    );

    eprintln!(
        "{} dashboard queries and {} alert rules checked after {:?}",
        all.len(),
        rules.len(),
        started.elapsed()
    );
    drop(black);
    drop(churn);
}
