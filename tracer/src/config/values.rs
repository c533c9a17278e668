//! The values a flag or config key can take, and their bounds: durations,
//! counts, sizes, percentages and addresses. Each parser returns one
//! sentence that quotes the value and says what is expected; the caller
//! (clap, or the config file) names the flag or key. Nothing here panics,
//! whatever the input.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::pipeline::NetnsChoice;

/// The range a duration flag or key accepts, with the words for its ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Shortest accepted.
    pub min: Duration,
    /// Longest accepted.
    pub max: Duration,
    /// `min` as a user would write it.
    pub min_text: &'static str,
    /// `max` as a user would write it.
    pub max_text: &'static str,
}

const DAY: Duration = Duration::from_secs(86_400);

/// `--reconcile-interval`, `--time-wait-interval`: at least 10 ms (each
/// tick costs a wake-up, each dump a walk of the kernel's socket tables),
/// at most a day.
pub const INTERVAL: Bounds = Bounds {
    min: Duration::from_millis(10),
    max: DAY,
    min_text: "10ms",
    max_text: "1d",
};

/// Leak detector thresholds: at least 1 ms, at most 30 days.
pub const THRESHOLD: Bounds = Bounds {
    min: Duration::from_millis(1),
    max: Duration::from_secs(30 * 86_400),
    min_text: "1ms",
    max_text: "30d",
};

/// `--closed-retention`: at least 1 ms, at most a day.
pub const RETENTION: Bounds = Bounds {
    min: Duration::from_millis(1),
    max: DAY,
    min_text: "1ms",
    max_text: "1d",
};

/// `tracer events --duration`: at least 1 ms, at most 30 days (leave it
/// out to run until stopped).
pub const RUN_LENGTH: Bounds = Bounds {
    min: Duration::from_millis(1),
    max: Duration::from_secs(30 * 86_400),
    min_text: "1ms",
    max_text: "30d",
};

const DURATION_EXAMPLES: &str = "e.g. 500ms, 10s, 5m, 1h, 1d, or bare seconds";

/// Parse a duration within `b`: a number with a unit (`ms`, `s`, `m`, `h`,
/// `d`), or bare seconds.
pub fn parse_duration_within(s: &str, b: Bounds) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (t, 1.0)
    };
    let num = num.trim();
    let negative = || format!("{s:?} is negative; a duration is positive ({DURATION_EXAMPLES})");
    let not_one = || format!("{s:?} is not a duration ({DURATION_EXAMPLES})");
    let v: f64 = match num.parse() {
        _ if num.starts_with('-') => return Err(negative()),
        Ok(v) if f64::is_nan(v) || num.to_ascii_lowercase().contains("inf") => {
            return Err(not_one());
        }
        Ok(v) => v,
        Err(_) => return Err(not_one()),
    };
    let secs = v * scale;
    if secs > b.max.as_secs_f64() {
        return Err(format!(
            "{s:?} is longer than the maximum of {}",
            b.max_text
        ));
    }
    // Compared in f64 first: no conversion below can overflow or panic.
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d >= b.min => Ok(d),
        _ => Err(format!(
            "{s:?} is shorter than the minimum of {}",
            b.min_text
        )),
    }
}

/// A reconcile interval ([`INTERVAL`]).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, INTERVAL)
}

/// A leak detector threshold ([`THRESHOLD`]).
pub fn parse_threshold(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, THRESHOLD)
}

/// `--closed-retention` ([`RETENTION`]).
pub fn parse_retention(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, RETENTION)
}

/// `tracer events --duration` ([`RUN_LENGTH`]).
pub fn parse_run_length(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, RUN_LENGTH)
}

/// A whole number in `min..=max`; `what` says what it counts.
pub fn parse_count(s: &str, min: u64, max: u64, what: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    match t.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "{s:?} is out of range: give {what} from {min} to {max}"
        )),
        Err(_) if t.starts_with('-') => Err(format!(
            "{s:?} is negative: give {what} from {min} to {max}"
        )),
        Err(_) if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) => Err(format!(
            "{s:?} is out of range: give {what} from {min} to {max}"
        )),
        Err(_) => Err(format!(
            "{s:?} is not a whole number: give {what} from {min} to {max}"
        )),
    }
}

/// Most records `--max-sockets` may ask for: 100 million, some 20 GB.
pub const MAX_SOCKETS: u64 = 100_000_000;

/// `--max-sockets`: 1 to [`MAX_SOCKETS`].
pub fn parse_max_sockets(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_SOCKETS, "a number of sockets").map(|n| n as usize)
}

/// The default of `--max-workloads`.
pub const DEFAULT_MAX_WORKLOADS: usize = 256;

/// Most workloads with series of their own: beyond this, Prometheus drowns.
pub const MAX_WORKLOADS: u64 = 100_000;

/// `--max-workloads`: 0 (everything under `other`) to [`MAX_WORKLOADS`].
pub fn parse_max_workloads(s: &str) -> Result<usize, String> {
    parse_count(s, 0, MAX_WORKLOADS, "a number of workloads").map(|n| n as usize)
}

/// The default of `--max-http-connections`.
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 256;

/// Most HTTP connections `--max-http-connections` may allow: each is a
/// file, and few hosts allow a process more.
pub const MAX_HTTP_CONNECTIONS: u64 = 65_536;

/// `--max-http-connections`: 1 to [`MAX_HTTP_CONNECTIONS`].
pub fn parse_max_http_connections(s: &str) -> Result<usize, String> {
    parse_count(s, 1, MAX_HTTP_CONNECTIONS, "a number of connections").map(|n| n as usize)
}

/// A TCP port, 0 to 65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    parse_count(s, 0, u64::from(u16::MAX), "a port").map(|n| n as u16)
}

/// A port to filter by (`--port`, `-L`, `-D`): 1 to 65535. No socket a
/// filter could want has port 0 (a listener's remote port, which the
/// filters do not match).
pub fn parse_filter_port(s: &str) -> Result<u16, String> {
    parse_count(s, 1, u64::from(u16::MAX), "a port").map(|n| n as u16)
}

/// A port something may listen on: 1 to 65535. An address with it
/// (`127.0.0.1:8080`) is refused with where the address goes.
pub fn parse_listen_port(s: &str) -> Result<u16, String> {
    parse_filter_port(s).map_err(|e| match addr_and_port(s) {
        Some((addr, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => format!(
            "{s:?} has an address: give the port alone, and the address with --addr \
                 ({port} --addr {addr})"
        ),
        _ => e,
    })
}

/// `ADDR:PORT` (`[V6]:PORT`) split at its last colon, when what comes
/// before it is an IP address; the port as written.
fn addr_and_port(s: &str) -> Option<(std::net::IpAddr, &str)> {
    let (addr, port) = s.trim().rsplit_once(':')?;
    Some((addr.trim_matches(['[', ']']).parse().ok()?, port))
}

/// The largest pid Linux gives (`PID_MAX_LIMIT` on 64-bit).
pub const MAX_PID: u64 = 4_194_304;

/// `--pid`: a process id, 1 to [`MAX_PID`].
pub fn parse_pid(s: &str) -> Result<u32, String> {
    parse_count(s, 1, MAX_PID, "a process id").map(|n| n as u32)
}

/// The most bytes of a process name the kernel keeps (`TASK_COMM_LEN`
/// less its NUL): `ps -o comm`, `/proc/PID/comm` and the events show that
/// much of a longer name.
pub const COMM_MAX: usize = 15;

/// A process name to match (`--comm`, `comm=`): one the kernel could show.
/// A longer one would never match, and silently; the refusal names what
/// to ask for instead.
pub fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a process name cannot be empty".to_owned());
    }
    if s.len() <= COMM_MAX {
        return Ok(s.to_owned());
    }
    let mut cut = COMM_MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    Err(format!(
        "{s:?} is longer than the {COMM_MAX} bytes of a process name the kernel keeps \
         (ps -o comm shows {:?}): ask for that",
        &s[..cut]
    ))
}

/// An IP address alone (`--addr`), with a hint for the usual slips: a
/// port after it, or a host name.
pub fn parse_ip(s: &str) -> Result<std::net::IpAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(ip);
    }
    if let Some((ip, zone)) = t.split_once('%')
        && let Ok(ip) = ip.parse::<std::net::Ipv6Addr>()
    {
        return Err(format!(
            "{s:?} has a zone (%{zone}): give the address alone (--addr {ip}); a port is \
             looked at in every interface's scope"
        ));
    }
    match t.parse::<std::net::SocketAddr>() {
        Ok(a) => Err(format!(
            "{s:?} has a port: give the address alone (--addr {})",
            a.ip()
        )),
        Err(_) => Err(format!(
            "{s:?} is not an IP address: give one such as 127.0.0.1, 10.0.0.5 or ::1 (not a host name)"
        )),
    }
}

/// Smallest ring buffer: one page.
pub const MIN_RING_BYTES: u32 = 4096;
/// Largest ring buffer: 256 MiB.
pub const MAX_RING_BYTES: u32 = 256 << 20;

/// `--ring-bytes`: a power of two from 4096 to 256 MiB, in bytes or with
/// a binary unit (`8M`, `8MiB`: 8 MiB, as the kernel counts memory).
pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit() && c != '_' && c != '-');
    let (num, unit) = t.split_at(digits.unwrap_or(t.len()));
    let not_a_size = || {
        format!(
            "{s:?} is not a size: give a power of two of bytes from {MIN_RING_BYTES} to \
             {MAX_RING_BYTES}, or with K, M or G (8M for 8 MiB)"
        )
    };
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(not_a_size()),
    };
    if t.starts_with('-') {
        return Err(format!(
            "{s:?} is negative: give a power of two of bytes from {MIN_RING_BYTES} to \
             {MAX_RING_BYTES}"
        ));
    }
    let n = parse_count(num, 0, u64::MAX >> shift, "a power of two of bytes")
        .map_err(|_| not_a_size())?;
    check_ring_bytes(n << shift).map_err(|e| format!("{s:?} {e}"))
}

/// The bounds of `--ring-bytes`, as a phrase to follow the value.
pub fn check_ring_bytes(n: u64) -> Result<u32, String> {
    if n > u64::from(MAX_RING_BYTES) {
        return Err(format!(
            "is over the maximum of {MAX_RING_BYTES} (256 MiB): the ring buffer is kernel \
             memory, never swapped out, taken in full whether or not events come"
        ));
    }
    if n < u64::from(MIN_RING_BYTES) || !n.is_power_of_two() {
        return Err(format!(
            "is not a power of two from {MIN_RING_BYTES} to {MAX_RING_BYTES} bytes \
             (e.g. 8388608 for 8 MiB)"
        ));
    }
    Ok(n as u32)
}

/// Parse `ADDR:PORT` (`localhost:PORT` is 127.0.0.1's). `:PORT` is
/// refused: Go's exporters read it as every address, and an agent that
/// listened on loopback instead, or the other way round, would surprise.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Some(port) = t.strip_prefix(':') {
        return Err(format!(
            "{s:?} has no address: give 127.0.0.1:{port} (this host only) or 0.0.0.0:{port} / [::]:{port} (every address)"
        ));
    }
    let full = match t.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => t.to_owned(),
    };
    full.parse().map_err(|_| {
        // An address and a port that is no port: say which part is wrong.
        if let Some((_, port)) = addr_and_port(&full)
            && let Err(e) = parse_port(port)
        {
            return format!("{s:?}: the port {e}");
        }
        format!("{s:?} is not an ADDR:PORT listen address (e.g. 127.0.0.1:9077 or [::]:9077)")
    })
}

/// `--netns`: all, host, a `/run/netns` name, an inode, or `pid:N`.
pub fn parse_netns(s: &str) -> Result<NetnsChoice, String> {
    s.parse()
}

/// `--web-config`: the web config file, if any ([`parse_web_config`]).
pub type WebConfigFile = Option<PathBuf>;

/// `--web-config`: a path, or `none` for plain HTTP. The file itself is
/// read when the agent starts (`export::web`), which names what is wrong
/// in it.
pub fn parse_web_config(s: &str) -> Result<WebConfigFile, String> {
    match s {
        "none" => Ok(None),
        "" => Err("an empty path: give the web config file's path, or none".to_owned()),
        _ => Ok(Some(PathBuf::from(s))),
    }
}

/// Parse a percentage of one core: `1`, `1%`, `0.5%`; 0 means no limit.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (e.g. 1%, 0.5%, 0 for no limit)"))?;
    if v.is_finite() && (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be between 0% and 100%"))
    }
}

#[cfg(test)]
mod tests;
