//! Every bound and parser of [`super`], value by value.
use super::*;

#[test]
fn durations() {
    let p = parse_threshold;
    assert_eq!(p("1s"), Ok(Duration::from_secs(1)));
    assert_eq!(p("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(p("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(p("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(p("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(p("2"), Ok(Duration::from_secs(2)));
    assert_eq!(p(" 0.5 "), Ok(Duration::from_millis(500)));
    assert_eq!(p("1e1"), Ok(Duration::from_secs(10)));
}

#[test]
fn bad_durations_are_one_sentence_each() {
    for (value, bounds, says) in [
        ("1e20s", INTERVAL, "longer than the maximum of 1d"),
        ("1e20", THRESHOLD, "longer than the maximum of 30d"),
        ("1e300", RUN_LENGTH, "longer than the maximum of 30d"),
        ("1e308h", THRESHOLD, "longer than the maximum"),
        ("25h", INTERVAL, "longer than the maximum of 1d"),
        ("31d", THRESHOLD, "longer than the maximum of 30d"),
        ("1e-10", INTERVAL, "shorter than the minimum of 10ms"),
        ("0.0001ms", INTERVAL, "shorter than the minimum of 10ms"),
        ("9ms", INTERVAL, "shorter than the minimum of 10ms"),
        ("0", THRESHOLD, "shorter than the minimum of 1ms"),
        ("0s", RETENTION, "shorter than the minimum of 1ms"),
        ("1e-400", THRESHOLD, "shorter than the minimum"),
        ("-1", INTERVAL, "negative"),
        ("-1s", THRESHOLD, "negative"),
        ("-0.5ms", THRESHOLD, "negative"),
        ("-inf", THRESHOLD, "negative"),
        ("NaN", INTERVAL, "not a duration"),
        ("nan", THRESHOLD, "not a duration"),
        ("inf", INTERVAL, "not a duration"),
        ("infinity", THRESHOLD, "not a duration"),
        ("1e999", THRESHOLD, "longer than the maximum"),
        ("soon", THRESHOLD, "not a duration"),
        ("", THRESHOLD, "not a duration"),
        ("ms", THRESHOLD, "not a duration"),
        ("10 seconds", THRESHOLD, "not a duration"),
    ] {
        let err = parse_duration_within(value, bounds)
            .expect_err(value)
            .to_string();
        assert!(err.contains(says), "{value}: {err}");
        assert!(!err.contains('\n'), "{value}: {err}");
    }
}

#[test]
fn interval_bounds_are_inclusive() {
    assert_eq!(parse_interval("10ms"), Ok(Duration::from_millis(10)));
    assert_eq!(parse_interval("1d"), Ok(DAY));
    assert_eq!(parse_interval("24h"), Ok(DAY));
    assert_eq!(parse_retention("1ms"), Ok(Duration::from_millis(1)));
    assert_eq!(parse_run_length("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_run_length("3"), Ok(Duration::from_secs(3)));
}

#[test]
fn counts() {
    assert_eq!(parse_max_sockets("1000"), Ok(1000));
    assert_eq!(parse_max_sockets("1_000_000"), Ok(1_000_000));
    assert!(parse_max_sockets("0").unwrap_err().contains("from 1 to"));
    assert!(parse_max_sockets("-5").unwrap_err().contains("negative"));
    assert!(
        parse_max_sockets("99999999999999999999999")
            .unwrap_err()
            .contains("out of range")
    );
    assert!(
        parse_max_sockets("1e6")
            .unwrap_err()
            .contains("not a whole number")
    );
    assert_eq!(parse_max_workloads("0"), Ok(0));
    assert!(parse_max_workloads("100001").is_err());
    assert_eq!(parse_max_http_connections("256"), Ok(256));
    assert!(parse_max_http_connections("0").is_err());
    assert!(parse_max_http_connections("65537").is_err());
    assert_eq!(parse_port("9077"), Ok(9077));
    assert!(parse_port("65536").unwrap_err().contains("out of range"));
    assert!(parse_port("-1").unwrap_err().contains("negative"));
}

#[test]
fn ring_bytes() {
    assert_eq!(parse_ring_bytes("4096"), Ok(4096));
    assert_eq!(parse_ring_bytes("268435456"), Ok(MAX_RING_BYTES));
    let big = parse_ring_bytes("2147483648").unwrap_err();
    assert!(
        big.contains("maximum") && big.contains("kernel memory"),
        "{big}"
    );
    assert!(
        parse_ring_bytes("4294967296")
            .unwrap_err()
            .contains("maximum")
    );
    assert!(
        parse_ring_bytes("5000")
            .unwrap_err()
            .contains("power of two")
    );
    assert!(
        parse_ring_bytes("2048")
            .unwrap_err()
            .contains("power of two")
    );
    assert!(parse_ring_bytes("0").unwrap_err().contains("power of two"));
    assert!(parse_ring_bytes("-1").unwrap_err().contains("negative"));
    // Binary units, as the kernel counts memory.
    assert_eq!(parse_ring_bytes("8M"), Ok(8 << 20));
    assert_eq!(parse_ring_bytes("8MiB"), Ok(8 << 20));
    assert_eq!(parse_ring_bytes("64k"), Ok(64 << 10));
    assert!(parse_ring_bytes("1G").unwrap_err().contains("maximum"));
    assert!(parse_ring_bytes("3M").unwrap_err().contains("power of two"));
    let bad = parse_ring_bytes("8 megs").unwrap_err();
    assert!(
        bad.contains("not a size") && bad.contains("from 4096 to 268435456"),
        "{bad}"
    );
    assert!(
        !parse_ring_bytes("8X")
            .unwrap_err()
            .contains("18446744073709551615")
    );
}

#[test]
fn percentages() {
    assert_eq!(parse_percent("1%"), Ok(1.0));
    assert_eq!(parse_percent(" 0.5 % "), Ok(0.5));
    assert_eq!(parse_percent("2"), Ok(2.0));
    assert_eq!(parse_percent("0"), Ok(0.0));
    assert!(
        parse_percent("101%")
            .unwrap_err()
            .contains("between 0% and 100%")
    );
    assert!(parse_percent("-1").is_err());
    assert!(parse_percent("NaN").is_err());
    assert!(
        parse_percent("lots")
            .unwrap_err()
            .contains("not a percentage")
    );
}

#[test]
fn web_config_files() {
    assert_eq!(parse_web_config("none"), Ok(None));
    assert_eq!(
        parse_web_config("web.yml"),
        Ok(Some(PathBuf::from("web.yml")))
    );
    assert!(parse_web_config("").unwrap_err().contains("empty path"));
}

#[test]
fn listen_addresses() {
    assert_eq!(
        parse_listen(":9999").unwrap_err(),
        "\":9999\" has no address: give 127.0.0.1:9999 (this host only) or 0.0.0.0:9999 / [::]:9999 (every address)"
    );
    assert_eq!(
        parse_listen("localhost:9999").unwrap(),
        "127.0.0.1:9999".parse().unwrap()
    );
    assert_eq!(parse_listen("[::]:80").unwrap(), "[::]:80".parse().unwrap());
    assert!(parse_listen("localhost").is_err());
    assert!(parse_listen("localhost:http").is_err());
}
