//! `tracer port PORT [--addr ADDR]`: why a port is busy, and whether a new
//! listener could bind it now.
use clap::Args;

/// Flags of `tracer port`.
#[derive(Debug, Args, Clone)]
pub struct PortArgs {
    /// The local port to explain.
    pub port: u16,
}

/// Run `tracer port`.
pub fn run(_args: PortArgs) -> anyhow::Result<i32> {
    anyhow::bail!("tracer port is not built yet")
}
