//! Sockets and owner scans as a recording holds them: the plain snapshot
//! types ([`SocketSnapshot`], [`OwnerScan`]) with names a person can read,
//! fields at their zero value left out.
use std::{collections::BTreeMap, net::IpAddr};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{
    snapshot::{FdOwner, OwnerScan, SocketSnapshot, TcpInfo, TimerKind},
    tcp::{Family, TcpState},
};

/// A [`SocketSnapshot`]; fields at their zero value are left out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Socket {
    /// [`SocketSnapshot::cookie`].
    pub cookie: u64,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The state's name.
    pub state: String,
    /// [`SocketSnapshot::timewait`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timewait: bool,
    /// Local address and port.
    pub local: String,
    /// Remote address and port.
    pub remote: String,
    /// [`SocketSnapshot::inode`].
    #[serde(skip_serializing_if = "is_zero")]
    pub inode: u64,
    /// [`SocketSnapshot::uid`].
    #[serde(skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// `none`, `retransmit`, `keepalive`, `time_wait` or `probe`.
    pub timer: String,
    /// [`SocketSnapshot::expires_ms`].
    #[serde(skip_serializing_if = "is_zero")]
    pub expires_ms: u32,
    /// [`SocketSnapshot::timer_retrans`].
    #[serde(skip_serializing_if = "is_zero")]
    pub timer_retrans: u8,
    /// [`SocketSnapshot::rqueue`].
    #[serde(skip_serializing_if = "is_zero")]
    pub rqueue: u32,
    /// [`SocketSnapshot::wqueue`].
    #[serde(skip_serializing_if = "is_zero")]
    pub wqueue: u32,
    /// `tcp_info`: retransmits, probes, backoff, rto_us, unacked,
    /// last_data_sent_ms, last_data_recv_ms, last_ack_recv_ms, total_retrans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<[u32; 9]>,
    /// [`SocketSnapshot::netns`].
    pub netns: u32,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

const TIMERS: [(TimerKind, &str); 5] = [
    (TimerKind::None, "none"),
    (TimerKind::Retransmit, "retransmit"),
    (TimerKind::Keepalive, "keepalive"),
    (TimerKind::TimeWait, "time_wait"),
    (TimerKind::Probe, "probe"),
];

impl From<&SocketSnapshot> for Socket {
    fn from(s: &SocketSnapshot) -> Self {
        let endpoint = |a: IpAddr, p: u16| std::net::SocketAddr::new(a, p).to_string();
        Socket {
            cookie: s.cookie,
            family: s.family.name().into(),
            state: s.state.name().into(),
            timewait: s.timewait,
            local: endpoint(s.saddr, s.sport),
            remote: endpoint(s.daddr, s.dport),
            inode: s.inode,
            uid: s.uid,
            timer: TIMERS
                .iter()
                .find(|(k, _)| *k == s.timer)
                .map_or("none", |(_, n)| n)
                .into(),
            expires_ms: s.expires_ms,
            timer_retrans: s.timer_retrans,
            rqueue: s.rqueue,
            wqueue: s.wqueue,
            info: s.info.map(|i| {
                [
                    u32::from(i.retransmits),
                    u32::from(i.probes),
                    u32::from(i.backoff),
                    i.rto_us,
                    i.unacked,
                    i.last_data_sent_ms,
                    i.last_data_recv_ms,
                    i.last_ack_recv_ms,
                    i.total_retrans,
                ]
            }),
            netns: s.netns,
        }
    }
}

impl TryFrom<&Socket> for SocketSnapshot {
    type Error = anyhow::Error;

    fn try_from(s: &Socket) -> anyhow::Result<Self> {
        let family = match s.family.as_str() {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            other => anyhow::bail!("unknown family {other:?}"),
        };
        let state = TcpState::from_name(&s.state)
            .with_context(|| format!("unknown state {:?}", s.state))?;
        let timer = TIMERS
            .iter()
            .find(|(_, n)| *n == s.timer)
            .map(|(k, _)| *k)
            .with_context(|| format!("unknown timer {:?}", s.timer))?;
        let endpoint = |e: &str| -> anyhow::Result<std::net::SocketAddr> {
            e.parse()
                .with_context(|| format!("{e:?} is not address:port"))
        };
        let (local, remote) = (endpoint(&s.local)?, endpoint(&s.remote)?);
        let byte = |v: u32| u8::try_from(v).context("tcp_info counter over 255");
        let info = match s.info {
            None => None,
            Some(i) => Some(TcpInfo {
                retransmits: byte(i[0])?,
                probes: byte(i[1])?,
                backoff: byte(i[2])?,
                rto_us: i[3],
                unacked: i[4],
                last_data_sent_ms: i[5],
                last_data_recv_ms: i[6],
                last_ack_recv_ms: i[7],
                total_retrans: i[8],
            }),
        };
        Ok(SocketSnapshot {
            cookie: s.cookie,
            family,
            state,
            timewait: s.timewait,
            saddr: local.ip(),
            sport: local.port(),
            daddr: remote.ip(),
            dport: remote.port(),
            inode: s.inode,
            uid: s.uid,
            timer,
            expires_ms: s.expires_ms,
            timer_retrans: s.timer_retrans,
            rqueue: s.rqueue,
            wqueue: s.wqueue,
            info,
            netns: s.netns,
        })
    }
}

/// An [`OwnerScan`], inodes in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Owners {
    /// Every (process, fd) holding each inode.
    pub owners: BTreeMap<u64, Vec<FdOwner>>,
    /// Processes whose descriptors could not be read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: usize,
}

impl From<&OwnerScan> for Owners {
    fn from(s: &OwnerScan) -> Self {
        Owners {
            owners: s.owners.iter().map(|(k, v)| (*k, v.clone())).collect(),
            unreadable: s.unreadable,
        }
    }
}

impl From<&Owners> for OwnerScan {
    fn from(o: &Owners) -> Self {
        OwnerScan {
            owners: o.owners.iter().map(|(k, v)| (*k, v.clone())).collect(),
            unreadable: o.unreadable,
        }
    }
}
