//! Everything that leaves the agent: the JSON event stream, Prometheus
//! metrics, and the HTTP API.
pub mod http;
pub mod metrics;
pub mod page;
pub mod serve;
pub mod stream;
pub mod web;
pub mod workload;
