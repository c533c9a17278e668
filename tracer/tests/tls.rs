//! `tracer run --web-config`: TLS and basic auth from a web config file in
//! node_exporter's format. A CA and a server certificate are made at run
//! time with the openssl CLI, and a bcrypt hash with the bcrypt crate;
//! curl and a real Prometheus are the clients. The agent tests are
//! privileged; the bad-config tests run as any user, since the file is
//! read before anything privileged happens.
mod common;
#[path = "tls/config.rs"]
mod config;
#[path = "tls/kit.rs"]
mod kit;

use std::{
    io::Write as _,
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Prometheus, metric_lines, metric_value, wait_until};
use kit::{PASSWORD, Pki, TlsAgent, USER, curl};

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn curl_needs_tls_and_the_right_password() {
    let pki = Pki::new();
    let agent = TlsAgent::start(&pki, &pki.web_config());

    let ok = agent.curl("/metrics", Some((USER, PASSWORD)));
    assert_eq!(ok.code, Some(200), "{}{}", ok.head, ok.err);
    assert!(ok.body.contains("tracer_build_info"), "{}", ok.body);
    let api = agent.curl("/api/v1/summary", Some((USER, PASSWORD)));
    assert_eq!(api.code, Some(200), "{}{}", api.head, api.err);

    // Every path asks for credentials, as node_exporter's do.
    for path in ["/metrics", "/healthz", "/api/v1/sockets", "/nope"] {
        for creds in [None, Some((USER, "wrong")), Some(("nobody", PASSWORD))] {
            let r = agent.curl(path, creds);
            assert_eq!(r.code, Some(401), "{path} {creds:?}: {}{}", r.head, r.err);
            assert!(
                r.head.contains("WWW-Authenticate: Basic realm=\"tracer\"")
                    || r.head.contains("www-authenticate: Basic realm=\"tracer\""),
                "{path}: {}",
                r.head
            );
            assert!(!r.body.contains("tracer_"), "{path}: {}", r.body);
        }
    }

    // Plain HTTP to the TLS port: refused at once, and nothing else stalls.
    let start = Instant::now();
    let plain = curl(&[format!("http://{}/metrics", agent.addr)]);
    assert_ne!(plain.code, Some(200), "{}", plain.body);
    assert!(!plain.body.contains("tracer_"), "{}", plain.body);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Connections that never finish a handshake hold up nobody.
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(agent.addr).expect("connect"))
        .collect();
    let mut half = TcpStream::connect(agent.addr).expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("partial hello");
    let start = Instant::now();
    let after = agent.curl("/metrics", Some((USER, PASSWORD)));
    assert_eq!(after.code, Some(200), "{}{}", after.head, after.err);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(silent);
    drop(half);

    // Each refusal is counted by reason.
    let text = agent.curl("/metrics", Some((USER, PASSWORD))).body;
    let count = |reason: &str| {
        metric_value(
            &text,
            &format!("tracer_http_auth_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| {
            panic!(
                "no {reason} series: {}",
                metric_lines(&text, &["tracer_http"])
            )
        })
    };
    assert_eq!(
        count("missing"),
        4.0,
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
    assert_eq!(
        count("wrong"),
        8.0,
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
    assert!(
        count("tls") >= 1.0,
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
    assert_eq!(count("busy"), 0.0);
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let pki = Pki::new();
    let agent = TlsAgent::start(&pki, &pki.web_config());
    let job = format!(
        "    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      \
         username: {USER}\n      password: {PASSWORD}\n",
        pki.path("ca.pem").display()
    );
    let prom = Prometheus::start_job(agent.addr, &job);
    let up = wait_until(Duration::from_secs(30), || {
        prom.query("up{job=\"tracer\"}") == Some(1.0)
    });
    assert!(
        up,
        "up = {:?}, last scrape error: {:?}",
        prom.query("up{job=\"tracer\"}"),
        prom.target_error()
    );
    assert_eq!(prom.query("tracer_build_info{job=\"tracer\"}"), Some(1.0));
    // Prometheus's scrapes never failed auth.
    let text = agent.curl("/metrics", Some((USER, PASSWORD))).body;
    assert_eq!(
        metric_value(&text, "tracer_http_auth_failures_total{reason=\"wrong\"}"),
        Some(0.0)
    );

    // And with a wrong password its target is down, saying 401.
    let wrong = job.replace(PASSWORD, "wrong");
    let prom = Prometheus::start_job(agent.addr, &wrong);
    let seen = wait_until(Duration::from_secs(30), || {
        prom.target_error().is_some_and(|e| e.contains("401"))
    });
    assert!(seen, "last scrape error: {:?}", prom.target_error());
    assert_eq!(prom.query("up{job=\"tracer\"}"), Some(0.0));
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn a_flood_of_wrong_passwords_does_not_stall_a_known_one() {
    let pki = Pki::new();
    let agent = TlsAgent::start(&pki, &pki.web_config());
    // Remembered from here on: TlsAgent::start checked it once.
    let url = format!("https://{}/metrics", agent.addr);
    const FLOOD: usize = 48;
    let mut flood = Command::new("curl")
        .args(["-s", "-w", "%{http_code}\\n"])
        .args(["--max-time", "60", "--parallel", "--parallel-max", "64"])
        .arg("--cacert")
        .arg(pki.path("ca.pem"))
        .args(["-u", &format!("{USER}:wrong")])
        .args((0..FLOOD).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let start = Instant::now();
        let r = agent.curl("/metrics", Some((USER, PASSWORD)));
        assert_eq!(r.code, Some(200), "{}{}", r.head, r.err);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a remembered password waited {:?} behind the flood",
            start.elapsed()
        );
    }
    let out = flood.wait().map(|_| ()).and_then(|()| {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut flood.stdout.take().expect("stdout"), &mut s)?;
        Ok(s)
    });
    let codes = out.expect("curl output");
    let answered: Vec<&str> = codes.lines().collect();
    assert_eq!(answered.len(), FLOOD, "{codes}");
    assert!(
        answered.iter().all(|c| *c == "401" || *c == "503"),
        "{codes}"
    );
    let text = agent.curl("/metrics", Some((USER, PASSWORD))).body;
    let count = |reason: &str| {
        metric_value(
            &text,
            &format!("tracer_http_auth_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    let busy = answered.iter().filter(|c| **c == "503").count() as f64;
    assert_eq!(
        count("busy"),
        busy,
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
    assert_eq!(
        count("wrong"),
        FLOOD as f64 - busy,
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
    eprintln!("flood of {FLOOD}: {busy} answered 503 at once, the rest 401 after bcrypt");
}

#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn client_certificates_are_required_when_asked() {
    let pki = Pki::new();
    pki.openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=prometheus",
        "-keyout",
        "client-key.pem",
        "-out",
        "client.csr",
    ]);
    pki.write("client.ext", "extendedKeyUsage = clientAuth\n");
    pki.sign("client.csr", "client.ext", "client.pem");
    // A certificate from another CA is refused like none at all.
    pki.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=stranger",
        "-keyout",
        "stranger-key.pem",
        "-out",
        "stranger.pem",
    ]);
    let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
    let web = pki.write(
        "mtls.yml",
        &format!(
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
             min_version: TLS13\nbasic_auth_users:\n  {USER}: {hash}\n"
        ),
    );
    let with_cert = |cert: &str, key: &str| {
        vec![
            "--cert".to_owned(),
            pki.path(cert).display().to_string(),
            "--key".to_owned(),
            pki.path(key).display().to_string(),
        ]
    };
    let client = with_cert("client.pem", "client-key.pem");
    // TlsAgent::start's own curl has no client certificate: wait here.
    let agent = TlsAgent::spawn(&pki, &web);
    let addr = agent.addr;
    let get = |extra: &[String], creds: &str| {
        let mut args = extra.to_vec();
        args.extend([
            "--cacert".to_owned(),
            agent.ca.display().to_string(),
            "-u".to_owned(),
            creds.to_owned(),
            format!("https://{addr}/metrics"),
        ]);
        curl(&args)
    };
    let good = format!("{USER}:{PASSWORD}");
    let up = wait_until(Duration::from_secs(30), || {
        get(&client, &good).code == Some(200)
    });
    assert!(
        up,
        "tracer run with client certificates did not answer on {addr}"
    );

    let none = get(&[], &good);
    assert_eq!(
        none.code, None,
        "without a client certificate: {}",
        none.head
    );
    let stranger = get(&with_cert("stranger.pem", "stranger-key.pem"), &good);
    assert_eq!(
        stranger.code, None,
        "a stranger's certificate: {}",
        stranger.head
    );
    let tls12 = get(
        &[&client[..], &["--tls-max".to_owned(), "1.2".to_owned()]].concat(),
        &good,
    );
    assert_eq!(
        tls12.code, None,
        "TLS 1.2 under min_version TLS13: {}",
        tls12.head
    );
    // The certificate does not stand in for the password.
    assert_eq!(get(&client, &format!("{USER}:wrong")).code, Some(401));

    let text = get(&client, &good).body;
    let tls = metric_value(&text, "tracer_http_auth_failures_total{reason=\"tls\"}");
    assert!(
        tls >= Some(3.0),
        "{}",
        metric_lines(&text, &["tracer_http"])
    );
}

/// `tracer leaks`, `top` and `port` ask an agent with a web config over
/// HTTPS, with its basic auth: what the alerts tell a person to run works
/// against the Kubernetes DaemonSet's agent. Each way of asking wrong is
/// one sentence that says what to give.
#[test]
#[ignore = "privileged: cargo xtask test runs it as root"]
fn the_commands_ask_an_https_agent() {
    let pki = Pki::new();
    let agent = TlsAgent::start(&pki, &pki.web_config());
    let password = PASSWORD.replace(' ', "%20");
    let url = format!("https://{USER}:{password}@{}", agent.addr);
    let ca = agent.ca.to_string_lossy().into_owned();
    let tracer = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(args)
            .output()
            .expect("run tracer");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The agent's report, trusting the CA that signed its certificate.
    let (code, json, err) = tracer(&["leaks", "--json", "--agent", &url, "--agent-ca", &ca]);
    assert!(matches!(code, Some(0 | 1)), "{code:?} {err}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(report["source"], "agent", "{json}");
    assert!(!err.contains(PASSWORD) && !err.contains(&password), "{err}");
    // The password from the environment, for a URL that names the user
    // alone: no command line shows it.
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["leaks", "--json", "--agent-ca", &ca, "--agent"])
        .arg(format!("https://{USER}@{}", agent.addr))
        .env("TRACER_AGENT_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer");
    let json = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(report["source"], "agent", "{json}");
    // Whatever certificate, when asked to.
    let (code, json, err) = tracer(&["leaks", "--json", "--agent", &url, "--agent-insecure"]);
    assert!(matches!(code, Some(0 | 1)), "{code:?} {err}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(report["source"], "agent", "{json}");
    // top and port too.
    let (code, frame, err) = tracer(&["top", "--once", "--agent", &url, "--agent-ca", &ca]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        frame.contains("ESTABLISHED") || frame.contains("estab"),
        "{frame}"
    );
    let port = agent.addr.port().to_string();
    let (code, text, err) = tracer(&["port", &port, "--agent", &url, "--agent-ca", &ca]);
    assert_eq!(code, Some(1), "the agent's own port is busy: {text}{err}");
    assert!(
        text.contains(&format!("agent at https://{USER}:***@")),
        "{text}"
    );

    // Asked wrong: one sentence each, exit 2.
    let one = |args: &[&str], want: &str| {
        let (code, _, err) = tracer(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    };
    // The system's CA bundle does not know the test CA.
    one(&["leaks", "--agent", &url], "give --agent-ca FILE");
    one(
        &[
            "leaks",
            "--agent",
            &url.replacen("https://", "http://", 1),
            "--agent-ca",
            &ca,
        ],
        "serves HTTPS, so ask for https://",
    );
    let wrong = format!("https://{USER}:wrong@{}", agent.addr);
    one(
        &["leaks", "--agent", &wrong, "--agent-ca", &ca],
        "refused the user and password given (HTTP 401)",
    );
    let anonymous = format!("https://{}", agent.addr);
    one(
        &["leaks", "--agent", &anonymous, "--agent-ca", &ca],
        "wants a user and password (HTTP 401)",
    );
}
