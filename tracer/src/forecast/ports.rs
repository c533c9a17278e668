//! Ephemeral port exhaustion. A `connect()` without `bind()` takes a local
//! port from `ip_local_port_range` such that the 4-tuple (local address,
//! local port, remote address, remote port) is unique; a port some socket
//! holds by `bind()` (a listener, a bound socket) is skipped for every
//! destination. So the ports left for one remote endpoint, from one local
//! address, are the range minus the ports already connected to it from that
//! address, minus the bound ones. A TIME_WAIT socket keeps its 4-tuple
//! taken, unless `tcp_tw_reuse` lets a new connect take it over: 1 always
//! (with TCP timestamps, the default), 2 (the default) only on loopback,
//! 0 never. Pure: sockets in, counts out.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::{engine::BuildCookieHasher, tcp::TcpState};

/// A namespace's `net.ipv4.ip_local_port_range` and `net.ipv4.tcp_tw_reuse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSettings {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (included).
    pub high: u16,
    /// `tcp_tw_reuse`: 0 never, 1 always, 2 loopback only.
    pub tw_reuse: u8,
}

impl PortSettings {
    /// Linux's defaults: 32768-60999, reuse on loopback.
    pub const DEFAULT: PortSettings = PortSettings {
        low: 32768,
        high: 60999,
        tw_reuse: 2,
    };

    /// Ports in the range.
    pub fn size(&self) -> u32 {
        u32::from(self.high).saturating_sub(u32::from(self.low)) + 1
    }

    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// True when a new connect from `local` to `remote` may take over a
    /// TIME_WAIT socket of the same 4-tuple.
    pub fn reuses_time_wait(&self, local: IpAddr, remote: IpAddr) -> bool {
        match self.tw_reuse {
            1 => true,
            2 => local.is_loopback() || remote.is_loopback() || is_mapped_loopback(local),
            _ => false,
        }
    }
}

fn is_mapped_loopback(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
}

/// The two numbers of an `ip_local_port_range` file ("32768\t60999").
pub fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (it.next()?.ok()?, it.next()?.ok()?);
    (low <= high).then_some((low, high))
}

/// Where new connects go: one remote endpoint, from one local address, in
/// one network namespace.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// Network namespace inode.
    pub netns: u32,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Local address the connects come from.
    pub local: IpAddr,
}

/// One socket as the counter needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sock {
    /// Network namespace inode.
    pub netns: u32,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// TCP state.
    pub state: TcpState,
}

/// The local ports of one endpoint now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortUsage {
    /// Ports in the range: `ip_local_port_range`'s size.
    pub range: u32,
    /// Ports held by open connections to the endpoint: connecting,
    /// established, or in CLOSE_WAIT (the peer closed, this side not yet).
    pub connected: u32,
    /// Ports held by connections to the endpoint this side has closed,
    /// not yet gone: FIN_WAIT1, FIN_WAIT2 (often orphans the kernel keeps
    /// for `tcp_fin_timeout`), CLOSING and LAST_ACK.
    #[serde(default)]
    pub closing: u32,
    /// Ports held by TIME_WAIT sockets to the endpoint.
    pub time_wait: u32,
    /// True when new connects can take those over (`tcp_tw_reuse`).
    pub time_wait_reusable: bool,
    /// Ports of the range bound by `bind()` in the namespace (listeners):
    /// no connect takes them, whatever the destination.
    pub bound: u32,
    /// Ports no new connect to the endpoint can take: connected, closing,
    /// bound, and TIME_WAIT unless reusable.
    pub in_use: u32,
    /// Ports left for new connects to the endpoint.
    pub free: u32,
}

impl PortUsage {
    /// Ports the endpoint's connections hold, TIME_WAIT ones unless new
    /// connects may take those over: all but the bound ones.
    pub fn held(&self) -> u32 {
        let tw = if self.time_wait_reusable {
            0
        } else {
            self.time_wait
        };
        self.connected + self.closing + tw
    }
}

/// True for the states of a connection that holds its local port for one
/// endpoint: not a listener or a bound socket (those hold it for every
/// endpoint), nor a closed socket or a request not yet a socket.
pub fn holds_a_port(state: TcpState) -> bool {
    !matches!(
        state,
        TcpState::Listen | TcpState::BoundInactive | TcpState::Close | TcpState::NewSynRecv
    )
}

/// Each endpoint's ports.
pub type Counts = HashMap<Endpoint, PortUsage, BuildCookieHasher>;

/// Count each endpoint's ports. Only sockets whose local port is in their
/// namespace's range count (those `connect()` picked); sockets on a local
/// port something listens on are the server side and do not; a namespace
/// without settings is left out.
pub fn count(socks: &[Sock], settings: impl Fn(u32) -> Option<PortSettings>) -> Counts {
    let mut out = Counts::default();
    count_into(
        socks.iter().copied(),
        socks.iter().copied(),
        settings,
        &mut out,
    );
    out
}

/// [`count`] into `out` (emptied first; its memory is kept for the next
/// call), over the sockets `socks` yields, with the bound ports of those
/// `listeners` yields: any sockets among which are all of `socks` that
/// listen or are bound (so that the agent reads its records where they
/// are, and its TIME_WAIT and finished ones once, not twice).
pub fn count_into(
    listeners: impl Iterator<Item = Sock>,
    socks: impl Iterator<Item = Sock>,
    settings: impl Fn(u32) -> Option<PortSettings>,
    out: &mut Counts,
) {
    out.clear();
    // Once per reconcile over every socket: hashed with the engine's
    // integer hasher, not SipHash, which cost more than the counting.
    let mut bound: HashMap<u32, HashSet<u16>, BuildCookieHasher> = HashMap::default();
    for s in listeners {
        if matches!(s.state, TcpState::Listen | TcpState::BoundInactive) {
            bound.entry(s.netns).or_default().insert(s.local.port());
        }
    }
    // Sockets come namespace by namespace more often than not: the last
    // namespace's settings and bound ports are kept at hand.
    let mut last: Option<(u32, Option<PortSettings>)> = None;
    for s in socks {
        if !holds_a_port(s.state) {
            continue;
        }
        let cfg = match last {
            Some((netns, cfg)) if netns == s.netns => cfg,
            _ => {
                let cfg = settings(s.netns);
                last = Some((s.netns, cfg));
                cfg
            }
        };
        let Some(cfg) = cfg else {
            continue;
        };
        let port = s.local.port();
        if !cfg.contains(port) {
            continue;
        }
        let ns_bound = bound.get(&s.netns);
        if ns_bound.is_some_and(|b| b.contains(&port)) {
            continue;
        }
        let key = Endpoint {
            netns: s.netns,
            remote: s.remote,
            local: s.local.ip(),
        };
        let u = out.entry(key).or_insert_with(|| PortUsage {
            range: cfg.size(),
            time_wait_reusable: cfg.reuses_time_wait(key.local, key.remote.ip()),
            bound: ns_bound.map_or(0, |b| b.iter().filter(|&&p| cfg.contains(p)).count() as u32),
            ..PortUsage::default()
        });
        match s.state {
            TcpState::TimeWait => u.time_wait += 1,
            TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing | TcpState::LastAck => {
                u.closing += 1
            }
            _ => u.connected += 1,
        }
    }
    for u in out.values_mut() {
        u.in_use = (u.held() + u.bound).min(u.range);
        u.free = u.range - u.in_use;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(local: &str, remote: &str, state: TcpState) -> Sock {
        Sock {
            netns: 1,
            local: local.parse().expect("local"),
            remote: remote.parse().expect("remote"),
            state,
        }
    }

    fn settings(tw_reuse: u8) -> impl Fn(u32) -> Option<PortSettings> {
        move |ns| {
            (ns == 1).then_some(PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse,
            })
        }
    }

    fn endpoint(remote: &str, local: &str) -> Endpoint {
        Endpoint {
            netns: 1,
            remote: remote.parse().expect("remote"),
            local: local.parse().expect("local"),
        }
    }

    /// Three connected, two in TIME_WAIT, to 10.0.0.1:443 from 10.0.0.9.
    fn traffic() -> Vec<Sock> {
        let mut v: Vec<Sock> = (0..3)
            .map(|i| {
                sock(
                    &format!("10.0.0.9:{}", 40000 + i),
                    "10.0.0.1:443",
                    TcpState::Established,
                )
            })
            .collect();
        v.extend((0..2).map(|i| {
            sock(
                &format!("10.0.0.9:{}", 40010 + i),
                "10.0.0.1:443",
                TcpState::TimeWait,
            )
        }));
        v
    }

    #[test]
    fn time_wait_counts_without_reuse() {
        let got = count(&traffic(), settings(0));
        let u = got[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert_eq!((u.range, u.connected, u.time_wait), (64, 3, 2));
        assert!(!u.time_wait_reusable);
        assert_eq!((u.in_use, u.free), (5, 59));
    }

    #[test]
    fn closed_but_not_gone_is_closing_not_connected() {
        // A client that closed first leaves FIN_WAIT sockets (orphans once
        // it let go of them); one the server closed first is in LAST_ACK
        // after its own close; CLOSE_WAIT is still open on this side.
        let mut socks = traffic();
        for (i, state) in [
            TcpState::FinWait1,
            TcpState::FinWait2,
            TcpState::FinWait2,
            TcpState::Closing,
            TcpState::LastAck,
            TcpState::CloseWait,
        ]
        .into_iter()
        .enumerate()
        {
            socks.push(sock(
                &format!("10.0.0.9:{}", 40020 + i),
                "10.0.0.1:443",
                state,
            ));
        }
        let u = count(&socks, settings(0))[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert_eq!((u.connected, u.closing, u.time_wait), (4, 5, 2), "{u:?}");
        assert_eq!((u.held(), u.in_use, u.free), (11, 11, 53), "{u:?}");
    }

    #[test]
    fn time_wait_is_free_with_reuse() {
        let u = count(&traffic(), settings(1))[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert!(u.time_wait_reusable);
        assert_eq!((u.time_wait, u.in_use, u.free), (2, 3, 61));
        // 2: loopback only; 10.0.0.1 is not.
        let u = count(&traffic(), settings(2))[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert_eq!((u.in_use, u.free), (5, 59));
        let lo = [sock(
            "127.0.0.1:40001",
            "127.0.0.1:5000",
            TcpState::TimeWait,
        )];
        let u = count(&lo, settings(2))[&endpoint("127.0.0.1:5000", "127.0.0.1")];
        assert_eq!((u.in_use, u.free), (0, 64));
    }

    #[test]
    fn local_addresses_and_destinations_are_counted_apart() {
        let mut socks = traffic();
        socks.push(sock(
            "10.0.0.8:40000",
            "10.0.0.1:443",
            TcpState::Established,
        ));
        socks.push(sock("10.0.0.9:40000", "10.0.0.2:443", TcpState::SynSent));
        socks.push(sock("10.0.0.9:40001", "10.0.0.1:80", TcpState::Established));
        let got = count(&socks, settings(0));
        assert_eq!(got.len(), 4);
        assert_eq!(got[&endpoint("10.0.0.1:443", "10.0.0.9")].in_use, 5);
        assert_eq!(got[&endpoint("10.0.0.1:443", "10.0.0.8")].in_use, 1);
        assert_eq!(got[&endpoint("10.0.0.2:443", "10.0.0.9")].in_use, 1);
    }

    #[test]
    fn bound_ports_block_every_destination_wildcard_or_not() {
        let mut socks = traffic();
        // Listeners in the range: on the wildcard and on one address.
        socks.push(sock("0.0.0.0:40020", "0.0.0.0:0", TcpState::Listen));
        socks.push(sock("127.0.0.2:40021", "0.0.0.0:0", TcpState::Listen));
        // Outside the range: no effect.
        socks.push(sock("0.0.0.0:8080", "0.0.0.0:0", TcpState::Listen));
        // The server side of a listener in the range is not a client.
        socks.push(sock(
            "10.0.0.9:40020",
            "10.0.0.7:51000",
            TcpState::Established,
        ));
        let got = count(&socks, settings(0));
        let u = got[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert_eq!((u.bound, u.in_use, u.free), (2, 7, 57));
        assert!(!got.contains_key(&endpoint("10.0.0.7:51000", "10.0.0.9")));
    }

    #[test]
    fn namespaces_interleaved_count_as_if_apart() {
        // Two namespaces with ranges of their own and a listener each, on a
        // port the other's clients use, their sockets alternating with a
        // third's that has no settings: each socket is judged by its own
        // namespace's range and bound ports, whatever came before it.
        let in_ns = |netns, s: Sock| Sock { netns, ..s };
        let settings = |ns: u32| match ns {
            1 => Some(PortSettings {
                low: 40000,
                high: 40063,
                tw_reuse: 0,
            }),
            2 => Some(PortSettings {
                low: 40032,
                high: 40095,
                tw_reuse: 0,
            }),
            _ => None,
        };
        let mut mixed = Vec::new();
        for p in 40030..40040u16 {
            for ns in [1, 2, 3] {
                let client = sock(
                    &format!("10.0.0.9:{p}"),
                    "10.0.0.1:443",
                    TcpState::Established,
                );
                mixed.push(in_ns(ns, client));
            }
        }
        mixed.push(in_ns(
            1,
            sock("0.0.0.0:40035", "0.0.0.0:0", TcpState::Listen),
        ));
        mixed.push(in_ns(
            2,
            sock("0.0.0.0:40033", "0.0.0.0:0", TcpState::Listen),
        ));
        let got = count(&mixed, settings);
        let mut apart = mixed.clone();
        apart.sort_by_key(|s| s.netns);
        assert_eq!(got, count(&apart, settings));
        let ep = |netns| Endpoint {
            netns,
            ..endpoint("10.0.0.1:443", "10.0.0.9")
        };
        // 40030-40039 in namespace 1's range, less its bound 40035.
        assert_eq!((got[&ep(1)].connected, got[&ep(1)].bound), (9, 1));
        // Only 40032-40039 in namespace 2's, less its bound 40033.
        assert_eq!((got[&ep(2)].connected, got[&ep(2)].bound), (7, 1));
        assert!(!got.contains_key(&ep(3)), "no settings: not counted");
    }

    #[test]
    fn ports_outside_the_range_and_unknown_namespaces_do_not_count() {
        let mut socks = vec![sock("10.0.0.9:5000", "10.0.0.1:443", TcpState::Established)];
        socks.push(Sock {
            netns: 2,
            ..sock("10.0.0.9:40000", "10.0.0.1:443", TcpState::Established)
        });
        assert!(count(&socks, settings(0)).is_empty());
    }

    #[test]
    fn a_full_range_has_nothing_free() {
        let socks: Vec<Sock> = (40000..=40063)
            .map(|p| sock(&format!("10.0.0.9:{p}"), "10.0.0.1:443", TcpState::TimeWait))
            .collect();
        let u = count(&socks, settings(0))[&endpoint("10.0.0.1:443", "10.0.0.9")];
        assert_eq!((u.in_use, u.free), (64, 0));
    }

    #[test]
    fn reads_the_range_file() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_range("40000 40063"), Some((40000, 40063)));
        assert_eq!(parse_range("5 4"), None);
        assert_eq!(PortSettings::DEFAULT.size(), 28232);
    }
}
