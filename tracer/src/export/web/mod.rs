//! TLS and basic auth for the HTTP server, set by a web config file in
//! node_exporter's format (`tracer run --web-config FILE`,
//! docs/security.md). This module reads and checks the file at start, so
//! that anything wrong in it is one sentence naming the file and the key
//! before the agent loads a program; `tls` turns `tls_server_config`
//! into a rustls server config, and `auth` checks each request's basic
//! auth against `basic_auth_users`. [`Gate`] is what the server
//! (`serve.rs`) applies to every connection and request.
//!
//! The YAML is read with `serde_norway`, the maintained fork of the
//! archived `serde_yaml` (same API, same libyaml-derived parser).
mod auth;
mod tls;

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use serde::Deserialize;

pub use self::auth::{Refusal, Users, refusal_response};
pub(crate) use self::tls::certificates;

/// The most a web config file may hold: 1 MiB, like `--config`.
const MAX_WEB_CONFIG_BYTES: u64 = 1 << 20;

/// The file, with node_exporter's keys. Unknown keys are errors (serde
/// names them); `http_server_config` and the like are not supported.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map of tls_server_config and basic_auth_users"
)]
struct WebFile {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// `tls_server_config`: the keys tracer supports of node_exporter's.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map of cert_file, key_file and the like"
)]
struct TlsFile {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// What the server applies to each connection and request, as the web
/// config asks, and the count of what it refuses.
pub struct Gate {
    /// Handshakes each connection, when `tls_server_config` is given.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Checks each request's credentials, when `basic_auth_users` is given.
    pub users: Option<Users>,
    /// Counts each refusal (`tracer_http_auth_failures_total`).
    counter: Arc<dyn Fn(Refusal) + Send + Sync>,
}

impl Gate {
    /// Read and check the web config file at `path`: one error naming the
    /// file and the key when anything in it is wrong or unreadable.
    pub fn load(path: &Path) -> anyhow::Result<Gate> {
        let name = || format!("web config file {}", path.display());
        let text = read_bounded(path).with_context(name)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let gate = Gate::parse(&text, dir).with_context(name)?;
        if gate.tls.is_none() {
            tracing::warn!(
                event = "auth_without_tls",
                "{} sets basic_auth_users without tls_server_config: \
                 passwords cross the network in the clear",
                path.display()
            );
        }
        Ok(gate)
    }

    /// Parse the YAML `text`; relative paths in it are taken from `dir`,
    /// as node_exporter does.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<Gate> {
        let file: WebFile = if text.trim().is_empty() {
            WebFile::default()
        } else {
            serde_norway::from_str(text)
                .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace('\n', "; ")))?
        };
        if file.tls_server_config.is_none() && file.basic_auth_users.is_none() {
            anyhow::bail!(
                "holds neither tls_server_config nor basic_auth_users: give at least one, \
                 or leave out --web-config to serve plain HTTP"
            );
        }
        let tls = file
            .tls_server_config
            .as_ref()
            .map(|t| tls::acceptor(t, dir))
            .transpose()?;
        let users = file.basic_auth_users.map(Users::new).transpose()?;
        Ok(Gate {
            tls,
            users,
            counter: Arc::new(|_| {}),
        })
    }

    /// Count each refusal with `counter`.
    pub fn counting(mut self, counter: impl Fn(Refusal) + Send + Sync + 'static) -> Gate {
        self.counter = Arc::new(counter);
        self
    }

    /// Count a refusal.
    pub fn refused(&self, why: Refusal) {
        (self.counter)(why);
    }

    /// Whether a request with these headers may go on: `Err` holds the
    /// answer to give instead (401, or 503 when too many wait for a
    /// password check), already counted.
    pub async fn admit(&self, headers: &hyper::HeaderMap) -> Result<(), axum::response::Response> {
        let Some(users) = &self.users else {
            return Ok(());
        };
        let header = headers.get(hyper::header::AUTHORIZATION);
        users.check(header).await.map_err(|why| {
            self.refused(why);
            refusal_response(why)
        })
    }

    /// The scheme URLs to this server take: `https` or `http`.
    pub fn scheme(gate: Option<&Gate>) -> &'static str {
        if gate.is_some_and(|g| g.tls.is_some()) {
            "https"
        } else {
            "http"
        }
    }
}

/// `path` as the file names it, or taken from `dir` when relative.
fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

/// Read at most [`MAX_WEB_CONFIG_BYTES`] of a regular file, opened without
/// blocking, so a FIFO is refused rather than waited on.
fn read_bounded(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .context("cannot be opened")?;
    let meta = file.metadata().context("cannot be inspected")?;
    if !meta.is_file() {
        anyhow::bail!("is not a regular file; give the path of a YAML file");
    }
    let mut bytes = Vec::new();
    file.take(MAX_WEB_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("cannot be read")?;
    if bytes.len() as u64 > MAX_WEB_CONFIG_BYTES {
        anyhow::bail!(
            "is over the {} KiB a web config file may hold; is it the right file?",
            MAX_WEB_CONFIG_BYTES >> 10
        );
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("is not UTF-8 text"))
}

#[cfg(test)]
mod tests;
