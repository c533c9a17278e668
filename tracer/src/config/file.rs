//! Reading the config file: a regular file of at most 1 MiB of UTF-8
//! TOML, parsed into [`FileConfig`], whose errors name the key, its line
//! and column. Its keys are declared, with their flags, in the table of
//! `config.rs`.
use std::{io::Read as _, path::Path};

use anyhow::Context as _;
use serde::Deserialize;
use toml::Spanned;

use super::{FileConfig, Settings};

/// The most a config file may hold: 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl FileConfig {
    /// Read and parse a TOML file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`]. FIFOs, devices and directories are refused
    /// without blocking on them.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let name = || format!("config file {}", path.display());
        let text = read_bounded(path).with_context(name)?;
        let mut f = FileConfig::parse(&text).with_context(name)?;
        f.name = format!("{}: ", name());
        f.dir = path.parent().map(Path::to_path_buf);
        Ok(f)
    }

    /// Parse TOML text.
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        match toml::from_str::<FileConfig>(text) {
            Ok(mut f) => {
                f.text = text.to_owned();
                Ok(f)
            }
            Err(e) => {
                let msg = e.message().trim_end().replace('\n', "; ");
                match e.span() {
                    Some(span) => {
                        let (line, col) = line_col(text, span.start);
                        // A key's value at fault, or the key itself (a
                        // duplicate one, whose error points at the key).
                        let key = key_before(text, span.start).or_else(|| key_at(text, span.start));
                        let hint = unquoted_text(text, span.start).map_or(String::new(), |v| {
                            format!(" (a text value goes in quotes: \"{v}\")")
                        });
                        // Flags of every command, not settings of the agent.
                        let hint = match key.as_deref() {
                            Some(k @ ("log-level" | "log-format" | "config")) => {
                                format!(
                                    "{hint} ({k} is a command-line flag, not a config key: give \
                                     --{k})"
                                )
                            }
                            _ => hint,
                        };
                        match key {
                            Some(key) => {
                                anyhow::bail!("key {key} at line {line}, column {col}: {msg}{hint}")
                            }
                            None => anyhow::bail!("line {line}, column {col}: {msg}{hint}"),
                        }
                    }
                    None => anyhow::bail!("{msg}"),
                }
            }
        }
    }

    /// "key K at line L, column C", for an error about one value.
    fn at<T>(&self, key: &str, v: &Spanned<T>) -> String {
        let (line, col) = line_col(&self.text, v.span().start);
        format!("{}key {key} at line {line}, column {col}", self.name)
    }

    /// Check the value of `field` (if given) with `parse`, naming its key
    /// and place.
    pub(super) fn check<R: Raw, U>(
        &self,
        field: &str,
        v: &Option<Spanned<R>>,
        parse: impl FnOnce(&str) -> Result<U, String>,
    ) -> anyhow::Result<Option<U>> {
        v.as_ref()
            .map(|v| {
                parse(v.get_ref().text())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", self.at(&field.replace('_', "-"), v)))
            })
            .transpose()
    }

    /// Lay this file's values over `s`. A relative `web-config` is the
    /// file's neighbour (`/etc/tracer/web.yml` beside
    /// `/etc/tracer/tracer.toml`), as the paths inside a web config are
    /// that file's: under systemd the working directory is `/`.
    pub fn apply(&self, s: &mut Settings) -> anyhow::Result<()> {
        self.flags()?.apply(s);
        Ok(())
    }

    /// This file's values as flags, each key checked with the parser of
    /// its flag and named with its line and column when bad; a relative
    /// `web-config` made the file's neighbour.
    pub fn flags(&self) -> anyhow::Result<super::RunFlags> {
        let mut layer = self.layer()?;
        if let (Some(dir), Some(Some(web))) = (&self.dir, &mut layer.web_config)
            && web.is_relative()
        {
            *web = dir.join(&*web);
        }
        Ok(layer)
    }
}

/// Read at most [`MAX_CONFIG_BYTES`] of a regular file. Opened without
/// blocking, so a FIFO with no writer is refused rather than waited on.
fn read_bounded(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .context("cannot be opened")?;
    let meta = file.metadata().context("cannot be inspected")?;
    let t = meta.file_type();
    let kind = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        ""
    };
    if !kind.is_empty() {
        anyhow::bail!("is {kind}, not a regular file; give the path of a TOML file");
    }
    let too_big = || {
        anyhow::anyhow!(
            "is over the {} KiB a config file may hold; is it the right file?",
            MAX_CONFIG_BYTES >> 10
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("cannot be read")?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        anyhow::anyhow!("is not UTF-8 text (line {line}, column {col})")
    })
}

/// The 1-based line and column (in characters) of byte `at` in `text`.
pub(super) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The key of a `key = value` line when byte `at` lies in its value.
pub(super) fn key_before(text: &str, at: usize) -> Option<String> {
    let (start, at) = (line_start(text, at), boundary(text, at));
    let (key, _) = text[start..at].split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| key.to_owned())
}

/// The key a `key = value` line starts with when byte `at` lies in the key.
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = line_start(text, at);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    key_before(text, start + key.len() + 1)
}

/// The byte where the line holding byte `at` of `text` begins.
fn line_start(text: &str, at: usize) -> usize {
    text[..boundary(text, at)].rfind('\n').map_or(0, |i| i + 1)
}

/// Byte `at` of `text`, or the start of the character it falls in.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The value of the `key = value` line byte `at` lies in, when it is bare
/// text TOML cannot read (an address or a name without its quotes):
/// `listen = 127.0.0.1:9077`.
fn unquoted_text(text: &str, at: usize) -> Option<String> {
    let start = line_start(text, at);
    let line = text[start..].lines().next()?;
    let (_, value) = line.split_once('=')?;
    let value = value.split(" #").next()?.trim();
    // An address, a path or a duration: what a word alone (`yes`) or a
    // number is not, and quotes make readable.
    let bare = !value.is_empty()
        && !value.starts_with(['"', '\'', '[', '{'])
        && (value.contains([':', '/', '.'])
            || value.starts_with(|c: char| c.is_ascii_digit())
                && value.contains(|c: char| c.is_ascii_alphabetic()))
        && value.parse::<f64>().is_err();
    bare.then(|| value.to_owned())
}

/// A config value that may be a number or a string: `reconcile-interval
/// = 5` (bare seconds) or `"5s"`, `reconcile-budget = 0.5` or `"0.5%"`,
/// `max-sockets = 1000`. Checked, with its key, by [`FileConfig::flags`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or a string such as \"10s\" or \"1%\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            // Out of every flag's range, which its parser then says.
            fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // Debug keeps 1e20 short; a whole float still reads as one.
                Ok(Quantity(format!("{v:?}")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A config value as written, before its flag's parser reads it.
pub(super) trait Raw {
    /// The text the parser reads.
    fn text(&self) -> &str;
}

impl Raw for Quantity {
    fn text(&self) -> &str {
        &self.0
    }
}

impl Raw for String {
    fn text(&self) -> &str {
        self
    }
}
