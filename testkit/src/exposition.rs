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

/// The exposition with what varies between runs fixed, for golden copies:
/// only the families whose names `keep` accepts (by their `# HELP`/`# TYPE`
/// lines; other comments when it accepts the line), and within each
/// family the series sorted by their labels (a
/// family keeps its series in a hash map). The lines of one series (a
/// histogram's buckets, sum and count) keep the encoder's order.
pub fn by_series(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<&str> = Vec::new();
    let flush = |series: &mut Vec<&str>, out: &mut String| {
        series.sort_by_key(|l| series_labels(l));
        for l in series.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    let mut keeping = true;
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            flush(&mut series, &mut out);
            if let Some(name) = ["HELP", "TYPE", "UNIT"]
                .iter()
                .find_map(|k| comment.trim_start().strip_prefix(k))
                .and_then(|rest| rest.split_whitespace().next())
            {
                keeping = keep(name);
                if keeping {
                    out.push_str(line);
                    out.push('\n');
                }
            } else if keep(line) {
                // A comment of no family (`# EOF`): kept when `keep` takes
                // the line itself.
                out.push_str(line);
                out.push('\n');
            }
        } else if keeping {
            series.push(line);
        }
    }
    flush(&mut series, &mut out);
    out
}

/// A sample line's label set, without the `le` of a histogram bucket.
fn series_labels(line: &str) -> String {
    let Some((_, rest)) = line.split_once('{') else {
        return String::new();
    };
    let labels = rest.rsplit_once('}').map_or(rest, |(l, _)| l);
    labels
        .split(',')
        .filter(|l| !l.starts_with("le="))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_series_sorts_within_a_family_and_keeps_a_histogram_whole() {
        let text = "# TYPE b gauge\nb{x=\"2\"} 1\nb{x=\"1\"} 1\n\
            # TYPE h histogram\nh_bucket{s=\"z\",le=\"1\"} 0\nh_bucket{s=\"z\",le=\"+Inf\"} 1\n\
            h_count{s=\"z\"} 1\nh_bucket{s=\"a\",le=\"1\"} 2\nh_bucket{s=\"a\",le=\"+Inf\"} 2\n\
            h_count{s=\"a\"} 2\n# TYPE skip gauge\nskip 1\n# EOF\n";
        let got = by_series(text, |name| name != "skip");
        assert_eq!(
            got,
            "# TYPE b gauge\nb{x=\"1\"} 1\nb{x=\"2\"} 1\n\
             # TYPE h histogram\nh_bucket{s=\"a\",le=\"1\"} 2\nh_bucket{s=\"a\",le=\"+Inf\"} 2\n\
             h_count{s=\"a\"} 2\nh_bucket{s=\"z\",le=\"1\"} 0\nh_bucket{s=\"z\",le=\"+Inf\"} 1\n\
             h_count{s=\"z\"} 1\n# EOF\n"
        );
    }

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
