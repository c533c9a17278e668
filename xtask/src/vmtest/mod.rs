//! `cargo xtask vmtest`: the privileged smoke suite on other kernels.
//!
//! Each kernel of the matrix ([`matrix`]: Debian's 5.10, 6.1 and 6.12,
//! Ubuntu's 5.4, 5.13, 5.15 and 6.8, and the host's own) runs the checks ([`checks`])
//! in one go: the test binaries are built once on the host ([`binaries`]),
//! the distributions' kernels are fetched and cached ([`fetch`]), a script runs every check and leaves its results
//! in a run directory ([`script`]), in a VM booted by virtme-ng under TCG or
//! directly on the host ([`vm`]); the results are judged against what the
//! kernel is expected to do ([`judge`]) and tabulated ([`report`]).
//! docs/vmtest.md has the details and the times.
mod binaries;
mod checks;
mod deps;
mod fetch;
mod judge;
mod matrix;
mod report;
mod script;
mod vm;

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};
use checks::Check;
use judge::{Judged, Outcome};
use matrix::{Kernel, Source};
use report::KernelRun;

/// Flags of `cargo xtask vmtest`.
#[derive(Debug, clap::Args)]
pub struct VmtestArgs {
    /// Kernels to run, comma-separated: 5.4, 5.10, 5.13, 5.15, 6.1, 6.8,
    /// 6.12, host (default: all).
    #[arg(long, value_delimiter = ',', value_name = "KERNELS")]
    pub kernels: Vec<String>,
    /// Checks to run, comma-separated: startup, events, shape, gauges,
    /// leak, half_open, netns (default: all).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    pub checks: Vec<String>,
    /// Only install what is needed and fetch the kernels, then stop.
    #[arg(long)]
    pub fetch_only: bool,
}

/// Boots tried per kernel when a VM dies before the suite starts.
const BOOTS: usize = 2;

/// Time a VM may take to boot and shut down, on top of the checks' limits
/// (measured: 15-35 s).
const BOOT_SECS: u64 = 180;

/// Run the suite on every selected kernel, print the table, and fail when
/// any check failed.
pub fn vmtest(args: VmtestArgs) -> anyhow::Result<()> {
    let kernels = matrix::select(&args.kernels)?;
    let checks = checks::select(&args.checks)?;
    if !cmd::is_root() {
        bail!(
            "vmtest installs packages, boots VMs and runs privileged tests: run it as root \
             (sudo -E cargo xtask vmtest)"
        );
    }
    let cache = cmd::workspace_root().join("target/vmtest");
    let vng = if kernels
        .iter()
        .any(|k| matches!(k.source, Source::Package { .. }))
    {
        Some(deps::ensure()?)
    } else {
        setup::test_packages()?;
        None
    };
    // Kernels first: a download that fails should not wait for a build.
    let mut fetcher = fetch::Fetcher::new(&cache);
    let fetched: Vec<Option<anyhow::Result<fetch::Unpacked>>> = kernels
        .iter()
        .map(|k| match k.source {
            Source::Package {
                archive, prefix, ..
            } => Some(
                fetcher
                    .kernel(k.key, archive, prefix)
                    .with_context(|| format!("fetching {}'s {} kernel", archive.name(), k.key))
                    .inspect_err(|e| eprintln!("xtask: {}: {e:#}", k.key)),
            ),
            Source::Host => None,
        })
        .collect();
    if args.fetch_only {
        return match fetched.into_iter().flatten().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    setup::ensure()?;
    let bins = binaries::build()?;
    for c in &checks {
        bins.test(c.binary)?;
    }

    let mut runs = Vec::new();
    for (k, kernel) in kernels.iter().zip(fetched) {
        let run = run_kernel(k, kernel, &checks, &bins, &cache, vng.as_deref());
        let count = |f: fn(&Outcome) -> bool| run.judged.outcomes.iter().filter(|o| f(o)).count();
        eprintln!(
            "xtask: {}: {} pass, {} FAIL, {} skipped in {}",
            k.key,
            count(|o| matches!(o, Outcome::Pass(_))),
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::Skipped(_))),
            report::minutes(run.elapsed)
        );
        runs.push(run);
    }

    let text = report::render(&checks, &runs);
    println!("{text}");
    let path = cache.join("report.md");
    std::fs::write(&path, format!("# cargo xtask vmtest\n\n{text}"))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: report written to {}", path.display());
    let failed: Vec<&str> = runs.iter().filter(|r| !r.ok()).map(|r| r.key).collect();
    if !failed.is_empty() {
        bail!("vmtest: checks failed on {}", failed.join(", "));
    }
    Ok(())
}

/// Fetch, run and judge one kernel; every error becomes a failed check.
///
/// Under TCG a guest's own kernel now and then locks up for minutes
/// (a soft lockup or an RCU stall on its console, seen in the
/// `half_open` check on 5.13 and 6.1, which pass in 15 s otherwise), and
/// a check it was running hits its limit. When checks failed and the
/// console shows such a lockup, the suite runs once more in a fresh VM,
/// at most [`LOCKUP_RUNS`] times in all; the report says so, and the
/// first run's logs are kept beside the second's.
fn run_kernel(
    k: &Kernel,
    kernel: Option<anyhow::Result<fetch::Unpacked>>,
    checks: &[Check],
    bins: &binaries::Binaries,
    cache: &Path,
    vng: Option<&Path>,
) -> KernelRun {
    // Kept as text: each run needs its own copy.
    let kernel = kernel.map(|r| r.map_err(|e| format!("{e:#}")));
    let mut notes = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut n = 0;
    loop {
        n += 1;
        let mut run = KernelRun {
            key: k.key,
            expect: k.expect,
            why: k.why,
            how: match k.source {
                Source::Package { .. } => "VM (TCG, 2 vCPUs, 2G)",
                Source::Host => "host, directly",
            },
            release: None,
            package: None,
            elapsed: Duration::ZERO,
            boot_secs: None,
            probe_secs: None,
            check_secs: vec![None; checks.len()],
            judged: Judged {
                outcomes: Vec::new(),
                notes: Vec::new(),
            },
            run_dir: None,
        };
        let this = kernel.clone().map(|r| r.map_err(anyhow::Error::msg));
        if let Err(e) = attempt(k, this, checks, bins, cache, vng, &mut run) {
            let why = format!("{e:#}");
            run.judged.outcomes = checks.iter().map(|_| Outcome::Fail(why.clone())).collect();
        }
        elapsed += run.elapsed;
        let failed: Vec<&str> = checks
            .iter()
            .zip(&run.judged.outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
            .map(|(c, _)| c.name)
            .collect();
        let lockup = run.run_dir.as_ref().and_then(|dir| {
            let console = std::fs::read_to_string(dir.join("console.log")).ok()?;
            judge::lockup_line(&console).map(str::to_string)
        });
        if let (false, Some(line), Some(dir), true) = (
            failed.is_empty(),
            lockup,
            run.run_dir.clone(),
            n < LOCKUP_RUNS,
        ) {
            let kept = dir.with_file_name(format!("{}.lockup{n}", k.key));
            let _ = std::fs::remove_dir_all(&kept);
            let kept = match std::fs::rename(&dir, &kept) {
                Ok(()) => kept,
                Err(_) => dir,
            };
            eprintln!(
                "xtask: {}: the guest's kernel locked up ({line}) and {} failed; running the suite again",
                k.key,
                failed.join(", ")
            );
            notes.push(format!(
                "run {n}: the guest's kernel locked up ({line}) and {} failed (logs in {}); ran again",
                failed.join(", "),
                kept.display()
            ));
            continue;
        }
        run.elapsed = elapsed;
        run.judged.notes.splice(0..0, notes);
        return run;
    }
}

/// Runs per kernel when the guest's kernel locks up (see [`run_kernel`]).
const LOCKUP_RUNS: usize = 2;

fn attempt(
    k: &Kernel,
    kernel: Option<anyhow::Result<fetch::Unpacked>>,
    checks: &[Check],
    bins: &binaries::Binaries,
    cache: &Path,
    vng: Option<&Path>,
    run: &mut KernelRun,
) -> anyhow::Result<()> {
    let image = match kernel {
        Some(kernel) => {
            let kernel = kernel?;
            run.package = Some(kernel.package.clone());
            run.release = Some(kernel.release.clone());
            Some(kernel.image)
        }
        None => None,
    };
    let dir = vm::fresh_run_dir(cache, k.key)?;
    run.run_dir = Some(dir.clone());
    let script = script::Script {
        run_dir: &dir,
        checks,
        expect: k.expect,
        binaries: bins,
    }
    .write()?;
    let target = match (&image, vng) {
        (Some(image), Some(vng)) => vm::Target::Vm { vng, image },
        (None, _) => vm::Target::Host,
        (Some(_), None) => bail!("virtme-ng is not installed"),
    };
    let checks_secs: u64 = checks.iter().map(|c| u64::from(c.timeout_secs) + 10).sum();
    let boot = if image.is_some() { BOOT_SECS } else { 0 };
    let limit = Duration::from_secs(boot + u64::from(script::PROBE_TIMEOUT_SECS) + checks_secs);
    eprintln!(
        "xtask: {}: running {} checks (limit {})",
        k.key,
        checks.len(),
        report::minutes(limit)
    );
    let console = dir.join("console.log");
    let mut boot_notes = Vec::new();
    let mut elapsed = Duration::ZERO;
    let boot_limit = image.as_ref().map(|_| Duration::from_secs(BOOT_SECS));
    let (started, finished) = loop {
        let started = epoch_secs();
        let finished = vm::run(&target, &dir, &script, &console, limit, boot_limit)?;
        elapsed += finished.elapsed;
        // Under TCG an SMP guest now and then dies while patching its own
        // code at boot ("Oops: int3" in a static branch). A VM that never
        // reached the script is booted again, at most BOOTS times in all.
        let booted = dir.join(script::START_FILE).exists();
        if booted || image.is_none() || boot_notes.len() + 1 >= BOOTS {
            break (started, finished);
        }
        let n = boot_notes.len() + 1;
        let kept = dir.join(format!("console.boot{n}.log"));
        std::fs::rename(&console, &kept).with_context(|| format!("keeping {}", kept.display()))?;
        let why = std::fs::read_to_string(&kept).unwrap_or_default();
        let why = judge::panic_line(&why).unwrap_or("no kernel panic on the console");
        eprintln!(
            "xtask: {}: boot {n} never reached the suite ({why}); booting again",
            k.key
        );
        boot_notes.push(format!(
            "boot {n} never reached the suite ({why}; console in {}); booted again",
            kept.display()
        ));
    };
    run.boot_secs = read_number(&dir.join(script::START_FILE))
        .filter(|_| image.is_some())
        .map(|s| s.saturating_sub(started));
    run.probe_secs = read_number(&dir.join("probe.seconds"));
    run.elapsed = elapsed;
    run.release = release(&dir).or(run.release.take());
    run.check_secs = checks
        .iter()
        .map(|c| read_number(&dir.join(format!("{}.seconds", c.name))))
        .collect();
    run.judged = judge::judge(&dir, checks, k.expect, finished.status.is_none());
    run.judged.notes.splice(0..0, boot_notes);
    Ok(())
}

/// The kernel release the script saw (`kernel: <release>` in env.log).
fn release(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("env.log"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("kernel: "))
        .map(str::to_string)
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    use super::*;

    /// The help of `--kernels` and `--checks` names every kernel and check
    /// the tables hold.
    #[test]
    fn the_flags_help_names_every_kernel_and_check() {
        let cmd = VmtestArgs::augment_args(Command::new("vmtest"));
        let help = |id: &str| {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id);
            arg.and_then(|a| a.get_help()).map(|h| h.to_string())
        };
        let kernels = help("kernels").expect("--kernels help");
        let named: Vec<&str> = kernels.split([' ', ',', ':', '(']).collect();
        for k in matrix::KERNELS {
            assert!(
                named.contains(&k.key),
                "--kernels help lacks {}: {kernels}",
                k.key
            );
        }
        let checks = help("checks").expect("--checks help");
        for c in checks::CHECKS {
            assert!(
                checks.contains(c.name),
                "--checks help lacks {}: {checks}",
                c.name
            );
        }
    }
}
