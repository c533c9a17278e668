//! `tracer top` as a person uses it: in a terminal (tmux), against a real
//! agent watching real sockets, with keys typed and the screen read back.
//!
//! The privileged test runs in a network namespace of its own, so the
//! only sockets on screen are its own: a python3 server that never closes
//! the connections its clients closed (three CLOSE_WAIT leaks), five
//! connections the clients closed first (TIME_WAIT on the client side, to
//! one remote endpoint) and three the server closed first (TIME_WAIT on
//! the server's port). tmux runs its own server (`-S`, a socket named by pid) in
//! that namespace and is killed on drop, pass or fail.
mod common;
#[path = "top/tmux.rs"]
mod tmux;

use std::{
    net::{TcpListener, TcpStream},
    process::{Command, Output},
    time::Duration,
};

use tmux::{BIN, Tmux, assert_terminal_given_back, then_status};

/// The count beside `state` in the states panel (the screen's left edge).
fn state_count(screen: &str, state: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let rest = l.strip_prefix('│')?.strip_prefix(state)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The line of the screen holding `needle` in a table cell followed by a
/// count: the count.
fn count_after(screen: &str, needle: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let (_, rest) = l.split_once(&format!("│{needle} "))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `n` connections to a fresh listener on 127.0.0.1; the client closes
/// first (`client_first`) or the server does. Returns the listener's port.
fn closed_connections(n: usize, client_first: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    for _ in 0..n {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let (first, second) = if client_first { (c, s) } else { (s, c) };
        drop(first);
        std::thread::sleep(Duration::from_millis(20));
        drop(second);
    }
    port
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn top_in_tmux_shows_states_leaks_and_time_wait_and_answers_keys() {
    let _ns = common::Netns::enter("top");
    let agent = common::Agent::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "250ms",
    ]);
    let url = format!("http://{}", agent.addr);
    let mut server = common::LeakyServer::start(None);
    server.leak(3);
    let (port, pid) = (server.port, server.pid());
    common::wait_close_wait(port, 3);
    let remote_port = closed_connections(5, true);
    let local_port = closed_connections(3, false);
    let ready = common::wait_until(Duration::from_secs(15), || {
        let leaks = agent.json("/api/v1/leaks");
        let tw = agent.json("/api/v1/sockets?state=time_wait&limit=10000");
        let on = |p: u16| {
            let p = serde_json::json!(p);
            let tw = tw.as_array().into_iter().flatten();
            tw.filter(|s| s["sport"] == p || s["dport"] == p).count()
        };
        leaks["leak_count"].as_u64() == Some(3) && on(remote_port) == 5 && on(local_port) == 3
    });
    assert!(
        ready,
        "the agent did not see the leaks and TIME_WAIT sockets"
    );

    // --once: one plain-text frame on a pipe, status 0.
    let once = tracer(&["top", "--once", "--agent", &url]);
    let text = String::from_utf8_lossy(&once.stdout);
    assert_eq!(once.status.code(), Some(0), "{once:?}");
    assert!(
        text.starts_with(&format!("tracer top  {url}  at ")),
        "{text}"
    );
    assert!(
        text.contains("┌ Oldest CLOSE_WAIT (3) sort: age v"),
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("127.0.0.1:{port} -> ")).count(),
        3,
        "{text}"
    );
    assert!(text.contains(&format!("│{pid} ")), "{text}");
    assert!(
        !text.contains("q quit"),
        "no key hints in a batch frame: {text}"
    );
    // --netns, as the agent names it: its own keeps the leaks; an inode
    // no namespace has is one sentence and status 2.
    let own = tracer(&["top", "--once", "--agent", &url, "--netns", "host"]);
    let own_text = String::from_utf8_lossy(&own.stdout);
    assert!(
        own_text.contains("(only --netns host: leaks, TIME_WAIT)")
            && own_text.contains("┌ Oldest CLOSE_WAIT (3) sort: age v"),
        "{own_text}"
    );
    let none = tracer(&["top", "--once", "--agent", &url, "--netns", "1"]);
    let said = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{said}");
    assert!(said.contains("no network namespace has inode 1"), "{said}");

    let tmux = Tmux::start("keys", &then_status(&format!("top --agent {url} -n 500ms")));
    // Every refresh leaves TIME_WAIT sockets of its own (HTTP/1.0 to the
    // agent): the test's are counted by their ports.
    let first = tmux.wait_for("the first frame with the leaks and TIME_WAIT", |s| {
        s.contains("python3")
            && count_after(s, &format!("127.0.0.1:{remote_port}")) == Some(5)
            && count_after(s, &local_port.to_string()) == Some(3)
    });
    // The next sample brings a change per second beside every count.
    let rated = tmux.wait_for("a change per second", |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("│listen"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .is_some_and(|c| c != "-")
    });
    println!("{rated}");
    assert_eq!(
        tmux.var("alternate_on"),
        "1",
        "top draws on the alternate screen"
    );
    // Sockets by state, with counts.
    // The agent's own HTTP sockets come and go: at least ours are there.
    assert!(state_count(&first, "close_wait") >= Some(3), "{first}");
    assert!(state_count(&first, "time_wait") >= Some(8), "{first}");
    assert!(state_count(&first, "listen") >= Some(1), "{first}");
    // The oldest CLOSE_WAIT sockets, and the leaking process with its pid.
    let cw = format!("127.0.0.1:{port} -> 127.0.0.1:");
    assert_eq!(first.matches(&cw).count(), 3, "{first}");
    let (_, proc_row) = first
        .split_once(&format!("│{pid} "))
        .unwrap_or_else(|| panic!("no row for python3 pid {pid}:\n{first}"));
    let cells: Vec<&str> = proc_row.split_whitespace().take(3).collect();
    assert_eq!(
        cells,
        ["python3", "3", "3"],
        "comm, CLOSE_WAIT, leaks: {first}"
    );
    // TIME_WAIT by remote endpoint and by local port.
    assert_eq!(
        count_after(&first, &format!("127.0.0.1:{remote_port}")),
        Some(5),
        "{first}"
    );
    assert_eq!(
        count_after(&first, &local_port.to_string()),
        Some(3),
        "{first}"
    );
    assert!(first.contains("> Sockets by state"), "{first}");
    assert!(first.contains("q quit"), "key hints: {first}");

    // Tab moves the focus: states, dwell, the oldest CLOSE_WAIT.
    tmux.keys(&["Tab"]);
    tmux.wait_for("focus on dwell", |s| s.contains("> Dwell time"));
    tmux.keys(&["Tab"]);
    let s = tmux.wait_for("focus on CLOSE_WAIT", |s| {
        s.contains("> Oldest CLOSE_WAIT") && !s.contains("> Sockets by state")
    });
    assert!(s.contains("> Oldest CLOSE_WAIT (3) sort: age v"), "{s}");
    // s: the next sort key of the focused panel.
    tmux.keys(&["s"]);
    tmux.wait_for("sort by pid", |s| {
        s.contains("> Oldest CLOSE_WAIT (3) sort: pid ^")
    });
    // /: a filter typed into a prompt, applied on Enter.
    tmux.keys(&["/"]);
    tmux.wait_for("the filter prompt", |s| s.contains("filter: _"));
    tmux.text("python3");
    tmux.wait_for("the typed filter", |s| s.contains("filter: python3_"));
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the filter applied", |s| {
        s.contains("filter: python3") && s.contains("TIME_WAIT by remote (0 of")
    });
    assert!(
        s.contains("Oldest CLOSE_WAIT (3)"),
        "python3's rows stay: {s}"
    );
    assert_eq!(s.matches(&cw).count(), 3, "{s}");
    assert!(s.contains("Sockets by state (0 of 13)"), "{s}");
    // ?: the help overlay; any key closes it.
    tmux.keys(&["?"]);
    tmux.wait_for("the help", |s| s.contains("Keys of tracer top"));
    tmux.keys(&["?"]);
    tmux.wait_for("the help closed", |s| !s.contains("Keys of tracer top"));

    // The agent stops: the last data stays, with a line saying so.
    // The agent first: with the server gone, a dump would clear the flags.
    assert!(agent.stop().success());
    drop(server);
    // A refresh in flight as the agent stops may see the connection reset;
    // the next one finds nothing listening, and that is the line that stays.
    let s = tmux.wait_for("the error line", |s| {
        s.contains("agent not answering") && s.contains("no agent answers at")
    });
    assert_eq!(s.matches(&cw).count(), 3, "the last data stays: {s}");

    // q: top exits 0 and gives the terminal back.
    tmux.keys(&["q"]);
    assert_terminal_given_back(&tmux);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn sigterm_ends_top_and_gives_the_terminal_back() {
    let _ns = common::Netns::enter("topterm");
    let agent = common::Agent::start(&[]);
    let (tmux, top) = start_top("term", &agent, "");
    assert_eq!(tmux.var("alternate_on"), "1");
    // SAFETY: kill(2) on the tracer top this test started.
    assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
    assert_terminal_given_back(&tmux);
}

fn tracer(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tracer")
}

#[test]
fn without_a_terminal_top_says_so_and_exits_2() {
    let out = tracer(&["top", "--agent", common::NO_AGENT]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tracer: error: tracer top draws on a terminal and stdout is not one: \
         run it in a terminal, or give --once for one plain-text frame\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn without_an_agent_top_says_how_to_start_one_and_exits_2() {
    let out = tracer(&["top", "--once", "--agent", common::NO_AGENT]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "tracer: error: no agent answers at {}: nothing accepted a connection within 0.5 s; \
             start `tracer run` or give --agent\n",
            common::NO_AGENT
        )
    );
}

#[test]
fn a_bad_interval_is_one_line_naming_the_flag() {
    let out = tracer(&["top", "-n", "100ms", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tracer: error: --interval: \"100ms\" is shorter than the minimum of 250ms\n"
    );
}

/// `tracer top --agent AGENT ARGS` in a tmux of its own (named by `tag`),
/// its first frame drawn, and its pid: the only child of the pane's shell.
fn start_top(tag: &str, agent: &common::Agent, args: &str) -> (Tmux, i32) {
    let tmux = Tmux::start(
        tag,
        &then_status(&format!("top --agent http://{} {args}", agent.addr)),
    );
    tmux.wait_for("the first frame", |s| s.contains("Sockets by state"));
    let shell = tmux.var("pane_pid");
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
        .expect("the pane's shell");
    let top = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child of the pane's shell: {children:?}"));
    (tmux, top)
}

/// Its state letter and CPU ticks (user + system), or `None` once reaped.
fn run_state(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((f.first()?.chars().next()?, ticks))
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn top_ends_when_its_terminal_goes_away() {
    let _ns = common::Netns::enter("tophup");
    let agent = common::Agent::start(&[]);
    let (tmux, top) = start_top("hup", &agent, "-n 500ms");
    let before = run_state(top).expect("top runs");
    // The terminal goes: as a dropped SSH session or a killed tmux.
    drop(tmux);
    let gone = common::wait_until(Duration::from_secs(5), || {
        run_state(top).is_none_or(|(state, _)| state == 'Z')
    });
    let after = run_state(top);
    if !gone {
        // SAFETY: kill(2) on the tracer top this test started.
        unsafe { libc::kill(top, libc::SIGKILL) };
    }
    assert!(
        gone,
        "top outlived its terminal: state and CPU ticks {before:?} then {after:?}"
    );
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn with_stdin_not_a_terminal_top_reads_keys_from_the_tty_and_idles() {
    let _ns = common::Netns::enter("topnull");
    let agent = common::Agent::start(&[]);
    // As `kubectl exec -t` without `-i`: stdin is not the terminal.
    let (tmux, top) = start_top("null", &agent, "-n 500ms </dev/null");
    let (_, before) = run_state(top).expect("top runs");
    std::thread::sleep(Duration::from_secs(2));
    let (_, after) = run_state(top).expect("top still runs");
    // Idle between samples: a few ticks, not 200 (a core for 2 s).
    assert!(
        after - before < 50,
        "top used {} ticks in 2 s",
        after - before
    );
    tmux.keys(&["q"]);
    assert_terminal_given_back(&tmux);
}
