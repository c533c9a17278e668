//! What every container test does and asks: the leaking server a
//! container runs, the client that connects inside it, and the agent's, `tracer leaks`' and `ss`' view of one container's
//! sockets on port 8080.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::common::{self, Agent, tracer_leaks_json, wait_until};
use crate::podman::Container;

/// A server that accepts and never closes: each connection is handed to a
/// `sleep` that holds it (fds 0-2) and never reads.
pub const LEAKY_SERVER: &str = "exec nc -ll -p 8080 -e /bin/sleep 100000";

/// From inside container `c`'s namespace, connect from 127.0.0.1:40000 to
/// its server on 127.0.0.1:8080 (once it listens): the same 4-tuple in
/// every container. The test holds the client end, a `sleep` the server end.
pub fn connect_inside(c: &Container) -> TcpStream {
    let up = wait_until(Duration::from_secs(10), || c.listening(8080));
    assert!(up, "the server in {} never listened", c.name);
    c.inside(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        let from: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        s.bind(&from.into()).expect("bind 40000");
        let to: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        s.connect(&to.into()).expect("connect");
        TcpStream::from(s)
    })
}

/// The agent's live sockets on port 8080 in namespace `netns`.
pub fn sockets(agent: &Agent, netns: u64) -> Vec<Value> {
    agent
        .json(&format!("/api/v1/sockets?port=8080&netns={netns}"))
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| s["netns"] == netns && s["live"] == true)
        .cloned()
        .collect()
}

/// The value of a series, or -1 while it does not exist.
pub fn metric(agent: &Agent, series: &str) -> f64 {
    common::metric_value(&agent.get("/metrics"), series).unwrap_or(-1.0)
}

/// True when `v["container"]` is container `c`, made by podman.
pub fn names(v: &Value, c: &Container) -> bool {
    v["container"]["id"] == c.id.as_str()
        && v["container"]["name"] == c.name.as_str()
        && v["container"]["runtime"] == "podman"
}

/// `tracer leaks --json ARGS`: the flags on port 8080 in namespace `netns`.
pub fn leak_flags(args: &[&str], netns: u64) -> Vec<Value> {
    leak_flags_on(args, netns, 8080)
}

/// `tracer leaks --json ARGS`: the flags on local port `port` in namespace
/// `netns`.
pub fn leak_flags_on(args: &[&str], netns: u64, port: u16) -> Vec<Value> {
    let (_, report) = tracer_leaks_json(args);
    let mut flags: Vec<Value> = Vec::new();
    let on_port = format!(":{port}");
    for g in report["leaks"].as_array().expect("leaks") {
        for f in g["sockets"].as_array().expect("sockets") {
            let mine =
                f["netns"] == netns && f["local"].as_str().is_some_and(|l| l.ends_with(&on_port));
            if mine && !flags.iter().any(|o| o["cookie"] == f["cookie"]) {
                flags.push(f.clone());
            }
        }
    }
    flags
}

/// `ss -tan` in the network namespace of `pid`, per state as the API names them.
pub fn ss_states(pid: u32) -> BTreeMap<String, usize> {
    common::ss_states(Command::new("nsenter").args(["-t", &pid.to_string(), "-n", "ss", "-tanH"]))
}
