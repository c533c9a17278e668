//! What the host sees of the agent's process and of the image: the
//! process's ids, capabilities, no_new_privs, seccomp mode and root mount
//! (from `/proc/<pid>`), and the file capabilities the image's binary
//! carries (the host's `getcap` on the mounted image).
use std::collections::BTreeSet;

use anyhow::{Context as _, bail};

use super::podman::podman;
use crate::cmd;

/// The file capabilities of the image's `/usr/local/bin/tracer`, as
pub fn file_caps(image: &str) -> anyhow::Result<Vec<String>> {
    let dir = podman(&["image", "mount", image])?;
    let bin = format!("{}/usr/local/bin/tracer", dir.trim());
    let out = cmd::output("getcap", &[&bin]);
    let _ = podman(&["image", "unmount", image]);
    let out = out.context("getcap failed (package libcap2-bin)")?;
    if out.trim().is_empty() {
        bail!("/usr/local/bin/tracer carries no file capabilities (the Dockerfile's setcap line)");
    }
    let caps = out.split_whitespace().last().unwrap_or("");
    let Some(list) = caps.strip_suffix("=ep") else {
        bail!("getcap: {:?}, not <capabilities>=ep", out.trim());
    };
    Ok(list
        .split(',')
        .map(|c| c.trim_start_matches("cap_").to_uppercase())
        .collect())
}

/// Fail unless `got` and `want` hold the same capabilities.
pub fn same(got: &[String], want: &[String], what: &str) -> anyhow::Result<()> {
    let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    if got != want {
        bail!("{what}: {got:?}, the manifest's add: {want:?}");
    }
    Ok(())
}

/// `/proc/<pid>/status`.
pub fn proc_status(pid: u32) -> anyhow::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))
}

/// The value of `key:` in a `/proc/<pid>/status`.
pub fn field(status: &str, key: &str) -> anyhow::Result<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no {key} in /proc/<pid>/status"))
}

/// Whether the process's `/` is mounted read-only.
pub fn root_read_only(pid: u32) -> anyhow::Result<bool> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    // mountinfo: id parent major:minor root mount-point options ...
    let opts = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == "/")
        .map(|f| f[5].to_owned())
        .context("no / in mountinfo")?;
    Ok(opts.split(',').any(|o| o == "ro"))
}

/// Capability names, by bit (include/uapi/linux/capability.h).
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `000000c000280004` -> `DAC_READ_SEARCH,SYS_PTRACE,SYS_ADMIN,PERFMON,BPF`.
pub fn cap_names(hex: &str) -> anyhow::Result<Vec<String>> {
    let mask = u64::from_str_radix(hex, 16).with_context(|| format!("capability mask {hex:?}"))?;
    Ok((0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            CAPS.get(bit)
                .map_or(format!("cap_{bit}"), |c| (*c).to_owned())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_capability_masks() {
        assert_eq!(
            cap_names("000000c000280004").unwrap(),
            [
                "DAC_READ_SEARCH",
                "SYS_PTRACE",
                "SYS_ADMIN",
                "PERFMON",
                "BPF"
            ]
        );
        assert!(cap_names("0000000000000000").unwrap().is_empty());
    }
}
