//! A running `tracer run` agent on a free loopback port.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{free_addr, http_get, metric_value, require_root, wait_until};

/// A running `tracer run` agent on a free loopback port.
pub struct Agent {
    child: Child,
    /// `127.0.0.1:<port>` it serves on.
    pub addr: SocketAddr,
}

impl Agent {
    /// Start `tracer run --listen 127.0.0.1:<free> ARGS` and wait for
    /// /healthz. Unless ARGS say otherwise (`--netns all`), the agent follows
    /// only the namespace it starts in (`--netns host`): most tests run it in
    /// a namespace of their own, away from whatever else the host runs.
    ///
    /// The port was free when picked, but a parallel test may take it
    /// before the agent binds it: an agent that exits at once is started
    /// again on another port, twice at most. When that test's agent took
    /// it, its `/healthz` answers too: the agent is ours only when its
    /// process holds the port.
    pub fn start(args: &[&str]) -> Agent {
        let mut tries = 0;
        loop {
            let (child, addr) = Agent::spawn(&[], args, Stdio::inherit());
            let mut agent = Agent { child, addr };
            if agent.wait_healthy(super::STARTUP) && super::listens(agent.child.id(), addr) {
                return agent;
            }
            tries += 1;
            // Not ours: ours fails to bind, and exits.
            let exited = wait_until(Duration::from_secs(10), || {
                agent.child.try_wait().ok().flatten().is_some()
            });
            assert!(
                exited && tries < 3,
                "tracer run did not become healthy on {addr}"
            );
        }
    }

    /// Spawn `WRAPPER tracer run --listen 127.0.0.1:<free> [--netns host]
    /// ARGS` with stdout discarded and stderr to `stderr`, without waiting
    /// for it ([`wait_healthy`]).
    pub fn spawn(wrapper: &[&str], args: &[&str], stderr: Stdio) -> (Child, SocketAddr) {
        require_root();
        let addr = free_addr();
        let bin = env!("CARGO_BIN_EXE_tracer");
        let mut cmd = match wrapper.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .arg("run")
            .args(["--listen", &addr.to_string()])
            .args(super::netns_unless_chosen(args))
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tracer run");
        (child, addr)
    }

    fn wait_healthy(&mut self, timeout: Duration) -> bool {
        wait_healthy(&mut self.child, self.addr, timeout)
    }

    /// [`Agent::start`] following every namespace, flagging CLOSE_WAIT
    /// after 1 s, with dumps every 250 ms and no CPU budget: another test
    /// may fill the host's namespace with TIME_WAIT sockets, and a budget
    /// would then space dumps out.
    pub fn start_every_netns() -> Agent {
        Agent::start(&[
            "--close-wait-threshold",
            "1s",
            "--reconcile-interval",
            "250ms",
            "--reconcile-budget",
            "0",
            "--netns",
            "all",
        ])
    }

    /// GET a path; panics unless it answers 200.
    pub fn get(&self, path: &str) -> String {
        let (code, body) =
            http_get(self.addr, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// GET a JSON path.
    pub fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path)).expect("JSON body")
    }

    /// The value of one exposition line, e.g. `tracer_tcp_sockets{state="listen"}`.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.get("/metrics"), series).unwrap_or_else(|| panic!("no series {series}"))
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a frozen agent reads nothing,
    /// so the kernel's ring buffer fills and events are lost.
    #[allow(dead_code)]
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for tracer run")
    }
}

/// Wait until the agent `child` runs and answers /healthz on `addr`, at
/// most `timeout`; false at once if it exits. Each try gives up after half
/// a second: the agent binds its port before it loads its programs, so a
/// try that waited longer would sit in the listen backlog as an idle
/// connection, which the agent itself then sees and, with a short
/// `--idle-threshold`, flags (a start takes 10 s and more in the vmtest
/// VMs).
pub fn wait_healthy(child: &mut Child, addr: SocketAddr, timeout: Duration) -> bool {
    let mut healthy = false;
    wait_until(timeout, || {
        healthy = answers_healthz(addr);
        healthy || !matches!(child.try_wait(), Ok(None))
    });
    healthy && matches!(child.try_wait(), Ok(None))
}

/// One try of /healthz on `addr`, half a second at most: 200 or not.
pub fn answers_healthz(addr: SocketAddr) -> bool {
    super::http_get_with(addr, "/healthz", &[], Duration::from_millis(500))
        .is_some_and(|r| r.code == 200)
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Live sockets per state the agent lists in namespace `netns` (its
    /// inode), named as the API names them.
    pub fn live_states(&self, netns: u64) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        let list = self.json(&format!("/api/v1/sockets?netns={netns}"));
        for s in list.as_array().expect("array") {
            if s["netns"] == netns && s["live"] == true {
                let state = s["state"].as_str().expect("state").to_owned();
                *m.entry(state).or_default() += 1;
            }
        }
        m
    }

    /// Within 5 s, the agent's live sockets per state in namespace `netns`
    /// equal what `ss` (`ss -tan` inside it) counts; panics with both
    /// otherwise, naming the namespace `what`.
    pub fn assert_states_agree(
        &self,
        netns: u64,
        what: &str,
        ss: impl Fn() -> std::collections::BTreeMap<String, usize>,
    ) {
        let mut seen = Default::default();
        let agree = wait_until(Duration::from_secs(5), || {
            seen = (self.live_states(netns), ss());
            seen.0 == seen.1
        });
        assert!(agree, "{what}: (agent, ss): {seen:?}");
    }

    /// The process id of the running agent (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Agent {
    /// Like [`Agent::start`], run through `wrapper` (e.g. `prlimit
    /// --nofile=1024:1024`), with stderr collected into the returned log.
    pub fn start_logged(
        wrapper: &[&str],
        args: &[&str],
    ) -> (Agent, std::sync::Arc<std::sync::Mutex<String>>) {
        let (mut child, addr) = Agent::spawn(wrapper, args, Stdio::piped());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut agent = Agent { child, addr };
        let up = agent.wait_healthy(super::STARTUP);
        assert!(
            up,
            "tracer run did not become healthy on {addr}: {}",
            log.lock().unwrap()
        );
        (agent, log)
    }
}
