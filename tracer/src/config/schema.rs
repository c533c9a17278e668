//! The macro that turns the one table of `tracer run` settings (in
//! `config.rs`) into everything that lists them: the resolved
//! [`Settings`](super::Settings), the flags ([`RunFlags`](super::RunFlags)
//! and the [`ThresholdFlags`](super::ThresholdFlags) that `tracer events`
//! shares), the config file ([`FileConfig`](super::FileConfig)), and the
//! one overlay that lays flags or a file over the defaults.
//!
//! Each row is
//! `/// help` `name: Type = default => "VALUE" parser;`, or
//! `... parser as String;` for a value the file takes only as a string
//! (and a flag only without a leading hyphen). The help is the flag's
//! `--help` text and must say `[default: X]` with an `X` that `parser`
//! reads as `default` (a unit test checks). The flag is `--name` and the
//! file key `name`, in kebab-case; both go through `parser`, so they
//! accept and refuse the same values with the same sentence.

/// The type a config file value is read as before its parser sees it: a
/// [`Quantity`](super::Quantity) (number or string) unless the row says.
macro_rules! raw_type {
    () => {
        $crate::config::Quantity
    };
    ($raw:ident) => {
        $raw
    };
}

/// Whether the flag takes values starting with `-`: numbers do, so that
/// `-1` is refused as negative rather than taken for a flag.
macro_rules! hyphen_values {
    () => {
        true
    };
    ($raw:ident) => {
        false
    };
}

/// See the module documentation.
macro_rules! settings {
    (
        run {
            $(
                $(#[doc = $doc:tt])*
                $name:ident: $ty:ty = $default:expr => $value:tt $parse:path $(as $raw:ident)?;
            )*
        }
        thresholds {
            $(
                $(#[doc = $tdoc:tt])*
                $tname:ident: $tty:ty = $tdefault:expr => $tvalue:tt $tparse:path;
            )*
        }
    ) => {
        /// Everything `tracer run` can be told, resolved: the defaults,
        /// then the config file, then the flags.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $name: $ty, )*
            $( $(#[doc = $tdoc])* pub $tname: $tty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $( $name: $default, )*
                    $( $tname: $tdefault, )*
                }
            }
        }

        /// Flags of `tracer run` past `--config`, and one layer of settings
        /// (each `None` unless given): the flags, or a config file's keys
        /// once checked ([`FileConfig::flags`]).
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct RunFlags {
            $(
                $(#[doc = $doc])*
                #[arg(long, value_name = $value, value_parser = $parse,
                      allow_hyphen_values = hyphen_values!($($raw)?))]
                pub $name: Option<$ty>,
            )*
            /// Leak detector thresholds.
            #[command(flatten)]
            pub thresholds: ThresholdFlags,
        }

        /// Leak detector thresholds, shared by `tracer run` and `tracer
        /// events`: each `None` unless given.
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct ThresholdFlags {
            $(
                $(#[doc = $tdoc])*
                #[arg(long, value_name = $tvalue, value_parser = $tparse,
                      allow_hyphen_values = true)]
                pub $tname: Option<$tty>,
            )*
        }

        impl RunFlags {
            /// Lay the settings this layer holds over `s`.
            pub fn apply(&self, s: &mut Settings) {
                $( if let Some(v) = &self.$name { s.$name = Clone::clone(v); } )*
                self.thresholds.apply(s);
            }
        }

        impl ThresholdFlags {
            /// Lay the thresholds this layer holds over `s`.
            pub fn apply(&self, s: &mut Settings) {
                $( if let Some(v) = &self.$tname { s.$tname = Clone::clone(v); } )*
            }
        }

        /// The config file: every key optional, unknown keys rejected. Each
        /// value keeps its place in the file, so an error can give line and
        /// column.
        #[derive(Debug, Default, serde::Deserialize, Clone, PartialEq)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct FileConfig {
            $(
                $(#[doc = $doc])*
                pub $name: Option<toml::Spanned<raw_type!($($raw)?)>>,
            )*
            $(
                $(#[doc = $tdoc])*
                pub $tname: Option<toml::Spanned<raw_type!()>>,
            )*
            /// The text parsed, to turn byte offsets into lines and columns.
            #[serde(skip)]
            text: String,
            /// "config file PATH: ", which begins an error about a value;
            /// empty for text parsed without a file.
            #[serde(skip)]
            name: String,
            /// The directory of the file: a relative path in it is its
            /// neighbour, not the working directory's.
            #[serde(skip)]
            dir: Option<std::path::PathBuf>,
        }

        impl FileConfig {
            /// Check every key with the parser of its flag: the layer this
            /// file lays over the defaults, or the first bad value, named
            /// with its key, line and column. Private: its callers go
            /// through [`FileConfig::flags`], which places a relative
            /// `web-config` beside the file.
            fn layer(&self) -> anyhow::Result<RunFlags> {
                Ok(RunFlags {
                    $( $name: self.check(stringify!($name), &self.$name, $parse)?, )*
                    thresholds: ThresholdFlags {
                        $( $tname: self.check(stringify!($tname), &self.$tname, $tparse)?, )*
                    },
                })
            }
        }

        /// Each row whose help does not say `[default: X]` with an `X` its
        /// parser reads as the row's default.
        #[cfg(test)]
        fn undocumented_defaults() -> Vec<&'static str> {
            fn says<T: PartialEq>(
                help: &str,
                parse: impl Fn(&str) -> Result<T, String>,
                default: &T,
            ) -> bool {
                help.split_once("[default: ")
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .is_some_and(|(text, _)| parse(text).as_ref() == Ok(default))
            }
            let d = Settings::default();
            let mut wrong = Vec::new();
            $(
                if !says(concat!($($doc, "\n"),*), $parse, &d.$name) {
                    wrong.push(stringify!($name));
                }
            )*
            $(
                if !says(concat!($($tdoc, "\n"),*), $tparse, &d.$tname) {
                    wrong.push(stringify!($tname));
                }
            )*
            wrong
        }
    };
}
