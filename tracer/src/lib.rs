//! tracer: follow every TCP connection through its life.
//!
//! Data flows one way:
//! `bpf` (load/attach) -> `ingest` (ring buffer -> [`event::SockEvent`])
//! -> `engine` (pure per-socket lifecycle) -> detectors -> `export`.
//! `cli` wires the pieces together for each command.
pub mod agent;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod diag;
pub mod engine;
pub mod event;
pub mod export;
pub mod ingest;
pub mod leaks;
pub mod tcp;
