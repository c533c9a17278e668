//! tmux as the terminal a person types into: a server of its own per
//! test, a session of 160x50 running a shell line, keys sent, the screen
//! read back, and the check that `tracer top` gave the terminal back.
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_tracer");

/// A tmux server of our own with one session; killed on drop.
pub struct Tmux {
    /// The server's socket (`-S`), removed on drop.
    socket: std::path::PathBuf,
    session: String,
}

impl Tmux {
    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux is needed for this test")
    }

    /// `new-session -d -x 160 -y 50 COMMAND` on a tmux server of its own,
    /// named by `tag` and our pid.
    pub fn start(tag: &str, command: &str) -> Tmux {
        let id = std::process::id();
        let t = Tmux {
            socket: std::env::temp_dir().join(format!("tracer-top-{tag}-{id}.tmux")),
            session: format!("top-{tag}-{id}"),
        };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            "160",
            "-y",
            "50",
            command,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        // Keep the pane after the command ends, to read what it left.
        t.tmux(&["set-option", "-t", &t.session, "remain-on-exit", "on"]);
        t
    }

    pub fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A pane format variable (`alternate_on`, `pane_dead`).
    pub fn var(&self, name: &str) -> String {
        let f = format!("#{{{name}}}");
        let out = self.tmux(&["display-message", "-p", "-t", &self.session, &f]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    pub fn text(&self, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", &self.session, "-l", text])
                .status
                .success()
        );
    }

    /// The screen once `ok` holds on it; panics with the last screen.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waited 15 s for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A shell line running `tracer ARGS`, then saying its exit status and
/// whether the terminal is back in canonical mode (`icanon`, not raw
/// mode's `-icanon`).
pub fn then_status(args: &str) -> String {
    format!(
        "{BIN} {args}; echo \"top exited with status $?\"; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; sleep 60"
    )
}

/// Wait for top to end, then check it gave the terminal back with status 0.
pub fn assert_terminal_given_back(tmux: &Tmux) {
    let s = tmux.wait_for("top to exit and stty to speak", |s| {
        s.lines()
            .any(|l| l.trim().trim_start_matches('-') == "icanon")
    });
    assert!(s.contains("top exited with status 0"), "{s}");
    assert!(
        !s.contains("Sockets by state"),
        "the alternate screen is gone: {s}"
    );
    assert!(
        s.lines().any(|l| l.trim() == "icanon"),
        "the terminal left raw mode: {s}"
    );
    assert_eq!(tmux.var("alternate_on"), "0");
    assert_eq!(tmux.var("cursor_flag"), "1", "the cursor is shown again");
}
