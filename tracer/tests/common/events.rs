//! A running `tracer events` process and what it printed.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use serde_json::Value;

use super::require_root;

/// A running `tracer events` process.
pub struct Events {
    child: Child,
    stdout: Option<JoinHandle<Vec<Value>>>,
    /// Stdout held open and never read ([`Events::start_unread`]).
    unread: Option<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
}

/// What a stopped `tracer events` printed.
pub struct Output {
    pub events: Vec<Value>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Events {
    /// Start `tracer events ARGS` and wait until its programs are attached.
    /// Unless ARGS say otherwise (`--netns all`), it follows only the
    /// namespace it starts in (`--netns host`), as [`super::Agent::start`]
    /// does: the tests run in namespaces of their own, and a port or a
    /// command name of another test's namespace must not show up here.
    pub fn start(args: &[&str]) -> Events {
        Events::start_as(&[], args)
    }

    /// Like [`Events::start`], run through `wrapper` (e.g. setpriv ...).
    pub fn start_as(wrapper: &[&str], args: &[&str]) -> Events {
        Events::launch(wrapper, args, true)
    }

    /// Like [`Events::start`], with a stdout that nobody reads: the pipe
    /// fills and every write to it blocks.
    pub fn start_unread(args: &[&str]) -> Events {
        Events::launch(&[], args, false)
    }

    fn launch(wrapper: &[&str], args: &[&str], read: bool) -> Events {
        require_root();
        let bin = env!("CARGO_BIN_EXE_tracer");
        let (program, pre): (&str, &[&str]) = match wrapper.split_first() {
            Some((p, rest)) => (p, rest),
            None => (bin, &[]),
        };
        let mut cmd = Command::new(program);
        cmd.args(pre);
        if !wrapper.is_empty() {
            cmd.arg(bin);
        }
        let mut child = cmd
            .arg("events")
            .args(super::netns_unless_chosen(args))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer events");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("tracing TCP events") {
                    let _ = ready_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let (out, unread) = if read {
            (Some(out), None)
        } else {
            (None, Some(out))
        };
        let stdout = out.map(|out| {
            std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map_while(Result::ok)
                    .map(|l| {
                        serde_json::from_str(&l)
                            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
                    })
                    .collect()
            })
        });
        let mut ev = Events {
            child,
            stdout,
            unread,
            stderr: Some(stderr),
        };
        if ready_rx.recv_timeout(super::STARTUP).is_err() {
            let _ = ev.child.kill();
            let out = ev.finish();
            panic!(
                "tracer events did not say it was tracing within {:?}; stderr: {}",
                super::STARTUP,
                out.stderr
            );
        }
        ev
    }

    /// The process id of the running `tracer events`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then collect everything it printed.
    pub fn stop(self) -> Output {
        // Let events already in the ring buffer be read before stopping.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// SIGTERM, and its output if it exits within `limit`; `None` if it
    /// was still running then (it is killed).
    pub fn terminate_within(mut self, limit: Duration) -> Option<Output> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The pipe nobody read closes with it.
                drop(self.unread.take());
                return Some(self.finish());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Read `n` bytes of the stdout nobody read ([`Events::start_unread`]),
    /// as a slow reader takes a few lines, without a buffer of its own.
    #[allow(dead_code)]
    pub fn read_unread(&mut self, n: usize) -> Vec<u8> {
        use std::io::Read as _;
        let mut got = vec![0u8; n];
        self.unread
            .as_mut()
            .expect("started with start_unread")
            .read_exact(&mut got)
            .expect("read stdout");
        got
    }

    /// The stdout nobody read ([`Events::start_unread`]), to read once
    /// `tracer events` has ended.
    #[allow(dead_code)]
    pub fn take_unread(&mut self) -> ChildStdout {
        self.unread.take().expect("started with start_unread")
    }

    /// Close the stdout nobody read ([`Events::start_unread`]), as `| head`
    /// does once it has its lines, and its output if it then exits on its
    /// own within `limit`; `None` if it still ran then (it is killed).
    #[allow(dead_code)]
    pub fn hang_up_within(mut self, limit: Duration) -> Option<Output> {
        drop(self.unread.take());
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(self.finish());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn finish(mut self) -> Output {
        let status = self.child.wait().expect("wait for tracer");
        Output {
            events: self
                .stdout
                .take()
                .map(|h| h.join().expect("stdout reader"))
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|h| h.join().expect("stderr reader"))
                .unwrap_or_default(),
            status,
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.try_wait();
    }
}

impl Output {
    /// The exit line that counts what was read, printed and lost.
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .find(|l| l.contains("lost in the kernel"))
            .unwrap_or_else(|| panic!("no summary on stderr: {}", self.stderr))
    }

    /// The number of events the summary line says were lost in the kernel.
    pub fn lost(&self) -> u64 {
        let line = self.summary();
        let before = line.split(" lost in the kernel").next().unwrap_or_default();
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse summary: {line}"))
    }

    /// Nothing was lost to a full ring buffer or a failed read. Runs the
    /// kernel skipped (`recursion_misses`) are not asserted: the programs
    /// run for every socket on the host, so a parallel test's softirq
    /// nesting on a CPU counts there too. A skipped event of the test's own
    /// shows in its exact checks, with this summary in their message.
    #[allow(dead_code)]
    pub fn assert_none_dropped(&self) {
        let [full, read, skipped] = self.lost_by_cause();
        assert_eq!((full, read), (0, 0), "events lost: {}", self.stderr);
        if skipped > 0 {
            eprintln!("{skipped} runs skipped by the kernel (any socket on the host)");
        }
    }

    /// The summary line's losses by cause: a full ring buffer, failed
    /// reads, runs the kernel skipped.
    #[allow(dead_code)]
    pub fn lost_by_cause(&self) -> [u64; 3] {
        let line = self.summary();
        [
            "ring buffer full:",
            "read errors:",
            "skipped while the program ran on the same CPU:",
        ]
        .map(|label| {
            let at = line
                .find(label)
                .unwrap_or_else(|| panic!("{label:?} in {line}"));
            let digits: String = line[at + label.len()..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("a number after {label:?} in {line}"))
        })
    }

    /// `from->to` transitions per cookie, in arrival order. Accepts the
    /// kernel announced before naming the new socket are left out: see
    /// [`Output::unnamed_accepts`].
    pub fn paths(&self) -> BTreeMap<u64, Vec<String>> {
        let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for e in self.events.iter().filter(|e| e["kind"] == "state") {
            let cookie = e["cookie"].as_u64().expect("cookie");
            if cookie == 0 {
                continue;
            }
            m.entry(cookie).or_default().push(format!(
                "{}->{}",
                e["old_state"].as_str().expect("old_state"),
                e["new_state"].as_str().expect("new_state")
            ));
        }
        m
    }

    /// How many `listen->syn_recv` events carried cookie 0. Kernels up to
    /// 6.12 (Debian's 6.1 and 6.12) announce a new server socket before it
    /// has its own cookie or peer (docs/events.md); there the socket's path
    /// starts at `syn_recv->established`. From 6.15 this is 0.
    pub fn unnamed_accepts(&self) -> usize {
        self.events
            .iter()
            .filter(|e| {
                e["kind"] == "state"
                    && e["cookie"] == 0
                    && e["old_state"] == "listen"
                    && e["new_state"] == "syn_recv"
            })
            .count()
    }

    /// A server socket's expected path: the whole of `full`, or without its
    /// first step where the kernel announced the accept unnamed.
    pub fn server_path<'a>(&self, full: &'a [&'a str]) -> &'a [&'a str] {
        if self.unnamed_accepts() > 0 {
            &full[1..]
        } else {
            full
        }
    }

    /// What a failed check about `cookie` needs to be understood: the
    /// summary line, and every event of the socket or of its connection
    /// (the same two ports either way round: its peer, or itself filed
    /// under another cookie or none).
    #[allow(dead_code)]
    pub fn explain(&self, cookie: u64) -> String {
        let pair = |e: &Value| {
            let (a, b) = (e["sport"].as_u64()?, e["dport"].as_u64()?);
            (a != 0 && b != 0).then_some((a.min(b), a.max(b)))
        };
        let pairs: BTreeSet<(u64, u64)> = self
            .events
            .iter()
            .filter(|e| e["cookie"] == cookie)
            .filter_map(pair)
            .collect();
        let mut lines = vec![self.summary().to_owned()];
        lines.extend(
            self.events
                .iter()
                .filter(|e| e["cookie"] == cookie || pair(e).is_some_and(|p| pairs.contains(&p)))
                .map(ToString::to_string),
        );
        lines.join("\n")
    }

    /// Events of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }
}
