//! Reading samples out of a Prometheus text exposition (classic or
//! OpenMetrics): enough to check and sum an agent's series, not a full
//! parser (no escapes inside label values, no exemplars).

/// One sample line: `name{labels} value`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The label set as written, without braces (`a="1",b="2"`).
    pub labels: &'a str,
    /// The value.
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"'))
        })
    }

    /// True when the sample has every `(label, value)` of `want`.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// Every sample line of an exposition, comments and unparsable lines left
/// out.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.trim().parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            Some(Sample {
                name,
                labels,
                value,
            })
        })
}

/// The value of `series` (name plus exact label set, as the agent writes
/// it) in an exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The sample lines of an exposition whose names start with one of
/// `prefixes`: context for a failed assertion.
pub fn metric_lines(text: &str, prefixes: &[&str]) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#') && prefixes.iter().any(|p| l.starts_with(p)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sum of every sample of metric `name` (over all its label sets).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text)
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// The sum of the samples of metric `name` that have every label of
/// `want`; `None` when no sample matches.
pub fn gauge(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .filter(|s| s.name == name && s.has(want))
        .fold(None, |sum, s| Some(sum.unwrap_or(0.0) + s.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tracer_tcp_sockets x\n# TYPE tracer_tcp_sockets gauge\n\
        tracer_tcp_sockets{state=\"established\"} 4\n\
        tracer_workload_sockets{pod=\"\",netns=\"host\",state=\"time_wait\"} 7\n\
        tracer_workload_sockets{pod=\"\",netns=\"4026\",state=\"time_wait\"} 2\n\
        tracer_netns_tracked 3\n\
        tracer_netns_tracked_total 9\n# EOF\n";

    #[test]
    fn samples_name_labels_and_values() {
        let s: Vec<Sample> = samples(TEXT).collect();
        assert_eq!(s.len(), 5);
        assert_eq!(s[1].name, "tracer_workload_sockets");
        assert_eq!(s[1].label("netns"), Some("host"));
        assert_eq!(s[1].label("pod"), Some(""));
        assert_eq!(s[1].label("missing"), None);
        assert_eq!(s[3].labels, "");
    }

    #[test]
    fn values_sums_and_gauges() {
        assert_eq!(
            metric_value(TEXT, "tracer_tcp_sockets{state=\"established\"}"),
            Some(4.0)
        );
        assert_eq!(metric_value(TEXT, "tracer_netns_tracked"), Some(3.0));
        assert_eq!(metric_value(TEXT, "tracer_tcp_sockets"), None);
        assert_eq!(metric_sum(TEXT, "tracer_workload_sockets"), 9.0);
        assert_eq!(metric_sum(TEXT, "tracer_netns_tracked"), 3.0);
        let tw = [("netns", "host"), ("state", "time_wait")];
        assert_eq!(gauge(TEXT, "tracer_workload_sockets", &tw), Some(7.0));
        assert_eq!(
            gauge(TEXT, "tracer_workload_sockets", &[("state", "time_wait")]),
            Some(9.0)
        );
        assert_eq!(
            gauge(TEXT, "tracer_tcp_sockets", &[("state", "listen")]),
            None
        );
        assert_eq!(
            metric_lines(TEXT, &["tracer_netns"]),
            "tracer_netns_tracked 3\ntracer_netns_tracked_total 9"
        );
    }
}
