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
    let q = SocketQuery {
        state: Some("close-wait".into()),
        port: Some(80),
        limit: Some(5),
        after: Some(3),
        ..Default::default()
    };
    assert_eq!(q.next(9), "state=close-wait&port=80&limit=5&after=9");
    assert_eq!(q.limit(), Ok(5));
    let q = SocketQuery {
        limit: Some(page::MAX_LIMIT + 1),
        ..Default::default()
    };
    assert!(q.limit().unwrap_err().contains("maximum"));
    assert_eq!(SocketQuery::default().limit(), Ok(page::DEFAULT_LIMIT));
}
