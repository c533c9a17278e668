use super::*;
use crate::export::page;

fn with(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
    h
}

#[test]
fn gzip_only_when_asked() {
    assert!(accepts_gzip(&with("gzip")));
    assert!(accepts_gzip(&with("deflate, gzip;q=0.5")));
    assert!(accepts_gzip(&with("*")));
    assert!(!accepts_gzip(&with("gzip;q=0")));
    assert!(!accepts_gzip(&with("br")));
    assert!(!accepts_gzip(&HeaderMap::new()));
}

#[test]
fn gzip_round_trips() {
    use std::io::Read as _;
    let data = br#"[{"cookie":1,"state":"time_wait"}]"#.repeat(100);
    let z = gzip_bytes(&data);
    assert!(z.len() < data.len() / 5);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&z[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);
}

#[test]
fn the_next_link_keeps_the_filters() {
    let q = SocketQuery::parse(Some("state=close-wait&port=80&state=estab&limit=5&after=3"))
        .expect("query");
    assert_eq!(
        q.next(9),
        "state=close_wait&state=established&port=80&limit=5&after=9"
    );
    assert_eq!(q.limit(), Ok(5));
    let q = SocketQuery {
        limit: Some(page::MAX_LIMIT + 1),
        ..Default::default()
    };
    assert!(q.limit().unwrap_err().contains("maximum"));
    assert_eq!(SocketQuery::default().limit(), Ok(page::DEFAULT_LIMIT));
}

/// Each filter repeats and keeps what matches any of its values, as the
/// flags of `tracer leaks` do; a bad query is one sentence naming the
/// parameter.
#[test]
fn filters_repeat_and_bad_queries_say_which_parameter() {
    use crate::tcp::TcpState;
    let q = SocketQuery::parse(Some(
        "state=close-wait&state=estab&port=80&port=443&comm=a%20b",
    ))
    .expect("query");
    assert_eq!(q.state, [TcpState::CloseWait, TcpState::Established]);
    assert_eq!(
        (q.port.as_slice(), q.comm.as_slice()),
        (&[80, 443][..], &["a b".to_string()][..])
    );
    assert_eq!(SocketQuery::parse(None), Ok(SocketQuery::default()));
    let m = LeakQuery::parse(Some("pid=1&pid=2&state=close-wait"))
        .expect("query")
        .matching();
    assert_eq!(m.pids, [1, 2]);
    assert_eq!(m.states, [TcpState::CloseWait]);
    for (bad, says) in [
        (
            "port=99999",
            "port=99999: \"99999\" is out of range: give a port from 1 to 65535",
        ),
        (
            "port=0",
            "port=0: \"0\" is out of range: give a port from 1 to 65535",
        ),
        ("pid=-1", "pid \"-1\" is not a process id"),
        ("limit=5&limit=6", "limit is given more than once"),
        ("after=x", "after \"x\" is not a cookie"),
        ("colour=red", "unknown parameter \"colour\""),
    ] {
        let e = SocketQuery::parse(Some(bad)).expect_err(bad);
        assert!(e.starts_with(says), "{bad}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let e = LeakQuery::parse(Some("limit=5")).expect_err("limit");
    assert!(
        e.contains("/api/v1/leaks takes pid, comm, state, port and netns"),
        "{e}"
    );
    // A namespace by inode, on both endpoints; a name that /run/netns
    // does not hold is one sentence.
    let m = LeakQuery::parse(Some("netns=4026531840"))
        .expect("query")
        .matching();
    assert_eq!(m.netns, [4026531840]);
    assert!(!m.is_empty());
    let e = SocketQuery::parse(Some("netns=tracer-no-such-ns")).expect_err("name");
    assert_eq!(
        e,
        "netns=tracer-no-such-ns: no network namespace /run/netns/tracer-no-such-ns \
         (see `ip netns list`)"
    );
    // As the commands' --netns: all is no filter, host the agent's own.
    assert_eq!(
        SocketQuery::parse(Some("netns=all")).expect("all").netns,
        Vec::<u32>::new()
    );
    assert_eq!(
        SocketQuery::parse(Some("netns=all&netns=7")).expect_err("all and one"),
        "netns=all keeps every namespace: give it alone, or leave it out"
    );
    let own = crate::pipeline::NetnsScope::own().only();
    if let Some(own) = own {
        assert_eq!(
            SocketQuery::parse(Some("netns=host")).expect("host").netns,
            [own]
        );
        let me = format!("netns=pid:{}", std::process::id());
        assert_eq!(SocketQuery::parse(Some(&me)).expect("pid").netns, [own]);
        assert_eq!(super::missing_netns(&[own]), None);
    }
    // An inode is asked about only when nothing matched: none has 1.
    let said = super::missing_netns(&[1]).expect("no namespace has inode 1");
    assert!(
        said.starts_with("netns=1: no network namespace has inode 1 (`lsns -t net` lists them)"),
        "{said}"
    );
    assert!(SocketQuery::parse(Some("state=waiting")).is_err());
    assert_eq!(
        super::query::no_parameters(Some("foo=1"), "/api/v1/summary"),
        Err("unknown parameter \"foo\": /api/v1/summary takes none".to_owned())
    );
    assert_eq!(super::query::no_parameters(None, "/api/v1/summary"), Ok(()));
    assert_eq!(
        super::query::no_parameters(Some(""), "/api/v1/summary"),
        Ok(())
    );
}
