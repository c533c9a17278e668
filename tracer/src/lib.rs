//! tracer: follow every TCP connection through its life.
//!
//! Data flows one way:
//! `bpf` (load/attach) -> `ingest` (ring buffer -> [`event::SockEvent`])
//! -> `engine` (pure per-socket lifecycle) -> detectors -> `export`.
//! [`pipeline`] runs that chain, with sock_diag dumps, once for every
//! command; `cli` and `agent` choose only what it feeds (its sink).
pub mod agent;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod container;
pub mod diag;
pub mod engine;
pub mod event;
pub mod export;
pub mod filter;
pub mod forecast;
pub mod ingest;
pub mod leaks;
pub mod logging;
mod memory;
pub mod pipeline;
pub mod snapshot;
pub mod tcp;
#[cfg(test)]
mod testkit;
pub mod wall;
