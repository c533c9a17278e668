//! The dashboard as the tests see it: its panels' queries and its
//! template variables, read from deploy/grafana/tracer.json, and the
//! substitution Grafana makes before a query reaches Prometheus.

use std::collections::BTreeMap;

use serde_json::Value;

/// The repository's dashboard file.
pub const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/tracer.json");

/// The dashboard's JSON model.
pub fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, those nested in collapsed rows included, rows left out.
pub fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels array") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// One query of one panel.
pub struct Target {
    /// `"<panel id> <panel title> / <refId>"`, for messages.
    pub name: String,
    /// A name Prometheus accepts for a recording rule of this query.
    pub record: String,
    /// The PromQL as written in the dashboard, variables and all.
    pub expr: String,
}

/// Every query of every panel.
pub fn targets(dash: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let (id, title, ref_id) = (&p["id"], &p["title"], &t["refId"]);
            out.push(Target {
                name: format!("panel {id} {title} / {ref_id}"),
                record: format!("dashboard:panel_{id}_{}", ref_id.as_str().unwrap_or("")),
                expr: t["expr"].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out
}

/// What Grafana would put in place of each variable: the dashboard's own
/// (`job`, `instance`, ...) and Grafana's (`__rate_interval`, ...).
pub struct Vars(pub BTreeMap<&'static str, String>);

impl Vars {
    /// Values for one agent scraped every second as job `tracer`: the
    /// interval variables as Grafana computes them for a 1 s scrape over a
    /// short time range, except `$__rate_interval`, which is widened to
    /// 20 s so every rate() holds many samples.
    pub fn for_agent(instance: &str, tw_buckets: &str) -> Vars {
        let mut v = BTreeMap::new();
        v.insert("job", "tracer".to_owned());
        v.insert("instance", regex_escape(instance));
        v.insert("state", ".+".to_owned());
        v.insert("tw_buckets", tw_buckets.to_owned());
        v.insert("__rate_interval", "20s".to_owned());
        v.insert("__interval", "1s".to_owned());
        v.insert("__range", "5m".to_owned());
        v.insert("datasource", "prometheus".to_owned());
        Vars(v)
    }

    /// `expr` with every `$name` and `${name}` replaced; panics on a
    /// variable the dashboard does not define.
    pub fn substitute(&self, expr: &str) -> String {
        let mut out = String::new();
        let mut rest = expr;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced.find('}').expect("unclosed ${");
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let value = self
                .0
                .get(name)
                .unwrap_or_else(|| panic!("${name} in {expr:?} is no variable the tests know"));
            out.push_str(value);
            rest = tail;
        }
        out.push_str(rest);
        out
    }
}

/// A value as Grafana formats it for `=~`: regex metacharacters escaped,
/// and that escape doubled inside a PromQL string.
fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// The dashboard's template variables.
pub fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .collect()
}

/// `label_values(SELECTOR, LABEL)` of a query variable: (selector, label).
pub fn label_values(query: &str) -> Option<(&str, &str)> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim(), label.trim()))
}

/// Every `tracer_*` metric name an expression mentions.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tracer_") {
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}
