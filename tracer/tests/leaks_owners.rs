//! Privileged tests of honest owners: a CLOSE_WAIT leak held by root (this
//! process), looked at by `tracer leaks` as uid 65534 without capabilities,
//! and by an agent that lacks CAP_SYS_PTRACE, says "owner unknown" and
//! which capabilities would name it, in the table and in the JSON; never
//! "no process", which is for sockets that have none. Root, for contrast,
//! names the owner. Each test runs in its own network namespace and looks
//! only at its own port.
mod common;
#[path = "caps/support.rs"]
#[allow(
    dead_code,
    reason = "this binary uses the agent and the leak, not the rest"
)]
mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{CapAgent, Grant, NOBODY, close_wait_leak, flag_on, without};

use common::NO_AGENT;

/// `tracer leaks ARGS` as uid/gid 65534 with no capabilities (or as root):
/// (exit status, stdout, stderr).
fn leaks(unprivileged: bool, args: &[&str]) -> (i32, String, String) {
    let bin = env!("CARGO_BIN_EXE_tracer");
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--inh-caps=-all",
            bin,
        ]);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .arg("leaks")
        .args(args)
        .output()
        .expect("run tracer leaks");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The group and the flag of the close_wait leak on `port` in a JSON report.
fn group_and_flag(report: &Value, port: u16) -> Option<(Value, Value)> {
    let suffix = format!(":{port}");
    report["leaks"].as_array()?.iter().find_map(|g| {
        let f = g["sockets"].as_array()?.iter().find(|f| {
            f["kind"] == "close_wait" && f["local"].as_str().is_some_and(|l| l.ends_with(&suffix))
        })?;
        Some((g.clone(), f.clone()))
    })
}

fn assert_unknown_with_hint(group: &Value, flag: &Value) {
    assert_eq!(flag["owners"], Value::Array(vec![]), "{flag}");
    assert_eq!(flag["owner_unknown"], true, "{flag}");
    let hint = flag["owner_hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH") && hint.contains("root"),
        "{flag}"
    );
    assert!(group["pid"].is_null(), "{group}");
    assert_eq!(group["owner_unknown"], true, "{group}");
    assert_eq!(group["hint"], flag["owner_hint"], "{group}");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn unprivileged_snapshot_says_owner_unknown_and_which_capabilities() {
    let _ns = common::Netns::enter("ownsnap");
    let leak = close_wait_leak();
    let args = ["--agent", NO_AGENT, "--netns", "host"];

    let (code, json, err) = leaks(true, &[&args[..], &["--json"]].concat());
    assert_eq!(code, 1, "a leak: exit 1; {err}");
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let (group, flag) = group_and_flag(&report, leak.port).expect("the leak is flagged");
    assert_eq!(flag["inode"], leak.inode, "{flag}");
    assert_unknown_with_hint(&group, &flag);

    // Across every namespace, the snapshot says which it could not find:
    // root's processes' namespaces are unreadable to this user.
    let (_, json, err) = leaks(true, &["--agent", NO_AGENT, "--json"]);
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let note = report["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(
            "processes' network namespaces could not be read (that needs CAP_SYS_PTRACE), so a \
             namespace only they hold was not looked at"
        ),
        "{note}; {err}"
    );

    let (code, table, _) = leaks(true, &args);
    assert_eq!(code, 1);
    assert!(
        table.contains("1 suspected leak, owner unknown for 1\n"),
        "{table}"
    );
    assert!(
        table.contains("\nowner unknown: 1 socket, 1 in CLOSE_WAIT"),
        "{table}"
    );
    assert!(table.contains("  why:     other users' /proc/<pid>/fd could not be read: run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"), "{table}");
    assert!(!table.contains("0 processes"), "{table}");
    assert!(!table.contains("no process (orphaned"), "{table}");

    // Root names it.
    let (_, json, _) = leaks(false, &[&args[..], &["--json"]].concat());
    let report: Value = serde_json::from_str(&json).expect("json");
    let (group, flag) = group_and_flag(&report, leak.port).expect("flagged");
    assert_eq!(group["pid"], std::process::id(), "{group}");
    assert_eq!(flag["owner_unknown"], false, "{flag}");
    assert!(flag.get("owner_hint").is_none(), "{flag}");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn an_agent_without_cap_sys_ptrace_says_owner_unknown_through_tracer_leaks() {
    let _ns = common::Netns::enter("ownagent");
    let agent = CapAgent::start(&Grant::Ambient(without("sys_ptrace")));
    // The namespace is new: its one listener is the agent.
    let url = format!("http://{}", only_listener());
    let leak = close_wait_leak();
    let flagged = common::wait_until(Duration::from_secs(10), || flag_on(&agent, &leak).is_some());
    assert!(flagged, "the leak on port {} was not flagged", leak.port);
    let (code, json, err) = leaks(false, &["--json", "--agent", &url]);
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(report["source"], "agent");
    let (group, flag) = group_and_flag(&report, leak.port).expect("flagged");
    assert_unknown_with_hint(&group, &flag);
    let (_, table, _) = leaks(false, &["--agent", &url]);
    assert!(table.contains("owner unknown for 1"), "{table}");
    assert!(!table.contains("no process (orphaned"), "{table}");
}

/// The one listening TCP address `ss` sees in this thread's namespace.
fn only_listener() -> String {
    let out = Command::new("ss").args(["-Hltn"]).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let addrs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(addrs.len(), 1, "{text}");
    addrs[0].to_owned()
}
