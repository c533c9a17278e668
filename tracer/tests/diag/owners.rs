//! The owner scan: every process and descriptor holding a socket.
use super::*;

/// Kills and reaps the child on drop, even when an assertion fails.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn owners_list_every_process_and_fd() {
    require_root();
    let c = conn4();
    let dup = c.client.try_clone().expect("dup");
    let client_fd = c.client.as_raw_fd();
    // SAFETY: between fork and exec the child only calls dup2 or fcntl,
    // which are async-signal-safe; fd 3 is left without CLOEXEC and
    // survives exec. (When the socket already is fd 3, as it can be with
    // tests running side by side, dup2 would keep its CLOEXEC.)
    let child = Reaped(unsafe {
        Command::new("sleep")
            .arg("30")
            .pre_exec(move || {
                let r = if client_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(client_fd, 3)
                };
                match r {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                }
            })
            .spawn()
            .expect("spawn sleep")
    });
    let kid = child.0.id();
    let (ci, si) = (inode_of(&c.client), inode_of(&c.server));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{kid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "child never exec'd sleep");
        std::thread::sleep(Duration::from_millis(5));
    }

    let owners = owners_of(&HashSet::from([ci, si, u64::MAX]));
    let me = std::process::id();
    // Other tests' children may hold our fds between fork and exec: look
    // only at this process and our child.
    let ours = |ino: u64| -> Vec<(u32, u32)> {
        let it = owners[&ino].iter().filter(|o| o.pid == me || o.pid == kid);
        it.map(|o| (o.pid, o.fd)).collect()
    };
    let fd = |f: &dyn AsRawFd| f.as_raw_fd() as u32;
    let mut want = vec![(me, fd(&c.client)), (me, fd(&dup)), (kid, 3)];
    want.sort();
    assert_eq!(ours(ci), want);
    assert_eq!(ours(si), [(me, fd(&c.server))]);
    assert!(!owners.contains_key(&u64::MAX));

    let sleeper = owners[&ci]
        .iter()
        .find(|o| o.pid == kid)
        .expect("child listed");
    assert_eq!(
        (sleeper.comm.as_str(), sleeper.cmdline.as_str()),
        ("sleep", "sleep 30")
    );
    let mine = owners[&si]
        .iter()
        .find(|o| o.pid == me)
        .expect("self listed");
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    assert_eq!(mine.comm, comm.trim_end());
    let cg = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let v2 = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("");
    assert_eq!(mine.cgroup, v2);
    assert_eq!(mine.container_id.as_deref(), tracer::diag::container_id(v2));
}
