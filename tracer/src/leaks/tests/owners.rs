//! Owners that exist but could not be read are "owner unknown", with the
//! capabilities that would name them; sockets with no owner (inode 0) stay
//! "no process". Through the detector, the report, its JSON and the table.
use super::*;
use crate::snapshot::{HINT_NOT_VISIBLE, HINT_UNREADABLE, OwnerScan};

/// A scan that could not read some processes and found nothing.
fn unreadable(_: &HashSet<u64>) -> OwnerScan {
    OwnerScan {
        owners: HashMap::new(),
        unreadable: 2,
    }
}

/// Three CLOSE_WAIT sockets flagged while the owners could not be read,
/// and one orphaned FIN_WAIT2 (inode 0), which has no owner at all.
fn flagged_unreadable() -> Detector {
    let mut det = Detector::new(thresholds());
    let mut orphan = sock(9, TcpState::FinWait2);
    orphan.inode = 0;
    let dump = [
        sock(1, TcpState::CloseWait),
        sock(2, TcpState::CloseWait),
        sock(3, TcpState::CloseWait),
        orphan,
    ];
    det.update(&dump, S, none, unreadable);
    let c = det.update(&dump, 62 * S, none, unreadable);
    assert_eq!(raised(&c).len(), 4, "{c:?}");
    det
}

#[test]
fn unreadable_owners_are_unknown_not_absent() {
    let det = flagged_unreadable();
    for f in det.active() {
        if f.inode == 0 {
            assert!(!f.owner_unknown && f.owner_hint.is_none(), "{f:?}");
        } else {
            assert!(f.owner_unknown, "{f:?}");
            assert_eq!(f.owner_hint.as_deref(), Some(HINT_UNREADABLE));
            assert!(f.owners.is_empty());
        }
    }
    let r = det.report(62 * S);
    let unknown: Vec<&ProcessLeaks> = r.leaks.iter().filter(|g| g.owner_unknown).collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!((unknown[0].pid, unknown[0].close_wait), (None, 3));
    assert_eq!(unknown[0].hint.as_deref(), Some(HINT_UNREADABLE));
    let nobody: Vec<&ProcessLeaks> = r
        .leaks
        .iter()
        .filter(|g| g.pid.is_none() && !g.owner_unknown)
        .collect();
    assert_eq!(nobody.len(), 1);
    assert_eq!(nobody[0].sockets[0].kind, LeakKind::OrphanedFinWait2);
}

#[test]
fn the_json_says_owner_unknown_with_a_hint() {
    let r = flagged_unreadable().report(62 * S);
    let json = serde_json::to_value(&r).expect("json");
    let groups = json["leaks"].as_array().expect("leaks");
    let unknown = groups
        .iter()
        .find(|g| g["owner_unknown"] == true)
        .expect("an owner_unknown group");
    assert!(unknown["pid"].is_null());
    assert_eq!(unknown["hint"], HINT_UNREADABLE);
    for f in unknown["sockets"].as_array().expect("sockets") {
        assert_eq!(f["owner_unknown"], true, "{f}");
        assert_eq!(f["owner_hint"], HINT_UNREADABLE, "{f}");
    }
    let nobody = groups
        .iter()
        .find(|g| g["owner_unknown"] == false && g["pid"].is_null())
        .expect("the ownerless group");
    assert!(nobody.get("hint").is_none(), "{nobody}");
    // What the client reads back is what the agent served.
    let back: Report = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, r);
}

#[test]
fn the_table_says_owner_unknown_and_how_to_see_it() {
    let text = table(&flagged_unreadable().report(62 * S));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "4 leaks, 1 held by no process, owner unknown for 3",
        "{text}"
    );
    assert!(
        text.contains("\nowner unknown: 3 sockets, 3 in CLOSE_WAIT, oldest >=61.0s\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\n  why:     {HINT_UNREADABLE}\n")),
        "{text}"
    );
    assert!(
        text.contains("run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{text}"
    );
    assert!(!text.contains("0 processes"), "{text}");
    // The orphan really has no process, and is still said so.
    assert!(
        text.contains("no process (orphaned, timewait or request sockets): 1 socket"),
        "{text}"
    );
}

#[test]
fn a_later_scan_that_reads_the_owner_names_it() {
    let mut det = flagged_unreadable();
    // A new leak makes the detector look again, now with privileges.
    let dump = [
        sock(1, TcpState::CloseWait),
        sock(2, TcpState::CloseWait),
        sock(3, TcpState::CloseWait),
        sock(4, TcpState::CloseWait),
    ];
    det.update(&dump, 63 * S, none, app_owners);
    let c = det.update(&dump, 124 * S, none, app_owners);
    assert_eq!(raised(&c).len(), 1);
    for f in det.active() {
        assert!(!f.owner_unknown && f.owner_hint.is_none(), "{f:?}");
        assert_eq!(f.owners[0].pid, 100);
    }
    let text = table(&det.report(124 * S));
    assert!(text.starts_with("4 leaks in 1 process\n"), "{text}");
    assert!(!text.contains("owner unknown"), "{text}");
}

#[test]
fn an_owner_outside_our_pid_namespace_is_unknown_too() {
    let mut det = Detector::new(thresholds());
    let dump = [sock(1, TcpState::CloseWait)];
    let everything_read = |_: &HashSet<u64>| HashMap::<u64, Vec<FdOwner>>::new();
    det.update(&dump, S, none, everything_read);
    let c = det.update(&dump, 62 * S, none, everything_read);
    let f = raised(&c)[0];
    assert!(f.owner_unknown);
    assert_eq!(f.owner_hint.as_deref(), Some(HINT_NOT_VISIBLE));
    let text = table(&det.report(62 * S));
    assert!(text.contains("host's pid namespace"), "{text}");
}

#[test]
fn a_snapshot_without_privileges_says_owner_unknown() {
    let dump = [sock(1, TcpState::CloseWait), sock(2, TcpState::CloseWait)];
    let scan = OwnerScan {
        owners: HashMap::from([(1001, vec![owner(100, "app", 1)])]),
        unreadable: 5,
    };
    let r = snapshot_report(&dump, &scan, "no agent".into());
    let text = table(&r);
    assert!(
        text.contains("2 suspected leaks in 1 process, owner unknown for 1"),
        "{text}"
    );
    assert!(text.contains("PID 100 app: 1 socket"), "{text}");
    assert!(text.contains("owner unknown: 1 socket"), "{text}");
}

/// A flag's owners are looked up again every [`OWNERS_FRESH_NS`]: a
/// parent that exits after a fork leaves its child named alone, and a
/// socket no process we can see holds any more is "owner unknown" (a live
/// socket with an inode has an owner, in another pid namespace then).
#[test]
fn owners_are_looked_up_again_so_an_exited_process_is_not_named() {
    use crate::leaks::detect::OWNERS_FRESH_NS;
    let mut det = Detector::new(thresholds());
    let d = sock(1, TcpState::CloseWait);
    let both = |i: &HashSet<u64>| -> HashMap<u64, Vec<FdOwner>> {
        i.iter()
            .map(|&i| (i, vec![owner(100, "parent", 4), owner(200, "child", 4)]))
            .collect()
    };
    let child = |i: &HashSet<u64>| -> HashMap<u64, Vec<FdOwner>> {
        i.iter()
            .map(|&i| (i, vec![owner(200, "child", 4)]))
            .collect()
    };
    let nobody = |_: &HashSet<u64>| HashMap::<u64, Vec<FdOwner>>::new();
    det.update(&[d], S, none, both);
    let c = det.update(&[d], 62 * S, none, both);
    assert_eq!(raised(&c)[0].owners.len(), 2);
    let pids = |det: &Detector| -> Vec<u32> {
        det.active()
            .flat_map(|f| f.owners.iter().map(|o| o.pid))
            .collect()
    };
    // Within the interval, no scan runs.
    det.update(
        &[d],
        62 * S + OWNERS_FRESH_NS - 1,
        none,
        |_: &HashSet<u64>| -> OwnerScan { panic!("scanned again within {OWNERS_FRESH_NS} ns") },
    );
    assert_eq!(pids(&det), vec![100, 200]);
    det.update(&[d], 62 * S + OWNERS_FRESH_NS, none, child);
    assert_eq!(pids(&det), vec![200]);
    let r = det.report(62 * S + OWNERS_FRESH_NS);
    assert!(r.leaks.iter().all(|g| g.pid != Some(100)), "{:?}", r.leaks);
    det.update(&[d], 62 * S + 2 * OWNERS_FRESH_NS, none, nobody);
    assert_eq!(pids(&det), Vec::<u32>::new());
    assert!(det.active().all(|f| f.owner_unknown));
}
