//! The kernel matrix and what tracer is expected to do on each kernel: the
//! one place to change when a kernel is added or an expectation changes.
//!
//! An expectation is either [`Expect::Works`] (every check must pass) or
//! [`Expect::Refuses`] (tracer must refuse to load with the documented
//! sentence, [`REFUSAL_MARKERS`]; the other checks are then skipped). A
//! kernel that is expected to refuse but loads is run like any other and must
//! pass every check; the report then says the expectation is stale.

/// What tracer is expected to do on a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// tracer loads and every check passes.
    Works,
    /// tracer refuses to start with one sentence containing every one of
    /// [`REFUSAL_MARKERS`], exit status 2.
    Refuses,
}

impl Expect {
    /// The word used in the report.
    pub fn word(self) -> &'static str {
        match self {
            Expect::Works => "works",
            Expect::Refuses => "refuses",
        }
    }
}

/// Where a kernel comes from and how the suite runs on it.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A distribution's kernel package, booted in a VM under TCG.
    Package {
        /// The archive it comes from.
        archive: Archive,
        /// The suite whose `main` component holds it (Ubuntu's `-updates`
        /// pocket is read too).
        suite: &'static str,
        /// Image package names start with this and end with the archive's
        /// flavour; the newest in the index is picked (e.g.
        /// `linux-image-5.10.0-32-amd64`, `linux-image-5.15.0-204-generic`).
        prefix: &'static str,
    },
    /// The host's running kernel; the suite runs directly on the host.
    Host,
}

/// A distribution archive that kernels are fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archive {
    /// deb.debian.org; one package holds the image and its modules.
    Debian,
    /// archive.ubuntu.com; the modules come in a `linux-modules-<release>`
    /// package beside the image's.
    Ubuntu,
}

impl Archive {
    /// The distribution's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Archive::Debian => "Debian",
            Archive::Ubuntu => "Ubuntu",
        }
    }

    /// How the image packages of the plain x86-64 flavour end.
    pub fn flavour(self) -> &'static str {
        match self {
            Archive::Debian => "-amd64",
            Archive::Ubuntu => "-generic",
        }
    }
}

/// One column of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// The name used by `--kernels` and in the table (`5.10`, `host`).
    pub key: &'static str,
    /// Where it comes from.
    pub source: Source,
    /// What tracer is expected to do there.
    pub expect: Expect,
    /// Why, in a few words (shown in the report and docs/vmtest.md).
    pub why: &'static str,
}

/// The distributions' kernels, oldest first, then the host.
pub const KERNELS: [Kernel; 8] = [
    Kernel {
        key: "5.4",
        source: Source::Package {
            archive: Archive::Ubuntu,
            suite: "focal",
            prefix: "linux-image-5.4.0-",
        },
        expect: Expect::Refuses,
        why: "Ubuntu 20.04's kernel: older than Linux 5.12",
    },
    Kernel {
        key: "5.10",
        source: Source::Package {
            archive: Archive::Debian,
            suite: "bullseye",
            prefix: "linux-image-5.10.0-",
        },
        expect: Expect::Refuses,
        why: "tp_btf programs cannot call bpf_get_socket_cookie before Linux 5.12",
    },
    Kernel {
        key: "5.13",
        source: Source::Package {
            archive: Archive::Ubuntu,
            suite: "focal",
            prefix: "linux-image-5.13.0-",
        },
        expect: Expect::Works,
        why: "Ubuntu 20.04's HWE kernel, the oldest in the matrix past 5.12",
    },
    Kernel {
        key: "5.15",
        source: Source::Package {
            archive: Archive::Ubuntu,
            suite: "jammy",
            prefix: "linux-image-5.15.0-",
        },
        expect: Expect::Works,
        why: "Ubuntu 22.04's kernel",
    },
    Kernel {
        key: "6.1",
        source: Source::Package {
            archive: Archive::Debian,
            suite: "bookworm",
            prefix: "linux-image-6.1.0-",
        },
        expect: Expect::Works,
        why: "Debian 12's kernel",
    },
    Kernel {
        key: "6.8",
        source: Source::Package {
            archive: Archive::Ubuntu,
            suite: "noble",
            prefix: "linux-image-6.8.0-",
        },
        expect: Expect::Works,
        why: "Ubuntu 24.04's kernel",
    },
    Kernel {
        key: "6.12",
        source: Source::Package {
            archive: Archive::Debian,
            suite: "trixie",
            prefix: "linux-image-6.12.",
        },
        expect: Expect::Works,
        why: "Debian 13's kernel",
    },
    Kernel {
        key: "host",
        source: Source::Host,
        expect: Expect::Works,
        why: "the machine's own kernel",
    },
];

/// Every one of these is in the sentence tracer prints when it refuses a
/// kernel that is too old (see tracer's preflight).
pub const REFUSAL_MARKERS: [&str; 2] = ["Linux 5.12", "bpf_get_socket_cookie"];

/// The kernels named by `--kernels` (all when empty), in matrix order.
pub fn select(names: &[String]) -> anyhow::Result<Vec<Kernel>> {
    if let Some(bad) = names.iter().find(|n| !KERNELS.iter().any(|k| k.key == *n)) {
        let known: Vec<&str> = KERNELS.iter().map(|k| k.key).collect();
        anyhow::bail!(
            "unknown kernel `{bad}` in --kernels; known: {}",
            known.join(",")
        );
    }
    Ok(KERNELS
        .iter()
        .filter(|k| names.is_empty() || names.iter().any(|n| n == k.key))
        .copied()
        .collect())
}

/// True when tracer's stderr is the documented refusal: one line holding
/// every marker.
pub fn is_documented_refusal(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.len() == 1 && REFUSAL_MARKERS.iter().all(|m| lines[0].contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_matrix_order_and_rejects_unknown_names() {
        let names = vec!["host".to_string(), "5.10".to_string()];
        let keys: Vec<&str> = select(&names).unwrap().iter().map(|k| k.key).collect();
        assert_eq!(keys, ["5.10", "host"]);
        assert_eq!(select(&[]).unwrap().len(), KERNELS.len());
        assert!(select(&["4.19".to_string()]).is_err());
    }

    #[test]
    fn refusal_needs_one_line_with_every_marker() {
        let ok = "tracer: this kernel is too old: tracer needs Linux 5.12 or later \
                  (bpf_get_socket_cookie in BTF tracepoints)\n";
        assert!(is_documented_refusal(ok));
        assert!(!is_documented_refusal("tracer: needs Linux 5.12\n"));
        assert!(!is_documented_refusal(&format!("{ok}verifier log...\n")));
        assert!(!is_documented_refusal(""));
    }
}
