//! `ss` (iproute2's sock_diag client) as an oracle independent of
//! tracer's own netlink code.

use std::{collections::BTreeMap, net::SocketAddr, process::Command};

/// Cookies `ss` reports right now for sockets on `port`, keyed by
/// (local, remote) address. `ss` is iproute2's sock_diag client; the tests
/// use it as an oracle independent of tracer's own code.
pub fn ss_cookies(port: u16) -> BTreeMap<(SocketAddr, SocketAddr), u64> {
    let out = Command::new("ss")
        .args(["-tanHe", &format!("( sport = :{port} or dport = :{port} )")])
        .output()
        .expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let parse = |s: &str| -> Option<SocketAddr> {
            let s = s.replace(['[', ']'], "");
            let (ip, port) = s.rsplit_once(':')?;
            let ip = ip.split('%').next()?;
            let ip: std::net::IpAddr = if ip == "*" {
                "0.0.0.0".parse().ok()?
            } else {
                ip.parse().ok()?
            };
            Some(SocketAddr::new(
                ip,
                if port == "*" { 0 } else { port.parse().ok()? },
            ))
        };
        let cookie = f
            .iter()
            .find_map(|t| t.strip_prefix("sk:"))
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if let (Some(l), Some(r), Some(c)) = (parse(f[3]), parse(f[4]), cookie) {
            m.insert((l, r), c);
        }
    }
    m
}

/// Local addresses of TIME_WAIT sockets on `port`, per `ss`.
pub fn ss_time_wait(port: u16) -> Vec<SocketAddr> {
    let out = Command::new("ss")
        .args([
            "-tanH",
            "state",
            "time-wait",
            &format!("( sport = :{port} or dport = :{port} )"),
        ])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2)?.parse().ok()
        })
        .collect()
}

/// Count of sockets `ss` shows in `state` (ss's name, e.g. `time-wait`) on `port`.
pub fn ss_count(state: &str, filter: &str) -> usize {
    let mut cmd = Command::new("ss");
    cmd.args(["-tanH", "state", state]);
    if !filter.is_empty() {
        cmd.arg(filter);
    }
    let out = cmd.output().expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// `ss -tanH` run by `cmd` (inside some namespace): live sockets per
/// state, named as the API names them.
pub fn ss_states(cmd: &mut Command) -> BTreeMap<String, usize> {
    let out = cmd.output().expect("ss");
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(state) = line.split_whitespace().next() else {
            continue;
        };
        let name = match state {
            "ESTAB" => "established".to_owned(),
            "FIN-WAIT-1" => "fin_wait1".to_owned(),
            "FIN-WAIT-2" => "fin_wait2".to_owned(),
            s => s.to_ascii_lowercase().replace('-', "_"),
        };
        *m.entry(name).or_default() += 1;
    }
    m
}
