//! One HTTP client, on `ureq`. Every status is an answer, not an error, so
//! callers can assert on 4xx and 5xx codes; an error means nothing
//! (complete) answered in time.
use std::{net::SocketAddr, time::Duration};

/// An HTTP answer with its head, for callers that read headers or bytes.
pub struct Reply {
    /// The status code.
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

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `http://ADDR/PATH` with extra request headers, waiting at most
/// `timeout` for the whole answer.
pub fn fetch(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Reply, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call()?;
    let mut head = format!("{:?} {}\n", resp.version(), resp.status());
    for (k, v) in resp.headers() {
        head.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("(not text)")));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()?;
    Ok(Reply {
        code: resp.status().as_u16(),
        head,
        body,
    })
}

/// GET `path`: (status, body as text), waiting at most 10 s.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), ureq::Error> {
    let r = fetch(addr, path, &[], Duration::from_secs(10))?;
    Ok((r.code, r.text()))
}
