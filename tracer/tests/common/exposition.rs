//! Reading samples out of a Prometheus text exposition.

/// The value of `series` (name plus exact label set) in an exposition.
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
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
