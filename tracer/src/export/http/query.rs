//! The query strings of the API: `/api/v1/sockets` and `/api/v1/leaks`.
use serde::Deserialize;

use crate::export::page;

/// `?state=S&port=P&netns=N&limit=L&after=C` on `/api/v1/sockets`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SocketQuery {
    /// Keep sockets in this state (kernel name, `close_wait`, or ss's
    /// spelling, `close-wait`).
    pub state: Option<String>,
    /// Keep sockets with this port at either end.
    pub port: Option<u16>,
    /// Keep sockets of this network namespace (inode).
    pub netns: Option<u32>,
    /// Keep sockets whose owner (known from its connect, listen or close)
    /// has this pid.
    pub pid: Option<u32>,
    /// Keep sockets whose owner has this command name.
    pub comm: Option<String>,
    /// Sockets per page, 1 to [`page::MAX_LIMIT`] (default
    /// [`page::DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Only sockets with a cookie above this (the previous page's cursor).
    pub after: Option<u64>,
}

impl SocketQuery {
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
        if let Some(s) = &self.state {
            q.push(format!(
                "state={}",
                s.replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-',
                    ""
                )
            ));
        }
        if let Some(p) = self.port {
            q.push(format!("port={p}"));
        }
        if let Some(n) = self.netns {
            q.push(format!("netns={n}"));
        }
        if let Some(p) = self.pid {
            q.push(format!("pid={p}"));
        }
        if let Some(c) = &self.comm {
            q.push(format!("comm={}", percent_encode(c)));
        }
        if let Some(l) = self.limit {
            q.push(format!("limit={l}"));
        }
        q.push(format!("after={cursor}"));
        q.join("&")
    }
}

/// A query value: every byte but RFC 3986's unreserved characters
/// (`[A-Za-z0-9._~-]`) as `%XX`.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The filters of `/api/v1/leaks`: those of `tracer leaks`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakQuery {
    /// Keep flags with an owner of this pid.
    pub pid: Option<u32>,
    /// Keep flags with an owner of this command name.
    pub comm: Option<String>,
    /// Keep flags of sockets in this state (either spelling).
    pub state: Option<String>,
    /// Keep flags with this port at either end.
    pub port: Option<u16>,
}

impl LeakQuery {
    /// The query as the filters `tracer leaks` uses, or why it is wrong.
    pub fn matching(&self) -> Result<crate::filter::Match, String> {
        Ok(crate::filter::Match {
            pids: self.pid.into_iter().collect(),
            comms: self.comm.iter().cloned().collect(),
            states: self
                .state
                .as_deref()
                .map(crate::tcp::TcpState::parse_or_say)
                .transpose()?
                .into_iter()
                .collect(),
            ports: self.port.into_iter().collect(),
            ..Default::default()
        })
    }
}
