//! Basic auth against `basic_auth_users` (user -> bcrypt hash), as
//! node_exporter does it, on every path.
//!
//! bcrypt is slow on purpose (about 50-100 ms at cost 10), so:
//! - a password that matched once is remembered, as a salted SHA-256 of
//!   user and password (never the password itself), and a Prometheus
//!   scraping every few seconds pays for bcrypt once per agent start;
//! - each check runs on a blocking thread, one at a time, so a flood of
//!   wrong passwords takes at most one core and never the server's own
//!   thread: `/metrics` for a known password stays quick;
//! - at most [`MAX_WAITING`] checks are pending (one running, the rest
//!   waiting their turn); more get a 503 at once instead of holding their
//!   connection (and the connection cap).
//!
//! An unknown user is checked against a fixed hash all the same, so the
//! time taken does not tell which users exist.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{body::Body, response::Response};
use base64::Engine as _;
use hyper::{StatusCode, header};
use tokio::sync::Semaphore;

/// Checks that may be pending at once, the running one included; more
/// get a 503.
pub const MAX_WAITING: usize = 16;

/// Remembered matches; the oldest is forgotten beyond this.
const REMEMBERED: usize = 64;

/// A hash to check unknown users against (cost 10, like the usual ones).
const UNKNOWN_USER_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// Why a connection or request was refused: the label of
/// `tracer_http_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No basic auth credentials, or an unreadable `Authorization` header.
    Missing,
    /// An unknown user, or a password that does not match.
    Wrong,
    /// Too many password checks waiting: answered 503 without checking.
    Busy,
    /// The TLS handshake failed or timed out (a plain-HTTP client, an
    /// untrusted or missing client certificate).
    Tls,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 4] = [
        Refusal::Missing,
        Refusal::Wrong,
        Refusal::Busy,
        Refusal::Tls,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Wrong => "wrong",
            Refusal::Busy => "busy",
            Refusal::Tls => "tls",
        }
    }
}

/// The answer to a refused request: 401 asking for basic auth, or 503
/// when too many checks wait.
pub fn refusal_response(why: Refusal) -> Response {
    let r = Response::builder();
    let r = if why == Refusal::Busy {
        r.status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::RETRY_AFTER, "1")
    } else {
        r.status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"tracer\"")
    };
    let body = if why == Refusal::Busy {
        "too many password checks at once; retry\n"
    } else {
        "Unauthorized\n"
    };
    r.header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// `basic_auth_users`, checked, and the matches remembered.
pub struct Users {
    hashes: BTreeMap<String, String>,
    salt: [u8; 32],
    remembered: Mutex<VecDeque<[u8; 32]>>,
    bcrypt: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Users {
    /// Check every hash: a bad one is an error naming its user.
    pub fn new(hashes: BTreeMap<String, String>) -> anyhow::Result<Users> {
        if hashes.is_empty() {
            anyhow::bail!(
                "key basic_auth_users holds no user: give `user: bcrypt-hash` lines, or remove it"
            );
        }
        for (user, hash) in &hashes {
            let why = match hash.parse::<bcrypt::HashParts>() {
                Ok(p) if (4..=31).contains(&p.get_cost()) => continue,
                Ok(p) => format!("its cost {} is outside 4 to 31", p.get_cost()),
                Err(e) => e.to_string(),
            };
            anyhow::bail!(
                "key basic_auth_users.{user}: not a bcrypt hash such as `htpasswd -nbBC 10 {user} \
                 PASSWORD` prints after the colon ({why})"
            );
        }
        let mut salt = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
        Ok(Users {
            hashes,
            salt,
            remembered: Mutex::new(VecDeque::new()),
            bcrypt: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Whether `authorization` holds a known user's password.
    pub async fn check(&self, authorization: Option<&header::HeaderValue>) -> Result<(), Refusal> {
        let (user, password) = authorization
            .and_then(|v| credentials(v.as_bytes()))
            .ok_or(Refusal::Missing)?;
        let digest = self.digest(&user, &password);
        if self.remembers(&digest) {
            return Ok(());
        }
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| self.hashes.get(u));
        let hash = known.map_or(UNKNOWN_USER_HASH, String::as_str).to_owned();
        let matched = {
            let _turn = Waiting::enter(&self.waiting).ok_or(Refusal::Busy)?;
            let permit = self
                .bcrypt
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Refusal::Busy)?;
            // The permit goes with the check: a client that leaves does
            // not let a second bcrypt start beside it.
            tokio::task::spawn_blocking(move || {
                let matched = bcrypt::verify(password, &hash).unwrap_or(false);
                drop(permit);
                matched
            })
            .await
            .unwrap_or(false)
        };
        if !(matched && known.is_some()) {
            return Err(Refusal::Wrong);
        }
        let mut r = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if !r.contains(&digest) {
            if r.len() >= REMEMBERED {
                r.pop_front();
            }
            r.push_back(digest);
        }
        Ok(())
    }

    /// Salted SHA-256 of the user and password.
    pub(super) fn digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user);
        ctx.update(password);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    pub(super) fn remembers(&self, digest: &[u8; 32]) -> bool {
        let r = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        r.contains(digest)
    }
}

/// A check counted among those waiting while alive.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// `None` when [`MAX_WAITING`] already wait.
    fn enter(n: &'a AtomicUsize) -> Option<Waiting<'a>> {
        if n.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(n))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// User and password of a `Basic` authorization header.
fn credentials(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_basic_headers_only() {
        assert_eq!(
            credentials(b"Basic YWxpY2U6czNjcjN0OjE="),
            Some((b"alice".to_vec(), b"s3cr3t:1".to_vec()))
        );
        assert_eq!(
            credentials(b"basic  YWxpY2U6"),
            Some((b"alice".to_vec(), Vec::new()))
        );
        assert_eq!(credentials(b"Bearer YWxpY2U6czNjcjN0"), None);
        assert_eq!(credentials(b"Basic !!!"), None);
        assert_eq!(credentials(b"Basic YWxpY2U="), None);
        assert_eq!(credentials(b"Basic"), None);
    }
}
