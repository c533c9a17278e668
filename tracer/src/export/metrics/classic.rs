//! The classic Prometheus text format (version 0.0.4), for clients that
//! do not ask for OpenMetrics.

/// Turn an OpenMetrics exposition into the classic Prometheus text format
/// (version 0.0.4) for clients that do not ask for OpenMetrics, such as
/// `curl` or `promtool check metrics`: counter families are named with
/// their `_total` suffix, and `# UNIT` and `# EOF` lines are dropped.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 1024);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_suffix_and_openmetrics_lines_go() {
        let om = "# HELP tracer_tcp_retransmits Retransmitted TCP segments.\n\
                  # TYPE tracer_tcp_retransmits counter\n\
                  tracer_tcp_retransmits_total 0\n\
                  # HELP tracer_tcp_state_duration_seconds Completed stays.\n\
                  # TYPE tracer_tcp_state_duration_seconds histogram\n\
                  # UNIT tracer_tcp_state_duration_seconds seconds\n\
                  # HELP tracer_tcp_sockets Current TCP sockets per state.\n\
                  # TYPE tracer_tcp_sockets gauge\n\
                  # EOF\n";
        let classic = to_classic_text(om);
        assert!(classic.contains("# TYPE tracer_tcp_retransmits_total counter\n"));
        assert!(classic.contains("# HELP tracer_tcp_retransmits_total Retransmitted"));
        assert!(classic.contains("tracer_tcp_retransmits_total 0\n"));
        assert!(classic.contains("# TYPE tracer_tcp_sockets gauge\n"));
        assert!(classic.contains("# TYPE tracer_tcp_state_duration_seconds histogram\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    }
}
