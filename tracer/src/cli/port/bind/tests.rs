//! The rules, case by case. The overlap table is what real `bind()` +
//! `listen()` calls answered on Linux 6.18 (an old listener, then a new
//! one); tests/port.rs checks the verdicts against the kernel again.
use super::*;
use crate::tcp::TcpState::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn holder(addr: &str, state: TcpState) -> Holder {
    Holder {
        addr: ip(addr),
        state,
        v6only: None,
        reuseaddr: None,
    }
}

fn bind(addr: &str, reuseaddr: bool) -> Bind {
    Bind {
        addr: ip(addr),
        v6only: false,
        reuseaddr,
    }
}

#[test]
fn overlaps_as_the_kernel_answered() {
    // (old, old v6only, new, new v6only, overlap): from real bind() calls.
    let table = [
        ("::1", false, "0.0.0.0", false, false),
        ("::1", true, "0.0.0.0", false, false),
        ("::1", false, "127.0.0.1", false, false),
        ("::", false, "0.0.0.0", false, true),
        ("::", true, "0.0.0.0", false, false),
        ("::", false, "127.0.0.1", false, true),
        ("::", true, "127.0.0.1", false, false),
        ("0.0.0.0", false, "::", false, true),
        ("0.0.0.0", false, "::", true, false),
        ("127.0.0.1", false, "::", false, true),
        ("127.0.0.1", false, "::1", false, false),
        ("0.0.0.0", false, "::1", false, false),
        ("::ffff:127.0.0.1", false, "127.0.0.1", false, true),
        ("::ffff:127.0.0.1", false, "0.0.0.0", false, true),
        ("127.0.0.1", false, "::ffff:127.0.0.1", false, true),
        ("127.0.0.1", false, "::ffff:0.0.0.0", false, true),
        ("127.0.0.1", false, "127.0.0.2", false, false),
        ("0.0.0.0", false, "127.0.0.2", false, true),
        ("127.0.0.2", false, "0.0.0.0", false, true),
        ("127.0.0.1", false, "127.0.0.1", false, true),
        ("::1", true, "::", true, true),
        ("::1", true, "::", false, true),
        ("::", true, "::ffff:127.0.0.1", false, false),
        ("::1", false, "::1", false, true),
        ("::1", false, "::2", false, false),
        ("fe80::1", false, "::", true, true),
        ("::ffff:10.0.0.1", false, "::", false, true),
        ("::ffff:10.0.0.1", false, "::", true, false),
    ];
    for (old, old_v6only, new, new_v6only, want) in table {
        assert_eq!(
            overlaps(ip(new), new_v6only, ip(old), old_v6only),
            want,
            "old {old} (v6only {old_v6only}), new {new} (v6only {new_v6only})"
        );
    }
}

#[test]
fn without_reuseaddr_every_overlapping_socket_blocks() {
    for state in [
        Listen,
        Established,
        SynSent,
        SynRecv,
        FinWait1,
        FinWait2,
        TimeWait,
        CloseWait,
        LastAck,
        Closing,
        Close,
        BoundInactive,
    ] {
        let h = Holder {
            reuseaddr: Some(true),
            ..holder("127.0.0.1", state)
        };
        let want = if state == Listen {
            Reason::Listening
        } else {
            Reason::Bound
        };
        assert_eq!(blocks(&bind("0.0.0.0", false), &h), Some(want), "{state}");
        assert_eq!(blocks(&bind("127.0.0.2", false), &h), None, "{state}");
    }
}

#[test]
fn request_sockets_are_not_in_the_bind_table() {
    let h = holder("0.0.0.0", NewSynRecv);
    assert!(!in_bind_table(NewSynRecv));
    assert_eq!(blocks(&bind("0.0.0.0", false), &h), None);
}

#[test]
fn with_reuseaddr_only_listeners_and_sockets_without_it_block() {
    let new = bind("::", true);
    for state in [
        TimeWait,
        FinWait2,
        Established,
        CloseWait,
        LastAck,
        BoundInactive,
    ] {
        let with = Holder {
            reuseaddr: Some(true),
            ..holder("127.0.0.1", state)
        };
        let without = Holder {
            reuseaddr: Some(false),
            ..with
        };
        let unknown = Holder {
            reuseaddr: None,
            ..with
        };
        assert_eq!(blocks(&new, &with), None, "{state}");
        assert_eq!(blocks(&new, &without), Some(Reason::NoReuseAddr), "{state}");
        assert_eq!(
            blocks(&new, &unknown),
            Some(Reason::ReuseAddrUnknown),
            "{state}"
        );
    }
    let listener = Holder {
        reuseaddr: Some(true),
        ..holder("::", Listen)
    };
    assert_eq!(blocks(&new, &listener), Some(Reason::Listening));
}

#[test]
fn the_seed_scenario_busy_plainly_free_with_reuseaddr() {
    // A server that set SO_REUSEADDR, killed with connections open: its
    // side of each is a TIME_WAIT or orphaned FIN_WAIT2 mini socket.
    let held: Vec<Holder> = ["127.0.0.1", "127.0.0.1", "::ffff:127.0.0.1"]
        .iter()
        .zip([TimeWait, FinWait2, TimeWait])
        .map(|(a, s)| Holder {
            reuseaddr: Some(true),
            ..holder(a, s)
        })
        .collect();
    let (plain, why) = verdict(&bind("0.0.0.0", false), &held);
    assert_eq!(plain, Outcome::Busy);
    assert_eq!(why.len(), 3);
    assert!(why.iter().all(|&(_, r)| r == Reason::Bound));
    assert_eq!(
        verdict(&bind("0.0.0.0", true), &held),
        (Outcome::Free, vec![])
    );
    // The same sockets seen through sock_diag: their SO_REUSEADDR unknown.
    let seen: Vec<Holder> = held
        .iter()
        .map(|h| Holder {
            reuseaddr: None,
            ..*h
        })
        .collect();
    let (reuse, why) = verdict(&bind("0.0.0.0", true), &seen);
    assert_eq!(reuse, Outcome::Unknown);
    assert_eq!(why.len(), 3);
}

#[test]
fn one_listener_or_one_socket_without_reuseaddr_makes_it_busy() {
    let mut held = vec![holder("127.0.0.1", TimeWait), holder("0.0.0.0", Listen)];
    let (o, why) = verdict(&bind("0.0.0.0", true), &held);
    assert_eq!(o, Outcome::Busy);
    assert_eq!(
        why,
        vec![(0, Reason::ReuseAddrUnknown), (1, Reason::Listening)]
    );
    held[1] = Holder {
        reuseaddr: Some(false),
        ..holder("127.0.0.1", Established)
    };
    assert_eq!(verdict(&bind("0.0.0.0", true), &held).0, Outcome::Busy);
}

#[test]
fn a_listener_elsewhere_does_not_block() {
    let held = [
        holder("::1", Listen),
        holder("10.0.0.1", Listen),
        Holder {
            v6only: Some(true),
            ..holder("::", Listen)
        },
    ];
    assert_eq!(verdict(&bind("127.0.0.1", false), &held).0, Outcome::Free);
    // The dual-stack wildcard overlaps all of them.
    let (o, why) = verdict(&bind("::", false), &held);
    assert_eq!(o, Outcome::Busy);
    assert_eq!(why.len(), 3);
    // An IPv4 wildcard: only the IPv4 one.
    assert_eq!(
        verdict(&bind("0.0.0.0", false), &held).1,
        vec![(1, Reason::Listening)]
    );
    // An IPv6-only wildcard: the IPv6 ones.
    let v6only = Bind {
        v6only: true,
        ..bind("::", false)
    };
    assert_eq!(verdict(&v6only, &held).1.len(), 2);
}

#[test]
fn nothing_bound_is_free() {
    assert_eq!(verdict(&bind("::", false), &[]), (Outcome::Free, vec![]));
    for r in [
        Reason::Listening,
        Reason::Bound,
        Reason::NoReuseAddr,
        Reason::ReuseAddrUnknown,
    ] {
        assert!(!r.name().is_empty() && !r.name().contains(' '));
    }
}
