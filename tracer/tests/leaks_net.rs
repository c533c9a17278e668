//! Privileged tests of the network leak detectors (issue 4) against a real
//! agent: half-open connections whose peer vanished, stuck handshakes,
//! idle connections without keepalive, and no flags at all for a busy
//! keep-alive HTTP workload.
//!
//! The agent only sees the sockets of its own network namespace, so every
//! test runs it inside namespaces the test made (198.18.60-69.0/24,
//! deleted on drop) and may then count flags exactly: nothing else lives
//! there.
mod common;

#[path = "leaks_net/half_open.rs"]
mod half_open;
#[path = "leaks_net/handshake.rs"]
mod handshake;
#[path = "leaks_net/idle.rs"]
mod idle;
#[path = "leaks_net/link_local.rs"]
mod link_local;
#[path = "leaks_net/quiet.rs"]
mod quiet;
#[path = "leaks_net/support.rs"]
mod support;
