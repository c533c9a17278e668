//! The smoke suite: which privileged integration tests make up each check,
//! and how long each may take under TCG. The one table to edit when a check
//! is added or a test is renamed.

/// One row of the outcome table: one or more tests of one test binary, run
/// in one invocation (`BIN --exact T1 T2 ... --test-threads=1`).
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The name used by `--checks` and in the table.
    pub name: &'static str,
    /// What it proves, in a few words (report and docs/vmtest.md).
    pub what: &'static str,
    /// The integration test target (`tracer/tests/<binary>.rs`).
    pub binary: &'static str,
    /// Full test names, as `--exact` wants them.
    pub tests: &'static [&'static str],
    /// Wall-clock limit in the guest, in seconds: about five times the
    /// longest time measured under TCG with 2 vCPUs on a 2-core host
    /// (docs/vmtest.md), rounded up.
    pub timeout_secs: u32,
}

/// The name of the check that, on a kernel expected to refuse, becomes the
/// refusal check (`tracer events` as root must exit 2 with the documented
/// sentence).
pub const STARTUP: &str = "startup";

/// Every check, in the order they run and appear in the table.
pub const CHECKS: [Check; 7] = [
    Check {
        name: STARTUP,
        what: "an unprivileged user gets one sentence and exit status 2",
        binary: "events",
        tests: &["unprivileged_user_gets_one_sentence"],
        timeout_secs: 60,
    },
    Check {
        name: "events",
        what: "event paths and counts match sock_diag for loopback v4/v6 and 300 connections",
        binary: "events",
        tests: &[
            "ipv4_loopback_lifecycle",
            "ipv6_loopback_lifecycle",
            "hundreds_of_connections_none_missing_none_duplicated",
        ],
        timeout_secs: 240,
    },
    Check {
        name: "shape",
        what: "the loaded programs call no byte loops, keep a small stack, and take slots as the kernel allows",
        binary: "ebpf_shape",
        tests: &["loaded_programs_call_no_byte_loops_and_keep_a_small_stack"],
        timeout_secs: 120,
    },
    Check {
        name: "gauges",
        what: "the agent's TIME_WAIT gauge agrees with ss after 200 client closes",
        binary: "agent",
        tests: &["time_wait_agrees_with_sock_diag_after_200_client_closes"],
        timeout_secs: 240,
    },
    Check {
        name: "leak",
        what: "a real CLOSE_WAIT leak is named with pid, fd and age, then cleared",
        binary: "leaks",
        tests: &["detector_flags_real_close_wait_and_clears_when_the_process_exits"],
        timeout_secs: 120,
    },
    Check {
        name: "half_open",
        what: "a peer that vanishes behind nftables over veth is flagged half-open",
        binary: "leaks_net",
        tests: &["half_open::half_open_peer_vanished_is_flagged_and_a_busy_neighbour_is_not"],
        timeout_secs: 240,
    },
    Check {
        name: "netns",
        what: "a leak in a namespace made after the agent is named from the host, one 4-tuple in two namespaces stays two sockets, and every event names its namespace while 70 take turns",
        binary: "netns",
        tests: &[
            "a_leak_in_a_namespace_made_after_the_agent_is_named_from_the_host",
            "the_same_four_tuple_in_two_namespaces_is_kept_apart",
            "every_event_names_its_namespace_when_seventy_take_turns",
        ],
        timeout_secs: 240,
    },
];

/// The checks named by `--checks` (all when empty), in table order.
pub fn select(names: &[String]) -> anyhow::Result<Vec<Check>> {
    if let Some(bad) = names.iter().find(|n| !CHECKS.iter().any(|c| c.name == *n)) {
        let known: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
        anyhow::bail!(
            "unknown check `{bad}` in --checks; known: {}",
            known.join(",")
        );
    }
    Ok(CHECKS
        .iter()
        .filter(|c| names.is_empty() || names.iter().any(|n| n == c.name))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_usable_as_file_names() {
        for (i, c) in CHECKS.iter().enumerate() {
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{}",
                c.name
            );
            assert!(CHECKS[..i].iter().all(|d| d.name != c.name), "{}", c.name);
            assert!(!c.tests.is_empty(), "{}", c.name);
        }
        assert!(CHECKS.iter().any(|c| c.name == STARTUP));
    }

    #[test]
    fn select_rejects_unknown_checks() {
        assert_eq!(select(&["leak".to_string()]).unwrap()[0].name, "leak");
        assert!(select(&["nope".to_string()]).is_err());
    }
}
