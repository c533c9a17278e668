//! The client against fake agents on loopback threads: one that answers,
//! one that trickles a byte every 0.5 s, one that never answers, one that
//! sends an endless body. None needs privileges.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// A fake agent on a free loopback port: accepts one connection, reads the
/// request, then runs `serve` on the stream until it returns (or a write
/// fails because the client went away).
fn fake_agent(serve: impl FnOnce(&mut TcpStream) + Send + 'static) -> (String, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        serve(&mut s);
    });
    (url, server)
}

/// Write `bytes` one at a time every `every`, for at most `max` bytes.
fn trickle(s: &mut TcpStream, bytes: &[u8], every: Duration) {
    for b in bytes.iter().cycle().take(200) {
        if s.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

fn limits(timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        ..Limits::default()
    }
}

#[test]
fn a_byte_every_half_second_does_not_outlive_the_deadline() {
    let (url, server) = fake_agent(|s| {
        trickle(
            s,
            b"HTTP/1.0 200 OK\r\n\r\n{\"source\": ",
            Duration::from_millis(500),
        );
    });
    let start = Instant::now();
    let e = http_get(&url, "/api/v1/leaks", limits(1500)).expect_err("trickle");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let text = format!("{e:#}");
    assert!(text.contains("timed out after 1.5 s"), "{text}");
    assert!(!text.contains("os error"), "{text}");
    drop(e);
    server.join().expect("server");
}

#[test]
fn an_agent_that_never_answers_times_out_in_words() {
    let (url, server) = fake_agent(|s| {
        // Hold the connection open, silent, until the client hangs up.
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let _ = s.read(&mut [0u8; 1]);
    });
    let e = http_get(&url, "/api/v1/leaks", limits(300)).expect_err("silent");
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!(
            "asking {url} for /api/v1/leaks timed out after 0.3 s"
        )),
        "{text}"
    );
    assert!(
        matches!(
            e.downcast_ref::<ClientError>(),
            Some(ClientError::TimedOut { .. })
        ),
        "{e:?}"
    );
    server.join().expect("server");
}

#[test]
fn an_endless_body_stops_at_the_cap() {
    let (url, server) = fake_agent(|s| {
        if s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").is_err() {
            return;
        }
        let chunk = vec![b' '; 1 << 20];
        // 80 MiB at most: more than the 64 MiB cap.
        for _ in 0..80 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let e = http_get(&url, "/api/v1/leaks", Limits::default()).expect_err("huge");
    let text = format!("{e:#}");
    assert!(
        text.contains(&format!(
            "the response from {url} for /api/v1/leaks was larger than 64 MiB"
        )),
        "{text}"
    );
    drop(e);
    server.join().expect("server");
}

#[test]
fn a_small_cap_is_the_cap() {
    let (url, server) = fake_agent(|s| {
        let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{}", "x".repeat(3 << 20));
    });
    let e = http_get(
        &url,
        "/x",
        Limits {
            max_bytes: 2 << 20,
            ..Limits::default()
        },
    )
    .expect_err("over 2 MiB");
    assert!(format!("{e:#}").contains("larger than 2 MiB"), "{e:#}");
    drop(e);
    server.join().expect("server");
}

#[test]
fn an_answer_within_the_limits_is_read_whole() {
    let body = "y".repeat(100_000);
    let sent = body.clone();
    let (url, server) = fake_agent(move |s| {
        let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{sent}");
    });
    let got = http_get(&url, "/x", limits(5000)).expect("answer");
    assert_eq!(got, Some(body));
    server.join().expect("server");
}

#[test]
fn timeout_flag_bounds() {
    assert_eq!(parse_timeout("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_timeout("2.5"), Ok(Duration::from_millis(2500)));
    for bad in ["0", "50ms", "-1", "1e20", "2h", "inf", "NaN", "soon"] {
        let e = parse_timeout(bad).expect_err(bad);
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
    assert_eq!(fmt_secs(Duration::from_secs(10)), "10");
    assert_eq!(fmt_secs(Duration::from_millis(1500)), "1.5");
}

#[test]
fn an_agent_that_drops_the_connection_says_so() {
    // Reset: linger 0 turns the close into an RST before any answer.
    let (url, server) = fake_agent(|s| {
        let _ = socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO));
    });
    let e = http_get(&url, "/api/v1/summary", limits(2_000)).expect_err("reset");
    server.join().expect("server");
    assert_eq!(
        format!("{e:#}"),
        format!("the agent at {url} closed the connection before answering /api/v1/summary")
    );
    // Ended early: half a head, then a clean close.
    let (url, server) = fake_agent(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
    });
    let e = http_get(&url, "/x", limits(2_000)).expect_err("short body");
    server.join().expect("server");
    assert_eq!(
        format!("{e:#}"),
        format!("the agent at {url} closed the connection before answering /x")
    );
}

#[test]
fn another_servers_web_page_is_one_sentence() {
    let (url, server) = fake_agent(|s| {
        let page = "<!DOCTYPE HTML>\n<html>\n<head><title>Error response</title></head>\n\
                    <body><h1>Error response</h1><p>Error code: 404</p></body>\n</html>\n";
        let _ = write!(
            s,
            "HTTP/1.0 502 Bad Gateway\r\nContent-Type: text/html\r\n\r\n{page}"
        );
    });
    let e = http_get(&url, "/api/v1/leaks", limits(5000))
        .expect_err("a 502 is an error")
        .to_string();
    assert!(e.contains("with HTTP 502, a web page"), "{e}");
    assert!(!e.contains('\n') && !e.contains("<html>"), "{e}");
    server.join().expect("server");
}

/// Prometheus and node_exporter answer an unknown path with a plain-text
/// 404; every agent serves its API paths, so that is no agent.
#[test]
fn a_404_is_no_agent_whatever_its_body() {
    let (url, server) = fake_agent(|s| {
        let _ = write!(
            s,
            "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\n404 page not found\n"
        );
    });
    let e = http_get(&url, "/api/v1/leaks", limits(5000))
        .expect_err("a 404 is an error")
        .to_string();
    assert!(
        e.ends_with("has no /api/v1/leaks (HTTP 404): is a tracer agent listening there?"),
        "{e}"
    );
    assert!(e.starts_with("the server at "), "{e}");
    server.join().expect("server");
}

#[test]
fn the_agents_own_refusal_is_kept_and_a_long_one_cut() {
    for (body, want) in [
        (
            "unknown state \"closewait\"\n",
            ": unknown state \"closewait\"",
        ),
        ("first line\nsecond line\n", ": first line …"),
        (
            "{\"error\":\"netns=12345: no network namespace has inode 12345\"}",
            ": netns=12345: no network namespace has inode 12345",
        ),
    ] {
        let (url, server) = fake_agent(move |s| {
            let _ = write!(s, "HTTP/1.0 400 Bad Request\r\n\r\n{body}");
        });
        let e = http_get(&url, "/api/v1/leaks", limits(5000))
            .expect_err("a 400 is an error")
            .to_string();
        assert!(e.ends_with(&format!("with HTTP 400{want}")), "{e}");
        server.join().expect("server");
    }
    assert_eq!(refusal(&"x".repeat(500)).chars().count(), 2 + 160 + 2);
}

#[test]
fn a_password_in_the_url_is_never_shown() {
    for (url, want) in [
        (
            "http://alice:s3cret@127.0.0.1:9077",
            "http://alice:***@127.0.0.1:9077",
        ),
        (
            "http://alice:s3cret@host:9077/base/",
            "http://alice:***@host:9077/base/",
        ),
        ("http://alice@127.0.0.1:9077", "http://alice@127.0.0.1:9077"),
        ("http://127.0.0.1:9077", "http://127.0.0.1:9077"),
        ("127.0.0.1:9077", "127.0.0.1:9077"),
        // No scheme, a `/` or an `@` in the password.
        ("alice:s3cret@host:9077", "alice:***@host:9077"),
        ("http://alice:pa/ss@host:9077", "http://alice:***@host:9077"),
        (
            "http://alice:p@ss@host:9077/x",
            "http://alice:***@host:9077/x",
        ),
        ("http://host:9077/x?to=a@b", "http://host:9077/x?to=a@b"),
    ] {
        assert_eq!(shown(url), want, "{url}");
    }
    // Nor in the errors: a refusal, and a host that does not resolve.
    let (url, server) = fake_agent(|s| {
        let _ = write!(s, "HTTP/1.0 401 Unauthorized\r\n\r\nwrong password\n");
    });
    let with_password = url.replace("http://", "http://alice:s3cret@");
    let e = http_get(&with_password, "/api/v1/leaks", limits(5000))
        .expect_err("a 401 is an error")
        .to_string();
    assert!(e.contains("alice:***@") && !e.contains("s3cret"), "{e}");
    server.join().expect("server");
    let e = http_get(
        "http://alice:s3cret@tracer-no-such-host.invalid:9077",
        "/x",
        limits(5000),
    )
    .expect_err("no such host");
    let e = format!("{e:#}");
    assert!(!e.contains("s3cret"), "{e}");
}

/// An agent serving HTTPS answers a plain request with a TLS alert: the
/// error says so in words, not in the HTTP parser's.
#[test]
fn a_server_that_does_not_speak_http_is_named_for_what_it_likely_is() {
    let (url, server) = fake_agent(|s| {
        // A TLS record: alert, protocol_version.
        let _ = s.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
    });
    let e = http_get(&url, "/api/v1/leaks", limits(2000)).expect_err("tls");
    server.join().expect("server");
    let text = format!("{e:#}");
    assert!(text.contains("does not answer in plain HTTP"), "{text}");
    assert!(!text.contains("parse fail"), "{text}");
}

#[test]
fn a_url_pasted_from_an_agents_page_is_its_base() {
    for (path, base) in [
        ("", ""),
        ("/", ""),
        ("metrics", ""),
        ("metrics/", ""),
        ("healthz", ""),
        ("api/v1/leaks", ""),
        ("api/v1/sockets?port=80", ""),
        ("tracer/", "tracer"),
        ("tracer/metrics", "tracer"),
        ("tracer/api/v1/summary", "tracer"),
        // Only a whole segment is an agent's page.
        ("mymetrics", "mymetrics"),
        ("tracer-api/v1", "tracer-api/v1"),
        // kubectl proxy's route to a service: its own /api/v1 stays.
        (
            "api/v1/namespaces/mon/services/tracer:9077/proxy/",
            "api/v1/namespaces/mon/services/tracer:9077/proxy",
        ),
        (
            "api/v1/namespaces/mon/services/tracer:9077/proxy/api/v1/leaks",
            "api/v1/namespaces/mon/services/tracer:9077/proxy",
        ),
    ] {
        assert_eq!(base_of(path), base, "{path:?}");
    }
    // The request goes to the agent's own path.
    let (addr, seen) = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 1024];
            let n = s.read(&mut req).expect("request");
            let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{{}}");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        (addr, seen)
    };
    let got = http_get(
        &format!("http://{addr}/metrics"),
        "/api/v1/leaks",
        limits(5000),
    );
    assert_eq!(got.expect("answer").as_deref(), Some("{}"));
    let req = seen.join().expect("server");
    assert!(req.starts_with("GET /api/v1/leaks HTTP/1.1\r\n"), "{req}");
}

#[test]
fn an_answer_that_is_not_the_agents_json_is_one_sentence() {
    for (body, says) in [
        (
            "<html><body>Directory listing</body></html>",
            "answered /api/v1/leaks with a web page, not JSON: is a tracer agent listening there?",
        ),
        (
            "hello",
            "answered /api/v1/leaks with something else, not JSON: is a tracer agent listening there?",
        ),
        (
            "{\"unexpected\": true}",
            "answered /api/v1/leaks with JSON this tracer cannot read (is it another version?): missing field",
        ),
    ] {
        let sent = body.to_owned();
        let (url, server) = fake_agent(move |s| {
            let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n{sent}");
        });
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            now_ns: u64,
        }
        let e = get_json::<Needs>(&url, "/api/v1/leaks", limits(5000))
            .expect_err("not the agent's JSON")
            .to_string();
        assert!(e.contains(says), "{e}");
        assert!(!e.contains('\n'), "{e}");
        server.join().expect("server");
    }
}

/// Read one request's head from `s` (up to the blank line), waiting at
/// most 3 s for it.
fn read_head(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    true
}

fn answer(s: &mut TcpStream, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// `tracer top` asks every second: one client keeps one connection for
/// all its requests (each one a socket left in TIME_WAIT otherwise, on
/// the host it watches). The fake agent accepts once and answers three
/// requests on that connection; a second connection would never be
/// answered.
#[test]
fn one_client_asks_over_one_connection() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        for i in 0..3 {
            assert!(read_head(&mut s), "request {i}");
            answer(&mut s, &format!("{{\"n\": {i}}}"));
        }
        l.set_nonblocking(true).expect("nonblocking");
        assert!(l.accept().is_err(), "a second connection was opened");
    });
    let client = AgentClient::new(&url, limits(2000)).expect("client");
    for i in 0..3 {
        let v: serde_json::Value = client
            .get_json("/api/v1/summary")
            .expect("answer")
            .expect("agent");
        assert_eq!(v["n"], i);
    }
    server.join().expect("server");
}

/// The agent closes a kept-open connection just as a request goes out on
/// it: the request is tried once more, on a new connection.
#[test]
fn a_request_the_agent_dropped_on_a_kept_connection_is_tried_again() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        assert!(read_head(&mut s), "first request");
        answer(&mut s, "{}");
        // The second request arrives, and the connection closes unanswered.
        assert!(read_head(&mut s), "second request");
        drop(s);
        let (mut s, _) = l.accept().expect("a new connection");
        assert!(read_head(&mut s), "the second request again");
        answer(&mut s, "{\"again\": true}");
    });
    let client = AgentClient::new(&url, limits(3000)).expect("client");
    assert_eq!(client.get("/x").expect("first").as_deref(), Some("{}"));
    assert_eq!(
        client.get("/x").expect("tried again").as_deref(),
        Some("{\"again\": true}")
    );
    server.join().expect("server");
}

/// The agent closes a connection that stays quiet (its header timeout):
/// the next request opens another, and is not an error.
#[test]
fn a_connection_the_agent_closed_is_opened_again() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let server = std::thread::spawn(move || {
        for i in 0..2 {
            let (mut s, _) = l.accept().expect("accept");
            assert!(read_head(&mut s), "request {i}");
            answer(&mut s, "{}");
            // Closed after one answer, as an idle timeout does.
        }
    });
    let client = AgentClient::new(&url, limits(2000)).expect("client");
    for _ in 0..2 {
        assert_eq!(client.get("/x").expect("answer").as_deref(), Some("{}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    server.join().expect("server");
}

#[test]
fn only_loopback_urls_are_this_host() {
    for local in [
        "http://127.0.0.1:9077",
        "127.0.0.2:9077",
        "http://localhost:9077/",
        "http://[::1]:9077",
        "https://user:pw@127.0.0.1:9077",
    ] {
        assert!(is_local(local), "{local}");
    }
    for remote in [
        "http://10.0.0.7:9077",
        "http://node-3.example:9077",
        "http://[2001:db8::1]:9077",
        "not a url",
    ] {
        assert!(!is_local(remote), "{remote}");
    }
}

#[test]
fn a_url_names_this_host_by_loopback_or_an_address_it_has() {
    for here in [
        "http://127.0.0.1:9077",
        "http://localhost:9077",
        "http://[::1]:9077",
    ] {
        assert!(names_this_host(here), "{here}");
    }
    // TEST-NET addresses, which no interface here has; a proxy's path.
    for elsewhere in [
        "http://192.0.2.7:9077",
        "http://[2001:db8::7]:9077",
        "not a url",
        "http://127.0.0.1:8001/api/v1/namespaces/obs/services/tracer:9077/proxy",
    ] {
        assert!(!names_this_host(elsewhere), "{elsewhere}");
    }
    // A page of the agent's own is no proxy.
    assert!(names_this_host("http://127.0.0.1:9077/metrics"));
    // An address an interface here has: the first non-loopback one.
    if let Some(ip) = interface_addrs().into_iter().find(|ip| !ip.is_loopback()) {
        let url = match ip {
            IpAddr::V4(v4) => format!("http://{v4}:9077"),
            IpAddr::V6(v6) => format!("http://[{v6}]:9077"),
        };
        assert!(names_this_host(&url), "{url}");
    }
    assert!(interface_addrs().contains(&IpAddr::from([127, 0, 0, 1])));
}

/// A user and password in the URL go as basic auth, percent-decoded, and
/// not in the request line; a 401 says what to give.
#[test]
fn the_urls_user_and_password_are_basic_auth() {
    use base64::Engine as _;
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut req = [0u8; 2048];
        let n = s.read(&mut req).expect("request");
        let _ = write!(s, "HTTP/1.0 401 Unauthorized\r\n\r\nUnauthorized\n");
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    let e = http_get(
        &format!("http://prometheus:correct%20horse%40x@{addr}"),
        "/api/v1/leaks",
        limits(5000),
    )
    .expect_err("a 401 is an error")
    .to_string();
    let req = seen.join().expect("server");
    let want = base64::engine::general_purpose::STANDARD.encode("prometheus:correct horse@x");
    assert!(
        req.to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            want.to_ascii_lowercase()
        )),
        "{req}"
    );
    assert!(req.starts_with("GET /api/v1/leaks HTTP/1.1\r\n"), "{req}");
    assert!(
        e.contains("refused the user and password given (HTTP 401)")
            && e.contains(&format!("http://USER@{addr}"))
            && e.contains("TRACER_AGENT_PASSWORD")
            && !e.contains("horse"),
        "{e}"
    );
}

/// The flags: an https:// agent's trust, and the contradiction.
#[test]
fn agent_flags_say_whom_to_trust() {
    let flags = AgentFlags {
        agent_ca: Some("/nonexistent/ca.crt".into()),
        agent_insecure: true,
        ..AgentFlags::default()
    };
    let e = flags.client().expect_err("both").to_string();
    assert!(e.contains("contradict"), "{e}");
    // An http:// agent reads no certificate, even a missing file.
    let flags = AgentFlags {
        agent_ca: Some("/nonexistent/ca.crt".into()),
        ..AgentFlags::default()
    };
    assert!(flags.client().is_ok());
    let flags = AgentFlags {
        agent: Some("https://127.0.0.1:9077".into()),
        ..flags
    };
    let e = format!("{:#}", flags.client().expect_err("no such file"));
    assert!(
        e.starts_with("--agent-ca: /nonexistent/ca.crt: cannot be read"),
        "{e}"
    );
    // A file with no certificate in it.
    let dir = std::env::temp_dir().join(format!("tracer-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let flags = AgentFlags {
        agent_ca: Some(empty.clone()),
        ..flags
    };
    let e = format!("{:#}", flags.client().expect_err("no certificate"));
    assert!(e.contains("holds no PEM certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each way a handshake fails is one sentence that says what to do.
#[test]
fn tls_failures_say_what_to_give() {
    use rustls::{CertificateError as C, Error as E};
    let url = "https://127.0.0.1:9077";
    let host = "127.0.0.1:9077";
    let say = |e: E| tls_sentence(&e, url, host);
    assert!(say(E::InvalidCertificate(C::UnknownIssuer)).contains("give --agent-ca FILE"));
    assert!(
        say(E::InvalidCertificate(C::NotValidForName))
            .contains("is not made out to 127.0.0.1:9077")
    );
    assert!(say(E::InvalidCertificate(C::Expired)).contains("has expired"));
    // A self-signed certificate with CA:TRUE given as --agent-ca.
    #[derive(Debug)]
    struct CaUsedAsEndEntity;
    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CaUsedAsEndEntity")
        }
    }
    impl std::error::Error for CaUsedAsEndEntity {}
    let webpki = rustls::OtherError(std::sync::Arc::new(CaUsedAsEndEntity));
    assert!(say(E::InvalidCertificate(C::Other(webpki))).contains("presents a CA certificate"));
    assert!(
        say(E::AlertReceived(
            rustls::AlertDescription::CertificateRequired
        ))
        .contains("client certificate")
    );
    assert!(
        say(E::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
        .contains("ask for http://127.0.0.1:9077")
    );
}

/// A URL that names a user and no password gets one, percent-encoded; a
/// URL with a password, or without a user, is left as it is.
#[test]
fn a_password_is_asked_for_a_user_without_one() {
    let given = |url: &str| {
        with_password_from(url, |user, host| {
            assert_eq!((user, host), ("prometheus", "127.0.0.1:9077"));
            Ok(Some("correct horse/@#".to_owned()))
        })
        .expect("url")
    };
    assert_eq!(
        given("https://prometheus@127.0.0.1:9077/base"),
        "https://prometheus:correct%20horse%2F%40%23@127.0.0.1:9077/base"
    );
    let untouched =
        |url: &str| with_password_from(url, |_, _| panic!("asked for {url}")).expect("url");
    for url in [
        "https://prometheus:given@127.0.0.1:9077",
        "https://127.0.0.1:9077",
        "http://127.0.0.1:9077/x?to=a@b",
    ] {
        assert_eq!(untouched(url), url);
    }
    // No terminal and no variable: as given (the agent's 401 says the rest).
    let none = with_password_from("https://prometheus@127.0.0.1:9077", |_, _| Ok(None));
    assert_eq!(none.expect("url"), "https://prometheus@127.0.0.1:9077");
}

/// A raw `/`, `?` or `#` in a password would end the host early: refused,
/// and the password is in no message.
#[test]
fn a_raw_slash_in_a_password_is_refused_without_showing_it() {
    for url in [
        "https://prometheus:se/cret@tracer:9077",
        "https://prometheus:se?cret@tracer:9077",
        "https://prometheus:se#cret@tracer:9077",
    ] {
        let e = format!("{:#}", AgentClient::new(url, limits(1000)).expect_err(url));
        assert!(e.contains("percent-encoded (%2F, %3F, %23)"), "{e}");
        assert!(!e.contains("cret"), "{e}");
    }
    assert!(AgentClient::new("https://prometheus:se%2Fcret@tracer:9077", limits(1000)).is_ok());
}
