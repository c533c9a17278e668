//! The config file: keys, bare numbers, and errors with line and column.
use std::path::Path;

use super::{
    file::{key_before, line_col},
    *,
};

fn applied(text: &str) -> anyhow::Result<Settings> {
    let mut s = Settings::default();
    FileConfig::parse(text)?.apply(&mut s)?;
    Ok(s)
}

fn error(text: &str) -> String {
    format!("{:#}", applied(text).expect_err(text))
}

#[test]
fn file_overrides_defaults() {
    let s = applied(
        "listen = \"0.0.0.0:9100\"\nreconcile-interval = \"250ms\"\nmax-sockets = 10\n\
         time-wait-interval = \"30s\"\nreconcile-budget = \"0.5%\"\nring-bytes = 65536\n",
    )
    .unwrap();
    assert_eq!(s.listen, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(s.reconcile_interval, Duration::from_millis(250));
    assert_eq!(s.time_wait_interval, Duration::from_secs(30));
    assert_eq!(s.reconcile_budget, 0.5);
    assert_eq!(s.max_sockets, 10);
    assert_eq!(s.ring_bytes, 65536);
    assert_eq!(s.close_wait_threshold, Duration::from_secs(60));
    assert_eq!(
        applied("reconcile-budget = 2").unwrap().reconcile_budget,
        2.0
    );
}

/// A relative web config in a config file is that file's neighbour, not
/// the working directory's (systemd's is `/`).
#[test]
fn a_relative_web_config_is_beside_the_config_file() {
    let dir = std::env::temp_dir().join(format!("tracer-conf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tracer.toml");
    let loaded = |text: &str| {
        std::fs::write(&file, text).expect("write");
        let mut s = Settings::default();
        FileConfig::load(&file)
            .expect("load")
            .apply(&mut s)
            .expect("apply");
        s.web_config
    };
    assert_eq!(
        loaded("web-config = \"web.yml\""),
        Some(dir.join("web.yml"))
    );
    assert_eq!(
        loaded("web-config = \"tls/web.yml\""),
        Some(dir.join("tls/web.yml"))
    );
    assert_eq!(
        loaded("web-config = \"/etc/tracer/web.yml\""),
        Some("/etc/tracer/web.yml".into())
    );
    assert_eq!(loaded("web-config = \"none\""), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn web_config_is_a_path_or_none() {
    let s = applied("web-config = \"/etc/tracer/web.yml\"").unwrap();
    assert_eq!(
        s.web_config.as_deref(),
        Some(Path::new("/etc/tracer/web.yml"))
    );
    assert_eq!(applied("web-config = \"none\"").unwrap().web_config, None);
    assert_eq!(Settings::default().web_config, None);
}

#[test]
fn bare_numbers_are_seconds() {
    let s = applied("reconcile-interval = 5\nclose-wait-threshold = 0.5\nidle-threshold = 1e3\n")
        .unwrap();
    assert_eq!(s.reconcile_interval, Duration::from_secs(5));
    assert_eq!(s.close_wait_threshold, Duration::from_millis(500));
    assert_eq!(s.idle_threshold, Duration::from_secs(1000));
}

#[test]
fn errors_name_the_key_with_line_and_column() {
    for (text, says) in [
        (
            "listen = \"127.0.0.1:1\"\nreconcile-interval = \"1e20\"\n",
            "key reconcile-interval at line 2, column 22: \"1e20\" is longer than the maximum of 1d",
        ),
        (
            "reconcile-interval = 1e20",
            "key reconcile-interval at line 1, column 22: \"1e20\" is longer",
        ),
        (
            "reconcile-interval = \"1e-10\"",
            "key reconcile-interval at line 1, column 22: \"1e-10\" is shorter than the minimum of 10ms",
        ),
        (
            "time-wait-interval = -1",
            "key time-wait-interval at line 1, column 22: \"-1\" is negative",
        ),
        (
            "closed-retention = nan",
            "key closed-retention at line 1, column 20: \"NaN\" is not a duration",
        ),
        (
            "close-wait-threshold = inf",
            "key close-wait-threshold at line 1, column 24: \"inf\" is not a duration",
        ),
        (
            "close-wait-threshold = \"forever\"",
            "key close-wait-threshold",
        ),
        // Bare text: TOML reads a number, and the quotes are what is missing.
        (
            "listen = 127.0.0.1:19850",
            "(a text value goes in quotes: \"127.0.0.1:19850\")",
        ),
        // A key given twice is named, where TOML's error points at it.
        (
            "listen = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
            "key listen at line 2, column 1: duplicate key",
        ),
        (
            "\n\nmax-sockets = 0",
            "key max-sockets at line 3, column 15: \"0\" is out of range",
        ),
        (
            "max-sockets = -5",
            "key max-sockets at line 1, column 15: \"-5\" is negative",
        ),
        (
            "max-sockets = \"many\"",
            "key max-sockets at line 1, column 15: \"many\" is not a whole number",
        ),
        (
            "ring-bytes = 2147483648",
            "key ring-bytes at line 1, column 14: \"2147483648\" is over the maximum",
        ),
        ("ring-bytes = 5000", "power of two"),
        (
            "max-workloads = 1.5",
            "key max-workloads at line 1, column 17",
        ),
        (
            "reconcile-budget = \"much\"",
            "key reconcile-budget at line 1, column 20",
        ),
        ("reconcile-budget = -1", "between 0% and 100%"),
        (
            "listen = 9077",
            "key listen at line 1, column 10: invalid type: integer `9077`",
        ),
        (
            "listen = \"localhost\"",
            "key listen at line 1, column 10: \"localhost\" is not an ADDR:PORT",
        ),
        ("netns = 7", "key netns at line 1, column 9"),
        (
            "reconcile-interval = true",
            "key reconcile-interval at line 1, column 22: invalid type: boolean",
        ),
        ("\nlisen = \"x\"", "line 2, column 1: unknown field `lisen`"),
        ("listen = \"x", "line 1, column"),
        ("[table]\nx = 1", "line 1, column 2: unknown field `table`"),
        (
            "log-level = \"debug\"",
            "(log-level is a command-line flag, not a config key: give --log-level)",
        ),
    ] {
        let err = error(text);
        assert!(err.contains(says), "{text:?}: {err}");
        assert!(!err.contains('\n'), "{text:?}: {err}");
    }
}

#[test]
fn positions_count_characters() {
    assert_eq!(line_col("", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é = 1", 5), (1, 5));
    assert_eq!(line_col("ab", 99), (1, 3));
    assert_eq!(key_before("a = 1\n b-c = 2", 12), Some("b-c".into()));
    assert_eq!(key_before("\"k\" = 1", 6), Some("k".into()));
    assert_eq!(key_before("[t]", 1), None);
}

#[test]
fn only_small_regular_files_are_read() {
    let tmp = tempfile::Builder::new()
        .prefix("tracer-cfg-read-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, "max-sockets = 3\n").unwrap();
    let mut s = Settings::default();
    FileConfig::load(&ok).unwrap().apply(&mut s).unwrap();
    assert_eq!(s.max_sockets, 3);

    let big = dir.join("big.toml");
    std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let binary = dir.join("binary.toml");
    std::fs::write(&binary, b"a = \xff\n").unwrap();
    for (path, says) in [
        (big.as_path(), "over the 1024 KiB"),
        (fifo.as_path(), "is a FIFO, not a regular file"),
        (
            Path::new("/dev/zero"),
            "is a character device, not a regular file",
        ),
        (dir, "is a directory, not a regular file"),
        (binary.as_path(), "is not UTF-8 text (line 1, column 5)"),
        (&dir.join("nope.toml"), "cannot be opened"),
    ] {
        let err = format!("{:#}", FileConfig::load(path).expect_err(says));
        assert!(err.contains(says), "{err}");
        assert!(
            err.contains(&format!("config file {}", path.display())),
            "{err}"
        );
    }
}

#[test]
fn help_states_each_default() {
    assert_eq!(undocumented_defaults(), Vec::<&str>::new());
}

/// Every flag of `tracer run` past `--config` is a key of the file, read
/// by the same parser: "" is refused as a value, not as an unknown key.
#[test]
fn every_flag_is_a_key() {
    use clap::Args as _;
    let cmd = RunFlags::augment_args(clap::Command::new("run"));
    let flags: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    assert_eq!(flags.len(), 16, "{flags:?}");
    for flag in flags {
        let err = error(&format!("{flag} = \"\""));
        assert!(
            err.starts_with(&format!("key {flag} at line 1, column ")),
            "{err}"
        );
    }
}

#[test]
fn pids_and_addresses_say_what_is_wrong() {
    assert_eq!(parse_comm("nginx"), Ok("nginx".to_owned()));
    assert_eq!(
        parse_comm("walk4-long-serv"),
        Ok("walk4-long-serv".to_owned())
    );
    let e = parse_comm("walk4-long-server-name").unwrap_err();
    assert!(e.contains("(ps -o comm shows \"walk4-long-serv\")"), "{e}");
    // Cut on a character, not inside one.
    let e = parse_comm("ééééééééé").unwrap_err();
    assert!(e.contains("shows \"ééééééé\""), "{e}");
    assert!(parse_comm("").is_err());
    assert_eq!(parse_pid("4242"), Ok(4242));
    assert!(
        parse_pid("abc")
            .unwrap_err()
            .contains("not a whole number: give a process id")
    );
    assert!(parse_pid("0").unwrap_err().contains("out of range"));
    assert_eq!(
        parse_ip("10.0.0.5").map(|a| a.to_string()),
        Ok("10.0.0.5".into())
    );
    assert_eq!(parse_ip("[::1]").map(|a| a.to_string()), Ok("::1".into()));
    assert_eq!(
        parse_ip("127.0.0.1:8080").unwrap_err(),
        "\"127.0.0.1:8080\" has a port: give the address alone (--addr 127.0.0.1)"
    );
    assert!(parse_ip("[::1]:80").unwrap_err().contains("(--addr ::1)"));
    assert!(parse_ip("fe80::1%eth0").unwrap_err().starts_with(
        "\"fe80::1%eth0\" has a zone (%eth0): give the address alone (--addr fe80::1)"
    ));
    assert!(
        parse_ip("localhost")
            .unwrap_err()
            .contains("is not an IP address")
    );
}
