//! The HTTP client `tracer leaks` asks the agent with: one `GET` over plain
//! HTTP/1.0, under an overall deadline and a cap on the response size.
//!
//! A slow or hostile server cannot keep the command hung or make it grow
//! without bound: every read waits at most for what is left of the deadline
//! (one byte every 0.5 s does not reset it), and the reply is refused once
//! it passes the cap. Both failures are said in words.
use std::{
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::config::{Bounds, parse_duration_within};

/// How long a connection attempt may take before "no agent" is concluded.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The default `--timeout`: the whole request, connection to last byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest response accepted: 64 MiB (a report of ~100,000 flags).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// `tracer leaks --timeout`: at least 100 ms, at most an hour.
pub const TIMEOUT: Bounds = Bounds {
    min: Duration::from_millis(100),
    max: Duration::from_secs(3600),
    min_text: "100ms",
    max_text: "1h",
};

/// Parse `--timeout` ([`TIMEOUT`]).
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, TIMEOUT)
}

/// What one request may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From the connection attempt to the last byte of the response.
    pub timeout: Duration,
    /// Bytes of response (head and body) accepted.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            max_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

/// Why the agent's answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The deadline passed before the response was complete.
    #[error(
        "asking {url} for {path} timed out after {secs} s (the whole request; raise it with --timeout)",
        secs = fmt_secs(*.timeout)
    )]
    TimedOut {
        /// The agent's URL.
        url: String,
        /// The path asked for.
        path: String,
        /// The deadline in force.
        timeout: Duration,
    },
    /// The response passed the size cap.
    #[error(
        "the response from {url} for {path} was larger than {mib} MiB; refused",
        mib = .max_bytes / (1 << 20)
    )]
    TooLarge {
        /// The agent's URL.
        url: String,
        /// The path asked for.
        path: String,
        /// The cap in force.
        max_bytes: usize,
    },
}

/// Seconds for people: `10`, `1.5`.
fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{}", (s * 1000.0).round() / 1000.0)
    }
}

/// GET `path` under an `http://host:port` URL within `limits`. `Ok(None)`
/// when nothing accepts the connection (no agent); an error when something
/// answers badly, too slowly or too much.
pub fn http_get(url: &str, path: &str, limits: Limits) -> anyhow::Result<Option<String>> {
    let start = Instant::now();
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--agent {url:?}: only http://HOST:PORT URLs are supported"))?;
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<_> = with_port
        .to_socket_addrs()
        .with_context(|| format!("--agent {url:?}: cannot resolve {authority:?}"))?
        .collect();
    let full_path = format!("/{}{path}", base.trim_end_matches('/')).replace("//", "/");
    let timed_out = || ClientError::TimedOut {
        url: url.to_owned(),
        path: full_path.clone(),
        timeout: limits.timeout,
    };
    let deadline = start + limits.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let Some(mut stream) = addrs.iter().find_map(|a| {
        let wait = left()?.min(CONNECT_TIMEOUT);
        TcpStream::connect_timeout(a, wait).ok()
    }) else {
        return Ok(None);
    };
    let request = format!(
        "GET {full_path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n"
    );
    let asking = || format!("asking the agent at {url} for {full_path}");
    let wait = left().ok_or_else(timed_out)?;
    stream
        .set_write_timeout(Some(wait))
        .context("setting a write timeout")?;
    match stream.write_all(request.as_bytes()) {
        Err(e) if is_timeout(&e) => return Err(timed_out().into()),
        other => other.with_context(asking)?,
    }
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let wait = left().ok_or_else(timed_out)?;
        stream
            .set_read_timeout(Some(wait))
            .context("setting a read timeout")?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(timed_out().into()),
            Err(e) => return Err(e).with_context(asking),
        };
        if reply.len() + n > limits.max_bytes {
            return Err(ClientError::TooLarge {
                url: url.to_owned(),
                path: full_path,
                max_bytes: limits.max_bytes,
            }
            .into());
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .with_context(|| format!("the agent at {url} sent no complete HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        anyhow::bail!(
            "the agent at {url} answered {full_path} with HTTP {status}: {}",
            body.trim()
        );
    }
    Ok(Some(body.to_owned()))
}

/// A socket timeout: `EAGAIN` ("Resource temporarily unavailable") on
/// Linux, `ETIMEDOUT` elsewhere.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests;
