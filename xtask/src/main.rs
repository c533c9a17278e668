//! `cargo xtask`: the one entry point for humans and CI.
//!
//! - `setup`: install the eBPF toolchain pieces and check the kernel (idempotent).
//! - `run`:   setup if needed, build, run the tracer as root with defaults.
//! - `test`:  setup if needed, install test packages, run every test.
//! - `bench`: the benchmarks (see BENCHMARKS.md).
//! - `vmtest`: the privileged smoke suite on other kernels, in VMs (see docs/vmtest.md).
//! - `dist`:  the tarball and the .deb in target/dist/ (see docs/install.md).
//! - `image`: the container image, built with podman and smoke-tested (see docs/kubernetes.md).
mod bench;
mod cmd;
mod dist;
mod image;
mod setup;
mod test;
mod ubuntu;
mod vmtest;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install nightly rust-src and bpf-linker, check the kernel.
    Setup,
    /// Build and run the tracer as root with defaults; extra args go to `tracer`.
    Run {
        /// Arguments for `tracer` (default: `run`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run unit tests, clippy, and the privileged integration tests.
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Measure the tracer's overhead side by side; writes BENCHMARKS.md.
    Bench(Box<bench::BenchArgs>),
    /// Boot Debian's and Ubuntu's kernels from 5.4 to 6.12 in VMs (and use
    /// the host's) and run the privileged smoke suite on each; prints a table.
    Vmtest(vmtest::VmtestArgs),
    /// Build the release tarball and the .deb into target/dist/; with
    /// --check, verify the unit and install, run and purge the .deb.
    Dist(dist::DistArgs),
    /// Build the container image with podman from the release binary and
    /// smoke-test it under the DaemonSet's security context.
    Image(image::ImageArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(),
        Command::Run { args } => run(args),
        Command::Test { filter } => test::test(filter.as_deref()),
        Command::Bench(args) => bench::bench(*args),
        Command::Vmtest(args) => vmtest::vmtest(args),
        Command::Dist(args) => dist::dist(args),
        Command::Image(args) => image::image(args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Vec<String>) -> anyhow::Result<()> {
    setup::ensure()?;
    cmd::run("cargo", &["build", "--release", "-p", "tracer"])?;
    let bin = cmd::workspace_root().join("target/release/tracer");
    let args = if args.is_empty() {
        vec!["run".to_string()]
    } else {
        args
    };
    let bin = bin.to_string_lossy().into_owned();
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    if cmd::is_root() {
        cmd::exec(&bin, &argv)
    } else {
        eprintln!("xtask: tracer needs root; running it through sudo");
        argv.insert(0, &bin);
        cmd::exec("sudo", &argv)
    }
}
