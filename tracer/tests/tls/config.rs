//! Bad web config files: each is one sentence naming the file and the
//! key, and exit status 2, before anything privileged happens.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::kit::{PASSWORD, Pki, USER};

/// Run `tracer run ARGS` to the end (at most 10 s): status and stderr.
fn tracer_run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("run")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracer");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tracer run {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_web_config_is_one_sentence_and_exit_2() {
    let pki = Pki::new();
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
    let cases: Vec<(PathBuf, Vec<String>)> = vec![
        (pki.path("missing.yml"), vec!["missing.yml: cannot be opened".into()]),
        (
            pki.write("unknown.yml", &format!("{tls}  cert: x\n")),
            vec!["unknown field `cert`".into(), "tls_server_config".into()],
        ),
        (
            pki.write("top.yml", &format!("{tls}http_server_config:\n  http2: true\n")),
            vec!["unknown field `http_server_config`".into()],
        ),
        (
            pki.write("hash.yml", &format!("{tls}basic_auth_users:\n  {USER}: plaintext\n")),
            vec![format!("key basic_auth_users.{USER}: not a bcrypt hash")],
        ),
        (
            pki.write("nocert.yml", &format!("tls_server_config:\n  cert_file: gone.pem\n  key_file: key.pem\nbasic_auth_users:\n  {USER}: {hash}\n")),
            vec!["key tls_server_config.cert_file".into(), pki.path("gone.pem").display().to_string()],
        ),
        (
            pki.write("nokey.yml", "tls_server_config:\n  cert_file: cert.pem\n"),
            vec!["key tls_server_config.key_file is missing".into()],
        ),
        (
            pki.write("yaml.yml", "tls_server_config: [\n"),
            vec!["line".into()],
        ),
        (pki.write("empty.yml", ""), vec!["holds neither".into()]),
    ];
    for (path, says) in cases {
        let p = path.display().to_string();
        let (code, err) = tracer_run(&["--listen", "127.0.0.1:0", "--web-config", &p]);
        assert_eq!(code, Some(2), "{p}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{p}: {err}");
        assert!(
            err.starts_with(&format!("tracer: error: web config file {p}: ")),
            "{err}"
        );
        for s in says {
            assert!(err.contains(&s), "{p}: want {s:?} in {err}");
        }
    }
}
