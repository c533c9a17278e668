//! The `tracer` binary: parse flags, run the command, turn errors into one
//! line on stderr and an exit status.
use clap::Parser as _;
use tracer::cli::{Cli, dispatch};

fn main() {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tracer: error: {}", one_line(&e));
            std::process::exit(2);
        }
    }
}

/// The error and its causes as one sentence; a verifier log stays whole.
fn one_line(e: &anyhow::Error) -> String {
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
