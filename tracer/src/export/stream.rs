//! The JSON-lines event stream of `tracer events` (schema: docs/events.md).
use std::io::Write;

use serde::Serialize;

use crate::{
    container::Container,
    event::{Kind, SockEvent},
    tcp::TcpState,
    wall::{Wall, WallClock},
};

#[derive(Serialize)]
struct Line<'a> {
    ts_ns: u64,
    ts: Wall,
    kind: Kind,
    cookie: u64,
    family: Option<&'static str>,
    saddr: std::net::IpAddr,
    sport: u16,
    daddr: std::net::IpAddr,
    dport: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<TcpState>,
    pid: u32,
    tid: u32,
    comm: &'a str,
    netns: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a Container>,
}

/// Write one event as one JSON line, with the container of its namespace
/// when it has one, and its wall-clock time by `clock`.
pub fn write_event(
    out: &mut impl Write,
    ev: &SockEvent,
    container: Option<&Container>,
    clock: &WallClock,
) -> std::io::Result<()> {
    let is_state = ev.kind == Kind::State;
    let line = Line {
        ts_ns: ev.ts_ns,
        ts: clock.at(ev.ts_ns),
        kind: ev.kind,
        cookie: ev.cookie,
        family: ev.family.map(|f| f.name()),
        saddr: ev.saddr,
        sport: ev.sport,
        daddr: ev.daddr,
        dport: ev.dport,
        old_state: if is_state { ev.old_state } else { None },
        new_state: if is_state { ev.new_state } else { None },
        state: if is_state { None } else { ev.new_state },
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm_str(),
        netns: ev.netns,
        error: crate::event::errno_name(ev.err),
        container,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

/// Write a leak flag raised or cleared as one JSON line: the flag's fields,
/// with `kind` = `leak_flagged` or `leak_cleared`, `leak` = the leak kind,
/// `ts_ns` and `ts`, and the flag's times on the wall clock. The agent's log
/// and `tracer events` both use this form.
pub fn write_leak(
    out: &mut impl Write,
    change: &crate::leaks::Change,
    ts_ns: u64,
    clock: &WallClock,
) -> std::io::Result<()> {
    let mut flag = change.flag().clone();
    flag.stamp(clock);
    let mut v = serde_json::to_value(flag)?;
    if let serde_json::Value::Object(m) = &mut v {
        let leak = m.remove("kind").unwrap_or_default();
        m.insert("ts_ns".into(), ts_ns.into());
        m.insert("ts".into(), serde_json::to_value(clock.at(ts_ns))?);
        m.insert("kind".into(), change.event_name().into());
        m.insert("leak".into(), leak);
    }
    serde_json::to_writer(&mut *out, &v)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaks::Change, tcp::Family};

    #[test]
    fn state_event_schema() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let ev = SockEvent {
            ts_ns: 5,
            kind: Kind::State,
            cookie: 102927,
            family: Some(Family::Ipv6),
            saddr: "::1".parse().unwrap(),
            sport: 80,
            daddr: "::1".parse().unwrap(),
            dport: 40000,
            old_state: Some(TcpState::FinWait2),
            new_state: Some(TcpState::Close),
            pid: 7,
            tid: 8,
            comm,
            netns: 4026531833,
            err: 0,
        };
        let mut out = Vec::new();
        let clock = WallClock::from_offset_ns(1_764_479_523_000_000_000);
        write_event(&mut out, &ev, None, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts_ns"], 5);
        assert_eq!(v["ts"], "2025-11-30T05:12:03.000000005Z");
        assert_eq!(v["kind"], "state");
        assert_eq!(v["cookie"], 102927);
        assert_eq!(v["family"], "ipv6");
        assert_eq!(v["saddr"], "::1");
        assert_eq!(v["old_state"], "fin_wait2");
        assert_eq!(v["new_state"], "close");
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["netns"], 4026531833u32);
        assert!(v.get("state").is_none());
        assert!(v.get("error").is_none(), "no error, no field");
        assert_eq!(*out.last().unwrap(), b'\n');
        let refused = SockEvent {
            err: libc::ECONNREFUSED as u8,
            ..ev
        };
        out.clear();
        write_event(&mut out, &refused, None, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"], "econnrefused");

        let rx = SockEvent {
            kind: Kind::Retransmit,
            old_state: None,
            new_state: Some(TcpState::Established),
            ..ev
        };
        out.clear();
        write_event(&mut out, &rx, None, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "retransmit");
        assert_eq!(v["state"], "established");
        assert!(v.get("old_state").is_none() && v.get("new_state").is_none());
        assert!(v.get("container").is_none());

        let c = Container {
            id: "ab".repeat(32),
            runtime: Some(crate::container::Runtime::Podman),
            name: Some("leaky".into()),
            pod: None,
        };
        out.clear();
        write_event(&mut out, &rx, Some(&c), &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["container"]["name"], "leaky");
        assert_eq!(v["container"]["runtime"], "podman");
    }

    #[test]
    fn leak_lines_carry_wall_clock_times() {
        let report = crate::leaks::table::tests::sample();
        let mut flag = report.leaks[0].sockets[0].clone();
        flag.raised_at_ns = 2_000_000_000;
        flag.cleared_at_ns = Some(3_500_000_000);
        let clock = WallClock::from_offset_ns(1_764_479_520_000_000_000);
        let mut out = Vec::new();
        write_leak(&mut out, &Change::Cleared(flag), 3_500_000_000, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "leak_cleared");
        assert_eq!(v["ts"], "2025-11-30T05:12:03.500000000Z");
        assert_eq!(v["raised_at"], "2025-11-30T05:12:02.000000000Z");
        assert_eq!(v["cleared_at"], "2025-11-30T05:12:03.500000000Z");
        // A snapshot's flag has no time: none is made up.
        let snap = report.leaks[0].sockets[0].clone();
        out.clear();
        write_leak(&mut out, &Change::Raised(snap), 0, &clock).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            v.get("raised_at").is_none() && v.get("cleared_at").is_none(),
            "{v}"
        );
    }
}
