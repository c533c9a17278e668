//! The forecasts as `tracer leaks` prints them, one line each:
//! `PID 4242 api: 120 of 1024 fds, +10.0/min: runs out in ~1h30m`.
use std::io::{self, Write};

use super::{FdForecast, Forecasts, PortForecast};

/// A time left for people: `now`, `~45s`, `~12 min`, `~3h04m`, `~2d03h`.
pub fn fmt_left(secs: f64) -> String {
    let t = secs.max(0.0).round() as u64;
    match t {
        0 => "now".into(),
        1..120 => format!("~{t}s"),
        120..7200 => format!("~{} min", (t + 30) / 60),
        7200..172800 => format!("~{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("~{}d{:02}h", t / 86400, t % 86400 / 3600),
    }
}

/// One process's line; `snapshot`: no rate can be known.
pub fn fd_line(f: &FdForecast, snapshot: bool) -> String {
    let limit = f.fd_limit.map_or("unlimited".into(), |l| l.to_string());
    let mut s = format!("PID {} {}: {} of {limit} fds", f.pid, f.comm, f.open_fds);
    // A listening process at its limit with no leak flagged yet: its
    // CLOSE_WAIT sockets, if any, are younger than the threshold.
    if f.close_wait > 0 {
        s.push_str(&format!(", {} in CLOSE_WAIT", f.close_wait));
    }
    match (f.growth_per_minute, f.seconds_left) {
        (_, Some(0.0)) => {
            s.push_str(": out of descriptors now: accept(), socket() and open() fail with EMFILE")
        }
        _ if snapshot => s.push_str(": no rate (a snapshot sees no growth; the agent measures it)"),
        (Some(g), Some(left)) => {
            s.push_str(&format!(", +{g:.1}/min: runs out in {}", fmt_left(left)))
        }
        (Some(_), None) if f.fd_limit.is_none() => s.push_str(": no limit to reach"),
        (Some(g), None) => s.push_str(&format!(", {g:+.1}/min: not growing")),
        (None, _) => s.push_str(": no rate yet (30 s of history needed)"),
    }
    s
}

/// One endpoint's line; `name`: its namespace's `/run/netns` name.
pub fn port_line(p: &PortForecast, name: Option<&str>) -> String {
    let u = &p.usage;
    let e = &p.endpoint;
    // What holds the ports in use, then the TIME_WAIT sockets that do not
    // count because new connects may take them over.
    let mut held = Vec::new();
    if u.connected > 0 {
        held.push(format!("{} connected", u.connected));
    }
    if u.closing > 0 {
        held.push(format!("{} closing", u.closing));
    }
    if u.bound > 0 {
        held.push(format!("{} bound by listeners", u.bound));
    }
    if u.time_wait > 0 && !u.time_wait_reusable {
        held.push(format!("{} in TIME_WAIT, not reusable", u.time_wait));
    }
    if held.is_empty() {
        held.push("none held".to_owned());
    }
    let reuse = p.settings.tw_reuse;
    let tw = if u.time_wait > 0 && u.time_wait_reusable {
        format!(
            "plus {} in TIME_WAIT, reusable: tcp_tw_reuse={reuse}",
            u.time_wait
        )
    } else {
        format!("tcp_tw_reuse={reuse}")
    };
    let name = name.map(|n| format!(" ({n})")).unwrap_or_default();
    let mut s = format!(
        "{} -> {} in netns {}{name}: {} of {} ports in use ({}; {tw}), {} free",
        e.local,
        e.remote,
        e.netns,
        u.in_use,
        u.range,
        held.join(", "),
        u.free
    );
    match (p.growth_per_second, p.seconds_left) {
        (_, Some(0.0)) => s.push_str(": none left, connect() fails with EADDRNOTAVAIL"),
        (Some(g), Some(left)) => {
            s.push_str(&format!(", +{g:.2}/s: runs out in {}", fmt_left(left)))
        }
        (Some(_), None) => s.push_str(": not growing"),
        (None, _) => s.push_str(": no rate yet"),
    }
    if !p.connectors.is_empty() {
        let who: Vec<String> = p
            .connectors
            .iter()
            .map(|c| format!("pid {} {} ({})", c.pid, c.comm, c.sockets))
            .collect();
        s.push_str(&format!("; connected by {}", who.join(", ")));
    }
    s
}

/// How soon an endpoint must run out for the table to say what to do
/// about it: within the hour, or now.
const ADVISE_SECONDS: f64 = 3_600.0;

/// What to do about an endpoint that runs out within the hour (or now):
/// about what holds most of its ports; `None` for any other.
pub fn port_advice(p: &PortForecast) -> Option<String> {
    if !p.seconds_left.is_some_and(|s| s <= ADVISE_SECONDS) {
        return None;
    }
    let u = &p.usage;
    let st = &p.settings;
    let widen = format!(
        "widen net.ipv4.ip_local_port_range ({}-{} now), or spread the connects over more \
         addresses or ports of the peer (each destination has a range of its own)",
        st.low, st.high
    );
    let waiting = if u.time_wait_reusable { 0 } else { u.time_wait };
    let open = u.connected + u.closing;
    Some(if u.bound > waiting.max(open) {
        // Listeners in the range take their ports from every destination.
        format!(
            "most ports are bound by listeners inside the range: move them out of it (or \
             reserve their ports with net.ipv4.ip_local_reserved_ports), or {widen}"
        )
    } else if waiting >= open {
        // Connections this host closed first, one per request.
        format!(
            "most ports wait out TIME_WAIT after connections this host closed first: reuse \
             connections (a pool, HTTP keep-alive) rather than one per request; or set \
             net.ipv4.tcp_tw_reuse=1 (connects take over a TIME_WAIT older than 1 s; needs TCP \
             timestamps, on by default); or {widen}. Not SO_LINGER 0: it resets each connection \
             instead of closing it, and the peer loses what was unsent"
        )
    } else {
        format!(
            "most ports are held by connections still open or closing: close or pool them \
             (the processes named above), or {widen}"
        )
    })
}

/// How soon an endpoint must run out to be worth a line of its own: a
/// day. Two connects in a quiet minute extrapolate to days, not to an
/// outage anyone must act on tonight (the JSON and metrics keep them).
pub const SOON_SECONDS: f64 = 86_400.0;

/// Worth a line in the table: running out within [`SOON_SECONDS`], or
/// half the range used.
fn worth_showing(p: &PortForecast) -> bool {
    p.seconds_left.is_some_and(|s| s <= SOON_SECONDS)
        || p.usage.in_use.saturating_mul(2) >= p.usage.range
}

/// The forecasts section, nothing when there is none. Endpoints that
/// neither run out within a day nor are half full are counted, not listed
/// (the JSON has them). `names`: namespaces' `/run/netns` names.
pub fn render(
    f: &Forecasts,
    snapshot: bool,
    names: &std::collections::BTreeMap<u32, String>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let shown: Vec<&PortForecast> = f.ports.iter().filter(|p| worth_showing(p)).collect();
    if f.fd.is_empty() && shown.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nForecasts:")?;
    for p in &f.fd {
        writeln!(out, "  {}", fd_line(p, snapshot))?;
    }
    for p in &shown {
        let name = names.get(&p.endpoint.netns).map(String::as_str);
        writeln!(out, "  {}", port_line(p, name))?;
        if let Some(advice) = port_advice(p) {
            writeln!(out, "    what to do: {advice}")?;
        }
    }
    let quiet = f.ports.len() - shown.len();
    if quiet > 0 && !shown.is_empty() {
        writeln!(
            out,
            "  ({quiet} more endpoint{} neither running out within a day nor half full: --json lists them)",
            if quiet == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::{Endpoint, FdUsage, PortSettings, PortUsage};

    #[test]
    fn process_lines() {
        let usage = FdUsage {
            open: 120,
            limit: Some(1024),
        };
        let f = FdForecast::new(4242, "api", 100, usage, Some(10.0));
        assert_eq!(
            fd_line(&f, false),
            "PID 4242 api: 120 of 1024 fds, 100 in CLOSE_WAIT, +10.0/min: runs out in ~90 min"
        );
        let snap = FdForecast::new(4242, "api", 100, usage, None);
        assert!(
            fd_line(&snap, true)
                .ends_with(": no rate (a snapshot sees no growth; the agent measures it)")
        );
        assert!(fd_line(&snap, false).ends_with("no rate yet (30 s of history needed)"));
        let flat = FdForecast::new(4242, "api", 100, usage, Some(0.0));
        assert!(
            fd_line(&flat, false).ends_with("+0.0/min: not growing"),
            "{}",
            fd_line(&flat, false)
        );
    }

    #[test]
    fn endpoint_lines_and_times() {
        let p = PortForecast {
            endpoint: Endpoint {
                netns: 4026532000,
                remote: "127.0.0.1:5000".parse().expect("remote"),
                local: "127.0.0.1".parse().expect("local"),
            },
            usage: PortUsage {
                range: 64,
                connected: 0,
                closing: 0,
                time_wait: 20,
                time_wait_reusable: false,
                bound: 0,
                in_use: 20,
                free: 44,
            },
            settings: PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse: 0,
            },
            growth_per_second: Some(2.0),
            seconds_left: Some(22.0),
            connectors: Vec::new(),
        };
        assert_eq!(
            port_line(&p, None),
            "127.0.0.1 -> 127.0.0.1:5000 in netns 4026532000: 20 of 64 ports in use \
             (20 in TIME_WAIT, not reusable; tcp_tw_reuse=0), 44 free, +2.00/s: runs out in ~22s"
        );
        // Listeners hold ports; reusable TIME_WAIT sockets do not. Closed
        // connections not yet gone (orphaned FIN_WAIT2) hold theirs.
        let mut mixed = p.clone();
        mixed.usage = PortUsage {
            connected: 3,
            closing: 4,
            bound: 8,
            time_wait: 8,
            time_wait_reusable: true,
            in_use: 15,
            free: 49,
            ..p.usage
        };
        mixed.settings.tw_reuse = 2;
        assert!(
            port_line(&mixed, None).contains(
                ": 15 of 64 ports in use (3 connected, 4 closing, 8 bound by listeners; \
                 plus 8 in TIME_WAIT, reusable: tcp_tw_reuse=2), 49 free"
            ),
            "{}",
            port_line(&mixed, None)
        );
        // The processes that connected, most first.
        let mut named = p.clone();
        named.connectors = vec![
            crate::forecast::Connector {
                pid: 4242,
                comm: "api".into(),
                sockets: 18,
            },
            crate::forecast::Connector {
                pid: 77,
                comm: "cron".into(),
                sockets: 2,
            },
        ];
        assert!(
            port_line(&named, None)
                .ends_with(": runs out in ~22s; connected by pid 4242 api (18), pid 77 cron (2)"),
            "{}",
            port_line(&named, None)
        );
        let mut quiet = p.clone();
        (quiet.growth_per_second, quiet.seconds_left) = (Some(0.0), None);
        let f = Forecasts {
            fd: Vec::new(),
            ports: vec![p.clone(), quiet.clone()],
        };
        let mut out = Vec::new();
        render(&f, false, &Default::default(), &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("\nForecasts:\n  127.0.0.1 -> "), "{text}");
        assert!(
            text.ends_with(
                "(1 more endpoint neither running out within a day nor half full: --json lists them)\n"
            ),
            "{text}"
        );
        let mut out = Vec::new();
        render(
            &Forecasts {
                fd: Vec::new(),
                ports: vec![quiet],
            },
            false,
            &Default::default(),
            &mut out,
        )
        .expect("render");
        assert!(out.is_empty(), "nothing worth a line");
        // Two connects in a quiet minute: days away, and no line of its own.
        let mut slow = p.clone();
        (slow.growth_per_second, slow.seconds_left) = (Some(0.04), Some(8.0 * 86_400.0));
        assert!(!worth_showing(&slow));
        slow.usage.in_use = 40;
        assert!(worth_showing(&slow), "half full");
        // None left: a report with no leak says so, names the namespace,
        // and exits 1.
        let mut out_now = p.clone();
        (out_now.usage.free, out_now.seconds_left) = (0, Some(0.0));
        let mut r = crate::leaks::snapshot_report(&[], &Default::default(), "snapshot".into());
        assert_eq!(r.exit_code(), 0);
        r.forecasts.ports = vec![out_now];
        r.name_namespaces([(4026532000, "web".to_owned())].into());
        assert_eq!(r.exit_code(), 1);
        let mut out = Vec::new();
        crate::leaks::table::render(&r, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("no leaks found (a snapshot")
                && text.contains(
                    "\nbut something has run out now: see the forecasts below (exit status 1)\n"
                )
                && text.contains(" in netns 4026532000 (web): 20 of 64 ports in use")
                && text.contains("0 free: none left, connect() fails with EADDRNOTAVAIL"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n    what to do: most ports wait out TIME_WAIT after connections this host \
                 closed first: reuse connections (a pool, HTTP keep-alive) rather than one per \
                 request; or set net.ipv4.tcp_tw_reuse=1"
            ) && text.contains("widen net.ipv4.ip_local_port_range (40000-40063 now)"),
            "{text}"
        );
        // Advice only for what runs out within the hour, about what holds
        // the ports.
        assert!(port_advice(&p).is_some(), "~22s left");
        assert!(port_advice(&slow).is_none(), "days left");
        let mut open = p.clone();
        (open.usage.connected, open.usage.time_wait) = (40, 10);
        let said = port_advice(&open).expect("advice");
        assert!(
            said.starts_with(
                "most ports are held by connections still open or closing: close or pool"
            ),
            "{said}"
        );
        // Mostly TIME_WAIT, a few open: still the TIME_WAIT advice.
        (open.usage.connected, open.usage.time_wait) = (1, 31);
        let said = port_advice(&open).expect("advice");
        assert!(said.starts_with("most ports wait out TIME_WAIT"), "{said}");
        // Listeners in the range.
        (open.usage.bound, open.usage.time_wait) = (50, 3);
        let said = port_advice(&open).expect("advice");
        assert!(
            said.starts_with("most ports are bound by listeners"),
            "{said}"
        );
        assert_eq!(fmt_left(0.2), "now");
        assert_eq!(fmt_left(5424.0), "~90 min");
        assert_eq!(fmt_left(4.0 * 3600.0 + 300.0), "~4h05m");
    }
}
