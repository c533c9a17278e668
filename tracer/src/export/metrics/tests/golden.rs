//! The whole `/metrics` exposition against golden copies in `golden/`:
//! a fresh agent's, and one after [`super::drive`], in both formats.
//!
//! After a deliberate change to the exposition, write the copies anew
//! with `TRACER_BLESS=1 cargo test -p tracer --lib export::metrics`, and
//! read the diff before committing it.
use super::{super::*, canonical, drive};

fn check(name: &str, text: &str) {
    let path = format!(
        "{}/src/export/metrics/tests/golden/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let got = canonical(text);
    if std::env::var_os("TRACER_BLESS").is_some() {
        std::fs::write(&path, &got).expect("writing the golden copy");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("reading the golden copy");
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name} differs from its golden copy from line {}:\n  got:  {:?}\n  want: {:?}\n\
             (TRACER_BLESS=1 writes it anew)",
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn a_fresh_exposition_matches_its_golden_copy() {
    let m = Metrics::new();
    check("fresh.openmetrics", &m.encode());
}

#[test]
fn an_exposition_after_outcomes_matches_its_golden_copy() {
    let m = Metrics::new();
    drive(&m);
    let text = m.encode();
    check("observed.openmetrics", &text);
    check("observed.classic.txt", &to_classic_text(&text));
}
