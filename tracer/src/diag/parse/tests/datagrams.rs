//! Whole datagrams: multi-part replies, the kernel's errors, malformed
//! replies, and the cookie's byte order.
use super::*;

#[test]
fn multi_part_datagram_until_done() {
    let mut dgram = nlmsg(SEQ, SOCK_DIAG_BY_FAMILY, &established().bytes());
    dgram.extend(nlmsg(SEQ - 1, SOCK_DIAG_BY_FAMILY, &established().bytes())); // stale dump
    dgram.extend(nlmsg(
        SEQ,
        SOCK_DIAG_BY_FAMILY,
        &Msg {
            state: 42,
            ..established()
        }
        .bytes(),
    ));
    dgram.extend(nlmsg(
        SEQ,
        SOCK_DIAG_BY_FAMILY,
        &Msg {
            sport: 1,
            ..established()
        }
        .bytes(),
    ));
    let mut out = Vec::new();
    let mut counts = Counts::default();
    assert_eq!(
        parse_datagram(&dgram, SEQ, "IPv4", &mut out, &mut counts).expect("ok"),
        Step::More
    );
    assert_eq!(
        counts,
        Counts {
            sockets: 2,
            skipped: 1
        }
    );
    assert_eq!(out.iter().map(|s| s.sport).collect::<Vec<_>>(), [40000, 1]);

    let done = nlmsg(SEQ, NLMSG_DONE, &0i32.to_ne_bytes());
    assert_eq!(
        parse_datagram(&done, SEQ, "IPv4", &mut out, &mut counts).expect("ok"),
        Step::Done
    );
    // The kernel may send a bare NLMSG_DONE.
    let bare = nlmsg(SEQ, NLMSG_DONE, &[]);
    assert_eq!(
        parse_datagram(&bare, SEQ, "IPv4", &mut out, &mut counts).expect("ok"),
        Step::Done
    );
    // A DONE of a stale dump does not end ours.
    let stale = nlmsg(SEQ + 1, NLMSG_DONE, &0i32.to_ne_bytes());
    assert_eq!(
        parse_datagram(&stale, SEQ, "IPv4", &mut out, &mut counts).expect("ok"),
        Step::More
    );
}

#[test]
fn kernel_errors_become_refusals() {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    // NLMSG_ERROR: i32 error, then the offending request's header.
    let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
    err.extend_from_slice(&[0; 16]);
    let e = parse_datagram(
        &nlmsg(SEQ, NLMSG_ERROR, &err),
        SEQ,
        "IPv6",
        &mut out,
        &mut counts,
    )
    .expect_err("refused");
    assert!(
        matches!(
            e,
            DiagError::Refused {
                family: "IPv6",
                errno: libc::EPERM
            }
        ),
        "{e:?}"
    );
    let done = nlmsg(SEQ, NLMSG_DONE, &(-libc::ENOBUFS).to_ne_bytes());
    let e = parse_datagram(&done, SEQ, "IPv4", &mut out, &mut counts).expect_err("refused");
    assert!(
        matches!(
            e,
            DiagError::Refused {
                errno: libc::ENOBUFS,
                ..
            }
        ),
        "{e:?}"
    );
    // An ACK (error 0) is not an error.
    let ack = nlmsg(SEQ, NLMSG_ERROR, &[0; 20]);
    assert_eq!(
        parse_datagram(&ack, SEQ, "IPv4", &mut out, &mut counts).expect("ok"),
        Step::More
    );
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let good = nlmsg(SEQ, SOCK_DIAG_BY_FAMILY, &established().bytes());
    for cut in [3, 15, 20, good.len() - 1] {
        let r = parse_datagram(&good[..cut], SEQ, "IPv4", &mut out, &mut counts);
        assert!(
            matches!(r, Err(DiagError::Malformed { .. })),
            "cut at {cut}: {r:?}"
        );
    }
    // An attribute whose length runs past the message.
    let mut bad = established();
    bad.attrs = vec![200, 0, 8, 0, 0, 0, 0, 0];
    assert!(decode_socket(&bad.bytes()).is_err());
}

#[test]
fn cookie_halves_low_first_in_host_order() {
    let mut raw = [0u8; 8];
    raw[..4].copy_from_slice(&0x0001_920fu32.to_ne_bytes());
    raw[4..].copy_from_slice(&0x2u32.to_ne_bytes());
    assert_eq!(cookie_from_id(&raw), 0x2_0001_920f);
}

#[test]
fn recorded_datagrams_read_back_as_the_dump_listed_them() {
    let refusal = |errno: i32| {
        let mut err = (-errno).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        nlmsg(SEQ, NLMSG_ERROR, &err)
    };
    let done = |seq| nlmsg(seq, NLMSG_DONE, &0i32.to_ne_bytes());
    let sock = |sport| {
        nlmsg(
            SEQ + 1,
            SOCK_DIAG_BY_FAMILY,
            &Msg {
                sport,
                ..established()
            }
            .bytes(),
        )
    };
    let dg = |walk, seq, bytes: Vec<u8>| Datagram {
        walk,
        seq,
        bytes,
        late_ms: 0,
    };
    // A kernel without the one-walk request refused it; the dumper asked
    // for each family instead.
    let mut first = sock(1);
    first.extend(sock(2));
    let recorded = [
        dg(Walk::Both, SEQ, refusal(libc::EINVAL)),
        dg(Walk::Ipv4, SEQ + 1, first),
        dg(Walk::Ipv4, SEQ + 1, done(SEQ + 1)),
        dg(Walk::Ipv6, SEQ + 2, done(SEQ + 2)),
    ];
    let mut out = Vec::new();
    parse_datagrams(&recorded, 4026531840, &mut out).expect("read back");
    assert_eq!(out.iter().map(|s| s.sport).collect::<Vec<_>>(), [1, 2]);
    assert!(out.iter().all(|s| s.netns == 4026531840));
    // A capture cut before NLMSG_DONE is an error, not a short dump.
    let e = parse_datagrams(&recorded[..2], 1, &mut Vec::new()).expect_err("cut");
    assert!(e.to_string().contains("NLMSG_DONE"), "{e}");
    // Another refusal is the kernel's answer, not a fallback.
    let denied = [dg(Walk::Both, SEQ, refusal(libc::EPERM))];
    let e = parse_datagrams(&denied, 1, &mut Vec::new()).expect_err("denied");
    assert!(
        matches!(
            e,
            DiagError::Refused {
                errno: libc::EPERM,
                ..
            }
        ),
        "{e:?}"
    );
}

/// The kernel writes each socket's time left as it fills the datagram; a
/// datagram read `late_ms` into the dump has it counted from the dump's
/// start, as the live parse counts it. No timer stays no timer.
#[test]
fn timers_count_from_the_dump_start() {
    let sock = |sport, expires| {
        nlmsg(
            SEQ,
            SOCK_DIAG_BY_FAMILY,
            &Msg {
                sport,
                expires,
                ..established()
            }
            .bytes(),
        )
    };
    let mut first = sock(1, 59_000);
    first.extend(sock(2, 0));
    let mut late = sock(3, 30_000);
    late.extend(nlmsg(SEQ, NLMSG_DONE, &0i32.to_ne_bytes()));
    let recorded = [
        Datagram {
            walk: Walk::Both,
            seq: SEQ,
            bytes: first,
            late_ms: 0,
        },
        Datagram {
            walk: Walk::Both,
            seq: SEQ,
            bytes: late,
            late_ms: 45,
        },
    ];
    let mut out = Vec::new();
    parse_datagrams(&recorded, 1, &mut out).expect("read back");
    let left: Vec<(u16, u32)> = out.iter().map(|s| (s.sport, s.expires_ms)).collect();
    assert_eq!(left, [(1, 59_000), (2, 0), (3, 30_045)]);
}
