//! Handshake outcomes for `/api/v1/summary`: counts by role and reason,
//! and the most recent client handshake latencies in a fixed ring, so
//! recording one never allocates.
use serde_json::{Map, Value, json};

use super::dwell::{Percentiles, WINDOW};
use crate::engine::{Handshake, HandshakeFailure, Observer, Role};

/// How handshakes ended since the agent started.
pub struct HandshakeTally {
    established: [u64; Role::ALL.len()],
    failed: [[u64; HandshakeFailure::ALL.len()]; Role::ALL.len()],
    /// Client latencies in seconds, the latest `len` of `timed`.
    ring: Box<[f64; WINDOW]>,
    next: usize,
    len: usize,
    timed: u64,
}

impl Default for HandshakeTally {
    fn default() -> Self {
        HandshakeTally::new()
    }
}

impl HandshakeTally {
    /// Nothing counted yet.
    pub fn new() -> HandshakeTally {
        HandshakeTally {
            established: [0; Role::ALL.len()],
            failed: [[0; HandshakeFailure::ALL.len()]; Role::ALL.len()],
            ring: Box::new([0.0; WINDOW]),
            next: 0,
            len: 0,
            timed: 0,
        }
    }

    /// The summary's `handshakes` object: `established` and `failed` by
    /// role (and reason), every known value present, and
    /// `latency_seconds.client` once a client handshake was timed.
    pub fn summary(&self) -> Value {
        let mut established = Map::new();
        let mut failed = Map::new();
        for role in Role::ALL {
            established.insert(role.name().into(), json!(self.established[role.index()]));
            let mut reasons = Map::new();
            for why in HandshakeFailure::ALL
                .into_iter()
                .filter(|w| w.applies_to(role))
            {
                reasons.insert(
                    why.name().into(),
                    json!(self.failed[role.index()][why.index()]),
                );
            }
            failed.insert(role.name().into(), Value::Object(reasons));
        }
        let mut latency = Map::new();
        if let Some(p) = Percentiles::of(&self.ring[..self.len], self.timed) {
            latency.insert(Role::Client.name().into(), json!(p));
        }
        json!({
            "established": established,
            "failed": failed,
            "latency_seconds": latency,
        })
    }
}

/// Counts every outcome; keeps the client latencies the engine timed.
impl Observer for HandshakeTally {
    fn handshake(&mut self, _cookie: u64, role: Role, outcome: Handshake) {
        match outcome {
            Handshake::Established { latency_ns } => {
                self.established[role.index()] += 1;
                if let (Role::Client, Some(ns)) = (role, latency_ns) {
                    self.ring[self.next] = ns as f64 / 1e9;
                    self.next = (self.next + 1) % WINDOW;
                    self.len = (self.len + 1).min(WINDOW);
                    self.timed += 1;
                }
            }
            Handshake::Failed(why) => self.failed[role.index()][why.index()] += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_role_and_reason_and_times_clients_only() {
        let mut t = HandshakeTally::new();
        let s = t.summary();
        assert_eq!(s["established"]["server"], 0);
        assert_eq!(s["failed"]["client"]["refused"], 0);
        assert_eq!(s["failed"]["server"]["reset"], 0);
        assert!(s["failed"]["client"].get("reset").is_none());
        assert_eq!(s["latency_seconds"], json!({}));

        for ms in 1..=10u64 {
            t.handshake(
                ms,
                Role::Client,
                Handshake::Established {
                    latency_ns: Some(ms * 1_000_000),
                },
            );
        }
        t.handshake(
            20,
            Role::Client,
            Handshake::Established { latency_ns: None },
        );
        t.handshake(
            21,
            Role::Server,
            Handshake::Established { latency_ns: None },
        );
        t.handshake(
            22,
            Role::Client,
            Handshake::Failed(HandshakeFailure::Refused),
        );
        t.handshake(23, Role::Server, Handshake::Failed(HandshakeFailure::Reset));
        let s = t.summary();
        assert_eq!(s["established"], json!({ "client": 11, "server": 1 }));
        assert_eq!(s["failed"]["client"]["refused"], 1);
        assert_eq!(s["failed"]["server"]["reset"], 1);
        let p = &s["latency_seconds"]["client"];
        assert_eq!(
            (p["count"].as_u64(), p["window"].as_u64()),
            (Some(10), Some(10))
        );
        assert_eq!(
            (p["p50"].as_f64(), p["max"].as_f64()),
            (Some(0.005), Some(0.01))
        );
    }
}
