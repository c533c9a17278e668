//! The open-file limit: raised at start to what the system allows, and a
//! warning when even that is too low for the HTTP connection cap.
//!
//! Servers do the same (nginx's `worker_rlimit_nofile`, systemd's advice
//! to raise the soft limit up to the hard one): the soft limit of 1024 is
//! kept low for programs that use `select(2)`, which tracer does not.

/// Files the agent holds besides HTTP connections, on top of those open
/// when the check runs: dump sockets, namespace files, /proc reads.
const SPARE_FILES: u64 = 64;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, and return a
/// one-sentence warning when it is still below what `http_connections`
/// open connections and the agent's own files need.
pub fn raise_and_check(http_connections: usize) -> Option<String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    check(lim.rlim_cur, open, http_connections as u64)
}

/// The warning for a limit of `limit` files with `open` open already.
fn check(limit: u64, open: u64, http_connections: u64) -> Option<String> {
    let own = open + SPARE_FILES;
    let need = own + http_connections;
    (limit < need).then(|| {
        format!(
            "the open-file limit (RLIMIT_NOFILE) is {limit}, below the {need} \
             that {http_connections} HTTP connections (--max-http-connections) and about {own} \
             files of the agent's own need: raise the hard limit (ulimit -Hn, LimitNOFILE= in \
             systemd) or lower --max-http-connections"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_cap_does_not_fit() {
        assert_eq!(check(1024, 40, 256), None);
        let w = check(1024, 40, 1000).unwrap();
        assert!(
            w.contains("1024") && w.contains("--max-http-connections"),
            "{w}"
        );
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let _ = raise_and_check(1);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
