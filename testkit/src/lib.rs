//! What tracer's integration tests (`tracer/tests/common`) and `cargo
//! xtask` (bench, soak) both need to read a running agent, written once:
//! an HTTP client ([`http`]) and a reader of the Prometheus text
//! exposition ([`exposition`]).
pub mod exposition;
pub mod http;
