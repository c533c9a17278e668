//! Synthetic sock_diag replies, byte for byte as the kernel lays them out.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

pub(super) const SEQ: u32 = 7;

mod datagrams;

/// One netlink message: header + payload, padded to 4 bytes.
pub(super) fn nlmsg(seq: u32, kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::new();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&1234u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(len.next_multiple_of(4), 0);
    m
}

/// One attribute, padded to 4 bytes.
pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut a = Vec::new();
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(len.next_multiple_of(4), 0);
    a
}

/// One `inet_diag_msg` and its attributes, as the kernel would send it.
pub(super) struct Msg {
    pub(super) family: u8,
    pub(super) state: u8,
    pub(super) timer: u8,
    pub(super) retrans: u8,
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) cookie: u64,
    pub(super) expires: u32,
    pub(super) inode: u32,
    pub(super) attrs: Vec<u8>,
}

/// Fixed `idiag_rqueue`, `idiag_wqueue` and `idiag_uid` of every [`Msg`].
const RQUEUE: u32 = 3;
const WQUEUE: u32 = 5;
const UID: u32 = 1000;

pub(super) fn established() -> Msg {
    Msg {
        family: AF_INET,
        state: 1,
        timer: 0,
        retrans: 0,
        sport: 40000,
        dport: 8080,
        src: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        cookie: 0x1_0001_920f,
        expires: 0,
        inode: 16245,
        attrs: nla(INET_DIAG_SHUTDOWN, &[0]),
    }
}

impl Msg {
    pub(super) fn bytes(&self) -> Vec<u8> {
        let mut p = vec![self.family, self.state, self.timer, self.retrans];
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        for a in [self.src, self.dst] {
            let mut b = [0u8; 16];
            match a {
                IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => b = v6.octets(),
            }
            p.extend_from_slice(&b);
        }
        p.extend_from_slice(&5u32.to_ne_bytes()); // idiag_if: bound to interface 5
        p.extend_from_slice(&(self.cookie as u32).to_ne_bytes());
        p.extend_from_slice(&((self.cookie >> 32) as u32).to_ne_bytes());
        for v in [self.expires, RQUEUE, WQUEUE, UID, self.inode] {
            p.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(p.len(), INET_DIAG_MSG_LEN);
        p.extend_from_slice(&self.attrs);
        p
    }

    fn decode(&self) -> SocketSnapshot {
        decode_socket(&self.bytes())
            .expect("decodes")
            .expect("known state")
    }
}

pub(super) fn tcp_info_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[tcpi::RETRANSMITS] = 2;
    v[tcpi::PROBES] = 3;
    v[tcpi::BACKOFF] = 4;
    for (off, val) in [
        (tcpi::RTO, 204_000u32),
        (tcpi::UNACKED, 6),
        (tcpi::LAST_DATA_SENT, 7),
        (tcpi::LAST_DATA_RECV, 8),
        (tcpi::LAST_ACK_RECV, 9),
        (tcpi::TOTAL_RETRANS, 10),
    ] {
        if off + 4 <= len {
            v[off..off + 4].copy_from_slice(&val.to_ne_bytes());
        }
    }
    if tcpi::BYTES_ACKED + 8 <= len {
        v[tcpi::BYTES_ACKED..tcpi::BYTES_ACKED + 8].copy_from_slice(&11u64.to_ne_bytes());
    }
    v
}

#[test]
fn full_established_socket_with_tcp_info() {
    let mut m = established();
    m.attrs.extend(nla(INET_DIAG_INFO, &tcp_info_bytes(248)));
    m.attrs.extend(nla(999, &[1, 2, 3])); // unknown attributes are ignored
    let s = m.decode();
    assert_eq!(
        s,
        SocketSnapshot {
            ifindex: 5,
            cookie: 0x1_0001_920f,
            family: Family::Ipv4,
            state: TcpState::Established,
            timewait: false,
            saddr: m.src,
            sport: 40000,
            daddr: m.dst,
            dport: 8080,
            inode: 16245,
            uid: UID,
            timer: TimerKind::None,
            expires_ms: 0,
            timer_retrans: 0,
            rqueue: RQUEUE,
            wqueue: WQUEUE,
            info: Some(TcpInfo {
                retransmits: 2,
                probes: 3,
                backoff: 4,
                rto_us: 204_000,
                unacked: 6,
                last_data_sent_ms: 7,
                last_data_recv_ms: 8,
                last_ack_recv_ms: 9,
                total_retrans: 10,
                bytes_acked: 11,
            }),
            netns: 0,
        }
    );
}

#[test]
fn timers_keep_expiry_and_retransmits() {
    for (raw, kind) in [
        (1, TimerKind::Retransmit),
        (2, TimerKind::Keepalive),
        (4, TimerKind::Probe),
    ] {
        let s = Msg {
            timer: raw,
            retrans: 3,
            expires: 1500,
            ..established()
        }
        .decode();
        assert_eq!((s.timer, s.expires_ms, s.timer_retrans), (kind, 1500, 3));
    }
}

#[test]
fn timewait_sockets_and_their_substates() {
    // inet_twsk_diag_fill: timer 3, state = tw_substate, no attributes.
    for (substate, want) in [(6, TcpState::TimeWait), (5, TcpState::FinWait2)] {
        let s = Msg {
            state: substate,
            timer: 3,
            expires: 59_000,
            inode: 0,
            attrs: Vec::new(),
            ..established()
        }
        .decode();
        assert!(s.timewait);
        assert_eq!(
            (s.state, s.timer, s.expires_ms, s.inode),
            (want, TimerKind::TimeWait, 59_000, 0)
        );
    }
    // A full FIN_WAIT2 socket is not timewait.
    let s = Msg {
        state: 5,
        timer: 2,
        ..established()
    }
    .decode();
    assert!(!s.timewait);
    assert_eq!(s.state, TcpState::FinWait2);
}

#[test]
fn request_sockets_read_as_new_syn_recv() {
    // inet_req_diag_fill: state SYN_RECV, timer 1, inode 0, no SHUTDOWN.
    let req = Msg {
        state: 3,
        timer: 1,
        inode: 0,
        attrs: nla(15, &[0; 4]),
        ..established()
    };
    assert_eq!(req.decode().state, TcpState::NewSynRecv);
    // A full SYN_RECV socket (TCP Fast Open child) carries SHUTDOWN.
    let full = Msg {
        state: 3,
        timer: 1,
        ..established()
    };
    assert_eq!(full.decode().state, TcpState::SynRecv);
}

#[test]
fn bound_inactive_sockets() {
    let bound = Msg {
        state: 7,
        dport: 0,
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ..established()
    };
    assert_eq!(bound.decode().state, TcpState::BoundInactive);
    assert_eq!(
        Msg {
            state: 13,
            dport: 0,
            ..established()
        }
        .decode()
        .state,
        TcpState::BoundInactive
    );
    // A connected socket caught the instant it closed stays Close.
    assert_eq!(
        Msg {
            state: 7,
            ..established()
        }
        .decode()
        .state,
        TcpState::Close
    );
}

#[test]
fn ipv6_addresses() {
    let src = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let dst = IpAddr::V6("2001:db8::1".parse().expect("addr"));
    let s = Msg {
        family: AF_INET6,
        src,
        dst,
        ..established()
    }
    .decode();
    assert_eq!((s.family, s.saddr, s.daddr), (Family::Ipv6, src, dst));
}

#[test]
fn unknown_states_and_families_are_skipped_not_fatal() {
    assert_eq!(
        decode_socket(
            &Msg {
                state: 42,
                ..established()
            }
            .bytes()
        ),
        Ok(None)
    );
    assert_eq!(
        decode_socket(
            &Msg {
                family: 1,
                ..established()
            }
            .bytes()
        ),
        Ok(None)
    );
    assert!(decode_socket(&established().bytes()[..40]).is_err());
}

#[test]
fn tcp_info_offsets_match_libc() {
    use std::mem::offset_of;
    assert_eq!(
        tcpi::RETRANSMITS,
        offset_of!(libc::tcp_info, tcpi_retransmits)
    );
    assert_eq!(tcpi::PROBES, offset_of!(libc::tcp_info, tcpi_probes));
    assert_eq!(tcpi::BACKOFF, offset_of!(libc::tcp_info, tcpi_backoff));
    assert_eq!(tcpi::RTO, offset_of!(libc::tcp_info, tcpi_rto));
    assert_eq!(tcpi::UNACKED, offset_of!(libc::tcp_info, tcpi_unacked));
    assert_eq!(
        tcpi::LAST_DATA_SENT,
        offset_of!(libc::tcp_info, tcpi_last_data_sent)
    );
    assert_eq!(
        tcpi::LAST_DATA_RECV,
        offset_of!(libc::tcp_info, tcpi_last_data_recv)
    );
    assert_eq!(
        tcpi::LAST_ACK_RECV,
        offset_of!(libc::tcp_info, tcpi_last_ack_recv)
    );
    assert_eq!(
        tcpi::TOTAL_RETRANS,
        offset_of!(libc::tcp_info, tcpi_total_retrans)
    );
}

#[test]
fn short_tcp_info_reads_missing_fields_as_zero() {
    let info = decode_tcp_info(&tcp_info_bytes(60));
    assert_eq!(
        (info.rto_us, info.last_ack_recv_ms, info.total_retrans),
        (204_000, 9, 0)
    );
    assert_eq!(decode_tcp_info(&[]), TcpInfo::default());
}
