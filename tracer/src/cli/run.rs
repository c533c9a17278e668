//! `tracer run`: flags, laid over the config file and the defaults. The
//! flags themselves are the rows of the settings table in [`crate::config`].
use std::path::PathBuf;

use clap::Args;

use crate::config::{FileConfig, RunFlags, Settings};

/// Examples under `tracer run --help`.
const EXAMPLES: &str = "Examples:
  tracer run                                   every namespace, serving http://127.0.0.1:9077
  tracer run --config /etc/tracer/tracer.toml  settings from a file (flags still win)
  tracer run --listen 0.0.0.0:9077 --web-config web.yml   TLS and basic auth for remote scrapes
  tracer run --close-wait-threshold 5m --netns host       only the host's namespace
  tracer --log-format json run                 the log as JSON lines

Exit status: 0 after SIGINT or SIGTERM, 2 when it cannot start or run.";

/// Flags of `tracer run`. Each overrides the same key of `--config`.
#[derive(Debug, Args, Default)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// TOML config file; any flag of `tracer run` can be set there
    /// (kebab-case keys), but the global --log-level and --log-format,
    /// which take effect before it is read.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Every setting, each `None` unless given.
    #[command(flatten)]
    pub flags: RunFlags,
}

impl RunArgs {
    /// Defaults, then the config file, then these flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = &self.config {
            FileConfig::load(path)?.layer()?.apply(&mut s);
        }
        self.flags.apply(&mut s);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("tracer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tracer.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9999\"\nmax-sockets = 5\nidle-threshold = \"1m\"\nnetns = \"host\"\nmax-workloads = 9\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            flags: RunFlags {
                max_sockets: Some(7),
                ..Default::default()
            },
        };
        let s = args.settings().unwrap();
        assert_eq!(s.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(s.max_sockets, 7);
        assert_eq!(s.idle_threshold, std::time::Duration::from_secs(60));
        assert_eq!(s.netns, crate::pipeline::NetnsChoice::Host);
        assert_eq!(s.max_workloads, 9);
        let missing = RunArgs {
            config: Some(dir.join("nope.toml")),
            ..Default::default()
        };
        let err = format!("{:#}", missing.settings().unwrap_err());
        assert!(
            err.contains("config file") && err.contains("nope.toml"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
