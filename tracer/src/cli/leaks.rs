//! `tracer leaks`: name the process, fd, peer and age behind every leak.
//!
//! Asks the running agent (`GET /api/v1/leaks`, plain HTTP on `ureq`,
//! within `--timeout` and a 64 MiB cap: see [`client`]); when
//! nothing answers at `--agent`, takes a one-shot
//! sock_diag snapshot in which every CLOSE_WAIT socket, and every listener
//! whose accept queue is full, is a suspected leak of unknown age, and
//! says so. Prints a table grouped by process, worst
//! first, or the report as JSON with `--json`. Exit status: 0 without
//! leaks, 1 with leaks, 2 on error (risks alone do not count).
use std::io::{self, Write};

use anyhow::Context as _;
use clap::Args;

use crate::{
    config::ThresholdFlags,
    diag::owners_of,
    filter::Match,
    leaks::{Flag, LeakKind, Report, Source, snapshot_report, table::render},
    pipeline::{NetnsChoice, NetnsScope, snapshot},
};

pub mod client;

pub use client::{
    AgentClient, AgentFlags, ClientError, DEFAULT_AGENT, Limits, get_json, http_get, shown,
};

/// Flags of `tracer leaks`. The thresholds are those of `tracer run`,
/// with no default: each hides younger flags of its kind.
#[derive(Debug, Args, Default, Clone)]
#[command(
    mut_arg("close_wait_threshold", |a| a.help(
        "Hide CLOSE_WAIT leaks younger than this (on top of the agent's own threshold)")),
    mut_arg("half_open_threshold", |a| a.help(
        "Hide half-open connections stalled for less than this")),
    mut_arg("idle_threshold", |a| a.help("Hide idle connections idle for less than this")),
    mut_arg("handshake_threshold", |a| a.help("Hide stuck handshakes younger than this")),
    mut_arg("fin_wait2_threshold", |a| a.help(
        "Hide orphaned FIN_WAIT2 sockets younger than this")),
    after_help = EXAMPLES,
)]
pub struct LeaksArgs {
    /// Print the report as JSON instead of a table.
    #[arg(short = 'j', long)]
    pub json: bool,
    // The agent to ask; when none answers, a snapshot is taken.
    #[command(flatten)]
    pub agent: AgentFlags,
    /// The `--*-threshold` flags of `tracer run`, here hiding what is
    /// younger (see the help above).
    #[command(flatten)]
    pub thresholds: ThresholdFlags,
    /// The network namespaces: all, or one: host (the one tracer runs in),
    /// a /run/netns name, an inode, or pid:N [default: all]. With an
    /// agent, its report is narrowed to it.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<NetnsChoice>,
    /// Which leaks: of these processes (pid, comm: any owner of the
    /// socket), in these states, on these ports, of this family.
    #[command(flatten)]
    pub matching: Match,
}

/// Examples under `tracer leaks --help`.
const EXAMPLES: &str = "Examples:
  tracer leaks                         every leak, grouped by process, worst first
  tracer leaks -c java -s close-wait   java's CLOSE_WAIT sockets
  tracer leaks -L 8080 -j | jq .       leaks on local port 8080, as JSON
  tracer leaks --close-wait-threshold 10m   only CLOSE_WAIT sockets older than 10 minutes

Exit status: 0 no leaks, 1 leaks found or something run out now (descriptors, ports), 2 error.";

/// Run `tracer leaks`, printing to stdout.
pub fn run(args: LeaksArgs) -> anyhow::Result<i32> {
    let stdout = io::stdout();
    run_to(&args, &mut stdout.lock())
}

/// Run `tracer leaks`, printing to `out`; returns the exit status (0 or 1).
pub fn run_to(args: &LeaksArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let choice = args.netns.clone().unwrap_or_default();
    let scope = NetnsScope::resolve(&choice)?;
    let agent = args.agent.url();
    let mut report = filter(collect(&args.agent.client()?, scope)?, args, scope);
    // This host's /proc answers for the report's pids only when the report
    // is this host's: a snapshot, or an agent on a loopback address in our
    // own network namespace (a port-forward to another host's agent is on
    // loopback too, but in another namespace unless both are hosts').
    let ours = report.agent_netns == Some(crate::diag::own_netns());
    if report.source == Source::Snapshot || (client::is_local(agent) && ours) {
        say_absent_pids(&mut report, &args.matching);
        for g in &mut report.leaks {
            g.exited = g.pid.is_some_and(crate::diag::no_process);
        }
    }
    say_thresholds_below_the_agents(&mut report, args);
    let written = if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        render(&report, out)
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(e).context("writing the leak report")
        }
        _ => Ok(report.exit_code()),
    }
}

/// The report of the agent `client` asks, or a snapshot of `scope` when no
/// agent answers or the agent follows one namespace and `scope` is another.
pub fn collect(client: &AgentClient, scope: NetnsScope) -> anyhow::Result<Report> {
    let url = client.shown_url();
    let Some(mut report) = client.get_json::<Report>("/api/v1/leaks")? else {
        if !client::names_this_host(&url) {
            anyhow::bail!(
                "no agent at {url} (the connection was refused, unreachable, or not accepted \
                 in time), and that is not an agent on this host: a snapshot here would show \
                 this host's leaks, not those of the host it watches. Run tracer leaks there, \
                 or leave out --agent to look at this host"
            );
        }
        return snapshot_of(
            scope,
            format!("no agent at {url}: one-shot snapshot of suspects, ages not exact"),
        );
    };
    match (report.followed_netns, scope.only()) {
        (Some(followed), Some(inode)) if inode != followed => snapshot_of(
            scope,
            format!(
                "the agent at {url} follows only network namespace {followed}, not \
                     {inode}: one-shot snapshot of suspects, ages not exact"
            ),
        ),
        (Some(followed), None) if scope.is_all() => {
            report.note = Some(format!(
                "the agent at {url} follows only network namespace {followed}: the other \
                 namespaces are not in this report (--netns N takes a snapshot of one)"
            ));
            Ok(report)
        }
        _ => Ok(report),
    }
}

/// A one-shot snapshot report of `scope`, with `note` (and the namespaces
/// that could not be entered).
fn snapshot_of(scope: NetnsScope, mut note: String) -> anyhow::Result<Report> {
    let (dump, census) = snapshot(scope).context("taking a sock_diag snapshot")?;
    let inodes = dump
        .iter()
        .filter(|d| d.inode != 0)
        .map(|d| d.inode)
        .collect();
    let owners = owners_of(&inodes);
    if !census.refused.is_empty() {
        note.push_str(&format!(
            "; {} network namespace(s) could not be entered (that needs CAP_SYS_ADMIN)",
            census.refused.len()
        ));
    }
    if let Some(said) = crate::pipeline::unread_said(census.unread()) {
        note.push_str(&format!("; {said}"));
    }
    let mut report = snapshot_report(&dump, &owners, note);
    report.attribute(&census.containers, true);
    report.agent_netns = Some(crate::diag::own_netns()).filter(|&n| n != 0);
    report.name_namespaces(crate::pipeline::discover::names());
    // A snapshot has no monotonic stamp of its own (now_ns 0), but it knows
    // when it was taken.
    report.now = Some(crate::wall::WallClock::now().at(crate::wall::monotonic_ns()));
    Ok(report)
}

/// Drop flags younger than the `--*-threshold` flags ask for, flags of
/// namespaces outside `scope`, and flags the filters leave out.
fn filter(report: Report, args: &LeaksArgs, scope: NetnsScope) -> Report {
    let given = args.thresholds.given();
    if LeakKind::ALL.iter().all(|&k| given.of(k).is_none())
        && scope.is_all()
        && args.matching.is_empty()
    {
        return report;
    }
    // The namespaces and ages asked for first, then the other filters:
    // should a pid or comm filter keep none, say which processes leak.
    let mut report = Match::default().report_where(report, |f: &Flag| {
        let old_enough = match (given.of(f.kind), f.age_seconds) {
            (Some(min), Some(age)) => age >= min.as_secs_f64(),
            _ => true,
        };
        old_enough && (f.netns == 0 || scope.covers(f.netns))
    });
    report
        .forecasts
        .ports
        .retain(|p| scope.covers(p.endpoint.netns));
    let before = report.leak_count;
    let named: Vec<String> = report
        .leaks
        .iter()
        .filter_map(|g| Some(format!("{} {}", g.comm.as_deref()?, g.pid?)))
        .collect();
    let mut report = args.matching.report(report);
    if report.leak_count == 0 && before > 0 && !args.matching.is_empty() {
        let others = match named.len() {
            0 => "owners not named".to_owned(),
            n @ ..=5 => format!("processes {}", named[..n].join(", ")),
            n => format!("processes {} and {} more", named[..5].join(", "), n - 5),
        };
        // A container's pid 1 is not the host's: `-p` takes host pids.
        let pids = if args.matching.pids.is_empty() {
            ""
        } else {
            "; -p takes host pids, as ps on the host shows them (podman top NAME hpid, crictl inspect)"
        };
        let whole = if args.matching.comms.is_empty() {
            ""
        } else {
            "; --comm matches the whole name, as ps -o comm shows it"
        };
        let plural = if before == 1 { "" } else { "s" };
        let is = if args.matching.by_owner() {
            "is of"
        } else {
            "matches"
        };
        let said = format!(
            "none of the {before} leak{plural} {is} {} (leaking: {others}{whole}{pids})",
            args.matching.describe()
        );
        report.add_note(said);
    }
    report
}

/// A `--*-threshold` below the agent's own cannot show younger flags: the
/// agent raises none before its threshold. Say so, and how to get them.
fn say_thresholds_below_the_agents(report: &mut Report, args: &LeaksArgs) {
    let Some(t) = report.thresholds else {
        return;
    };
    for kind in LeakKind::ALL {
        let agents = t.of(kind);
        if let Some(asked) = args.thresholds.given().of(kind)
            && asked.as_secs_f64() < agents
        {
            let flag = format!("--{}", kind.threshold_flag());
            report.add_note(format!(
                "{flag} {} is below the agent's own ({}): it flags {} only from then on, so \
                 younger ones are not shown (start the agent with a lower {flag} to see them)",
                humantime::format_duration(asked),
                crate::leaks::table::fmt_age(Some(agents), false),
                kind.name()
            ));
        }
    }
}

/// Add to the note which `--pid`s of `m` no process of this host has: a
/// typo, or a process gone, rather than one without leaks.
fn say_absent_pids(report: &mut Report, m: &Match) {
    let Some(said) = m.absent_pids_said() else {
        return;
    };
    let tail = if report.leak_count > 0 {
        ""
    } else {
        " (a pid is the host's, as ps on the host shows it)"
    };
    report.add_note(format!("{said}{tail}"));
}

#[cfg(test)]
mod tests {
    use std::{io::Read, time::Duration};

    use super::*;
    use crate::leaks::table::tests::sample;

    #[test]
    fn threshold_flags_filter_known_ages_only() {
        let mut r = sample();
        r.leaks[0].sockets[0].age_seconds = Some(5.0);
        let args = LeaksArgs {
            thresholds: ThresholdFlags {
                close_wait_threshold: Some(Duration::from_secs(10)),
                ..ThresholdFlags::default()
            },
            ..LeaksArgs::default()
        };
        let f = filter(r, &args, NetnsScope::all());
        assert_eq!(f.leak_count, 3);
    }

    /// Asking for younger flags than the agent raises: said, with how.
    #[test]
    fn a_threshold_below_the_agents_is_said() {
        use crate::leaks::report::ThresholdSeconds;
        let agents = ThresholdSeconds {
            close_wait: 60.0,
            half_open: 10.0,
            idle: 600.0,
            handshake: 10.0,
            fin_wait2: 30.0,
        };
        let mut r = Report {
            thresholds: Some(agents),
            note: None,
            ..sample()
        };
        let args = LeaksArgs {
            thresholds: ThresholdFlags {
                close_wait_threshold: Some(Duration::from_secs(1)),
                half_open_threshold: Some(Duration::from_secs(20)),
                ..ThresholdFlags::default()
            },
            ..LeaksArgs::default()
        };
        say_thresholds_below_the_agents(&mut r, &args);
        let note = r.note.expect("a note");
        assert!(
            note.starts_with("--close-wait-threshold 1s is below the agent's own (60.0s)"),
            "{note}"
        );
        assert!(!note.contains("half-open"), "above the agent's: {note}");
        // A snapshot has no thresholds: nothing to say.
        let mut snap = Report {
            thresholds: None,
            note: None,
            ..sample()
        };
        say_thresholds_below_the_agents(&mut snap, &args);
        assert_eq!(snap.note, None);
    }

    #[test]
    fn a_pid_no_process_has_is_said() {
        // Above pid_max's ceiling (2^22): no process has it.
        let gone = 4_194_305;
        let m = Match {
            pids: vec![std::process::id(), gone],
            ..Match::default()
        };
        assert_eq!(m.absent_pids(), [gone]);
        let mut none = Report {
            leaks: Vec::new(),
            leak_count: 0,
            note: Some("no agent".into()),
            ..sample()
        };
        say_absent_pids(&mut none, &m);
        assert_eq!(
            none.note.as_deref(),
            Some(
                "no agent; no process 4194305 runs on this host now (a pid is the host's, \
                 as ps on the host shows it)"
            )
        );
        let mut some = sample();
        let before = some.note.clone();
        say_absent_pids(&mut some, &Match::default());
        assert_eq!(some.note, before, "every pid there: nothing to say");
    }

    #[test]
    fn owner_and_socket_filters_narrow_the_report() {
        let args = |m: Match| LeaksArgs {
            matching: m,
            ..LeaksArgs::default()
        };
        let by_pid = filter(
            sample(),
            &args(Match {
                pids: vec![4242],
                ..Match::default()
            }),
            NetnsScope::all(),
        );
        assert_eq!(by_pid.leak_count, 2);
        assert_eq!(by_pid.leaks.len(), 1);
        assert_eq!(by_pid.leaks[0].pid, Some(4242));
        let none = filter(
            sample(),
            &args(Match {
                states: vec![crate::tcp::TcpState::Established],
                ..Match::default()
            }),
            NetnsScope::all(),
        );
        assert_eq!((none.leak_count, none.exit_code()), (0, 0));
        // Any filter that hides every leak says so: "no leaks found" alone
        // reads as a clean host.
        let note = none.note.unwrap_or_default();
        assert!(
            note.contains("none of the 4 leaks matches --state established (leaking: processes "),
            "{note}"
        );
        // A process that leaks nothing (or a name cut short): the report
        // says who does.
        let python = filter(
            sample(),
            &args(Match {
                comms: vec!["ap".into()],
                ..Match::default()
            }),
            NetnsScope::all(),
        );
        assert_eq!(python.leak_count, 0);
        let note = python.note.as_deref().unwrap_or_default();
        assert!(
            note.contains("; none of the 4 leaks is of --comm ap (leaking: processes ")
                && note.contains("api 4242")
                && note.contains("worker 77")
                && note.ends_with("; --comm matches the whole name, as ps -o comm shows it)"),
            "{note}"
        );
        // Past five leaking processes, the rest are counted.
        let dump: Vec<_> = (1..=7)
            .map(|i| crate::leaks::table::tests::close_wait(i, 10 + i, 0))
            .collect();
        let owners: std::collections::HashMap<_, _> = (1..=7u32)
            .map(|i| {
                (
                    10 + u64::from(i),
                    vec![crate::leaks::table::tests::owner(100 + i, "w", 3)],
                )
            })
            .collect();
        let seven = crate::leaks::report::snapshot_report_with(
            &dump,
            &owners.into(),
            String::new(),
            |_| None,
        );
        let nobody = filter(
            seven,
            &args(Match {
                comms: vec!["nobody".into()],
                ..Match::default()
            }),
            NetnsScope::all(),
        );
        let note = nobody.note.as_deref().unwrap_or_default();
        assert!(note.contains(" and 2 more;"), "{note}");
        // A container's pid: `-p` takes the host's.
        let in_container = filter(
            sample(),
            &args(Match {
                pids: vec![1],
                ..Match::default()
            }),
            NetnsScope::all(),
        );
        let note = in_container.note.as_deref().unwrap_or_default();
        assert!(note.contains("; -p takes host pids"), "{note}");
        // Every leak younger than an age asked for: nothing of the filter
        // to say (it would name processes that were just left out).
        let mut aged = sample();
        for f in aged.leaks.iter_mut().flat_map(|g| &mut g.sockets) {
            f.age_seconds = Some(5.0);
        }
        let young = filter(
            aged,
            &LeaksArgs {
                thresholds: ThresholdFlags {
                    close_wait_threshold: Some(Duration::from_secs(30 * 86_400)),
                    half_open_threshold: Some(Duration::from_secs(30 * 86_400)),
                    handshake_threshold: Some(Duration::from_secs(30 * 86_400)),
                    fin_wait2_threshold: Some(Duration::from_secs(30 * 86_400)),
                    idle_threshold: Some(Duration::from_secs(30 * 86_400)),
                },
                ..args(Match {
                    comms: vec!["nope".into()],
                    ..Match::default()
                })
            },
            NetnsScope::all(),
        );
        assert_eq!(young.leak_count, 0);
        assert!(
            !young.note.unwrap_or_default().contains("none of the"),
            "ages first"
        );
    }

    /// Port forecasts follow the filters too: a port, the family, the
    /// namespace; a process filter leaves them out (they have none).
    #[test]
    fn port_forecasts_follow_the_filters() {
        use crate::forecast::{Endpoint, PortForecast, PortSettings, PortUsage};
        let endpoint = |netns: u32, remote: &str| PortForecast {
            endpoint: Endpoint {
                netns,
                remote: remote.parse().expect("remote"),
                local: "10.0.0.1".parse().expect("local"),
            },
            usage: PortUsage {
                range: 64,
                connected: 1,
                closing: 0,
                time_wait: 0,
                time_wait_reusable: false,
                bound: 0,
                in_use: 1,
                free: 63,
            },
            settings: PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse: 2,
            },
            growth_per_second: Some(1.0),
            seconds_left: Some(63.0),
            connectors: Vec::new(),
        };
        let report = || {
            let mut r = sample();
            r.forecasts.ports = vec![
                endpoint(1, "10.0.0.9:5432"),
                endpoint(1, "10.0.0.9:9077"),
                endpoint(2, "[fd00::9]:5432"),
            ];
            r
        };
        let remotes = |m: Match, scope: NetnsScope| -> Vec<String> {
            let args = LeaksArgs {
                matching: m,
                ..LeaksArgs::default()
            };
            filter(report(), &args, scope)
                .forecasts
                .ports
                .iter()
                .map(|p| p.endpoint.remote.to_string())
                .collect()
        };
        let port = |p: u16| Match {
            ports: vec![p],
            ..Match::default()
        };
        assert_eq!(
            remotes(port(5432), NetnsScope::all()),
            ["10.0.0.9:5432", "[fd00::9]:5432"]
        );
        let v4 = Match {
            ipv4: true,
            ..port(5432)
        };
        assert_eq!(remotes(v4, NetnsScope::all()), ["10.0.0.9:5432"]);
        let one = NetnsScope::One {
            inode: 2,
            own: false,
        };
        assert_eq!(remotes(Match::default(), one), ["[fd00::9]:5432"]);
        let by_pid = Match {
            pids: vec![4242],
            ..Match::default()
        };
        assert!(remotes(by_pid, NetnsScope::all()).is_empty());
    }

    #[test]
    fn no_agent_means_none_and_bad_urls_are_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        assert!(
            http_get(
                &format!("http://127.0.0.1:{port}"),
                "/api/v1/leaks",
                Limits::default()
            )
            .expect("no agent")
            .is_none()
        );
        let e = http_get("ftp://127.0.0.1:9077", "/x", Limits::default()).expect_err("ftp");
        assert!(
            e.to_string().contains("give an http:// or https:// URL"),
            "{e}"
        );
    }

    /// An agent that answers one request with `report`; the thread
    /// returns the request it read.
    fn agent_once(report: &Report) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", l.local_addr().expect("addr"));
        let body = serde_json::to_string(report).expect("json");
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).expect("read");
            let req = String::from_utf8_lossy(&req[..n]).to_string();
            write!(
                s,
                "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{body}"
            )
            .expect("write");
            req
        });
        (url, server)
    }

    #[test]
    fn http_get_reads_an_agent_reply() {
        let (url, server) = agent_once(&sample());
        let report = collect(
            &AgentClient::new(&url, Limits::default()).expect("client"),
            NetnsScope::all(),
        )
        .expect("report");
        assert!(
            server
                .join()
                .expect("server")
                .starts_with("GET /api/v1/leaks HTTP/1.1\r\n")
        );
        assert_eq!(report, sample());
    }

    /// An agent started with `--netns` for one namespace cannot answer for
    /// another: asked for all, its report says what it leaves out; asked
    /// for another one, a snapshot of that one answers instead.
    #[test]
    fn an_agent_that_follows_one_namespace_says_so() {
        let mut one = sample();
        one.followed_netns = Some(12345);
        let (url, server) = agent_once(&one);
        let report = collect(
            &AgentClient::new(&url, Limits::default()).expect("client"),
            NetnsScope::all(),
        )
        .expect("report");
        server.join().expect("server");
        let note = report.note.unwrap_or_default();
        assert!(
            note.contains("follows only network namespace 12345: the other namespaces are not"),
            "{note}"
        );
        assert_eq!(report.leak_count, sample().leak_count);

        let (url, server) = agent_once(&one);
        let report = collect(
            &AgentClient::new(&url, Limits::default()).expect("client"),
            NetnsScope::own(),
        )
        .expect("report");
        server.join().expect("server");
        let note = report.note.unwrap_or_default();
        assert!(
            note.contains("follows only network namespace 12345, not ")
                && note.ends_with("one-shot snapshot of suspects, ages not exact"),
            "{note}"
        );
        assert!(report.thresholds.is_none(), "a snapshot has no thresholds");
    }

    #[test]
    fn the_timeout_flag_bounds_the_whole_command() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        // Accepts (through the backlog) and never answers.
        let args = LeaksArgs {
            agent: AgentFlags {
                agent: Some(url.clone()),
                timeout: Some(Duration::from_millis(400)),
                ..AgentFlags::default()
            },
            ..LeaksArgs::default()
        };
        let start = std::time::Instant::now();
        let e = run_to(&args, &mut Vec::new()).expect_err("silent agent");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            format!("{e:#}"),
            format!(
                "asking {url} for /api/v1/leaks timed out after 0.4 s (the whole request; raise it with --timeout)"
            )
        );
        drop(l);
    }
}
