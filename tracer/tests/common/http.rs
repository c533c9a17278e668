//! The tests' one HTTP client, on `ureq` (blocking, small, kept up to date
//! upstream), built without its TLS and gzip features: the agent serves
//! plain HTTP on loopback, and a test that asks for gzip reads the body as
//! sent. Every status is an answer, not an error, so tests can assert on
//! 4xx and 5xx codes; None means nothing (complete) answered in time.

use std::{net::SocketAddr, time::Duration};

/// An HTTP answer with its head, for tests that read headers or bytes.
pub struct Reply {
    pub code: u16,
    /// Status line and headers, one per line.
    pub head: String,
    /// The body as sent (not decompressed).
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// GET `path` with extra request headers, waiting at most `timeout`
/// for the whole answer; None when nothing (complete) answers in time.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Option<Reply> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().ok()?;
    let mut head = format!("{:?} {}\n", resp.version(), resp.status());
    for (k, v) in resp.headers() {
        head.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("(not text)")));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .ok()?;
    Some(Reply {
        code: resp.status().as_u16(),
        head,
        body,
    })
}

/// GET `path`: (status, body), or None when nothing answers in 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = http_get_with(addr, path, &[], Duration::from_secs(10))?;
    Some((r.code, String::from_utf8_lossy(&r.body).into_owned()))
}
