//! Checks that run before anything is loaded, each ending in one plain
//! sentence when it fails: privileges, kernel BTF, a kernel too old.
use aya::maps::MapType;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
/// Reading other users' `/proc/<pid>` links.
pub const CAP_SYS_PTRACE: u32 = 19;
/// Listing other users' `/proc/<pid>/fd`.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Why the tracer cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Neither root nor CAP_BPF + CAP_PERFMON; which of the two it lacks.
    #[error(
        "tracer needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its kernel programs \
         ({0}); \
         run it with sudo or grant them (setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep tracer; \
         CAP_SYS_ADMIN enters other network namespaces, the other two name sockets' owners)"
    )]
    NotPrivileged(&'static str),
    /// Root, with the capabilities dropped (a container, capsh); which of
    /// the two it lacks.
    #[error(
        "tracer runs as root but without the CAP_BPF and CAP_PERFMON capabilities (or CAP_SYS_ADMIN) \
         that loading its kernel programs needs ({0}): whatever started it dropped them; grant them back \
         (--cap-add BPF --cap-add PERFMON for a container, the securityContext of deploy/kubernetes/tracer.yaml)"
    )]
    RootWithoutCaps(&'static str),
    /// No /sys/kernel/btf/vmlinux.
    #[error(
        "this kernel exposes no BTF at {VMLINUX_BTF}; tracer needs Linux 5.12 or later built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    /// Not even an array map can be created, though the capabilities allow
    /// it: the bpf() system call itself is refused.
    #[error(
        "the bpf() system call is refused although this process holds CAP_BPF: a seccomp \
         profile (a container runtime's default one) or an LSM policy blocks it; run with \
         seccomp unconfined (see docs/kubernetes.md)"
    )]
    BpfBlocked,
    /// The kernel refuses what the programs need from Linux 5.12:
    /// `bpf_get_socket_cookie` in BTF tracepoint programs, and BPF's
    /// compare-and-swap. Said before loading when the kernel has no BPF
    /// ring buffer map (Linux 5.8): older still.
    #[error(
        "this kernel ({0}) does not let tracing programs call bpf_get_socket_cookie, which tracer \
         needs to tell sockets apart, nor run BPF compare-and-swap; it needs Linux 5.12 or later \
         (Debian 12, Ubuntu 22.04, RHEL 9)"
    )]
    Before512(String),
}

/// The running kernel's release (`uname -r`), for messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown release".to_string())
}

/// Whether the running kernel never runs a BTF tracepoint program inside
/// itself on one CPU: since "bpf: Prevent bpf program recursion for raw
/// tracepoint probes" the kernel skips such a run and counts it in the
/// program's `recursion_misses`. That change went into the 6.1 merge
/// window; 5.19 lacks it, Debian's 6.1 has it (`bpf_trace_run*` call
/// `bpf_prog_inc_misses_counter`), and no distribution ships 6.0. A
/// release that cannot be read counts as older, which is always safe
/// (`tracer_common::LaneLayout`).
///
/// x86-64 only: on arm64, a bpf-next series of December 2025 (after "bpf:
/// move recursion detection logic to helpers") keeps one recursion count
/// per context (task, softirq, hardirq, NMI), so there a run that a
/// softirq interrupts may be followed by a run inside the interruption,
/// and the two would take one slot.
pub fn programs_never_nest() -> bool {
    cfg!(target_arch = "x86_64") && release_at_least(&kernel_release(), (6, 1))
}

/// Whether a `uname -r` release is at least `major.minor`.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// The effective capability mask of this process.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether the capability mask `caps` holds `cap`.
pub fn holds(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Whether this process has capability `cap` in its effective set.
pub fn has_effective(cap: u32) -> bool {
    holds(effective_caps(), cap)
}

/// True when the mask lets us load and attach tracing programs.
pub fn caps_allow_tracing(caps: u64) -> bool {
    let has = |c: u32| holds(caps, c);
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Which of CAP_BPF and CAP_PERFMON the mask `caps` lacks, as a clause.
fn lacking(caps: u64) -> &'static str {
    match (holds(caps, CAP_BPF), holds(caps, CAP_PERFMON)) {
        (false, true) => "it lacks CAP_BPF; CAP_PERFMON is there",
        (true, false) => "it lacks CAP_PERFMON; CAP_BPF is there",
        _ => "it lacks both",
    }
}

/// Run every check.
pub fn check() -> Result<(), PreflightError> {
    let caps = effective_caps();
    if !caps_allow_tracing(caps) {
        // SAFETY: geteuid(2) has no failure mode.
        return Err(if unsafe { libc::geteuid() } == 0 {
            PreflightError::RootWithoutCaps(lacking(caps))
        } else {
            PreflightError::NotPrivileged(lacking(caps))
        });
    }
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        return Err(PreflightError::NoBtf);
    }
    let supported = |t| aya::sys::is_map_supported(t).unwrap_or(false);
    map_support(supported(MapType::Array), supported(MapType::RingBuf))
}

/// What the two map probes say: an array map (every BPF kernel has one)
/// and a ring buffer map (5.8+: the programs' diagnostics need it, and a
/// kernel without it is too old for the rest as well, which needs 5.12).
fn map_support(array: bool, ring_buf: bool) -> Result<(), PreflightError> {
    match (array, ring_buf) {
        (_, true) => Ok(()),
        (false, false) => Err(PreflightError::BpfBlocked),
        (true, false) => Err(PreflightError::Before512(kernel_release())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_capability_is_named() {
        let bit = |c: u32| 1u64 << c;
        assert_eq!(
            lacking(bit(CAP_PERFMON)),
            "it lacks CAP_BPF; CAP_PERFMON is there"
        );
        assert_eq!(
            lacking(bit(CAP_BPF)),
            "it lacks CAP_PERFMON; CAP_BPF is there"
        );
        assert_eq!(lacking(0), "it lacks both");
        let said = PreflightError::NotPrivileged(lacking(bit(CAP_BPF))).to_string();
        assert!(
            said.starts_with(
                "tracer needs root, or the CAP_BPF and CAP_PERFMON capabilities, to load its \
                 kernel programs (it lacks CAP_PERFMON; CAP_BPF is there); run it with sudo"
            ),
            "{said}"
        );
    }

    #[test]
    fn capability_rules() {
        assert!(!caps_allow_tracing(0));
        assert!(caps_allow_tracing(1 << CAP_SYS_ADMIN));
        assert!(!caps_allow_tracing(1 << CAP_BPF));
        assert!(!caps_allow_tracing(1 << CAP_PERFMON));
        assert!(caps_allow_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)));
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        for (release, ok) in [
            ("6.18.44-fc-v1045", true),
            ("6.1.0", true),
            ("6.0.19", false),
            ("6.1.0-28-amd64", true),
            ("10.2", true),
            ("5.19.17", false),
            ("5.14.0-427.13.1.el9_4.x86_64", false),
            ("5.10.0-33-amd64", false),
            ("unknown release", false),
            ("6", false),
            ("", false),
        ] {
            assert_eq!(release_at_least(release, (6, 1)), ok, "{release}");
        }
    }

    #[test]
    fn a_refused_bpf_call_is_not_called_an_old_kernel() {
        assert!(map_support(true, true).is_ok());
        let old = map_support(true, false).unwrap_err().to_string();
        assert!(
            old.contains("Linux 5.12") && old.contains("bpf_get_socket_cookie"),
            "one sentence for every kernel too old: {old}"
        );
        let blocked = map_support(false, false).unwrap_err();
        assert!(blocked.to_string().contains("seccomp"), "{blocked}");
    }
}
