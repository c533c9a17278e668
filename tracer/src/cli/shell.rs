//! `tracer completions SHELL` and `tracer man`: what packages install.
use clap::Args;

/// Flags of `tracer completions`.
#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    pub shell: String,
}

/// Print the completion script for a shell.
pub fn completions(_args: CompletionsArgs) -> anyhow::Result<i32> {
    anyhow::bail!("tracer completions is not built yet")
}

/// Print the man page (roff).
pub fn man() -> anyhow::Result<i32> {
    anyhow::bail!("tracer man is not built yet")
}
