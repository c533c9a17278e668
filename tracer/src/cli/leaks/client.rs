//! The HTTP client `tracer leaks` (and `tracer top`, `tracer port`) asks the
//! agent with: one `GET` over HTTP, or HTTPS for an agent with a
//! `--web-config`, on `ureq`, under an overall deadline and a cap on the
//! response size. The flags that say how to reach the agent are
//! [`AgentFlags`], the same in the three commands.
//!
//! A slow or hostile server cannot keep the command hung or make it grow
//! without bound: every read waits at most for what is left of the deadline
//! (one byte every 0.5 s does not reset it), and the reply is refused once
//! it passes the cap. Both failures are said in words.
use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::config::{Bounds, parse_duration_within};

/// The agent asked when `--agent` is not given.
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:9077";

/// How to reach the agent: the flags of `tracer leaks`, `tracer top` and
/// `tracer port`.
#[derive(Debug, Default, Clone, Args)]
pub struct AgentFlags {
    /// The agent's URL: http://HOST:PORT, or https:// for an agent with a
    /// --web-config, with user:password@ before the host for its basic
    /// auth [default: http://127.0.0.1:9077].
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,
    /// Give up on the agent after this long, connection to last byte; a
    /// connection not accepted within 0.5 s means no agent [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,
    /// With https://, trust the certificates in this PEM file (the CA that
    /// signed the agent's certificate) instead of the system's CA bundle.
    #[arg(long, value_name = "FILE")]
    pub agent_ca: Option<PathBuf>,
    /// With https://, accept whatever certificate the agent presents: the
    /// connection is encrypted, but to whoever answers.
    #[arg(long)]
    pub agent_insecure: bool,
}

impl AgentFlags {
    /// The URL asked.
    pub fn url(&self) -> &str {
        self.agent.as_deref().unwrap_or(DEFAULT_AGENT)
    }

    /// What one request may take.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            ..Limits::default()
        }
    }

    /// A client of the agent, as the flags say.
    pub fn client(&self) -> anyhow::Result<AgentClient> {
        if self.agent_ca.is_some() && self.agent_insecure {
            anyhow::bail!(
                "--agent-ca and --agent-insecure contradict each other: give one (--agent-ca checks \
                 the agent's certificate against the file, --agent-insecure checks nothing)"
            );
        }
        let trust = match (&self.agent_ca, self.agent_insecure) {
            (Some(file), _) => Trust::File(file.clone()),
            (None, true) => Trust::Anyone,
            (None, false) => Trust::System,
        };
        let url = with_password(self.url())?;
        AgentClient::with_trust(&url, self.limits(), &trust)
    }
}

/// The variable a password may come from, for a URL that names a user
/// and no password: a command line is seen by every user of the host (and
/// of a pod with `hostPID`).
pub const PASSWORD_VAR: &str = "TRACER_AGENT_PASSWORD";

/// `url`, with a password when it names a user and none: from
/// [`PASSWORD_VAR`], else asked on the terminal (not echoed); as given
/// when neither is there (the agent's 401 then says what to give).
fn with_password(url: &str) -> anyhow::Result<String> {
    with_password_from(url, |user, host| match std::env::var(PASSWORD_VAR) {
        Ok(p) => Ok(Some(p)),
        Err(_) => ask_password(&format!("password of {user} at {host}: ")),
    })
}

/// [`with_password`], the password from `get(user, host)`.
fn with_password_from(
    url: &str,
    get: impl FnOnce(&str, &str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<String> {
    let (Some(scheme), authority, tail) = split_host(url) else {
        return Ok(url.to_owned());
    };
    let Some((user, host)) = authority.rsplit_once('@') else {
        return Ok(url.to_owned());
    };
    if user.contains(':') || user.is_empty() {
        return Ok(url.to_owned());
    }
    let Some(password) = get(user, host)? else {
        return Ok(url.to_owned());
    };
    let encoded = percent_encoding::utf8_percent_encode(&password, USERINFO).to_string();
    Ok(format!("{scheme}://{user}:{encoded}@{host}{tail}"))
}

/// `url` cut where its host part ends (at the first `/`, `?` or `#` after
/// the scheme): the scheme (`None` without `://`), the host part with any
/// user information, and what follows it.
fn split_host(url: &str) -> (Option<&str>, &str, &str) {
    let (scheme, rest) = url
        .split_once("://")
        .map_or((None, url), |(s, r)| (Some(s), r));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (scheme, &rest[..end], &rest[end..])
}

/// What a password in a URL's user information cannot hold raw.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A password typed on the terminal, not echoed; `None` without one.
fn ask_password(prompt: &str) -> anyhow::Result<Option<String>> {
    use std::io::{BufRead as _, Write as _};
    use std::os::fd::AsRawFd as _;
    let Ok(tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return Ok(None);
    };
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a termios to fill.
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        return Ok(None);
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    // SAFETY: as above; restored below whatever the read gives.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    // SAFETY: as above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    let _ = writeln!(out);
    read.context("reading the password from the terminal")?;
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_owned()))
}

/// Whom an https:// agent is taken to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// A certificate that chains to the system's CA bundle.
    System,
    /// One that chains to a certificate of this PEM file (`--agent-ca`).
    File(PathBuf),
    /// Any certificate (`--agent-insecure`).
    Anyone,
}

/// Where distributions keep their CA bundle, as Go's `crypto/x509` looks
/// for it: Debian and Ubuntu, RHEL and Fedora, openSUSE, Alpine. The
/// `SSL_CERT_FILE` variable, when set, comes first.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Refuse an `--agent` URL whose `@` comes after the host: a raw `/`, `?`
/// or `#` in its password, which would end the host early, send the rest
/// of the password to another host as a path, and show it in messages.
/// The refusal does not repeat the URL.
fn check_userinfo(url: &str) -> anyhow::Result<()> {
    if split_host(url).2.contains('@') {
        anyhow::bail!(
            "--agent: an '@' after the host: a '/', '?' or '#' in a user or password goes \
             percent-encoded (%2F, %3F, %23), as a space does (%20)"
        );
    }
    Ok(())
}

/// The TLS settings of a client of `url` that trusts `trust`. For an
/// http:// URL no certificate is read: TLS is never used.
fn tls_config(url: &str, trust: &Trust) -> anyhow::Result<TlsConfig> {
    let roots = match trust {
        _ if !url.starts_with("https://") || *trust == Trust::Anyone => Vec::new(),
        Trust::File(file) => pem(file).context("--agent-ca")?,
        _ => system_roots()?,
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        // Never the built-in WebPki roots: this build has none.
        .root_certs(RootCerts::new_with_certs(&roots))
        .disable_verification(*trust == Trust::Anyone)
        .build())
}

/// The certificates of the system's CA bundle: `SSL_CERT_FILE` alone when
/// it is set (a bad one is said, not passed over for a wider bundle), else
/// the first bundle of [`CA_BUNDLES`] there is.
fn system_roots() -> anyhow::Result<Vec<Certificate<'static>>> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from) {
        return pem(&file).context("SSL_CERT_FILE");
    }
    for file in CA_BUNDLES.iter().map(PathBuf::from) {
        if let Ok(certs) = pem(&file) {
            return Ok(certs);
        }
    }
    anyhow::bail!(
        "no CA bundle on this host to check the agent's certificate with (SSL_CERT_FILE, {}): \
         give --agent-ca FILE, the CA that signed it",
        CA_BUNDLES.join(", ")
    )
}

/// The certificates of the PEM file `file` (at least one), read as the
/// agent reads its own ([`crate::export::web::certificates`]).
fn pem(file: &Path) -> anyhow::Result<Vec<Certificate<'static>>> {
    Ok(crate::export::web::certificates(file)?
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect())
}

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
    /// The connection closed before the response was complete: the agent
    /// stopped, or something between dropped it.
    #[error("the agent at {url} closed the connection before answering {path}")]
    Dropped {
        /// The agent's URL.
        url: String,
        /// The path asked for.
        path: String,
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

/// One agent asked over a connection kept open between requests (HTTP
/// keep-alive, which the agent serves): a view that asks every second
/// would otherwise leave a TIME_WAIT socket of its own per request on the
/// host it watches. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct AgentClient {
    url: String,
    limits: Limits,
    agent: ureq::Agent,
    /// A request has been answered: the next may go over a kept-open
    /// connection, which the agent may close at any moment.
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AgentClient {
    /// A client of the agent at `url` (`http://HOST:PORT`, perhaps with a
    /// proxy's path); each request within `limits`. An https:// agent's
    /// certificate must chain to the system's CA bundle.
    pub fn new(url: &str, limits: Limits) -> anyhow::Result<AgentClient> {
        AgentClient::with_trust(url, limits, &Trust::System)
    }

    /// [`AgentClient::new`], an https:// agent taken to be whom `trust`
    /// says.
    pub fn with_trust(url: &str, limits: Limits, trust: &Trust) -> anyhow::Result<AgentClient> {
        check_userinfo(url)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // One deadline for each whole request, connection to last
            // byte: a byte every 0.5 s does not reset it.
            .timeout_global(Some(limits.timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(limits.timeout)))
            .tls_config(tls_config(url, trust)?)
            .build()
            .into();
        Ok(AgentClient {
            url: url.to_owned(),
            limits,
            agent,
            answered: Default::default(),
        })
    }

    /// Its URL as it may be shown: without a password.
    pub fn shown_url(&self) -> String {
        shown(&self.url)
    }

    /// GET `path`. `Ok(None)` when nothing accepts the connection (no
    /// agent); an error when something answers badly, too slowly or too
    /// much.
    ///
    /// A kept-open connection the agent closed as the request went out
    /// (its idle timeout, or room made under its connection cap) is tried
    /// again once, on a new connection: a GET may be.
    pub fn get(&self, path: &str) -> anyhow::Result<Option<String>> {
        use std::sync::atomic::Ordering::Relaxed;
        let got = match get_with(&self.agent, &self.url, path, self.limits) {
            Err(e)
                if self.answered.load(Relaxed)
                    && matches!(e.downcast_ref(), Some(ClientError::Dropped { .. })) =>
            {
                get_with(&self.agent, &self.url, path, self.limits)
            }
            got => got,
        };
        if matches!(got, Ok(Some(_))) {
            self.answered.store(true, Relaxed);
        }
        got
    }

    /// GET `path` and read its JSON as a `T`; `Ok(None)` when no agent
    /// answers. An answer that is no agent's (a web page, not JSON) or that
    /// this build cannot read (an agent of another version) is one sentence.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<Option<T>> {
        let Some(body) = self.get(path)? else {
            return Ok(None);
        };
        parse_json(&self.url, path, &body).map(Some)
    }
}

/// GET `path` under an `http://host:port` URL within `limits`, on a
/// connection of its own ([`AgentClient::get`]).
pub fn http_get(agent_url: &str, path: &str, limits: Limits) -> anyhow::Result<Option<String>> {
    AgentClient::new(agent_url, limits)?.get(path)
}

fn get_with(
    agent: &ureq::Agent,
    agent_url: &str,
    path: &str,
    limits: Limits,
) -> anyhow::Result<Option<String>> {
    // Every message names the agent without the password a URL may carry.
    let url = &shown(agent_url);
    let (scheme, rest) = agent_url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .with_context(|| format!("--agent {url:?}: give an http:// or https:// URL (http://HOST:PORT, https:// for an agent with a --web-config, or a proxy's path)"))?;
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let full_path = format!("/{}{path}", base_of(base)).replace("//", "/");
    let timed_out = || ClientError::TimedOut {
        url: url.clone(),
        path: full_path.clone(),
        timeout: limits.timeout,
    };
    let too_large = || ClientError::TooLarge {
        url: url.clone(),
        path: full_path.clone(),
        max_bytes: limits.max_bytes,
    };
    let dropped = || ClientError::Dropped {
        url: url.clone(),
        path: full_path.clone(),
    };
    let asking = || format!("asking the agent at {url} for {full_path}");
    // The user information goes as basic auth, decoded: ureq would send
    // it as written, `%20` for a space.
    let (userinfo, host) = authority
        .rsplit_once('@')
        .map_or((None, authority), |(u, h)| (Some(u), h));
    let mut request = agent
        .get(format!("{scheme}://{host}{full_path}"))
        .header("Accept", "application/json");
    if let Some(userinfo) = userinfo {
        request = request.header("Authorization", basic_auth(userinfo));
    }
    let answer = request.call();
    let mut resp = match answer {
        Ok(r) => r,
        Err(e) if no_agent(&e) => return Ok(None),
        Err(ureq::Error::Timeout(_)) => return Err(timed_out().into()),
        Err(e) if dropped_mid_way(&e) => return Err(dropped().into()),
        Err(ureq::Error::HostNotFound) => {
            anyhow::bail!("--agent {url:?}: cannot resolve {host:?}")
        }
        // Something answered, not in HTTP: most often an agent serving
        // HTTPS (--web-config), whose TLS alert this reads.
        Err(ureq::Error::Protocol(_)) if scheme == "http" => anyhow::bail!(
            "the server at {url} does not answer in plain HTTP: an agent with a --web-config \
             serves HTTPS, so ask for {}",
            url.replacen("http://", "https://", 1)
        ),
        Err(e) => match tls_failure(&e) {
            Some(failure) => anyhow::bail!("{}", tls_sentence(failure, url, host)),
            None => return Err(e).with_context(asking),
        },
    };
    let status = resp.status().as_u16();
    // The head is capped by the client (64 KiB); the body here.
    let body = match resp
        .body_mut()
        .with_config()
        .limit(limits.max_bytes as u64)
        .read_to_vec()
    {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(ureq::Error::BodyExceedsLimit(_)) => return Err(too_large().into()),
        Err(ureq::Error::Timeout(_)) => return Err(timed_out().into()),
        Err(e) if dropped_mid_way(&e) => return Err(dropped().into()),
        Err(e) => return Err(e).with_context(asking),
    };
    // Every agent serves its API paths: a 404 is another server's answer
    // (Prometheus's, node_exporter's), or a proxy's path that leads nowhere.
    if status == 404 {
        anyhow::bail!(
            "the server at {url} has no {full_path} (HTTP 404): is a tracer agent listening there?"
        );
    }
    if status == 401 {
        let given = match userinfo {
            Some(u) if u.contains(':') => "refused the user and password given",
            Some(_) => "wants a password, and none was given",
            None => "wants a user and password",
        };
        anyhow::bail!(
            "the agent at {url} {given} (HTTP 401): name the user of its web config in the URL, \
             {scheme}://USER@{host}, and give the password on the terminal or in \
             {PASSWORD_VAR}"
        );
    }
    if status != 200 {
        anyhow::bail!(
            "the agent at {url} answered {full_path} with HTTP {status}{}",
            refusal(&body)
        );
    }
    Ok(Some(body))
}

/// The agent's base path in a URL's path: what is left when the URL was
/// pasted from one of the agent's own pages (its `/metrics`, `/healthz`
/// or an `/api/v1/...` answer, with its query), as the agent's log names
/// the first. Only a whole page at the end goes: a path before it (an
/// agent behind a proxy, `kubectl proxy`'s `/api/v1/namespaces/...`) is
/// kept.
fn base_of(path: &str) -> &str {
    const PAGES: [&str; 5] = [
        "metrics",
        "healthz",
        "api/v1/leaks",
        "api/v1/sockets",
        "api/v1/summary",
    ];
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    PAGES
        .iter()
        .find_map(|page| {
            let before = path.strip_suffix(page)?;
            (before.is_empty() || before.ends_with('/')).then_some(before)
        })
        .unwrap_or(path)
        .trim_end_matches('/')
}

/// [`AgentClient::get_json`] on a connection of its own.
pub fn get_json<T: serde::de::DeserializeOwned>(
    agent_url: &str,
    path: &str,
    limits: Limits,
) -> anyhow::Result<Option<T>> {
    AgentClient::new(agent_url, limits)?.get_json(path)
}

/// `body`, the agent's answer to `path`, as a `T`.
fn parse_json<T: serde::de::DeserializeOwned>(
    agent_url: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<T> {
    let url = shown(agent_url);
    match serde_json::from_str(body) {
        Ok(v) => Ok(v),
        Err(_) if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() => {
            anyhow::bail!(
                "the server at {url} answered {path} with {}, not JSON: is a tracer agent listening there?",
                if body.trim_start().starts_with('<') {
                    "a web page"
                } else {
                    "something else"
                }
            )
        }
        Err(e) => anyhow::bail!(
            "the agent at {url} answered {path} with JSON this tracer cannot read (is it another version?): {e}"
        ),
    }
}

/// True when `url` names this host: `localhost` or a loopback address
/// (with or without a scheme). Anything else may be another machine.
pub fn is_local(url: &str) -> bool {
    match host_of(url).as_deref() {
        Some("localhost") => true,
        Some(host) => host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// True when `url` names this host's agent as this network namespace sees
/// it: no proxy's path before the agent's own, and a loopback address or
/// `localhost` ([`is_local`]), or an address of one of its interfaces (a
/// node's own IP, where a DaemonSet's agent listens on the host network).
/// Without an agent there, a snapshot taken here shows the host asked
/// about; for any other, it would not.
pub fn names_this_host(url: &str) -> bool {
    let Some(uri) = uri_of(url) else {
        return false;
    };
    if !base_of(uri.path().trim_start_matches('/')).is_empty() {
        // A proxy (`kubectl proxy`, a gateway): the agent is elsewhere.
        return false;
    }
    if is_local(url) {
        return true;
    }
    let Some(host) = host_of(url) else {
        return false;
    };
    let addrs: Vec<IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 0))
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    let here = interface_addrs();
    !addrs.is_empty() && addrs.iter().all(|ip| here.contains(ip))
}

/// The addresses of this network namespace's interfaces (empty when they
/// cannot be read). `getifaddrs(3)`, which glibc and musl answer from
/// netlink: a bind test would take any address under `ip_nonlocal_bind`.
fn interface_addrs() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; an address, when set, is a sockaddr of the
        // family it names.
        let ifa = unsafe { &*node };
        if !ifa.ifa_addr.is_null() {
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                    // `s_addr` holds the address in network order: its bytes as stored.
                    out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                    out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        node = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// `url` parsed, `http://` taken when it has no scheme.
fn uri_of(url: &str) -> Option<axum::http::Uri> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    with_scheme.parse().ok()
}

/// The host `url` names (an IPv6 address without its brackets).
fn host_of(url: &str) -> Option<String> {
    let uri = uri_of(url)?;
    let host = uri.host()?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

/// `url` as it may be shown: a password in it (`http://user:secret@host`,
/// which basic auth takes) becomes `***`.
pub fn shown(url: &str) -> String {
    // With or without a scheme; the user information ends at the last `@`
    // before any query or fragment (a password may hold a `/`).
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    // When in doubt (an `@` in a path), hide too much rather than a
    // password.
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}

/// What a refusal's body adds to the error: the agent's own reason is one
/// short line; anything else (a web page, a long answer) is another
/// server's, and only its first words are worth a line.
fn refusal(body: &str) -> String {
    const MAX: usize = 160;
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    if body.starts_with('<') {
        return ", a web page: is a tracer agent listening there?".to_owned();
    }
    // The agent's own refusal is a sentence in `{"error": ...}`.
    let said = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_owned));
    let body = said.as_deref().unwrap_or(body);
    let first = body.lines().next().unwrap_or_default().trim();
    let mut cut = first.len().min(MAX);
    while !first.is_char_boundary(cut) {
        cut -= 1;
    }
    let more = cut < first.len() || body.lines().nth(1).is_some();
    format!(": {}{}", &first[..cut], if more { " …" } else { "" })
}

/// The `Authorization` header of an `--agent` URL's user information,
/// `USER:PASSWORD` percent-encoded as a URL holds it.
fn basic_auth(userinfo: &str) -> String {
    use base64::Engine as _;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decoded = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!("{}:{}", decoded(user), decoded(password));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The TLS error inside a failed request, if TLS failed.
fn tls_failure(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// One sentence for a TLS handshake with the agent at `url` (`host`: its
/// host and port) that failed with `e`.
fn tls_sentence(e: &rustls::Error, url: &str, host: &str) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the agent's certificate at {url} is not made out to {host}: ask by a name or \
             address its subjectAltName lists (openssl x509 -noout -ext subjectAltName -in \
             CERT shows them), or give --agent-insecure"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "the agent's certificate at {url} has expired: renew it (docs/security.md), or give \
             --agent-insecure meanwhile"
        ),
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the agent at {url} presents a certificate no CA this command trusts has signed: \
             give --agent-ca FILE with the CA that signed it (the one Prometheus's \
             tls_config.ca_file names), or --agent-insecure"
        ),
        // webpki's error, which rustls passes on only as `Other`.
        E::InvalidCertificate(C::Other(o)) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            format!(
                "the agent at {url} presents a CA certificate as its own (`openssl req -x509` \
                 makes one unless told otherwise): give it a certificate its CA signs \
                 (docs/security.md shows how), or --agent-insecure"
            )
        }
        E::AlertReceived(
            alert @ (rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::HandshakeFailure),
        ) => format!(
            "the agent at {url} refused the TLS handshake ({alert:?}): a web config with \
             client_auth_type wants a client certificate, which tracer's commands do not send"
        ),
        E::AlertReceived(alert) => {
            format!("the agent at {url} refused the TLS handshake ({alert:?})")
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => format!(
            "the server at {url} does not answer in TLS: is it an agent without a --web-config? \
             ask for {}",
            url.replacen("https://", "http://", 1)
        ),
        other => format!("the TLS handshake with the agent at {url} failed: {other}"),
    }
}

/// True when the error says nothing accepted the connection: no agent.
fn no_agent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect) | ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// True when a connection that was accepted closed before the response
/// was whole: reset, or ended early.
fn dropped_mid_way(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
