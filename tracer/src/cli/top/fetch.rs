//! How `tracer top` asks the agent: one [`Sample`] is `/api/v1/summary`,
//! `/api/v1/leaks` and the TIME_WAIT pages of `/api/v1/sockets` (bounded by
//! [`MAX_TIME_WAIT`]), through the client `tracer leaks` uses. The live
//! view asks from a thread of its own ([`spawn`]), so keys never wait on
//! the network.
use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    time::Duration,
};

use super::model::{Sample, Summary, TwSocket};
use crate::{
    cli::leaks::AgentClient,
    export::http::percent_encode,
    filter::Match,
    pipeline::NetnsChoice,
    tcp::{Family, TcpState},
};

/// TIME_WAIT sockets read per refresh, at most; past it the panels say
/// "sampled".
pub const MAX_TIME_WAIT: usize = 20_000;

/// Sockets asked for per page.
const PAGE: usize = 5_000;

/// An agent and what to ask it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The agent, over one connection kept open from refresh to refresh.
    pub client: AgentClient,
    /// The shared filters, applied to the leaks and TIME_WAIT panels.
    pub matching: Match,
    /// `--netns`, as given: the agent resolves it (`host` is its own).
    pub netns: Option<NetnsChoice>,
}

impl Source {
    /// The filters, as the header says them.
    pub fn describe(&self) -> String {
        let m = self.matching.describe();
        match &self.netns {
            Some(n) if m.is_empty() => format!("--netns {n}"),
            Some(n) => format!("{m} --netns {n}"),
            None => m,
        }
    }

    /// `&netns=...` for the agent's API, or nothing.
    fn netns_query(&self) -> String {
        self.netns
            .as_ref()
            .map(|n| format!("netns={}", percent_encode(&n.to_string())))
            .unwrap_or_default()
    }

    /// The agent's URL as it may be shown: without a password.
    pub fn shown_url(&self) -> String {
        self.client.shown_url()
    }

    /// The sentence said when nothing answers.
    pub fn no_agent(&self) -> String {
        format!(
            "no agent answers at {}: nothing accepted a connection within 0.5 s; start `tracer run` \
             or give --agent",
            self.shown_url()
        )
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.client
            .get_json(path)?
            .ok_or_else(|| anyhow::anyhow!(self.no_agent()))
    }

    /// One refresh.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let summary: Summary = self.json("/api/v1/summary")?;
        let netns = self.netns_query();
        let leaks_path = if netns.is_empty() {
            "/api/v1/leaks".to_owned()
        } else {
            format!("/api/v1/leaks?{netns}")
        };
        let leaks = self.matching.report(self.json(&leaks_path)?);
        let (time_wait, time_wait_sampled) = self.time_wait()?;
        Ok(Sample {
            summary,
            leaks,
            time_wait,
            time_wait_sampled,
        })
    }

    /// TIME_WAIT sockets that pass the filters, page by page, until the
    /// last page or [`MAX_TIME_WAIT`] read.
    fn time_wait(&self) -> anyhow::Result<(Vec<TwSocket>, bool)> {
        let m = &self.matching;
        if !m.states.is_empty() && !m.states.contains(&TcpState::TimeWait) {
            return Ok((Vec::new(), false));
        }
        let mut base = format!("/api/v1/sockets?state=time_wait&limit={PAGE}");
        if let [port] = m.ports[..] {
            base.push_str(&format!("&port={port}"));
        }
        let netns = self.netns_query();
        if !netns.is_empty() {
            base.push_str(&format!("&{netns}"));
        }
        let (mut out, mut read, mut after) = (Vec::new(), 0, None);
        loop {
            let path = match after {
                Some(c) => format!("{base}&after={c}"),
                None => base.clone(),
            };
            let page: Vec<TwSocket> = self.json(&path)?;
            read += page.len();
            let full = page.len() == PAGE;
            after = page.last().map(|s| s.cookie);
            out.extend(page.into_iter().filter(|s| self.keeps(s)));
            if !full {
                return Ok((out, false));
            }
            if read >= MAX_TIME_WAIT {
                return Ok((out, true));
            }
        }
    }

    fn keeps(&self, s: &TwSocket) -> bool {
        let m = &self.matching;
        let family = crate::filter::asked_family(Some(Family::Ipv6), s.saddr);
        m.socket(family, s.sport, s.dport, TcpState::TimeWait)
            && (!m.by_owner()
                || s.pid
                    .zip(s.comm.as_deref())
                    .is_some_and(|(p, c)| m.owner(p, c)))
    }
}

/// What the view tells the asking thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Ask every this long (and now).
    Interval(Duration),
    /// Stop asking (`true`) or start again, now (`false`).
    Pause(bool),
    /// Ask now, paused or not.
    Refresh,
}

/// Ask `source` every `interval` on a thread of its own; samples (or the
/// sentence saying why there is none) come back on the receiver. The
/// thread ends when the sender is dropped.
pub fn spawn(
    source: Source,
    mut interval: Duration,
) -> (Sender<Cmd>, Receiver<Result<Sample, String>>) {
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut paused = false;
        loop {
            let now = match cmd_rx.recv_timeout(interval) {
                Ok(Cmd::Interval(d)) => {
                    interval = d;
                    false
                }
                Ok(Cmd::Pause(p)) => {
                    paused = p;
                    false
                }
                Ok(Cmd::Refresh) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if paused && !now {
                continue;
            }
            let got = source.sample().map_err(|e| one_line(&e));
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    (cmd_tx, rx)
}

/// An error and its causes as one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}
