//! Writing the files a run leaves: the generated blocks of BENCHMARKS.md,
//! which leave its hand-written parts alone, and any file with its folder.
use std::path::Path;

use anyhow::Context as _;

/// Replace the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`,
/// appending the block when it is missing.
pub fn replace_block(doc: &str, name: &str, body: &str) -> String {
    let (start, end) = (
        format!("<!-- bench:{name}:start -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    let block = format!("{start}\n{}\n{end}", body.trim_end());
    match (doc.find(&start), doc.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &doc[..a], &doc[b + end.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

/// Write `text` to `path`, creating its folder.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_in_place_or_appended() {
        let doc = "# B\nintro\n<!-- bench:x:start -->\nold\n<!-- bench:x:end -->\noutro\n";
        let d = replace_block(doc, "x", "new\n");
        assert_eq!(
            d,
            "# B\nintro\n<!-- bench:x:start -->\nnew\n<!-- bench:x:end -->\noutro\n"
        );
        let d = replace_block(&d, "y", "more");
        assert!(d.ends_with("outro\n\n<!-- bench:y:start -->\nmore\n<!-- bench:y:end -->\n"));
    }
}
