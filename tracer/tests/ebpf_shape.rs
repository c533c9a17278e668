//! Guards on the shape of the loaded kernel programs, as the kernel holds
//! them after verification (`bpftool prog dump xlated`): no calls to
//! byte-at-a-time `memset`/`memcpy` subprograms, no subprogram but the
//! out-of-line diagnostic of the error path, and stack frames well under
//! the verifier's 512-byte limit for a whole call chain. Older
//! kernels (Linux 6.1) refuse a program whose combined frames pass 512
//! bytes. On Linux 6.1 and later the state program takes its lane's slot
//! without a compare-and-swap, and the other programs, which share their
//! lane, with one (`tracer_common::LaneLayout`). These check structure, not
//! timing: the timing is in `cargo xtask bench`.
//! Privileged: loads the real programs.
mod common;

use std::process::Command;

use common::Events;
use serde_json::Value;

/// The most stack any program may use, all frames of its call chain
/// together. The verifier's limit is 512; our programs need well under
/// half of it.
const MAX_STACK_BYTES: i64 = 192;

/// The only subprogram a program may call: the rate-limited aya-log
/// diagnostic of its error path.
const ALLOWED_SUBPROGRAM: &str = "diagnose";

/// The ids of the BPF programs a process holds, from its fdinfo.
fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let path = fd.expect("fdinfo entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (Debian package bpftool; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bpftool -j prints JSON")
}

/// The deepest stack slot an instruction touches: `r10 - N` gives N.
fn stack_depth(disasm: &str) -> i64 {
    let mut deepest = 0;
    let mut rest = disasm;
    while let Some(i) = rest.find("r10 -") {
        let digits: String = rest[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        deepest = deepest.max(digits.parse::<i64>().unwrap_or(0));
        rest = &rest[i + 5..];
    }
    deepest
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn loaded_programs_call_no_byte_loops_and_keep_a_small_stack() {
    let tracer = Events::start(&["--port", "1"]);
    let ids = prog_ids(tracer.pid());
    let mut seen = Vec::new();
    // The agent's own decision, which it writes into `LANE_LAYOUT`.
    let alone = tracer::bpf::preflight::programs_never_nest();
    for id in ids {
        let info = bpftool(&["prog", "show", "id", &id.to_string(), "-j"]);
        let name = info["name"].as_str().unwrap_or_default().to_string();
        let insns = bpftool(&["prog", "dump", "xlated", "id", &id.to_string(), "-j"]);
        let insns = insns.as_array().expect("xlated is a list");
        assert!(!insns.is_empty(), "{name}: no instructions");
        // The frames in the order the dump lists them: the program, then
        // each subprogram it calls (one level deep: `diagnose` calls none).
        let mut frames = vec![0];
        let mut callees = 0;
        let mut swaps = 0;
        for insn in insns {
            let disasm = insn["disasm"].as_str().unwrap_or_default();
            swaps += usize::from(disasm.contains("cmpxchg"));
            for f in ["memset", "memcpy", "memmove", "memcmp"] {
                assert!(!disasm.contains(f), "{name} calls {f}: {disasm}");
            }
            if disasm.contains("call pc+") {
                // Some kernels (Ubuntu's 5.13) name every subprogram
                // `bpf_prog_<tag>_F`; the one call site allowed below
                // still holds there.
                assert!(
                    disasm.contains(ALLOWED_SUBPROGRAM) || disasm.ends_with("_F"),
                    "{name} calls a subprogram other than {ALLOWED_SUBPROGRAM}: {disasm}"
                );
                callees += 1;
            }
            if starts_function(insn) && !std::ptr::eq(insn, &insns[0]) {
                frames.push(0);
            }
            let last = frames.len() - 1;
            frames[last] = frames[last].max(stack_depth(disasm));
        }
        let deepest: i64 = frames.iter().sum();
        assert!(
            deepest <= MAX_STACK_BYTES,
            "{name} uses {deepest} bytes of stack ({frames:?}), more than {MAX_STACK_BYTES}"
        );
        assert!(callees <= 1, "{name} calls {callees} subprograms");
        if name.starts_with("inet_sock_set_") && alone {
            assert_eq!(swaps, 0, "{name} takes its slot with a compare-and-swap");
        } else {
            assert!(
                swaps > 0,
                "{name} shares its lane but takes slots without a compare-and-swap"
            );
        }
        eprintln!(
            "{name}: {} instructions, {deepest} bytes of stack",
            insns.len()
        );
        seen.push(name);
    }
    drop(tracer);
    for want in [
        "inet_sock_set_",
        "tcp_retransmit_",
        "tcp_send_reset",
        "tcp_receive_res",
    ] {
        assert!(
            seen.iter().any(|n| n.starts_with(want)),
            "program {want}* not found among {seen:?}"
        );
    }
}

/// bpftool marks the first instruction of each function with its prototype.
fn starts_function(insn: &Value) -> bool {
    insn.get("proto").is_some()
}

#[test]
fn stack_depth_reads_the_deepest_slot() {
    assert_eq!(stack_depth("*(u64 *)(r10 -8) = r1"), 8);
    assert_eq!(
        stack_depth("r1 = *(u64 *)(r10 -48); *(u32 *)(r10 -120) = r2"),
        120
    );
    assert_eq!(stack_depth("r0 = 1"), 0);
}
