//! The rows of the leak and TIME_WAIT panels, from the report and the
//! sockets the agent gave.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use super::{Key, Row, TwSocket};
use crate::leaks::{
    LeakKind, Report,
    table::{container_or_netns, fmt_age},
};

pub(super) fn num(v: Option<f64>) -> Key {
    Key::Num(v.unwrap_or(f64::NEG_INFINITY))
}

/// One row per CLOSE_WAIT flag (once, though several processes hold it).
pub(super) fn close_wait_rows(r: &Report) -> Vec<Row> {
    let mut seen = HashSet::new();
    let flags = r.leaks.iter().flat_map(|g| &g.sockets);
    let mut rows = Vec::new();
    for f in flags.filter(|f| f.kind == LeakKind::CloseWait) {
        if !seen.insert((f.cookie, f.local, f.remote)) {
            continue;
        }
        let first = f.owners.first();
        let more = match f.owners.len() {
            0 | 1 => String::new(),
            n => format!(" +{}", n - 1),
        };
        let remote = f.remote.map_or("*".into(), |r| compact(r).to_string());
        rows.push(Row {
            cells: vec![
                fmt_age(f.age_seconds, f.age_is_lower_bound),
                first.map_or("-".into(), |o| o.pid.to_string()),
                first.map_or("-".into(), |o| format!("{}{more}", o.comm)),
                first.map_or("-".into(), |o| o.fd.to_string()),
                format!("{} -> {remote}", compact(f.local)),
                container_or_netns(f, r),
                // Whether the application read up to the peer's FIN: a
                // missing close() on EOF, or nothing reading the socket.
                match f.read_to_end {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
            ],
            keys: vec![
                num(f.age_seconds),
                num(first.map(|o| f64::from(o.pid))),
                Key::Num(f64::from(f.local.port())),
            ],
        });
    }
    rows
}

/// An IPv4 peer of a dual-stack socket as IPv4 (`127.0.0.1:7102`, not
/// `[::ffff:127.0.0.1]:7102`): the panel's column has room for two
/// endpoints that way, and `tracer leaks` keeps the kernel's spelling.
fn compact(a: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One row per process group of the report.
pub(super) fn process_rows(r: &Report) -> Vec<Row> {
    r.leaks
        .iter()
        .map(|g| {
            let comm = match (&g.comm, g.pid, g.owner_unknown) {
                (Some(c), _, _) => c.clone(),
                (None, None, true) => "(owner unknown)".into(),
                (None, None, false) => "(no process)".into(),
                (None, Some(_), _) => "?".into(),
            };
            Row {
                cells: vec![
                    g.pid.map_or("-".into(), |p| p.to_string()),
                    comm,
                    g.close_wait.to_string(),
                    g.sockets.len().to_string(),
                    fmt_age(g.oldest_age_seconds, g.oldest_is_lower_bound),
                    g.growth_per_minute
                        .map_or("-".into(), |v| format!("{v:+.1}")),
                ],
                keys: vec![
                    Key::Num(g.close_wait as f64),
                    num(g.growth_per_minute),
                    num(g.pid.map(f64::from)),
                ],
            }
        })
        .collect()
}

/// TIME_WAIT counts by local port in each network namespace (every pod of
/// a node may serve 8080: each is a row, named by its container, `host`
/// for the agent's own namespace, `?` when the agent does not say), and by
/// remote endpoint.
pub fn time_wait_rows(sockets: &[TwSocket], agent_netns: Option<u32>) -> (Vec<Row>, Vec<Row>) {
    let mut ports: HashMap<(u16, u64), (u64, &TwSocket)> = HashMap::new();
    let mut remotes: HashMap<SocketAddr, u64> = HashMap::new();
    for s in sockets {
        ports.entry((s.sport, s.netns)).or_insert((0, s)).0 += 1;
        *remotes
            .entry(compact(SocketAddr::new(s.daddr, s.dport)))
            .or_default() += 1;
    }
    let mut ports: Vec<_> = ports.into_iter().collect();
    ports.sort_unstable_by_key(|&(key, _)| key);
    let mut remotes: Vec<_> = remotes.into_iter().collect();
    remotes.sort_unstable();
    let ports = ports
        .into_iter()
        .map(|((p, netns), (n, s))| {
            let place = match &s.container {
                Some(c) => c.short(),
                None if agent_netns.is_some_and(|a| u64::from(a) == netns) => "host".to_owned(),
                // An agent too old to say.
                None if netns == 0 => "?".to_owned(),
                None => format!("netns {netns}"),
            };
            Row {
                cells: vec![p.to_string(), n.to_string(), place],
                keys: vec![Key::Num(n as f64), Key::Num(f64::from(p))],
            }
        })
        .collect();
    let remotes = remotes
        .into_iter()
        .map(|(a, n)| {
            // Sort endpoints by address, then port, as numbers.
            let order = match a.ip() {
                IpAddr::V4(v4) => format!("4{:010}{:05}", u32::from(v4), a.port()),
                IpAddr::V6(v6) => format!("6{:039}{:05}", u128::from(v6), a.port()),
            };
            Row {
                cells: vec![a.to_string(), n.to_string()],
                keys: vec![Key::Num(n as f64), Key::Text(order)],
            }
        })
        .collect();
    (ports, remotes)
}
