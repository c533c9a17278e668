//! `tracer top`: a live terminal view of a running agent.
use clap::Args;

/// Flags of `tracer top`.
#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// The agent to watch.
    #[arg(long, value_name = "URL")]
    pub agent: Option<String>,
}

/// Run `tracer top`.
pub fn run(_args: TopArgs) -> anyhow::Result<i32> {
    anyhow::bail!("tracer top is not built yet")
}
