//! `ss` (iproute2's sock_diag client) as an oracle independent of
//! tracer's own netlink code.

use std::{collections::BTreeMap, net::SocketAddr, process::Command};

/// `ss ARGS` on this host: each line of its output split into fields,
/// blank lines left out.
fn ss_rows(args: &[&str]) -> Vec<Vec<String>> {
    let out = Command::new("ss").args(args).output().expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Whether process `pid` holds the listening socket on `addr`.
pub fn listens(pid: u32, addr: SocketAddr) -> bool {
    let filter = format!("src {addr}");
    let owner = format!("pid={pid},");
    ss_rows(&["-tlnpH", &filter])
        .iter()
        .any(|f| f.iter().any(|field| field.contains(&owner)))
}

/// Cookies `ss` reports right now for sockets on `port`, keyed by
/// (local, remote) address. `ss` is iproute2's sock_diag client; the tests
/// use it as an oracle independent of tracer's own code.
pub fn ss_cookies(port: u16) -> BTreeMap<(SocketAddr, SocketAddr), u64> {
    let mut m = BTreeMap::new();
    for f in ss_rows(&["-tanHe", &format!("( sport = :{port} or dport = :{port} )")]) {
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
        if let (Some(l), Some(r), Some(c)) = (parse(&f[3]), parse(&f[4]), cookie) {
            m.insert((l, r), c);
        }
    }
    m
}

/// Local addresses of TIME_WAIT sockets on `port`, per `ss`.
pub fn ss_time_wait(port: u16) -> Vec<SocketAddr> {
    let filter = format!("( sport = :{port} or dport = :{port} )");
    ss_rows(&["-tanH", "state", "time-wait", &filter])
        .iter()
        .filter_map(|f| f.get(2)?.parse().ok())
        .collect()
}

/// The kernel's Recv-Q of this host's CLOSE_WAIT sockets on local port
/// `port`, by peer port, as `ss` prints it.
pub fn ss_recv_q(port: u16) -> BTreeMap<u16, u32> {
    let filter = format!("( sport = :{port} )");
    ss_rows(&["-tnH", "state", "close-wait", &filter])
        .iter()
        .filter_map(|f| {
            let peer = f.get(3)?.rsplit(':').next()?.parse().ok()?;
            Some((peer, f.first()?.parse().ok()?))
        })
        .collect()
}

/// Count of sockets `ss` shows in `state` (ss's name, e.g. `time-wait`) on `port`.
pub fn ss_count(state: &str, filter: &str) -> usize {
    let mut args = vec!["-tanH", "state", state];
    if !filter.is_empty() {
        args.push(filter);
    }
    ss_rows(&args).len()
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
