//! The query strings of the API: `/api/v1/sockets` and `/api/v1/leaks`.
//!
//! Each filter may be given more than once and keeps what matches any of
//! its values, as the flags of `tracer leaks` and `tracer events` do
//! (`?state=close-wait&state=estab`). A bad query is a 400 with one
//! sentence that names the parameter.
use std::str::FromStr;

use crate::{export::page, tcp::TcpState};

/// `?state=S&port=P&netns=N&pid=N&comm=C&limit=L&after=C` on `/api/v1/sockets`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SocketQuery {
    /// Keep sockets in these states (kernel names, `close_wait`, or ss's
    /// spelling, `close-wait`).
    pub state: Vec<TcpState>,
    /// Keep sockets with one of these ports at either end.
    pub port: Vec<u16>,
    /// Keep sockets of these network namespaces (inodes; given as the
    /// commands' `--netns` takes one).
    pub netns: Vec<u32>,
    /// Keep sockets whose owner (known from its connect, listen or close)
    /// has one of these pids.
    pub pid: Vec<u32>,
    /// Keep sockets whose owner has one of these command names.
    pub comm: Vec<String>,
    /// Sockets per page, 1 to [`page::MAX_LIMIT`] (default
    /// [`page::DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Only sockets with a cookie above this (the previous page's cursor).
    pub after: Option<u64>,
    /// `netns=all` was given: every namespace, so no other `netns=`.
    pub all_netns: bool,
}

/// The pairs of a query string, decoded.
fn pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// An endpoint that takes no parameters refuses any, as the others refuse
/// those they do not take.
pub(super) fn no_parameters(raw: Option<&str>, endpoint: &str) -> Result<(), String> {
    match pairs(raw).next() {
        Some((key, _)) => Err(format!("unknown parameter {key:?}: {endpoint} takes none")),
        None => Ok(()),
    }
}

/// `value` of parameter `key` as a `T`, or a sentence that says what `key`
/// takes (`what`).
fn number<T: FromStr>(key: &str, value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key} {value:?} is not {what}"))
}

/// A parameter that may be given once.
fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{key} is given more than once"));
    }
    Ok(())
}

/// A network namespace as the commands' `--netns` takes one: `all` (no
/// filter: `None`), `host` (the agent's own), a name `ip netns add` gave it
/// (under `/run/netns`), `pid:N`, or an inode. An inode is taken as given
/// here; whether a namespace has it is asked only when nothing matched
/// ([`missing_netns`]), as that walks `/proc`.
fn netns_value(value: &str) -> Result<Option<u32>, String> {
    use crate::pipeline::{NetnsChoice, NetnsScope};
    let choice: NetnsChoice = value.parse().map_err(|e| format!("netns={value}: {e}"))?;
    match choice {
        NetnsChoice::All => Ok(None),
        NetnsChoice::Inode(inode) => Ok(Some(inode)),
        c => {
            let scope =
                NetnsScope::resolve_as(&c, &format!("netns={value}")).map_err(|e| e.to_string())?;
            scope.only().map(Some).ok_or_else(|| {
                format!("netns={value}: the inode of that network namespace could not be read")
            })
        }
    }
}

/// The first of `netns` that no network namespace has, in one sentence;
/// `None` when each of them is one. Finding a namespace walks `/proc`, so
/// those found are remembered: asked again and again (`tracer top --netns`
/// at every refresh, of a namespace with nothing to list), `/proc` is
/// walked once. A namespace found once and ended since then gives an empty
/// answer, as it would while the agent still held its sockets.
pub fn missing_netns(netns: &[u32]) -> Option<String> {
    use crate::pipeline::{NetnsChoice, NetnsScope};
    /// At most this many remembered; then they are found again.
    const REMEMBERED: usize = 4096;
    static FOUND: std::sync::Mutex<std::collections::BTreeSet<u32>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    netns.iter().find_map(|&i| {
        if found.contains(&i) {
            return None;
        }
        match NetnsScope::resolve_as(&NetnsChoice::Inode(i), &format!("netns={i}")) {
            Ok(_) => {
                if found.len() >= REMEMBERED {
                    found.clear();
                }
                found.insert(i);
                None
            }
            Err(e) => Some(e.to_string()),
        }
    })
}

/// The filters both endpoints take, added to `q`; `false` when `key` is
/// none of them.
fn filter(q: &mut SocketQuery, key: &str, value: &str) -> Result<bool, String> {
    match key {
        "state" => q.state.push(TcpState::parse_or_say(value)?),
        "port" => q.port.push(
            crate::config::parse_filter_port(value).map_err(|e| format!("port={value}: {e}"))?,
        ),
        "pid" => q.pid.push(number(key, value, "a process id")?),
        "comm" => q.comm.push(crate::config::parse_comm(value)?),
        "netns" => {
            match netns_value(value)? {
                None => q.all_netns = true,
                Some(inode) => q.netns.push(inode),
            }
            if q.all_netns && !q.netns.is_empty() {
                return Err(
                    "netns=all keeps every namespace: give it alone, or leave it out".into(),
                );
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

impl SocketQuery {
    /// Read a query string (`None`: no `?`).
    pub fn parse(raw: Option<&str>) -> Result<SocketQuery, String> {
        let mut q = SocketQuery::default();
        for (key, value) in pairs(raw) {
            match key.as_str() {
                "limit" => once(
                    &mut q.limit,
                    &key,
                    number(&key, &value, "a number of sockets")?,
                )?,
                "after" => once(&mut q.after, &key, number(&key, &value, "a cookie")?)?,
                _ if filter(&mut q, &key, &value)? => {}
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?}: /api/v1/sockets takes state, port, netns, \
                         pid, comm, limit and after"
                    ));
                }
            }
        }
        Ok(q)
    }

    /// The page size asked for, checked.
    pub fn limit(&self) -> Result<usize, String> {
        match self.limit {
            None => Ok(page::DEFAULT_LIMIT),
            Some(0) => Err("limit must be at least 1".into()),
            Some(n) if n > page::MAX_LIMIT => Err(format!(
                "limit {n} is above the maximum of {}: page with ?after=",
                page::MAX_LIMIT
            )),
            Some(n) => Ok(n),
        }
    }

    /// The query string of the page after `cursor`, keeping the filters.
    pub(super) fn next(&self, cursor: u64) -> String {
        let mut q = Vec::new();
        q.extend(self.state.iter().map(|s| format!("state={}", s.name())));
        q.extend(self.port.iter().map(|p| format!("port={p}")));
        q.extend(self.netns.iter().map(|n| format!("netns={n}")));
        q.extend(self.pid.iter().map(|p| format!("pid={p}")));
        q.extend(
            self.comm
                .iter()
                .map(|c| format!("comm={}", percent_encode(c))),
        );
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        q.push(format!("after={cursor}"));
        q.join("&")
    }
}

/// A query value, form-encoded (`a b` as `a+b`), as [`SocketQuery::parse`]
/// reads it back.
pub fn percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The filters of `/api/v1/leaks`: those of `tracer leaks`.
#[derive(Debug, Default, PartialEq)]
pub struct LeakQuery(SocketQuery);

impl LeakQuery {
    /// Read a query string (`None`: no `?`).
    pub fn parse(raw: Option<&str>) -> Result<LeakQuery, String> {
        let mut q = SocketQuery::default();
        for (key, value) in pairs(raw) {
            if !filter(&mut q, &key, &value)? {
                return Err(format!(
                    "unknown parameter {key:?}: /api/v1/leaks takes pid, comm, state, port and netns"
                ));
            }
        }
        Ok(LeakQuery(q))
    }

    /// The query as the filters `tracer leaks` uses.
    pub fn matching(self) -> crate::filter::Match {
        let SocketQuery {
            state,
            port,
            netns,
            pid,
            comm,
            ..
        } = self.0;
        crate::filter::Match {
            pids: pid,
            comms: comm,
            states: state,
            ports: port,
            netns,
            ..Default::default()
        }
    }
}
