//! The `tracer leaks` table: a [`Report`] as text a person can read at
//! 3 a.m., grouped by process, worst first. Pure formatting, no I/O but the writer.
use std::{
    io::{self, Write},
    time::Duration,
};

use super::{Flag, LeakKind, ProcessLeaks, Reason, Report, ThresholdSeconds, fmt_duration};
use crate::tcp::TcpState;

/// An age for people: `73.2s`, `12m05s`, `3h04m`, `2d03h`.
pub fn fmt_age(secs: Option<f64>, lower_bound: bool) -> String {
    let Some(s) = secs else {
        return "unknown".into();
    };
    let t = s.max(0.0) as u64;
    let text = match t {
        0..120 => format!("{s:.1}s"),
        120..3600 => format!("{}m{:02}s", t / 60, t % 60),
        3600..86400 => format!("{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("{}d{:02}h", t / 86400, t % 86400 / 3600),
    };
    if lower_bound {
        format!(">={text}")
    } else {
        text
    }
}

/// When the agent flags each kind of leak: `CLOSE_WAIT after 60s, ...`.
fn flagged_after(t: &ThresholdSeconds) -> String {
    // The numbers come from the agent's JSON: one no Duration holds is
    // shown as it came, not a panic.
    let after = |secs: f64| {
        Duration::try_from_secs_f64(secs).map_or_else(|_| format!("{secs}s"), fmt_duration)
    };
    format!(
        "the agent flags CLOSE_WAIT after {}, half-open peers after {}, \
         stuck handshakes after {}, orphaned FIN_WAIT2 after {}",
        after(t.close_wait),
        after(t.half_open),
        after(t.handshake),
        after(t.fin_wait2),
    )
}

/// What a one-shot snapshot looks for, and what only the agent sees.
const SNAPSHOT_CHECKS: &str = "a snapshot looks for CLOSE_WAIT sockets, full accept queues and \
connections retransmitting unacknowledged for 10s; stuck handshakes, orphaned FIN_WAIT2 and \
unanswered keepalives need the agent's history: start tracer run";

/// The recently cleared flags the table lists, newest first.
const CLEARED_SHOWN: usize = 10;

/// How old the agent's last dump must be for the table to say its flags
/// are as of then: several of the default 1 s interval, and two of a
/// longer one.
fn stale_after(r: &Report) -> f64 {
    r.dump_interval_seconds.map_or(0.0, |i| 2.0 * i).max(5.0)
}

/// The table a person reads at 3 a.m.
pub fn render(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if let Some(note) = &r.note {
        writeln!(out, "tracer leaks: {note}")?;
    }
    if r.leak_count == 0 {
        match &r.thresholds {
            // An agent's report: say how old a socket must be to be
            // flagged, as the next question is whether a young one is.
            Some(t) => writeln!(out, "no leaks found ({})", flagged_after(t))?,
            None if r.source == super::Source::Snapshot => {
                writeln!(out, "no leaks found ({SNAPSHOT_CHECKS})")?
            }
            None => writeln!(out, "no leaks found")?,
        }
        if r.forecasts.run_out() {
            writeln!(
                out,
                "but something has run out now: see the forecasts below (exit status 1)"
            )?;
        }
    } else {
        let procs = r.leaks.iter().filter(|g| g.pid.is_some()).count();
        let unknown: usize = r
            .leaks
            .iter()
            .filter(|g| g.owner_unknown)
            .map(|g| g.sockets.iter().filter(|f| f.kind.is_leak()).count())
            .sum();
        // A snapshot cannot judge an age against a threshold: suspects.
        let suspected = if r.source == super::Source::Snapshot {
            "suspected "
        } else {
            ""
        };
        write!(
            out,
            "{} {suspected}leak{}",
            r.leak_count,
            plural(r.leak_count)
        )?;
        // Orphans, timewait and request sockets: no process to count.
        let nobody: usize = r
            .leaks
            .iter()
            .filter(|g| g.pid.is_none() && !g.owner_unknown)
            .map(|g| g.sockets.iter().filter(|f| f.kind.is_leak()).count())
            .sum();
        if procs > 0 || (unknown == 0 && nobody == 0) {
            write!(
                out,
                " in {procs} process{}",
                if procs == 1 { "" } else { "es" }
            )?;
        }
        if nobody > 0 {
            write!(out, ", {nobody} held by no process")?;
        }
        if unknown > 0 {
            write!(out, ", owner unknown for {unknown}")?;
        }
        writeln!(out)?;
    }
    if let Some(ago) = r.dump_age_seconds.filter(|&s| s >= stale_after(r)) {
        writeln!(
            out,
            "as of the agent's last dump, {} ago: a socket closed or a process exited since still \
             shows (its dumps are spaced out: a long --reconcile-interval, or a busy host's \
             --reconcile-budget)",
            fmt_age(Some(ago), false)
        )?;
    }
    for g in &r.leaks {
        writeln!(out)?;
        render_group(g, &r.netns_names, out)?;
    }
    if !r.risks.is_empty() {
        writeln!(out, "\nAt risk, not leaks ({}):", r.risks.len())?;
        for f in &r.risks {
            // Another namespace than the agent's (the host's) is named.
            let netns = match f.netns {
                0 => String::new(),
                n if Some(n) == r.agent_netns => String::new(),
                n => match r.netns_names.get(&n) {
                    Some(name) => format!("netns {n} ({name})  "),
                    None => format!("netns {n}  "),
                },
            };
            writeln!(
                out,
                "  {netns}{}  {}  {}  {}",
                endpoints(f),
                owners_short(f),
                fmt_age(f.age_seconds, f.age_is_lower_bound),
                f.evidence
            )?;
        }
    }
    if !r.recently_cleared.is_empty() {
        writeln!(out, "\nRecently cleared:")?;
        for f in r.recently_cleared.iter().take(CLEARED_SHOWN) {
            let how = f.cleared_how.as_deref().unwrap_or("");
            // When, on the report's own clock (a snapshot has none).
            let ago = match f.cleared_at_ns {
                Some(at) if r.now_ns > 0 => {
                    let secs = r.now_ns.saturating_sub(at) as f64 / 1e9;
                    format!(", {} ago", fmt_age(Some(secs), false))
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "  {:<18} {}  {}: {how}{ago}",
                f.kind.name(),
                endpoints(f),
                owners_short(f)
            )?;
        }
    }
    let more = r.recently_cleared.len().saturating_sub(CLEARED_SHOWN);
    if more > 0 {
        writeln!(out, "  ... and {more} more (--json lists them all)")?;
    }
    let snapshot = r.source == super::Source::Snapshot;
    crate::forecast::text::render(&r.forecasts, snapshot, &r.netns_names, out)?;
    Ok(())
}

/// Where to look, from how far the process read its CLOSE_WAIT sockets:
/// read to EOF and not closed (the code that handles EOF), or not read up
/// to EOF (whatever should be reading them).
fn render_reads(g: &ProcessLeaks, out: &mut dyn Write) -> io::Result<()> {
    let close_wait = || g.sockets.iter().filter(|f| f.kind == LeakKind::CloseWait);
    let n = close_wait().count();
    let read = |r: bool| close_wait().filter(|f| f.read_to_end == Some(r)).count();
    let (eof, short) = (read(true), read(false));
    if eof > 0 {
        writeln!(
            out,
            "  reads:   {eof} of {n} read to EOF and not closed: look where EOF is handled"
        )?;
    }
    if short > 0 {
        writeln!(
            out,
            "  reads:   {short} of {n} not read up to EOF: look at what should read or close them (a handler that answered and never called close(), an idle pooled connection, a stuck worker)"
        )?;
    }
    let waiting = close_wait()
        .filter(|f| f.reason == Some(Reason::NotAccepted))
        .count();
    if waiting > 0 {
        writeln!(
            out,
            "  accept:  {waiting} of {n} never accepted, in the accept queue of its listener (FD is the listener's): look at why the process stopped calling accept() (a full worker pool, a blocked accept loop)"
        )?;
    }
    Ok(())
}

/// A flag's local peer, for its evidence: the process that has not closed;
/// its namespace by `names` when it has one.
fn peer_words(f: &Flag, names: &std::collections::BTreeMap<u32, String>) -> String {
    let Some(p) = &f.local_peer else {
        return String::new();
    };
    let here = match p.netns {
        Some(n) => match names.get(&n) {
            Some(name) => format!("on this host in netns {n} ({name})"),
            None => format!("on this host in netns {n}"),
        },
        None => "on this host".to_owned(),
    };
    if p.state == TcpState::FinWait2 {
        let who = p.owners.first().map_or("its process".to_owned(), |o| {
            format!("PID {} {} fd {}", o.pid, o.comm, o.fd)
        });
        return format!(
            "; its peer is {here}, in FIN_WAIT2: {who} shut its side down (shutdown(SHUT_WR)) \
             and waits for this answer: a half-close, a leak only if this process never answers \
             or closes"
        );
    }
    match (p.owners.first(), p.not_accepted) {
        (Some(o), false) => format!(
            "; its peer is {here}, in CLOSE_WAIT: PID {} {} fd {} has not closed it",
            o.pid, o.comm, o.fd
        ),
        (Some(o), true) => format!(
            "; its peer is {here}, in CLOSE_WAIT in the accept queue of PID {} {} (its listener, fd {}): never accepted",
            o.pid, o.comm, o.fd
        ),
        (None, _) => format!("; its peer is {here}, in CLOSE_WAIT (its owner could not be named)"),
    }
}

/// For orphans whose peers are on this host: which process holds the
/// other ends, in CLOSE_WAIT. It is that process that leaks.
fn render_peers(g: &ProcessLeaks, out: &mut dyn Write) -> io::Result<()> {
    let mut by: Vec<(u32, &str, usize)> = Vec::new();
    for o in g
        .sockets
        .iter()
        .filter_map(|f| f.local_peer.as_ref())
        .filter(|p| p.state == TcpState::CloseWait)
        .filter_map(|p| p.owners.first())
    {
        match by.iter_mut().find(|(pid, ..)| *pid == o.pid) {
            Some(e) => e.2 += 1,
            None => by.push((o.pid, &o.comm, 1)),
        }
    }
    for (pid, comm, n) in by {
        writeln!(
            out,
            "  peer:    {n} {} to PID {pid} {comm} on this host, whose end{} CLOSE_WAIT (not closed, or never accepted): that process leaks",
            if n == 1 {
                "is a connection"
            } else {
                "are connections"
            },
            if n == 1 { " sits in" } else { "s sit in" }
        )?;
    }
    Ok(())
}

fn render_group(
    g: &ProcessLeaks,
    names: &std::collections::BTreeMap<u32, String>,
    out: &mut dyn Write,
) -> io::Result<()> {
    match (g.pid, &g.comm) {
        (Some(pid), comm) => {
            write!(out, "PID {pid} {}", comm.as_deref().unwrap_or("?"))?;
            if g.exited {
                write!(out, " (exited: no process has this pid now)")?;
            }
        }
        (None, _) if g.owner_unknown => write!(out, "owner unknown")?,
        (None, _) => write!(out, "no process (orphaned, timewait or request sockets)")?,
    }
    write!(
        out,
        ": {} socket{}",
        g.sockets.len(),
        plural(g.sockets.len())
    )?;
    if g.close_wait > 0 {
        write!(out, ", {} in CLOSE_WAIT", g.close_wait)?;
    }
    write!(
        out,
        ", oldest {}",
        fmt_age(g.oldest_age_seconds, g.oldest_is_lower_bound)
    )?;
    match g.growth_per_minute {
        Some(x) if x > 0.0 => write!(out, ", GROWING {x:+.1}/min")?,
        Some(x) => write!(out, ", steady ({x:+.1}/min)")?,
        None => {}
    }
    writeln!(out)?;
    if let Some(hint) = &g.hint {
        writeln!(out, "  why:     {hint}")?;
    }
    render_reads(g, out)?;
    render_peers(g, out)?;
    if !g.cmdline.is_empty() {
        writeln!(out, "  cmdline: {}", g.cmdline.replace(['\n', '\r'], " "))?;
    }
    if !g.cgroup.is_empty() {
        let id = g
            .container_id
            .as_deref()
            .map(|c| format!("  [container {}]", c.get(..12).unwrap_or(c)));
        writeln!(out, "  cgroup:  {}{}", g.cgroup, id.unwrap_or_default())?;
    }
    let rows: Vec<[String; 8]> = g
        .sockets
        .iter()
        .map(|f| {
            let fds: Vec<String> = f
                .owners
                .iter()
                .filter(|o| Some(o.pid) == g.pid)
                .map(|o| o.fd.to_string())
                .collect();
            let kind = match f.reason {
                Some(r) => format!("{}/{}", f.kind.name(), r.name()),
                None => f.kind.name().to_owned(),
            };
            [
                if fds.is_empty() {
                    "-".into()
                } else {
                    fds.join(",")
                },
                netns(f, names),
                f.container.as_ref().map_or("-".into(), |c| c.short()),
                endpoints(f),
                kind,
                fmt_age(f.age_seconds, f.age_is_lower_bound),
                f.unread_bytes.to_string(),
                format!("{}{}", f.evidence, peer_words(f, names)),
            ]
        })
        .collect();
    let header = [
        "FD",
        "NETNS",
        "CONTAINER",
        "LOCAL -> REMOTE",
        "KIND",
        "AGE",
        "UNREAD",
        "EVIDENCE",
    ]
    .map(String::from);
    let mut width = [0; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let [fd, ns, ct, ep, kind, age, unread, ev] = row;
        writeln!(
            out,
            "  {fd:<w0$}  {ns:<w1$}  {ct:<w2$}  {ep:<w3$}  {kind:<w4$}  {age:>w5$}  {unread:>w6$}  {ev}",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5],
            w6 = width[6]
        )?;
    }
    Ok(())
}

/// The network namespace inode, with its `/run/netns` name when it has
/// one (`4026532174 (web)`), or `-` when unknown.
fn netns(f: &Flag, names: &std::collections::BTreeMap<u32, String>) -> String {
    match (f.netns, names.get(&f.netns)) {
        (0, _) => "-".into(),
        (n, Some(name)) => format!("{n} ({name})"),
        (n, None) => n.to_string(),
    }
}

/// Where a flag's socket lives, for a narrow column: its container, else
/// a network namespace other than the agent's (`ns:web`, `ns:4026532174`),
/// else `-`.
pub fn container_or_netns(f: &Flag, r: &Report) -> String {
    match (&f.container, f.netns) {
        (Some(c), _) => c.short(),
        // An agent older than `agent_netns` cannot say which is its own:
        // mark none rather than every one.
        (None, 0) => "-".into(),
        (None, n) if r.agent_netns.is_none_or(|own| own == n) => "-".into(),
        (None, n) => match r.netns_names.get(&n) {
            Some(name) => format!("ns:{name}"),
            None => format!("ns:{n}"),
        },
    }
}

fn endpoints(f: &Flag) -> String {
    let local = scoped(f.local, f.ifindex);
    match f.remote {
        Some(r) => format!("{local} -> {}", scoped(r, f.ifindex)),
        None if f.reason == Some(Reason::AcceptQueueFull) => format!("{local} listening"),
        None => format!("{local} <- {} peers", f.count.unwrap_or(0)),
    }
}

/// `addr` with its zone when it is IPv6 link-local and the socket's
/// interface is known (`[fe80::1%3]:80`, as `ping` and `ssh` take it): the
/// same address is on every link, and only the interface says which.
fn scoped(addr: std::net::SocketAddr, ifindex: u32) -> std::net::SocketAddr {
    match addr {
        std::net::SocketAddr::V6(mut v6)
            if ifindex != 0 && v6.ip().segments()[0] & 0xffc0 == 0xfe80 =>
        {
            v6.set_scope_id(ifindex);
            v6.into()
        }
        a => a,
    }
}

fn owners_short(f: &Flag) -> String {
    let waiting = f.reason == Some(Reason::NotAccepted) && f.remote.is_some();
    match f.owners.first() {
        Some(o) if waiting => format!("not accepted yet by pid {} {} fd {}", o.pid, o.comm, o.fd),
        None if waiting => "not accepted yet".into(),
        Some(o) => format!("pid {} {} fd {}", o.pid, o.comm, o.fd),
        None if f.owner_unknown => "owner unknown".into(),
        None => "no process".into(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::leaks::{report::snapshot_report_with, snapshot_report};
    use crate::snapshot::{FdOwner, OwnerScan, SocketSnapshot, TimerKind};
    use crate::tcp::Family;

    pub(crate) fn close_wait(cookie: u64, inode: u64, rqueue: u32) -> SocketSnapshot {
        SocketSnapshot {
            ifindex: 0,
            cookie,
            family: Family::Ipv4,
            state: TcpState::CloseWait,
            timewait: false,
            saddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sport: 8080,
            daddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dport: 50000 + cookie as u16,
            inode,
            uid: 0,
            timer: TimerKind::None,
            expires_ms: 0,
            timer_retrans: 0,
            rqueue,
            wqueue: 0,
            info: None,
            netns: 0,
        }
    }

    pub(crate) fn owner(pid: u32, comm: &str, fd: u32) -> FdOwner {
        let cgroup = "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
        FdOwner {
            pid,
            comm: comm.into(),
            cmdline: format!("/usr/bin/{comm} --port 8080"),
            fd,
            cgroup: cgroup.into(),
            container_id: Some(
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            ),
        }
    }

    /// Four CLOSE_WAIT sockets: two of pid 4242, one of pid 77, one ownerless.
    pub(crate) fn sample() -> Report {
        let dump = [
            close_wait(1, 11, 513),
            close_wait(2, 12, 0),
            close_wait(3, 13, 7),
            close_wait(4, 0, 0),
        ];
        let owners = HashMap::from([
            (11, vec![owner(4242, "api", 7)]),
            (12, vec![owner(4242, "api", 9)]),
            (13, vec![owner(77, "worker", 3)]),
        ]);
        snapshot_report_with(
            &dump,
            &owners.into(),
            "no agent at http://127.0.0.1:1: one-shot snapshot of suspects, ages not exact".into(),
            |_| None,
        )
    }

    /// A link-local address is written with its interface, the one its
    /// socket is bound to, and the JSON keeps it for a table drawn from an
    /// agent's report; other addresses are left as they are.
    #[test]
    fn a_link_local_address_says_its_interface() {
        let mut d = close_wait(1, 11, 0);
        (d.family, d.ifindex) = (Family::Ipv6, 3);
        d.saddr = "fe80::1".parse().expect("addr");
        d.daddr = "fe80::2".parse().expect("addr");
        let owners = HashMap::from([(11, vec![owner(4242, "api", 7)])]);
        let r = snapshot_report_with(&[d], &owners.into(), String::new(), |_| None);
        let f = &r.leaks[0].sockets[0];
        assert_eq!(endpoints(f), "[fe80::1%3]:8080 -> [fe80::2%3]:50001");
        let json = serde_json::to_value(f).expect("json");
        assert_eq!(
            (&json["ifindex"], &json["local"]),
            (&3.into(), &"[fe80::1]:8080".into())
        );
        let back: Flag = serde_json::from_value(json).expect("flag");
        assert_eq!(endpoints(&back), endpoints(f));
        let plain = close_wait(2, 12, 0);
        let owners = HashMap::from([(12, vec![owner(4242, "api", 9)])]);
        let r = snapshot_report_with(&[plain], &owners.into(), String::new(), |_| None);
        assert_eq!(
            endpoints(&r.leaks[0].sockets[0]),
            "127.0.0.1:8080 -> 127.0.0.1:50002"
        );
    }

    /// Sockets no process holds come after every process's group, however
    /// many: a process is what one can act on.
    #[test]
    fn the_orphans_come_after_the_processes() {
        let dump = [
            close_wait(1, 11, 0),
            close_wait(2, 0, 0),
            close_wait(3, 0, 0),
            close_wait(4, 0, 0),
        ];
        let owners = HashMap::from([(11, vec![owner(4242, "api", 7)])]);
        let r = snapshot_report_with(&dump, &owners.into(), String::new(), |_| None);
        let groups: Vec<(Option<u32>, usize)> =
            r.leaks.iter().map(|g| (g.pid, g.sockets.len())).collect();
        assert_eq!(groups, [(Some(4242), 1), (None, 3)]);
    }

    /// A process out of descriptors cannot accept: the connections waiting
    /// for it say so, and they hold none of its descriptors.
    #[test]
    fn waiting_connections_name_a_process_out_of_descriptors() {
        use crate::forecast::{FdUsage, fd_forecasts, leakers};
        use crate::leaks::Reason;
        let mut r = sample();
        let waiting = r.leaks[0].sockets.iter_mut().find(|f| f.cookie == Some(2));
        waiting.expect("cookie 2").reason = Some(Reason::NotAccepted);
        let who = leakers(&r.leaks);
        assert_eq!(
            who.iter()
                .map(|l| (l.pid, l.close_wait))
                .collect::<Vec<_>>(),
            [(77, 1), (4242, 1)],
            "the one waiting for accept() holds no descriptor"
        );
        let full = FdUsage {
            open: 256,
            limit: Some(256),
        };
        r.forecasts.fd = fd_forecasts(&who, |pid| (pid == 4242).then_some(full));
        r.link_forecasts();
        r.link_forecasts();
        let evidence = |cookie| {
            r.leaks
                .iter()
                .flat_map(|g| &g.sockets)
                .find(|f| f.cookie == Some(cookie))
                .map(|f| f.evidence.clone())
                .expect("flag")
        };
        let said = "; pid 4242 is out of descriptors (256 of 256): its accept() fails with EMFILE";
        assert!(evidence(2).ends_with(said), "{}", evidence(2));
        assert_eq!(evidence(2).matches(said).count(), 1, "said once");
        assert!(
            !evidence(1).contains(said),
            "a held socket: {}",
            evidence(1)
        );
        // A snapshot sees no rate, but it sees a process at its limit.
        let line = crate::forecast::text::fd_line(&r.forecasts.fd[0], true);
        assert_eq!(
            line,
            "PID 4242 api: 256 of 256 fds, 1 in CLOSE_WAIT: out of descriptors now: accept(), \
             socket() and open() fail with EMFILE"
        );
        // A process whose only leaks wait for its accept(): forecast when
        // it is out of descriptors (which is why they wait), else not.
        let mut r = sample();
        let only = r.leaks.iter_mut().find(|g| g.pid == Some(77)).expect("77");
        only.sockets[0].reason = Some(Reason::NotAccepted);
        let who = leakers(&r.leaks);
        let l77 = who.iter().find(|l| l.pid == 77).expect("still a leaker");
        assert_eq!(l77.close_wait, 0);
        let at = |open| FdUsage {
            open,
            limit: Some(256),
        };
        let out = fd_forecasts(&who, |pid| (pid == 77).then_some(at(256)));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].pid, out[0].seconds_left), (77, Some(0.0)));
        assert!(fd_forecasts(&who, |pid| (pid == 77).then_some(at(10))).is_empty());
    }

    #[test]
    fn table_groups_by_process_worst_first() {
        let mut out = Vec::new();
        render(&sample(), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "tracer leaks: no agent at http://127.0.0.1:1: one-shot snapshot of suspects, ages not exact"
        );
        // A snapshot's flags are suspects: their ages are not judged.
        assert_eq!(
            lines[1],
            "4 suspected leaks in 2 processes, 1 held by no process"
        );
        assert_eq!(
            lines[3],
            "PID 4242 api: 2 sockets, 2 in CLOSE_WAIT, oldest unknown"
        );
        // One of pid 4242's two was read to EOF, the other was not.
        assert_eq!(
            lines[4],
            "  reads:   1 of 2 read to EOF and not closed: look where EOF is handled"
        );
        assert!(
            lines[5].starts_with("  reads:   1 of 2 not read up to EOF: "),
            "{}",
            lines[5]
        );
        assert_eq!(lines[6], "  cmdline: /usr/bin/api --port 8080");
        assert!(lines[7].ends_with("docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope  [container 0123456789ab]"));
        assert_eq!(
            lines[8],
            "  FD  NETNS  CONTAINER  LOCAL -> REMOTE                    KIND            AGE  UNREAD  EVIDENCE"
        );
        assert_eq!(
            lines[9],
            "  7   -      -          127.0.0.1:8080 -> 127.0.0.1:50001  close_wait  unknown     512  in CLOSE_WAIT, age unknown (snapshot); 512 bytes unread, EOF not read"
        );
        assert!(
            lines[10].starts_with("  9   -      -          127.0.0.1:8080 -> 127.0.0.1:50002")
                && lines[10].ends_with(
                    "  0  in CLOSE_WAIT, age unknown (snapshot); 0 bytes unread, EOF read"
                ),
            "{}",
            lines[10]
        );
        assert!(
            text.contains("PID 77 worker: 1 socket, 1 in CLOSE_WAIT"),
            "{text}"
        );
        assert!(
            text.contains("no process (orphaned, timewait or request sockets): 1 socket"),
            "{text}"
        );
    }

    /// Sockets as old as each other are listed by fd, as /proc lists them.
    #[test]
    fn sockets_of_one_age_go_by_fd() {
        let dump = [
            close_wait(1, 11, 0),
            close_wait(2, 12, 0),
            close_wait(3, 13, 0),
        ];
        let owners = HashMap::from([
            (11, vec![owner(4242, "api", 12)]),
            (12, vec![owner(4242, "api", 6)]),
            (13, vec![owner(4242, "api", 9)]),
        ]);
        let r = snapshot_report_with(&dump, &owners.into(), "snapshot".into(), |_| None);
        let fds: Vec<u32> = r.leaks[0].sockets.iter().map(|f| f.owners[0].fd).collect();
        assert_eq!(fds, [6, 9, 12]);
    }

    /// Ten recently cleared flags are listed; the rest are counted.
    #[test]
    fn more_cleared_flags_than_listed_are_counted() {
        let mut r = sample();
        let mut f = r.leaks[0].sockets[0].clone();
        f.cleared_how = Some("socket gone".into());
        r.recently_cleared = vec![f; 12];
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.matches(": socket gone").count(), 10, "{text}");
        assert!(
            text.contains("\n  ... and 2 more (--json lists them all)\n"),
            "{text}"
        );
    }

    /// A report made long after the agent's last dump says its flags are
    /// as of then; a process gone since is named so.
    #[test]
    fn flags_of_an_old_dump_and_an_exited_process_are_said() {
        let mut r = sample();
        r.dump_age_seconds = Some(11.24);
        r.leaks[0].exited = true;
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with(
                "as of the agent's last dump, 11.2s ago: a socket closed or a process exited since \
                 still shows"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nPID 4242 api (exited: no process has this pid now): 2 sockets"),
            "{text}"
        );
        // An agent that dumps every 10 s: 11 s is not stale.
        r.dump_interval_seconds = Some(10.0);
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        assert!(!String::from_utf8(out).expect("utf8").contains("as of"));
        // A fresh dump, and a process still there: nothing said.
        r.dump_age_seconds = Some(0.4);
        r.leaks[0].exited = false;
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            !text.contains("as of") && !text.contains("exited"),
            "{text}"
        );
    }

    #[test]
    fn empty_report_and_ages() {
        let r = snapshot_report(&[], &OwnerScan::default(), "no agent".into());
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            format!("tracer leaks: no agent\nno leaks found ({SNAPSHOT_CHECKS})\n")
        );
        assert_eq!(r.exit_code(), 0);
        assert_eq!(sample().exit_code(), 1);
        assert_eq!(fmt_age(Some(73.24), false), "73.2s");
        assert_eq!(fmt_age(Some(725.0), true), ">=12m05s");
        assert_eq!(fmt_age(Some(3.0 * 3600.0 + 240.0), false), "3h04m");
        assert_eq!(fmt_age(Some(2.0 * 86400.0 + 3.0 * 3600.0), false), "2d03h");
        assert_eq!(fmt_age(None, true), "unknown");
    }

    #[test]
    fn an_agents_empty_report_says_when_it_flags() {
        let mut r = snapshot_report(&[], &OwnerScan::default(), "unused".into());
        r.note = None;
        r.thresholds = Some(ThresholdSeconds {
            close_wait: 60.0,
            half_open: 10.0,
            idle: 600.0,
            handshake: 2.5,
            fin_wait2: 900.0,
        });
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "no leaks found (the agent flags CLOSE_WAIT after 60s, half-open peers after 10s, \
             stuck handshakes after 2.5s, orphaned FIN_WAIT2 after 15m)\n"
        );
        assert_eq!(r.exit_code(), 0);
        // Whatever an agent sends.
        r.thresholds = Some(ThresholdSeconds {
            close_wait: 1e300,
            half_open: -1.0,
            idle: 0.0,
            handshake: f64::NAN,
            fin_wait2: 0.0,
        });
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("s, half-open peers after -1s, stuck handshakes after NaNs,"),
            "{text}"
        );
    }

    #[test]
    fn forecasts_show_usage_without_a_rate_and_follow_the_filter() {
        let dump = [close_wait(1, 11, 0), close_wait(3, 13, 0)];
        let owners = HashMap::from([
            (11, vec![owner(4242, "api", 7)]),
            (13, vec![owner(77, "worker", 3)]),
        ]);
        let r = snapshot_report_with(&dump, &owners.into(), "snapshot".into(), |pid| {
            Some(crate::forecast::FdUsage {
                open: if pid == 4242 { 120 } else { 9 },
                limit: Some(1024),
            })
        });
        let mut out = Vec::new();
        render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains(
                "\n  PID 4242 api: 120 of 1024 fds, 1 in CLOSE_WAIT: no rate (a snapshot sees no growth; the agent measures it)\n"
            ),
            "{text}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["forecasts"]["fd"][1]["open_fds"], 120);
        let only_77 = r.narrowed(|f| f.owners.iter().any(|o| o.pid == 77));
        let pids: Vec<u32> = only_77.forecasts.fd.iter().map(|f| f.pid).collect();
        assert_eq!(pids, [77]);
        // Without forecasts, the field is left out, and an older agent's
        // report without it still reads.
        let mut json = serde_json::to_value(sample()).expect("json");
        assert!(json.get("forecasts").is_none());
        json.as_object_mut().expect("object").remove("now");
        let back: Report = serde_json::from_value(json).expect("a report without forecasts");
        assert!(back.forecasts.is_empty());
    }
}
