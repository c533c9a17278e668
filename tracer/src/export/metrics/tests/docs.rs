//! Every family exported is documented in docs/metrics.md with its type,
//! and every family its tables document is exported.
use std::collections::BTreeMap;

use super::{super::*, drive};

/// `name -> type` of the families in a classic-text exposition.
fn exported(classic: &str) -> BTreeMap<String, String> {
    classic
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, ty)| (name.to_owned(), ty.to_owned()))
        .collect()
}

/// `name -> type` of the rows of the tables in docs/metrics.md: the first
/// column names the metric, the second starts with its type.
fn documented(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `tracer_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let ty = rest
                .trim_start_matches([' ', '|'])
                .split_whitespace()
                .next()?;
            Some((format!("tracer_{name}"), ty.to_owned()))
        })
        .collect()
}

#[test]
fn every_family_is_documented_and_every_documented_one_exported() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("reading docs/metrics.md");
    let documented = documented(&doc);
    let m = Metrics::new();
    drive(&m);
    let exported = exported(&to_classic_text(&m.encode()));
    assert!(exported.len() > 30, "{exported:?}");
    let undocumented: Vec<_> = exported
        .iter()
        .filter(|(name, _)| !documented.contains_key(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported, not in docs/metrics.md: {undocumented:?}"
    );
    let missing: Vec<_> = documented
        .keys()
        .filter(|name| !exported.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "in docs/metrics.md, not exported: {missing:?}"
    );
    for (name, ty) in &exported {
        assert_eq!(
            documented.get(name),
            Some(ty),
            "{name}: its type in docs/metrics.md"
        );
    }
}
