//! Byte-level fuzzing of the sock_diag parser, in the normal test run and
//! bounded (about a thousand cases a property, well under a few seconds):
//! random bytes as a datagram and as one `inet_diag_msg`, and valid
//! replies (built as the kernel lays them out, see `tests.rs`) mutated the
//! ways a kernel bug or a stale buffer would: a byte flipped, truncated,
//! extended with junk, a netlink or attribute length field lying. The
//! parser must never panic, must say `Malformed` or `Refused`, and must
//! count every socket it pushes.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::tests::{Msg, SEQ, established, nla, nlmsg, tcp_info_bytes};
use super::*;

/// A socket message the kernel could send: any family it uses, any state
/// number (known or not), any timer, tcp_info of any length, attributes in
/// any order, unknown ones included.
fn msg() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![AF_INET, AF_INET6]),
        (0u8..=14, 0u8..=5, any::<u8>()),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
        ),
        (any::<[u8; 16]>(), any::<[u8; 16]>()),
        (any::<bool>(), prop::option::of(0usize..300), any::<bool>()),
    )
        .prop_map(
            |(
                family,
                (state, timer, retrans),
                (sport, dport, cookie, expires, inode),
                (s, d),
                (shutdown, info, junk),
            )| {
                let addr = |b: [u8; 16]| {
                    if family == AF_INET {
                        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                    } else {
                        IpAddr::V6(Ipv6Addr::from(b))
                    }
                };
                let mut attrs = Vec::new();
                if junk {
                    attrs.extend(nla(999, &[1, 2, 3]));
                }
                if let Some(len) = info {
                    attrs.extend(nla(INET_DIAG_INFO, &tcp_info_bytes(len.clamp(8, 300))));
                }
                if shutdown {
                    attrs.extend(nla(INET_DIAG_SHUTDOWN, &[0]));
                }
                Msg {
                    family,
                    state,
                    timer,
                    retrans,
                    sport,
                    dport,
                    src: addr(s),
                    dst: addr(d),
                    cookie,
                    expires,
                    inode,
                    attrs,
                }
                .bytes()
            },
        )
}

/// One datagram: socket messages of our dump (and maybe of a stale one),
/// then maybe `NLMSG_DONE`.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((msg(), any::<bool>()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(msgs, done)| {
            let mut d = Vec::new();
            for (m, stale) in msgs {
                let seq = if stale { SEQ + 1 } else { SEQ };
                d.extend(nlmsg(seq, SOCK_DIAG_BY_FAMILY, &m));
            }
            if done {
                d.extend(nlmsg(SEQ, NLMSG_DONE, &0i32.to_ne_bytes()));
            }
            d
        })
}

/// How a valid datagram is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// XOR one byte (index taken modulo the length).
    Flip(usize, u8),
    /// Keep this many bytes (modulo the length + 1).
    Truncate(usize),
    /// Append junk.
    Extend(Vec<u8>),
    /// Overwrite a netlink header's length field (at a multiple-of-4 offset).
    LieNetlinkLength(usize, u32),
    /// Overwrite a 16-bit attribute length (anywhere past the first header).
    LieAttrLength(usize, u16),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Extend),
        (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Damage::LieNetlinkLength(i, v)),
        (any::<usize>(), any::<u16>()).prop_map(|(i, v)| Damage::LieAttrLength(i, v)),
    ]
}

impl Damage {
    fn apply(&self, d: &mut Vec<u8>) {
        let len = d.len();
        match *self {
            Damage::Flip(i, x) if len > 0 => d[i % len] ^= x,
            Damage::Truncate(n) => d.truncate(n % (len + 1)),
            Damage::Extend(ref junk) => d.extend(junk),
            Damage::LieNetlinkLength(i, v) if len >= 4 => {
                let at = (i % (len / 4)) * 4;
                d[at..at + 4].copy_from_slice(&v.to_ne_bytes());
            }
            Damage::LieAttrLength(i, v) if len >= 18 => {
                let at = 16 + i % (len - 17);
                d[at..at + 2].copy_from_slice(&v.to_ne_bytes());
            }
            _ => {}
        }
    }
}

/// Parse `buf` as one datagram: never a panic, errors are the parser's own,
/// and every pushed socket is counted and well formed.
fn parse_checked(buf: &[u8]) -> Result<Result<Step, DiagError>, TestCaseError> {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let r = parse_datagram(buf, SEQ, "IPv4", &mut out, &mut counts);
    match &r {
        Ok(_) => prop_assert_eq!(out.len(), counts.sockets as usize),
        Err(DiagError::Malformed { detail, .. }) => prop_assert!(!detail.is_empty()),
        Err(DiagError::Refused { errno, .. }) => prop_assert!(*errno > 0),
        Err(e) => prop_assert!(false, "not a parse error: {e:?}"),
    }
    prop_assert!(out.len() >= counts.sockets as usize);
    for s in &out {
        check_socket(s)?;
    }
    Ok(r)
}

/// What every decoded socket satisfies.
fn check_socket(s: &SocketSnapshot) -> Result<(), TestCaseError> {
    match s.family {
        Family::Ipv4 => prop_assert!(s.saddr.is_ipv4() && s.daddr.is_ipv4()),
        Family::Ipv6 => prop_assert!(s.saddr.is_ipv6() && s.daddr.is_ipv6()),
    }
    if s.timewait {
        prop_assert_eq!(
            s.timer == TimerKind::TimeWait,
            s.state != TcpState::TimeWait || s.timer == TimerKind::TimeWait
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        // Keep regression seeds next to this file (parse/fuzz.regressions).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_datagrams_never_panic(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_checked(&buf)?;
    }

    /// Random bytes behind a well-formed netlink header reach the socket decoder.
    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        payload in prop::collection::vec(any::<u8>(), 0..400),
        kind in prop::sample::select(vec![SOCK_DIAG_BY_FAMILY, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, 77]),
    ) {
        let _ = parse_checked(&nlmsg(SEQ, kind, &payload))?;
    }

    #[test]
    fn random_messages_never_panic(p in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(Some(s)) = decode_socket(&p) {
            prop_assert!(p.len() >= INET_DIAG_MSG_LEN);
            check_socket(&s)?;
        }
    }

    #[test]
    fn valid_datagrams_parse_whole(d in datagram()) {
        let r = parse_checked(&d)?;
        prop_assert!(r.is_ok(), "{:?}", r);
    }

    #[test]
    fn damaged_datagrams_are_refused_or_read(d in datagram(), how in prop::collection::vec(damage(), 1..4)) {
        let mut d = d;
        for h in &how {
            h.apply(&mut d);
        }
        let _ = parse_checked(&d)?;
    }

    #[test]
    fn damaged_messages_are_refused_or_read(m in msg(), how in prop::collection::vec(damage(), 1..4)) {
        let mut m = m;
        for h in &how {
            h.apply(&mut m);
        }
        if let Ok(Some(s)) = decode_socket(&m) {
            check_socket(&s)?;
        }
    }
}

/// Named cases of the lying length and status fields, kept as plain tests.
mod lengths {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Step, DiagError> {
        parse_datagram(buf, SEQ, "IPv4", &mut Vec::new(), &mut Counts::default())
    }

    #[test]
    fn a_netlink_length_shorter_than_its_header_is_malformed() {
        for lie in [0u32, 1, 15] {
            let mut d = nlmsg(SEQ, SOCK_DIAG_BY_FAMILY, &established().bytes());
            d[..4].copy_from_slice(&lie.to_ne_bytes());
            assert!(
                matches!(parse(&d), Err(DiagError::Malformed { .. })),
                "length {lie}"
            );
        }
    }

    #[test]
    fn a_netlink_length_past_the_datagram_is_malformed() {
        for lie in [200u32, u32::MAX] {
            let mut d = nlmsg(SEQ, NLMSG_DONE, &0i32.to_ne_bytes());
            d[..4].copy_from_slice(&lie.to_ne_bytes());
            assert!(
                matches!(parse(&d), Err(DiagError::Malformed { .. })),
                "length {lie}"
            );
        }
    }

    #[test]
    fn an_attribute_length_under_four_or_past_the_end_is_malformed() {
        for lie in [0u16, 3, 9, u16::MAX] {
            let mut m = established();
            m.attrs = nla(INET_DIAG_SHUTDOWN, &[0]);
            m.attrs[..2].copy_from_slice(&lie.to_ne_bytes());
            assert!(decode_socket(&m.bytes()).is_err(), "attribute length {lie}");
        }
    }

    #[test]
    fn a_status_past_the_kernels_errnos_is_malformed_not_a_refusal() {
        for kind in [NLMSG_ERROR, NLMSG_DONE] {
            for lie in [i32::MIN, -4096] {
                let d = nlmsg(SEQ, kind, &lie.to_ne_bytes());
                assert!(
                    matches!(parse(&d), Err(DiagError::Malformed { .. })),
                    "type {kind}, status {lie}"
                );
            }
            let d = nlmsg(SEQ, kind, &(-4095i32).to_ne_bytes());
            assert!(
                matches!(parse(&d), Err(DiagError::Refused { errno: 4095, .. })),
                "type {kind}"
            );
        }
    }

    #[test]
    fn an_unaligned_last_message_ends_the_datagram() {
        // 17 bytes: a header and one byte, the next (aligned) offset past the end.
        let mut d = nlmsg(SEQ, NLMSG_NOOP, &[9]);
        d.truncate(17);
        assert_eq!(parse(&d).expect("no-op"), Step::More);
    }
}
