//! `tracer run`: flags, laid over the config file and the defaults. The
//! flags themselves are the rows of the settings table in [`crate::config`].
use std::path::PathBuf;

use clap::Args;

use crate::{
    config::{FileConfig, RunFlags, Settings},
    pipeline::NetnsScope,
};

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
    /// Defaults, then the config file, then these flags. A namespace the
    /// file names and no flag overrides is looked for here, so that a
    /// wrong one is reported as the file's, not as `--netns`.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(path) = &self.config {
            let layer = FileConfig::load(path)?.flags()?;
            if let (Some(choice), None) = (&layer.netns, &self.flags.netns) {
                let said = format!("netns = \"{choice}\" in {}", path.display());
                NetnsScope::resolve_as(choice, &said)?;
            }
            layer.apply(&mut s);
        }
        self.flags.apply(&mut s);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the command's own path: a relative web config in the file
    /// is the file's neighbour.
    #[test]
    fn a_relative_web_config_is_beside_the_file() {
        let tmp = tempfile::Builder::new()
            .prefix("tracer-cfg-")
            .tempdir()
            .unwrap();
        let path = tmp.path().join("tracer.toml");
        std::fs::write(&path, "web-config = \"web.yml\"\n").unwrap();
        let args = RunArgs {
            config: Some(path),
            flags: RunFlags::default(),
        };
        assert_eq!(
            args.settings().unwrap().web_config,
            Some(tmp.path().join("web.yml"))
        );
    }

    #[test]
    fn flags_override_the_file() {
        let tmp = tempfile::Builder::new()
            .prefix("tracer-cfg-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
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
    }

    /// A namespace the file names that does not exist is the file's
    /// error; the same name given as a flag is the flag's, and a flag
    /// that overrides the file's choice leaves it unchecked.
    #[test]
    fn a_missing_namespace_is_reported_where_it_was_given() {
        let tmp = tempfile::Builder::new()
            .prefix("tracer-cfg-ns-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let path = dir.join("tracer.toml");
        std::fs::write(&path, "netns = \"tracer-no-such-ns\"\n").unwrap();
        let from_file = RunArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = format!("{:#}", from_file.settings().unwrap_err());
        assert!(
            err.starts_with(&format!(
                "netns = \"tracer-no-such-ns\" in {}: no network namespace /run/netns/tracer-no-such-ns",
                path.display()
            )),
            "{err}"
        );
        let overridden = RunArgs {
            config: Some(path.clone()),
            flags: RunFlags {
                netns: Some(crate::pipeline::NetnsChoice::Host),
                ..Default::default()
            },
        };
        let s = overridden
            .settings()
            .expect("the flag wins, unchecked file value");
        assert_eq!(s.netns, crate::pipeline::NetnsChoice::Host);
        let flag = crate::pipeline::NetnsChoice::Name("tracer-no-such-ns".into());
        let err = format!("{:#}", NetnsScope::resolve(&flag).unwrap_err());
        assert!(
            err.starts_with("--netns tracer-no-such-ns: no network namespace"),
            "{err}"
        );
    }
}
