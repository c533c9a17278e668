//! The per-process roll-up, growth, gauges and the report.
use std::collections::{HashMap, HashSet};

use super::*;

#[test]
fn rollup_groups_by_process_and_measures_growth() {
    let mut det = Detector::new(thresholds());
    let exact = |_: u64, _: TcpState| Some((0, false));
    // "app" (pid 100) leaks one more socket every 10 s; "db" (pid 200) holds one.
    let db_owner = |inodes: &HashSet<u64>| -> HashMap<u64, Vec<FdOwner>> {
        inodes
            .iter()
            .map(|&i| {
                (
                    i,
                    vec![if i == 1999 {
                        owner(200, "db", 5)
                    } else {
                        owner(100, "app", (i - 1000) as u32)
                    }],
                )
            })
            .collect()
    };
    let mut dump = vec![sock(999, TcpState::CloseWait)];
    for step in 0..=12u64 {
        dump.push(sock(step + 1, TcpState::CloseWait));
        det.update(&dump, 60 * S + step * 10 * S, exact, db_owner);
    }
    let now = 60 * S + 120 * S;
    let r = det.report(now);
    assert_eq!(r.leak_count, 14);
    assert_eq!(r.exit_code(), 1);
    let app = &r.leaks[0];
    assert_eq!(
        (app.pid, app.comm.as_deref(), app.close_wait),
        (Some(100), Some("app"), 13)
    );
    assert_eq!(app.oldest_age_seconds, Some(180.0));
    // 1 -> 13 sockets in 120 s: 6 per minute.
    let g = app.growth_per_minute.expect("growth");
    assert!((g - 6.0).abs() < 1e-9, "{g}");
    assert_eq!(r.leaks[1].pid, Some(200));
    assert_eq!(r.leaks[1].growth_per_minute, Some(0.0));
    let gauges = det.gauges();
    assert_eq!(gauges.close_wait_leaks, 14);
    assert_eq!(
        gauges.close_wait_by_comm,
        vec![("app".into(), 13), ("db".into(), 1), ("other".into(), 0)]
    );
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["leaks"][0]["sockets"][0]["kind"], "close_wait");
    assert_eq!(json["leaks"][0]["sockets"][0]["state"], "close_wait");
    let back: Report = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, r);
}

#[test]
fn growth_window_is_bounded_to_five_minutes() {
    let mut det = Detector::new(thresholds());
    let exact = |_: u64, _: TcpState| Some((0, false));
    let mut dump = Vec::new();
    // One new leak per minute for 20 minutes, sampled every second; read
    // as the last one lands, when the last half minute alone says 2/min.
    for t in 0..=1200u64 {
        if t % 60 == 0 {
            dump.push(sock(t + 1, TcpState::CloseWait));
        }
        det.update(&dump, 100 * S + t * S, exact, app_owners);
    }
    let r = det.report(100 * S + 1200 * S);
    let g = r.leaks[0].growth_per_minute.expect("growth");
    assert!((g - 1.0).abs() < 0.05, "{g}");
}

/// A process that leaked one socket every 10 s for five minutes, then
/// ten a second: the five minutes' average would say it has ten times
/// longer than it has.
#[test]
fn a_leak_that_speeds_up_is_not_averaged_down() {
    let mut det = Detector::new(thresholds());
    let exact = |_: u64, _: TcpState| Some((0, false));
    let mut dump = Vec::new();
    let mut next = 1;
    for t in 0..=330u64 {
        let new = if t < 300 { u64::from(t % 10 == 0) } else { 10 };
        for _ in 0..new {
            dump.push(sock(next, TcpState::CloseWait));
            next += 1;
        }
        det.update(&dump, 100 * S + t * S, exact, app_owners);
    }
    let r = det.report(100 * S + 330 * S);
    let g = r.leaks[0].growth_per_minute.expect("growth");
    // 600 a minute over the last half minute; the five minutes give ~66.
    assert!((500.0..=620.0).contains(&g), "{g}");
}

#[test]
fn top_comms_and_other() {
    let flags: Vec<Flag> = (0..25u32)
        .map(|i| {
            let d = sock(u64::from(i), TcpState::CloseWait);
            let mut f = crate::leaks::rules::socket_flag(
                &d,
                LeakKind::CloseWait,
                None,
                0,
                (0, true),
                String::new(),
            );
            f.owners = vec![owner(i, &format!("p{i:02}"), 3)];
            f
        })
        .collect();
    let g = Gauges::from_flags(flags.iter());
    assert_eq!(g.close_wait_by_comm.len(), TOP_COMMS_PLUS_OTHER);
    assert_eq!(g.close_wait_by_comm.last(), Some(&("other".to_string(), 5)));
}

const TOP_COMMS_PLUS_OTHER: usize = crate::leaks::rollup::TOP_COMMS + 1;
