//! The Grafana dashboard (deploy/grafana/tracer.json) and the Prometheus
//! alerting rules (deploy/prometheus/tracer-rules.yml), tested with the
//! real tools:
//!
//! - `promtool check rules` and `promtool test rules` on the deploy files
//!   (unprivileged; skipped, with a message, without promtool);
//! - the dashboard's JSON is well-formed: every panel has the `${datasource}`
//!   datasource and queries, every variable it uses is defined, every query
//!   parses (`promtool check rules` on them as recording rules), and every
//!   metric it or the rules name is one docs/metrics.md documents;
//! - privileged: a real agent, a real python3 server leaking CLOSE_WAIT,
//!   real TIME_WAIT churn, a real half-open connection and stuck handshake,
//!   and a real Prometheus scraping the agent with the rules loaded; every
//!   dashboard query and variable, substituted as Grafana would, returns
//!   data, and the alerts for what the scenario made go pending.
mod common;

#[path = "dashboards/live.rs"]
mod live;
#[path = "dashboards/model.rs"]
mod model;
#[path = "dashboards/promtool.rs"]
mod promtool;
#[path = "dashboards/scenario.rs"]
mod scenario;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use model::{Vars, dashboard, label_values, metric_names, panels, targets, variables};

/// Every alert the rules file defines, by `- alert: NAME` lines.
fn alert_names() -> Vec<String> {
    let text = std::fs::read_to_string(promtool::rules_file()).expect("tracer-rules.yml");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Each alert's `runbook_url` links the row docs/dashboards.md gives it,
/// in the repository Cargo.toml names.
#[test]
fn every_alert_links_its_runbook() {
    let rules = std::fs::read_to_string(promtool::rules_file()).expect("tracer-rules.yml");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/dashboards.md")).expect("dashboards.md");
    let repo = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .map(|r| r.trim_matches('"').to_owned())
        .expect("a repository in Cargo.toml");
    let urls: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .map(|u| u.trim_matches('"'))
        .collect();
    let names = alert_names();
    assert_eq!(urls.len(), names.len(), "one runbook_url per alert");
    for (name, url) in names.iter().zip(urls) {
        let anchor = name.to_lowercase();
        assert_eq!(
            url,
            format!("{repo}/blob/main/docs/dashboards.md#{anchor}"),
            "{name}"
        );
        assert!(
            doc.contains(&format!("<a id=\"{anchor}\"></a>{name}")),
            "docs/dashboards.md has no row for {name}"
        );
    }
}

#[test]
fn promtool_checks_the_alerting_rules() {
    if !promtool::available("promtool_checks_the_alerting_rules") {
        return;
    }
    let out = promtool::run(
        Path::new(promtool::RULES_DIR),
        &["check", "rules", "tracer-rules.yml"],
    );
    let want = format!("SUCCESS: {} rules found", alert_names().len());
    assert!(out.contains(&want), "{out}");
}

#[test]
fn promtool_unit_tests_of_every_alert_pass() {
    if !promtool::available("promtool_unit_tests_of_every_alert_pass") {
        return;
    }
    let out = promtool::run(
        Path::new(promtool::RULES_DIR),
        &["test", "rules", "tracer-rules.test.yml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Each alert has a test where it fires (exp_alerts with an entry) and
    // one where it must not (exp_alerts: []).
    let tests =
        std::fs::read_to_string(Path::new(promtool::RULES_DIR).join("tracer-rules.test.yml"))
            .expect("tracer-rules.test.yml");
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for name in alert_names() {
        let cases: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {name}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{name}: no test where it stays quiet"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "{name}: no test where it fires"
        );
    }
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );

    let vars: BTreeMap<&str, &serde_json::Value> = variables(&dash)
        .into_iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    let ds = vars.get("datasource").expect("a `datasource` variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    for name in ["job", "instance", "state"] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("a `{name}` variable"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        let q = v["query"]["query"].as_str().expect("query");
        assert!(
            label_values(q).is_some(),
            "{name}: {q} is not label_values(selector, label)"
        );
    }

    let mut ids = BTreeSet::new();
    let mut boxes = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24 && w > 0 && h > 0, "{}: gridPos {g}", p["title"]);
        boxes.push((p["title"].to_string(), x, y, w, h));
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart =
                a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1 || a.2 + a.4 <= b.2 || b.2 + b.4 <= a.2;
            assert!(apart, "panels {} and {} overlap", a.0, b.0);
        }
    }
    let all = panels(&dash);
    assert!(all.len() >= 20, "{} panels", all.len());
    for p in all {
        let title = &p["title"];
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title}: description"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: datasource"
        );
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}: datasource");
        let ts = p["targets"].as_array().expect("targets");
        assert!(!ts.is_empty(), "{title}: no queries");
        let mut refs = BTreeSet::new();
        for t in ts {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId"
            );
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: query datasource"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: expr"
            );
        }
    }
    // Every variable a query uses is the dashboard's or Grafana's own.
    let known = Vars::for_agent("127.0.0.1:9077", "131072");
    for name in known.0.keys() {
        assert!(
            name.starts_with("__") || vars.contains_key(name),
            "${name} is not defined"
        );
    }
    for t in targets(&dash) {
        assert!(!known.substitute(&t.expr).contains('$'), "{}", t.name);
    }
}

#[test]
fn every_dashboard_expression_parses() {
    if !promtool::available("every_dashboard_expression_parses") {
        return;
    }
    let dash = dashboard();
    let vars = Vars::for_agent("127.0.0.1:9077", "131072");
    let rules: Vec<(String, String)> = targets(&dash)
        .iter()
        .map(|t| (t.record.clone(), vars.substitute(&t.expr)))
        .collect();
    let out = promtool::check_rules_text(&promtool::recording_rules(&rules), "exprs")
        .unwrap_or_else(|e| panic!("a dashboard query does not parse:\n{e}"));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );
    // The check does check: a query with a syntax error is refused.
    let broken = [(
        "dashboard:broken".to_owned(),
        "sum by (le (rate(x[1m]))".to_owned(),
    )];
    let err = promtool::check_rules_text(&promtool::recording_rules(&broken), "broken")
        .expect_err("promtool accepted a broken expression");
    assert!(err.contains("parse error"), "{err}");
}

#[test]
fn dashboard_and_rules_use_only_documented_metrics() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md");
    let mut documented = BTreeSet::new();
    for l in doc.lines() {
        let Some(rest) = l.strip_prefix("| `") else {
            continue;
        };
        let Some((name, row)) = rest.split_once('`') else {
            continue;
        };
        documented.insert(name.to_owned());
        if row.trim_start_matches([' ', '|']).starts_with("histogram") {
            for s in ["_bucket", "_count", "_sum"] {
                documented.insert(format!("{name}{s}"));
            }
        }
    }
    let dash = dashboard();
    let mut used: Vec<(String, String)> = targets(&dash)
        .iter()
        .flat_map(|t| {
            metric_names(&t.expr)
                .into_iter()
                .map(|m| (t.name.clone(), m))
        })
        .collect();
    for v in variables(&dash) {
        if let Some(q) = v["query"]["query"].as_str() {
            used.extend(
                metric_names(q)
                    .into_iter()
                    .map(|m| (format!("variable {}", v["name"]), m)),
            );
        }
    }
    let rules = std::fs::read_to_string(promtool::rules_file()).expect("tracer-rules.yml");
    used.extend(
        metric_names(&rules)
            .into_iter()
            .map(|m| ("tracer-rules.yml".to_owned(), m)),
    );
    assert!(used.len() > 40, "{} metric uses", used.len());
    let unknown: Vec<_> = used
        .iter()
        .filter(|(_, m)| !documented.contains(m))
        .collect();
    assert!(unknown.is_empty(), "not in docs/metrics.md: {unknown:?}");
}

#[path = "dashboards/live_test.rs"]
mod live_test;
