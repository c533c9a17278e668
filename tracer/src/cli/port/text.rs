//! The report for people: the verdict first, then per namespace the
//! listeners, the sockets holding the port grouped by state (the oldest
//! [`SHOWN_PER_STATE`] of each), and when the last TIME_WAIT socket goes.
use std::io::{self, Write};

use super::report::{Namespace, Owner, Report, Socket, Verdict};
use crate::tcp::TcpState;

/// Sockets listed per state, oldest first; a busy server's port has
/// thousands, and `--json` has them all.
pub const SHOWN_PER_STATE: usize = 20;

/// `FREE`, `BUSY` or `UNKNOWN`.
fn word(v: &Verdict) -> String {
    v.outcome.to_ascii_uppercase()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A span as every table writes it: `45.7s`, `12m24s`, `3h04m`.
fn secs(s: f64) -> String {
    crate::leaks::table::fmt_age(Some(s), false)
}

/// Render `r` to `out`.
pub fn render(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let at = if r.addr.is_unspecified() && r.addr.is_ipv6() {
        "any address".to_owned()
    } else {
        r.addr.to_string()
    };
    let reuse = match r.free_with_reuseaddr {
        Some(true) => "FREE",
        Some(false) => "BUSY",
        None => "UNKNOWN",
    };
    let n = r.namespaces_scanned;
    let scanned = format!("{n} network namespace{} scanned", plural(n));
    if r.addr_available == Some(false) {
        let none = if n == 1 {
            "not an address in the network namespace scanned".to_owned()
        } else {
            format!("an address in none of the {scanned}")
        };
        writeln!(
            out,
            "port {} ({at}) is UNAVAILABLE: {at} is {none}, so bind() fails with EADDRNOTAVAIL (Cannot assign requested address) whatever the port",
            r.port,
        )?;
    } else {
        let mut unseen = match r.namespaces_not_entered {
            0 => String::new(),
            k => format!(
                " in the {scanned}; {k} more could not be entered (that needs CAP_SYS_ADMIN), and what they hold is not known"
            ),
        };
        if let Some(said) = crate::pipeline::unread_said(r.processes_not_read) {
            if unseen.is_empty() {
                unseen = format!(" in the {scanned}");
            }
            unseen.push_str(&format!("; {said}"));
        }
        writeln!(
            out,
            "port {} ({at}) is {} for a new listener without SO_REUSEADDR; {reuse} with SO_REUSEADDR{unseen}",
            r.port,
            if r.free { "FREE" } else { "BUSY" },
        )?;
    }
    where_busy(r, out)?;
    writeln!(out, "source: {}", r.note)?;
    if r.namespaces.is_empty() && r.addr_available != Some(false) {
        if r.namespaces_without_addr == 0 {
            writeln!(
                out,
                "\nnothing is bound to port {} in the {scanned}",
                r.port
            )?;
        } else {
            writeln!(
                out,
                "\nnothing is bound to port {} in the namespaces that have {at}",
                r.port
            )?;
        }
    }
    let many = r.namespaces.len() > 1;
    for ns in &r.namespaces {
        namespace(ns, many, out)?;
    }
    let k = r.namespaces_without_addr;
    if k > 0 {
        writeln!(
            out,
            "\n{k} network namespace{} without {at} hold{} port {} (not shown): a listener there cannot bind {at}",
            plural(k),
            if k == 1 { "s" } else { "" },
            r.port
        )?;
    }
    let hint = r
        .namespaces
        .iter()
        .flat_map(|ns| ns.listeners.iter().chain(&ns.sockets))
        .find_map(|s| s.owner_hint);
    if let Some(hint) = hint {
        writeln!(out, "\nowner unknown: {hint}")?;
    }
    let n = r.clients_time_wait;
    if n > 0 {
        writeln!(
            out,
            "\n{n} connection{} to port {} wait{} in TIME_WAIT on the client side (their clients \
             closed first): they hold the clients' ports, not this one; tracer leaks forecasts \
             when those run out",
            plural(n),
            r.port,
            if n == 1 { "s" } else { "" },
        )?;
    }
    Ok(())
}

/// Namespaces listed at most in [`where_busy`]'s line.
const NAMED_BUSY: usize = 4;

/// With more than one namespace scanned, a busy port is busy in some of
/// them: which, and whether in the one `tracer port` ran in, where a
/// listener started from the same shell would bind.
fn where_busy(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    if r.free || r.namespaces_scanned < 2 || r.addr_available == Some(false) {
        return Ok(());
    }
    let busy: Vec<&Namespace> = r
        .namespaces
        .iter()
        .filter(|ns| ns.without_reuseaddr.outcome != "free")
        .collect();
    let mut named: Vec<String> = busy.iter().take(NAMED_BUSY).map(|ns| title(ns)).collect();
    if busy.len() > NAMED_BUSY {
        named.push(format!("{} more", busy.len() - NAMED_BUSY));
    }
    let here = if r.own_netns == 0 {
        String::new()
    } else if busy.iter().any(|ns| ns.netns == r.own_netns) {
        format!(
            "; this one (netns {}, where tracer port runs) among them",
            r.own_netns
        )
    } else {
        format!(
            "; FREE in this one (netns {}, where tracer port runs)",
            r.own_netns
        )
    };
    writeln!(
        out,
        "busy in {} of the {} network namespaces scanned: {}{here}",
        busy.len(),
        r.namespaces_scanned,
        named.join("; ")
    )
}

/// `netns N (name)`.
fn label(ns: &Namespace) -> String {
    match &ns.name {
        Some(n) => format!("netns {} ({n})", ns.netns),
        None => format!("netns {}", ns.netns),
    }
}

/// `netns N (name), container C`.
fn title(ns: &Namespace) -> String {
    let mut title = label(ns);
    if let Some(c) = &ns.container {
        title.push_str(&format!(", container {}", c.short()));
    }
    title
}

fn namespace(ns: &Namespace, many: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out)?;
    let mut title = title(ns);
    if many {
        title.push_str(&format!(": {}", word(&ns.without_reuseaddr)));
    }
    writeln!(out, "{title}")?;
    for (label, v) in [
        ("without SO_REUSEADDR", &ns.without_reuseaddr),
        ("with SO_REUSEADDR", &ns.with_reuseaddr),
    ] {
        writeln!(out, "  {:<21} {}: {}", format!("{label}:"), word(v), v.why)?;
    }
    if ns.listeners.is_empty() {
        writeln!(out, "  listeners: none")?;
    } else {
        writeln!(out, "  listeners:")?;
        for s in &ns.listeners {
            let queue = match s.accept_queue {
                Some(q) if q.full => format!(
                    "accept queue FULL ({} waiting, backlog {}): new handshakes are dropped until it accepts; ",
                    q.waiting, q.backlog
                ),
                Some(q) => format!("accept queue {}/{} ", q.waiting, q.backlog),
                None => String::new(),
            };
            let age = match s.age_seconds {
                Some(a) if s.age_is_lower_bound => format!("listening >={}  ", secs(a)),
                Some(a) => format!("listening {}  ", secs(a)),
                None => String::new(),
            };
            // A listener inherited across fork() (or passed on) is held by
            // processes that did not call listen(): say who did.
            let opened = match &s.last_seen_process {
                Some(p) if !s.owners.is_empty() && s.owners.iter().all(|o| o.pid != p.pid) => {
                    format!(" (listen() was by pid {} {})", p.pid, p.comm)
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "    {:<24} {age}{queue}{}{opened}",
                s.local.to_string(),
                owners(s)
            )?;
        }
    }
    let mut i = 0;
    while i < ns.sockets.len() {
        let state = ns.sockets[i].state;
        let group: Vec<&Socket> = ns.sockets[i..]
            .iter()
            .take_while(|s| s.state == state)
            .collect();
        i += group.len();
        // Oldest first may leave them out of the rows shown: counted here.
        let waiting = group
            .iter()
            .filter(|s| s.not_accepted && s.owners.is_empty())
            .count();
        let waiting = if waiting == 0 {
            String::new()
        } else {
            format!(", {waiting} not accepted yet")
        };
        writeln!(
            out,
            "  {} ({}{waiting}):",
            state.name().to_ascii_uppercase(),
            group.len()
        )?;
        for s in group.iter().take(SHOWN_PER_STATE) {
            socket(s, out)?;
        }
        if group.len() > SHOWN_PER_STATE {
            writeln!(
                out,
                "    ... and {} more (--json lists them all)",
                group.len() - SHOWN_PER_STATE
            )?;
        }
    }
    if let Some(tw) = &ns.time_wait {
        let what = match (tw.fin_wait2, tw.count) {
            (0, _) => "last TIME_WAIT expires",
            (f, n) if f == n => "last FIN_WAIT2 timer ends",
            _ => "last TIME_WAIT or FIN_WAIT2 timer ends",
        };
        let then = match tw.fin_wait2 {
            _ if !tw.free_then || ns.without_reuseaddr.outcome == "free" => String::new(),
            0 => ": a plain bind succeeds then".to_owned(),
            f => format!(
                ": a plain bind succeeds then, unless a peer closes first: {} FIN_WAIT2 \
                 socket{} still wait{} for {} peer's FIN, and each that gets it holds the port \
                 60 s more in TIME_WAIT",
                f,
                plural(f),
                if f == 1 { "s" } else { "" },
                if f == 1 { "its" } else { "their" },
            ),
        };
        writeln!(
            out,
            "  {what} in {} (at {}){then}",
            secs(tw.last_expires_in_seconds),
            tw.last_expires_at,
        )?;
    }
    Ok(())
}

fn socket(s: &Socket, out: &mut dyn Write) -> io::Result<()> {
    let age = match s.age_seconds {
        Some(a) if s.age_is_lower_bound => format!(">={}", secs(a)),
        Some(a) => secs(a),
        None => "unknown".to_owned(),
    };
    // Who connected to whom, when the agent saw the handshake.
    let arrow = match s.opened_by {
        Some("local") => "->",
        Some("remote") => "<-",
        _ => "--",
    };
    let mut line = format!(
        "    {:<24} {arrow} {:<24} age {age:<8}",
        s.local.to_string(),
        s.peer.to_string()
    );
    if let Some(e) = s.expires_in_seconds {
        line.push_str(&format!(" expires in {:<7}", secs(e)));
    }
    if let Some(c) = &s.closed_first {
        line.push_str(&format!(" closed first: {c:<6}"));
    }
    line.push(' ');
    line.push_str(&owners(s));
    // Half-closed by a process that still holds it (shutdown(SHUT_WR)):
    // the kernel arms no timer, and it stays until the peer closes.
    if s.state == TcpState::FinWait2 && s.expires_in_seconds.is_none() && !s.owners.is_empty() {
        line.push_str("; no timer while held: it stays until the peer closes its side");
    }
    writeln!(out, "{}", line.trim_end())
}

fn owners(s: &Socket) -> String {
    if s.not_accepted && s.owners.is_empty() {
        return match s.listener_owners.as_slice() {
            [] => "not accepted yet: waits in its listener's accept queue".to_owned(),
            l => format!(
                "not accepted yet: waits in the accept queue of {}",
                processes(l)
            ),
        };
    }
    if s.owners.is_empty() {
        let nobody = if s.owner_unknown {
            "owner unknown"
        } else {
            "no process holds it"
        };
        return match &s.last_seen_process {
            Some(p) => format!("{nobody} (was pid {} {})", p.pid, p.comm),
            None => nobody.to_owned(),
        };
    }
    processes(&s.owners)
}

fn processes(owners: &[Owner]) -> String {
    owners
        .iter()
        .map(|o| match o.fd {
            Some(fd) => format!("pid {} {} fd {fd}", o.pid, o.comm),
            None => format!("pid {} {}", o.pid, o.comm),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
