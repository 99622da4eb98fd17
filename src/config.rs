//! Configuration: the JSON file, its defaults, the original's key names, and command-line overrides.
//!
//! Every key is listed once, in the `config_keys!` table below: name, type, default, the flag's value
//! name and help. From that one line come the [`Config`] field and its default, the file's key (serde,
//! unknown keys refused), the `--flag` (clap), the merge of file and flags over the defaults, and the
//! tests that round-trip every key, so a key cannot be readable from one place and forgotten in another.
//!
//! Every key has a default, so an empty file (or none) is a valid configuration. An unknown key is an
//! error that names it: a typo must not silently fall back to a default. A value of the wrong type, or a
//! name that is not one of an enum key's names, is an error that names the key, the value and what is
//! allowed.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::auth::AuthToken;

/// When the disk store's writes reach the disk. Parsed once, from the file or the flag, so a misspelt
/// policy is refused at startup instead of quietly becoming the default; the server maps it onto the
/// store's own enum (the store knows neither serde nor clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Fsync {
    /// Never fsync; the kernel writes back when it likes (a machine crash may lose recent writes)
    Never,
    /// fsync once a second in the background (a machine crash loses about a second at most)
    EverySec,
    /// fsync before every reply (a machine crash loses nothing acknowledged)
    Always,
}

/// The log level when `RUST_LOG` is not set. An enum rather than a filter string so a typo is refused at
/// startup with the allowed names, and the logger is built from it without parsing text again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LogLevel {
    /// No logging at all
    Off,
    /// Errors only
    Error,
    /// Errors and warnings (slow ops are logged at warn)
    Warn,
    /// Startup, shutdown, recovery and volume changes too
    Info,
    /// Per-connection events too
    Debug,
    /// Everything
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Why a configuration cannot be used. Each variant carries what the message needs, so callers and tests
/// can tell the cases apart without reading text.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file asked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid JSON, has an unknown key, or a key whose value has the wrong type or is not
    /// one of the key's names; serde's message names the key (and the allowed names of an enum key).
    Parse {
        /// The file (empty when the JSON did not come from a file).
        path: PathBuf,
        /// Where and why parsing stopped.
        source: serde_json::Error,
    },
    /// A key's value is outside what the server can use.
    Invalid {
        /// The key, as named in the file.
        key: &'static str,
        /// The value given, as the message shows it.
        value: String,
        /// What the value must be, completing "KEY must be ...".
        expected: &'static str,
    },
    /// Two keys that set the same thing were both given.
    Conflict {
        /// The key of this server's own name.
        key: &'static str,
        /// The original's keys that say the same.
        other: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            ConfigError::Parse { path, source } if path.as_os_str().is_empty() => write!(f, "{source}"),
            ConfigError::Parse { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::Invalid { key, value, expected } => {
                write!(f, "{key} must be {expected}, not {value}")
            }
            ConfigError::Conflict { key, other } => write!(f, "give either {key} or {other}, not both"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Parse { source, .. } => Some(source),
            ConfigError::Invalid { .. } | ConfigError::Conflict { .. } => None,
        }
    }
}

/// A type a config key may have: how its value is written after its flag. Most types are read as they
/// are; an optional key is read through [`OrNone`], so `none` turns it off as `null` does in the file.
trait KeyType: Sized {
    /// What clap parses the flag's text into.
    type Flag: Clone + Send + Sync + 'static;
    /// The key's value from its flag's.
    fn from_flag(flag: Self::Flag) -> Self;
    /// The value as it is typed after the flag: `--help` shows the defaults this way.
    fn flag_text(&self) -> String;
}

/// Types whose flag value is the value itself, written by their `Display`.
macro_rules! plain_key_types {
    ($($ty:ty),+) => {$(
        impl KeyType for $ty {
            type Flag = $ty;
            fn from_flag(flag: $ty) -> $ty {
                flag
            }
            fn flag_text(&self) -> String {
                self.to_string()
            }
        }
    )+};
}
plain_key_types!(usize, u32, u64, f64, bool, String, Fsync, LogLevel);

/// The token is typed as its text after the flag (or in the environment); it is checked by
/// [`Config::validate`], like every other value.
impl KeyType for AuthToken {
    type Flag = String;
    fn from_flag(flag: String) -> AuthToken {
        AuthToken::new(flag)
    }
    fn flag_text(&self) -> String {
        self.expose().to_owned()
    }
}

/// In the file the token is a string.
impl<'de> Deserialize<'de> for AuthToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(AuthToken::new)
    }
}

/// Written back as the string it was read from (the tests feed every key back through the file).
impl Serialize for AuthToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl KeyType for PathBuf {
    type Flag = PathBuf;
    fn from_flag(flag: PathBuf) -> PathBuf {
        flag
    }
    fn flag_text(&self) -> String {
        self.display().to_string()
    }
}

impl<T: KeyType> KeyType for Option<T> {
    type Flag = OrNone<T::Flag>;
    fn from_flag(flag: OrNone<T::Flag>) -> Option<T> {
        flag.0.map(T::from_flag)
    }
    fn flag_text(&self) -> String {
        self.as_ref().map_or_else(|| "none".into(), T::flag_text)
    }
}

/// The flag value of a key that can be off: `none` (the file's `null`) or a value.
#[derive(Debug, Clone)]
struct OrNone<T>(Option<T>);

impl<T: FromStr> FromStr for OrNone<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, T::Err> {
        if s == "none" {
            Ok(OrNone(None))
        } else {
            s.parse().map(|v| OrNone(Some(v)))
        }
    }
}

/// The enum keys' names, for their `Display` (and so for `--help`'s defaults): the names clap parses.
macro_rules! display_by_value_name {
    ($($ty:ty),+) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.to_possible_value() {
                    Some(value) => f.write_str(value.get_name()),
                    None => Ok(()),
                }
            }
        }
    )+};
}
display_by_value_name!(Fsync, LogLevel);

/// A file key's name at the type level (one zero-sized marker per key, in the `key` module), so the error
/// of a value that does not parse can name its key: serde's own errors do not say which field failed.
trait KeyName {
    /// The key as written in the file.
    const NAME: &'static str;
}

/// Declares one marker type per key name.
macro_rules! key_names {
    ($($name:ident),+) => {$(
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub(super) enum $name {}
        impl super::KeyName for $name {
            const NAME: &'static str = stringify!($name);
        }
    )+};
}

/// A file value of key `K`: parsed as `T`, and if it does not parse, the error starts with the key's name.
/// The value goes through `serde_json::Value` first so the inner error carries no position of its own;
/// the file parser then adds the line and column once.
struct Keyed<T, K>(T, PhantomData<K>);

impl<'de, T: DeserializeOwned, K: KeyName> Deserialize<'de> for Keyed<T, K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        T::deserialize(raw)
            .map(|value| Keyed(value, PhantomData))
            .map_err(|e| de::Error::custom(format_args!("{}: {e}", K::NAME)))
    }
}

/// A number the original read with Python's `int()`, so that a string holding one was fine too: `10002` or
/// `"10002"` (blanks around it allowed, as `int()` allows them).
struct Lenient<T>(T);

impl<'de, T: DeserializeOwned + FromStr> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(text) => text.trim().parse().map(Lenient).map_err(|_| {
                de::Error::custom(format_args!(
                    "expected a whole number (or a string holding one), not {text:?}"
                ))
            }),
            other => T::deserialize(other).map(Lenient).map_err(de::Error::custom),
        }
    }
}

/// A key that appears in the file is given, even as `null`: that is how an optional key (`data_dir`,
/// `http_listen`) is turned off, and for any other key `null` is a type error rather than the default.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A flag's help with the key's built-in default after it.
fn help_with_default<T: KeyType>(help: &str, default: T) -> String {
    format!("{help} [default: {}]", default.flag_text())
}

/// What `--help` says of the original's config keys, after the flags.
const SEED_KEYS_HELP: &str = "\
The config file takes every flag's name as a key (with underscores: \"max_key_bytes\"), and the original
CacheServer's keys: CACHE_SERVER_IP or SERVER_IP (host of listen), CACHE_SERVER_PORT or SERVER_PORT (port of
listen), CACHE_WORKERS or WORKERS (workers), CACHE_VERBOSE (log_level debug when true, warn when false) and
API_PATH (read, unused). Their numbers may be written as strings (\"10002\"), as the original allowed.";

/// Generates everything a key needs from one line per key:
/// `/// doc` `name: Type = default, "VALUE_NAME", "flag help" [, env "VAR"];`
/// - the [`Config`] field (documented by the doc line) and its default,
/// - the file key (`FileConfig`, all `Option`s, unknown keys refused; the original's names are read
///   beside them, see [`FileConfig::apply_seed`]),
/// - the `--name` flag (`Cli`, dashes for underscores), with its default in `--help`; with `env`, the
///   environment variable `VAR` too, read by clap when the flag is absent (so the flag wins over it, and
///   both over the file), its value never shown in `--help`,
/// - the merges: `FileConfig::apply_keys` and [`Config::apply`], and [`Config::KEYS`].
macro_rules! config_keys {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty = $default:expr, $value_name:literal, $help:literal $(, env $env:literal)?;
    )+) => {
        /// The server's settings after the file and the flags are merged. It serializes as a config file
        /// would be written, which the tests use to feed every key back through the file.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct Config {
            $( $(#[$doc])* pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )+ }
            }
        }

        impl Config {
            /// Every key, as named in the file (the flag is `--` and the name with dashes for underscores),
            /// in the order of the table: for tools and tests that must cover every key.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),+];

            /// Puts the command line's flags over this configuration.
            pub fn apply(&mut self, cli: &Cli) {
                $( if let Some(flag) = &cli.$name {
                    self.$name = KeyType::from_flag(flag.clone());
                } )+
            }

            /// For each key: its name, a copy of the defaults where only that key holds another value,
            /// and that value as typed after the flag.
            #[cfg(test)]
            fn each_key_changed() -> Vec<(&'static str, Config, String)> {
                let defaults = Config::default();
                vec![$({
                    let config = Config { $name: tests::Sample::other(&defaults.$name), ..defaults.clone() };
                    let text = KeyType::flag_text(&config.$name);
                    (stringify!($name), config, text)
                }),+]
            }
        }

        /// Marker types naming the file's keys, for [`Keyed`].
        mod key {
            key_names!(
                $($name,)+
                CACHE_SERVER_IP, SERVER_IP, CACHE_SERVER_PORT, SERVER_PORT, CACHE_WORKERS, WORKERS, API_PATH
            );
        }

        /// The config file as written: every key optional, unknown keys refused. The original's keys are
        /// accepted under each of their old names, one field per name, so that a message can name the key
        /// the user wrote.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileConfig {
            $(
                #[serde(default, deserialize_with = "present")]
                $name: Option<Keyed<$ty, key::$name>>,
            )+
            /// The original's host of the JSON port (with a port key, instead of `listen`).
            #[serde(rename = "CACHE_SERVER_IP")]
            seed_ip: Option<Keyed<String, key::CACHE_SERVER_IP>>,
            /// The same under the original README's name.
            #[serde(rename = "SERVER_IP")]
            seed_ip_readme: Option<Keyed<String, key::SERVER_IP>>,
            /// The original's port of the JSON port.
            #[serde(rename = "CACHE_SERVER_PORT")]
            seed_port: Option<Keyed<Lenient<u16>, key::CACHE_SERVER_PORT>>,
            /// The same under the original README's name.
            #[serde(rename = "SERVER_PORT")]
            seed_port_readme: Option<Keyed<Lenient<u16>, key::SERVER_PORT>>,
            /// The original's worker count (`workers`).
            #[serde(rename = "CACHE_WORKERS")]
            seed_workers: Option<Keyed<Lenient<usize>, key::CACHE_WORKERS>>,
            /// The same under the original README's name.
            #[serde(rename = "WORKERS")]
            seed_workers_readme: Option<Keyed<Lenient<usize>, key::WORKERS>>,
            /// The original's verbosity switch: truthy means `log_level` debug, anything else warn.
            #[serde(rename = "CACHE_VERBOSE")]
            seed_verbose: Option<serde_json::Value>,
            /// The original REST front's route prefix; read so old files load, otherwise unused.
            #[serde(rename = "API_PATH")]
            seed_api_path: Option<Keyed<String, key::API_PATH>>,
        }

        impl FileConfig {
            /// Puts the keys of the table that the file gives over `config`.
            fn apply_keys(self, config: &mut Config) {
                $( if let Some(Keyed(value, _)) = self.$name {
                    config.$name = value;
                } )+
            }
        }

        /// Command line: `bankcache [CONFIG_PATH] [flags]`. Flags override the file. The flags are read
        /// through [`Config::apply`]; each holds its key's command-line type.
        #[derive(Debug, Default, Parser)]
        #[command(
            name = "bankcache",
            version,
            about = "A banked JSON-over-TCP cache server",
            after_help = SEED_KEYS_HELP
        )]
        pub struct Cli {
            /// JSON config file [default: ./config.json when present, else built-in defaults]
            pub config: Option<PathBuf>,
            $(
                #[arg(
                    long,
                    $(env = $env, hide_env_values = true,)?
                    value_name = $value_name,
                    help = help_with_default::<$ty>($help, $default)
                )]
                $name: Option<<$ty as KeyType>::Flag>,
            )+
        }
    };
}

config_keys! {
    /// Address of the JSON port, `HOST:PORT`.
    listen: String = "127.0.0.1:10001".into(), "ADDR:PORT",
        "Address of the JSON port, HOST:PORT (port 0 picks a free one)";
    /// Worker threads that execute ops.
    workers: usize = 2, "N", "Worker threads that execute ops";
    /// Requests per reactor turn that a memory-only server runs on the reactor thread itself instead of
    /// handing them to a worker; 0 always hands off.
    inline_ops: usize = 256, "N",
        "Requests per reactor turn a memory-only server runs on the reactor thread (0: always hand off)";
    /// Log level when `RUST_LOG` is not set.
    log_level: LogLevel = LogLevel::Info, "LEVEL", "Log level (RUST_LOG wins when set)";
    /// Ops slower than this many milliseconds are logged at warn; 0 turns it off.
    slow_log_ms: u64 = 100, "MS", "Log ops slower than this many milliseconds at warn (0: off)";
    /// Longest request, in bytes; a longer one closes the connection.
    max_request_bytes: usize = 2 * 1024 * 1024, "N",
        "Longest request in bytes; a longer one closes the connection";
    /// Longest key or bank name, in bytes.
    max_key_bytes: usize = 1024, "N", "Longest key or bank name in bytes";
    /// Longest value, in bytes of its JSON text.
    max_value_bytes: usize = 1024 * 1024, "N", "Longest value in bytes (of its JSON text)";
    /// Most client connections open at once.
    max_connections: usize = 10_000, "N", "Most client connections open at once";
    /// Seconds a JSON connection may send nothing, with nothing of it in progress, before it is closed; 0
    /// never closes (as Redis's `timeout 0`): the JSON port's clients often hold connections in pools.
    idle_timeout: f64 = 0.0, "SECONDS",
        "Seconds a JSON connection may send nothing before it is closed (0: never)";
    /// Interval of the background expiry sweep, in milliseconds.
    sweep_interval_ms: u64 = 100, "MS", "Interval of the background expiry sweep in milliseconds";
    /// Directory of the volume store; `None` for a memory-only cache.
    data_dir: Option<PathBuf> = None, "DIR",
        "Directory of the disk store (volumes); \"none\" for a memory-only cache";
    /// Bytes per volume file.
    volume_size: u64 = 1 << 30, "BYTES", "Bytes per volume file";
    /// Number of volume files used in turn.
    volume_count: u32 = 10, "N", "Number of volume files used in turn";
    /// When writes reach the disk.
    fsync: Fsync = Fsync::EverySec, "POLICY", "When writes reach the disk";
    /// Bytes of values kept in RAM at most.
    memory_max_bytes: u64 = 1 << 30, "BYTES", "Bytes of values kept in RAM at most";
    /// Disk reads of a value, each within the window of the last, after which it is kept in RAM.
    cache_after_miss_count: u32 = 3, "N",
        "Disk reads (each within the window of the last) after which a value is kept in RAM";
    /// That window, in seconds (fractions allowed).
    cache_after_miss_count_duration: f64 = 60.0, "SECONDS",
        "The window of --cache-after-miss-count, in seconds";
    /// Address of the HTTP port, `HOST:PORT`; `None` for no HTTP port.
    http_listen: Option<String> = Some("127.0.0.1:1234".into()), "ADDR:PORT",
        "Address of the HTTP port, HOST:PORT; \"none\" for no HTTP port";
    /// The bank the HTTP file API stores into.
    http_bank: String = "files".into(), "BANK", "The bank the HTTP file API stores into";
    /// Seconds an HTTP connection may sit idle (or stuck in a request) before it is closed.
    http_idle_timeout: f64 = 60.0, "SECONDS", "Seconds an HTTP connection may sit idle before it is closed";
    /// Bytes of replies a connection may have waiting for the socket: past it the server stops reading the
    /// connection's requests and running its jobs until the client reads; also the longest one reply
    /// (a `bank.keys` listing) may be.
    max_output_bytes: usize = 16 << 20, "BYTES",
        "Bytes of replies a connection may have unread before the server stops reading its requests";
    /// Seconds a client may keep `max_output_bytes` of replies unread before it is closed; 0 never closes.
    output_timeout: f64 = 60.0, "SECONDS",
        "Seconds a client may sit on max_output_bytes of unread replies before it is closed (0: never)";
    /// Seconds a graceful stop (SIGTERM, SIGINT) may take: requests already read are run and their replies
    /// delivered until then at most, so a client that does not read cannot hold the process.
    shutdown_timeout: f64 = 5.0, "SECONDS",
        "Seconds a graceful stop may take before connections still owed replies are closed";
    /// The shared secret clients must show: a JSON connection runs nothing before `auth` with it, an HTTP
    /// request needs `Authorization: Bearer` with it. `None`: anyone who reaches the ports may do anything
    /// (then the server warns when it listens beyond loopback). The environment variable keeps it out of
    /// files and of the process's arguments.
    auth_token: Option<AuthToken> = None, "TOKEN",
        "Token clients must show (JSON: the auth op first; HTTP: Authorization: Bearer TOKEN); \"none\" for \
         none. The flag wins over BANKCACHE_AUTH_TOKEN, which wins over the file",
        env "BANKCACHE_AUTH_TOKEN";
    /// Serve `GET /metrics` without the token when `auth_token` is set, for a scraper on a trusted
    /// network; everything else still needs it.
    metrics_public: bool = false, "BOOL",
        "Serve /metrics without the token when auth_token is set (true or false)";
}

impl Cli {
    /// The config file this command line reads: the one named, else `./config.json` when there is one,
    /// else none (the built-in defaults). The start-up summary says which, since a server started from
    /// another directory silently loses `./config.json`.
    pub fn config_file(&self) -> Option<&Path> {
        let default_path = Path::new("config.json");
        match &self.config {
            Some(path) => Some(path.as_path()),
            None if default_path.is_file() => Some(default_path),
            None => None,
        }
    }
}

impl Config {
    /// Loads the configuration the command line asks for: its file (or `./config.json` when present),
    /// then its flags on top.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let mut config = match cli.config_file() {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(cli);
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::from_json(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.into(), source },
            other => other,
        })
    }

    /// Parses config JSON over the defaults: the original's keys first, then the table's keys.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_json::from_slice(text)
            .map_err(|source| ConfigError::Parse { path: PathBuf::new(), source })?;
        let mut config = Config::default();
        file.apply_seed(&mut config)?;
        file.apply_keys(&mut config);
        Ok(config)
    }

    /// Checks ranges and formats; the first value out of range is the error, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        /// `Ok` when `ok`, else the error saying what `key` must be and what it was.
        fn check(
            ok: bool,
            key: &'static str,
            value: String,
            expected: &'static str,
        ) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid { key, value, expected })
            }
        }
        check((1..=1024).contains(&self.workers), "workers", self.workers.to_string(), "between 1 and 1024")?;
        for (key, value) in [
            ("max_request_bytes", self.max_request_bytes),
            ("max_key_bytes", self.max_key_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_connections", self.max_connections),
            ("max_output_bytes", self.max_output_bytes),
        ] {
            check(value >= 1, key, value.to_string(), "at least 1")?;
        }
        let key_bytes = self.max_key_bytes;
        check(key_bytes <= usize::from(u16::MAX), "max_key_bytes", key_bytes.to_string(), "at most 65535")?;
        check(self.volume_count >= 1, "volume_count", self.volume_count.to_string(), "at least 1")?;
        check(
            (4096..=u64::from(u32::MAX)).contains(&self.volume_size),
            "volume_size",
            self.volume_size.to_string(),
            "between 4096 and 4294967295",
        )?;
        check(
            self.memory_max_bytes >= 1,
            "memory_max_bytes",
            self.memory_max_bytes.to_string(),
            "at least 1",
        )?;
        check(
            (1..=255).contains(&self.cache_after_miss_count),
            "cache_after_miss_count",
            self.cache_after_miss_count.to_string(),
            "between 1 and 255",
        )?;
        let window = self.cache_after_miss_count_duration;
        check(
            (0.0..4e6).contains(&window),
            "cache_after_miss_count_duration",
            window.to_string(),
            "between 0 and 4000000 seconds",
        )?;
        let timeout = self.output_timeout;
        check(
            (0.0..1e9).contains(&timeout),
            "output_timeout",
            timeout.to_string(),
            "between 0 and 1000000000 seconds",
        )?;
        let stop = self.shutdown_timeout;
        check(
            stop > 0.0 && stop < 1e9,
            "shutdown_timeout",
            stop.to_string(),
            "a positive number of seconds below 1000000000",
        )?;
        let idle = self.idle_timeout;
        check(
            (0.0..1e9).contains(&idle),
            "idle_timeout",
            idle.to_string(),
            "between 0 and 1000000000 seconds",
        )?;
        let idle = self.http_idle_timeout;
        check(
            idle > 0.0 && idle < 1e9,
            "http_idle_timeout",
            idle.to_string(),
            "a positive number of seconds below 1000000000",
        )?;
        let bank = self.http_bank.len();
        check(
            (1..=usize::from(u16::MAX)).contains(&bank),
            "http_bank",
            format!("{bank} bytes long"),
            "a bank name of 1 to 65535 bytes",
        )?;
        if let Some(http) = &self.http_listen {
            check(http.contains(':'), "http_listen", format!("{http:?}"), "HOST:PORT (or null for none)")?;
        }
        let sweep = self.sweep_interval_ms;
        check(sweep >= 1, "sweep_interval_ms", sweep.to_string(), "at least 1")?;
        if let Some(token) = &self.auth_token {
            // The message says what is wrong with the token without showing it.
            if let Err(why) = AuthToken::check_text(token.expose()) {
                let value = format!("a token of {} bytes that is not {why}", token.expose().len());
                check(false, "auth_token", value, "1 to 4096 bytes of printable ASCII without spaces")?;
            }
        }
        check(self.listen.contains(':'), "listen", format!("{:?}", self.listen), "HOST:PORT")
    }
}

impl FileConfig {
    /// Puts the original's keys over `config`, by the names written: `CACHE_SERVER_IP`/`SERVER_IP` and
    /// `CACHE_SERVER_PORT`/`SERVER_PORT` make `listen`, `CACHE_WORKERS`/`WORKERS` set `workers`, and
    /// `CACHE_VERBOSE` sets `log_level` (which `log_level` itself overrides). Two keys that set the same
    /// thing may not both be given; the message names the two as written.
    fn apply_seed(&self, config: &mut Config) -> Result<(), ConfigError> {
        /// The one of two names of the same key that was given, if any; both is a conflict.
        fn one<'a, T>(
            a: (&'static str, Option<&'a T>),
            b: (&'static str, Option<&'a T>),
        ) -> Result<Option<(&'static str, &'a T)>, ConfigError> {
            match (a.1, b.1) {
                (Some(_), Some(_)) => Err(ConfigError::Conflict { key: a.0, other: b.0 }),
                (Some(v), None) => Ok(Some((a.0, v))),
                (None, Some(v)) => Ok(Some((b.0, v))),
                (None, None) => Ok(None),
            }
        }
        let ip = one(
            ("CACHE_SERVER_IP", self.seed_ip.as_ref().map(|Keyed(ip, _)| ip)),
            ("SERVER_IP", self.seed_ip_readme.as_ref().map(|Keyed(ip, _)| ip)),
        )?;
        let port = one(
            ("CACHE_SERVER_PORT", self.seed_port.as_ref().map(|Keyed(Lenient(port), _)| port)),
            ("SERVER_PORT", self.seed_port_readme.as_ref().map(|Keyed(Lenient(port), _)| port)),
        )?;
        if let Some(written) = ip.map(|(name, _)| name).or(port.map(|(name, _)| name)) {
            if self.listen.is_some() {
                return Err(ConfigError::Conflict { key: "listen", other: written });
            }
        }
        if ip.is_some() || port.is_some() {
            let ip = ip.map_or("127.0.0.1", |(_, ip)| ip.as_str());
            let port = port.map_or(10001, |(_, port)| *port);
            config.listen = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        }
        let workers = one(
            ("CACHE_WORKERS", self.seed_workers.as_ref().map(|Keyed(Lenient(n), _)| n)),
            ("WORKERS", self.seed_workers_readme.as_ref().map(|Keyed(Lenient(n), _)| n)),
        )?;
        if let Some((written, &n)) = workers {
            if self.workers.is_some() {
                return Err(ConfigError::Conflict { key: "workers", other: written });
            }
            config.workers = n;
        }
        if let Some(verbose) = &self.seed_verbose {
            config.log_level = if truthy(verbose) { LogLevel::Debug } else { LogLevel::Warn };
        }
        if self.seed_api_path.is_some() {
            log::debug!("API_PATH is read for compatibility with the original config and otherwise unused");
        }
        Ok(())
    }
}

/// Python's truthiness, as the original applied it to `CACHE_VERBOSE`.
fn truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Another value of a key's type than the one given, so a test can tell a key was applied.
    pub(super) trait Sample {
        /// A value that differs from `self`.
        fn other(&self) -> Self;
    }

    macro_rules! sample_by_adding {
        ($($ty:ty: $step:expr),+) => {$(
            impl Sample for $ty {
                fn other(&self) -> $ty {
                    *self + $step
                }
            }
        )+};
    }
    sample_by_adding!(usize: 1, u32: 1, u64: 1, f64: 0.5);

    impl Sample for String {
        fn other(&self) -> String {
            format!("{self}x")
        }
    }

    impl Sample for bool {
        fn other(&self) -> bool {
            !self
        }
    }

    impl Sample for AuthToken {
        fn other(&self) -> AuthToken {
            AuthToken::new(format!("{}x", self.expose()))
        }
    }

    /// Only for [`Sample`] of `Option<AuthToken>`: the empty token, never a valid one.
    impl Default for AuthToken {
        fn default() -> AuthToken {
            AuthToken::new(String::new())
        }
    }

    impl Sample for PathBuf {
        fn other(&self) -> PathBuf {
            format!("{}x", self.display()).into()
        }
    }

    /// On turns off, off turns on: both the `null`/`none` path and the value path get exercised.
    impl<T: Sample + Default> Sample for Option<T> {
        fn other(&self) -> Option<T> {
            match self {
                Some(_) => None,
                None => Some(T::default().other()),
            }
        }
    }

    /// The next name of an enum key, wrapping around.
    fn next_variant<E: ValueEnum + PartialEq + Clone>(value: &E) -> E {
        let all = E::value_variants();
        let at = all.iter().position(|v| v == value).unwrap_or(0);
        all[(at + 1) % all.len()].clone()
    }

    impl Sample for Fsync {
        fn other(&self) -> Fsync {
            next_variant(self)
        }
    }

    impl Sample for LogLevel {
        fn other(&self) -> LogLevel {
            next_variant(self)
        }
    }

    /// The flag of a key: `--` and its name with dashes.
    fn flag(key: &str) -> String {
        format!("--{}", key.replace('_', "-"))
    }

    #[test]
    fn every_key_round_trips_from_the_file() {
        assert_eq!(Config::each_key_changed().len(), Config::KEYS.len());
        for (key, want, _) in Config::each_key_changed() {
            let value = serde_json::to_value(&want).unwrap()[key].clone();
            let text = serde_json::json!({ key: value }).to_string();
            let got = Config::from_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn every_key_round_trips_from_its_flag() {
        for (key, want, text) in Config::each_key_changed() {
            let cli = Cli::try_parse_from(["bankcache", &flag(key), &text])
                .unwrap_or_else(|e| panic!("{} {text}: {e}", flag(key)));
            let mut got = Config::default();
            got.apply(&cli);
            assert_eq!(got, want, "{} {text}", flag(key));
        }
    }

    #[test]
    fn every_key_is_in_help_and_in_the_readme_table() {
        let help = Cli::command().render_help().to_string();
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        for key in Config::KEYS {
            assert!(help.contains(&flag(key)), "--help lacks {}: {help}", flag(key));
            let row = format!("| `{key}` | `{} ", flag(key));
            assert!(readme.contains(&row), "README's Configuration table lacks the row {row:?}");
        }
    }

    #[test]
    fn enum_names_are_the_same_in_the_file_and_on_the_command_line() {
        for value in Fsync::value_variants() {
            let name = value.to_string();
            assert_eq!(serde_json::to_value(value).unwrap(), serde_json::json!(name));
            let c = Config::from_json(format!(r#"{{"fsync":"{name}"}}"#).as_bytes()).unwrap();
            assert_eq!(c.fsync, *value);
        }
        for value in LogLevel::value_variants() {
            let name = value.to_string();
            assert_eq!(serde_json::to_value(value).unwrap(), serde_json::json!(name));
            let c = Config::from_json(format!(r#"{{"log_level":"{name}"}}"#).as_bytes()).unwrap();
            assert_eq!(c.log_level, *value);
        }
    }

    #[test]
    fn bad_enum_value_in_the_file_names_key_value_and_allowed_values() {
        let err = Config::from_json(br#"{"fsync":"sometimes"}"#).unwrap_err().to_string();
        for part in ["fsync", "sometimes", "never", "every_sec", "always"] {
            assert!(err.contains(part), "{part:?} missing from {err:?}");
        }
        let err = Config::from_json(br#"{"log_level":"loud"}"#).unwrap_err().to_string();
        for part in ["log_level", "loud", "off", "error", "warn", "info", "debug", "trace"] {
            assert!(err.contains(part), "{part:?} missing from {err:?}");
        }
    }

    #[test]
    fn bad_enum_value_on_the_command_line_names_flag_value_and_allowed_values() {
        let err = Cli::try_parse_from(["bankcache", "--fsync", "sometimes"]).unwrap_err().to_string();
        for part in ["--fsync", "sometimes", "never", "every_sec", "always"] {
            assert!(err.contains(part), "{part:?} missing from {err:?}");
        }
        let err = Cli::try_parse_from(["bankcache", "--log-level", "loud"]).unwrap_err().to_string();
        for part in ["--log-level", "loud", "off", "error", "warn", "info", "debug", "trace"] {
            assert!(err.contains(part), "{part:?} missing from {err:?}");
        }
    }

    #[test]
    fn a_bad_value_of_any_type_names_its_key() {
        for text in [
            r#"{"workers":"two"}"#,
            r#"{"workers":null}"#,
            r#"{"CACHE_WORKERS":-1}"#,
            r#"{"volume_size":1.5}"#,
            r#"{"http_listen":7}"#,
            r#"{"CACHE_SERVER_PORT":"x"}"#,
        ] {
            let err = Config::from_json(text.as_bytes()).unwrap_err().to_string();
            let key = text.split('"').nth(1).unwrap();
            assert!(err.contains(key), "{text}: {err:?} does not name {key}");
        }
    }

    /// Every range check of `validate`, at its edges: the last good value passes, the first bad one is an
    /// error naming the key.
    #[test]
    fn each_range_is_checked_at_its_edges() {
        let cases: &[(&str, &str, &str)] = &[
            ("workers", "1", "0"),
            ("workers", "1024", "1025"),
            ("max_request_bytes", "1", "0"),
            ("max_key_bytes", "1", "0"),
            ("max_key_bytes", "65535", "65536"),
            ("max_value_bytes", "1", "0"),
            ("max_connections", "1", "0"),
            ("volume_count", "1", "0"),
            ("volume_size", "4096", "4095"),
            ("volume_size", "4294967295", "4294967296"),
            ("memory_max_bytes", "1", "0"),
            ("cache_after_miss_count", "1", "0"),
            ("cache_after_miss_count", "255", "256"),
            ("cache_after_miss_count_duration", "0", "-0.5"),
            ("cache_after_miss_count_duration", "3999999", "4000000"),
            ("idle_timeout", "0", "-0.5"),
            ("idle_timeout", "999999999", "1000000000"),
            ("http_idle_timeout", "0.001", "0"),
            ("http_idle_timeout", "999999999", "1000000000"),
            ("shutdown_timeout", "0.001", "0"),
            ("shutdown_timeout", "999999999", "1000000000"),
            ("http_bank", r#""b""#, r#""""#),
            ("http_listen", r#""h:1""#, r#""h""#),
            ("sweep_interval_ms", "1", "0"),
            ("listen", r#""h:1""#, r#""h""#),
        ];
        for (key, good, bad) in cases {
            let good_json = format!(r#"{{"{key}":{good}}}"#);
            let config = Config::from_json(good_json.as_bytes()).unwrap();
            assert!(config.validate().is_ok(), "{good_json}: {:?}", config.validate());
            let bad_json = format!(r#"{{"{key}":{bad}}}"#);
            match Config::from_json(bad_json.as_bytes()).unwrap().validate() {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, *key, "{bad_json}"),
                other => panic!("{bad_json}: {other:?}"),
            }
        }
        let long_bank = Config { http_bank: "b".repeat(65536), ..Config::default() };
        assert!(matches!(long_bank.validate(), Err(ConfigError::Invalid { key: "http_bank", .. })));
        let err = Config::from_json(br#"{"workers":0}"#).unwrap().validate().unwrap_err().to_string();
        assert_eq!(err, "workers must be between 1 and 1024, not 0");
    }

    #[test]
    fn a_bad_token_is_refused_without_being_shown() {
        for bad in ["", "two words", "tab\there", "ünïcode"] {
            let config = Config { auth_token: Some(AuthToken::new(bad.into())), ..Config::default() };
            match config.validate() {
                Err(e @ ConfigError::Invalid { key: "auth_token", .. }) => {
                    let message = e.to_string();
                    assert!(bad.is_empty() || !message.contains(bad), "{message:?} shows the token");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let good = Config::from_json(br#"{"auth_token":"s3cret-T0ken","metrics_public":true}"#).unwrap();
        assert!(good.validate().is_ok());
        assert!(good.metrics_public);
        assert!(good.auth_token.as_ref().is_some_and(|t| t.matches(b"s3cret-T0ken")));
        assert!(!format!("{good:?}").contains("s3cret"), "Debug of the config shows the token");
        assert!(Config::from_json(br#"{"auth_token":7}"#).unwrap_err().to_string().contains("auth_token"));
        let mut c = good.clone();
        c.apply(&Cli::parse_from(["bankcache", "--auth-token", "none"]));
        assert_eq!(c.auth_token, None, "the flag's none turns a file's token off");
    }

    #[test]
    fn help_names_the_token_s_environment_variable_and_what_wins() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("BANKCACHE_AUTH_TOKEN"), "{help}");
        assert!(help.contains("The flag wins over BANKCACHE_AUTH_TOKEN, which wins over the file"), "{help}");
    }

    #[test]
    fn listen_and_the_original_address_keys_conflict() {
        for (text, written) in [
            (r#"{"listen":"h:1","CACHE_SERVER_IP":"h"}"#, "CACHE_SERVER_IP"),
            (r#"{"listen":"h:1","SERVER_PORT":2}"#, "SERVER_PORT"),
            (r#"{"listen":"h:1","SERVER_IP":"h"}"#, "SERVER_IP"),
        ] {
            let err = Config::from_json(text.as_bytes()).unwrap_err();
            assert!(
                matches!(err, ConfigError::Conflict { key: "listen", other } if other == written),
                "{text}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("give either listen or {written}, not both"));
        }
        assert_eq!(Config::from_json(br#"{"CACHE_SERVER_PORT":7}"#).unwrap().listen, "127.0.0.1:7");
        assert_eq!(Config::from_json(br#"{"SERVER_IP":"::1"}"#).unwrap().listen, "[::1]:10001");
        let c = Config::from_json(br#"{"CACHE_VERBOSE":"yes","log_level":"trace"}"#).unwrap();
        assert_eq!(c.log_level, LogLevel::Trace, "log_level overrides CACHE_VERBOSE");
    }

    #[test]
    fn http_listen_null_or_none_turns_the_http_port_off() {
        assert_eq!(Config::from_json(br#"{"http_listen":null}"#).unwrap().http_listen, None);
        let mut c = Config::default();
        c.apply(&Cli::parse_from(["bankcache", "--http-listen", "none"]));
        assert_eq!(c.http_listen, None);
        c.apply(&Cli::parse_from(["bankcache", "--http-listen", "127.0.0.1:5"]));
        assert_eq!(c.http_listen.as_deref(), Some("127.0.0.1:5"));
    }

    #[test]
    fn help_shows_the_defaults() {
        let help = Cli::command().render_help().to_string();
        for default in
            ["[default: 127.0.0.1:10001]", "[default: every_sec]", "[default: info]", "[default: none]"]
        {
            assert!(help.contains(default), "--help lacks {default}: {help}");
        }
        for seed_key in ["CACHE_SERVER_IP", "SERVER_PORT", "CACHE_WORKERS", "CACHE_VERBOSE", "API_PATH"] {
            assert!(help.contains(seed_key), "--help does not name the original's key {seed_key}: {help}");
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_json(b"{}").unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_json_is_the_defaults_with_a_disk_store() {
        let shipped = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")).unwrap();
        let want = Config { data_dir: Some("./data".into()), ..Config::default() };
        assert_eq!(Config::from_json(&shipped).unwrap(), want);
    }

    #[test]
    fn data_dir_null_means_memory_only() {
        assert_eq!(Config::from_json(br#"{"data_dir":null}"#).unwrap().data_dir, None);
        let mut c = Config::from_json(br#"{"data_dir":"/x"}"#).unwrap();
        assert_eq!(c.data_dir, Some("/x".into()));
        c.apply(&Cli::parse_from(["bankcache", "--data-dir", "none"]));
        assert_eq!(c.data_dir, None);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_json(br#"{"listen":"127.0.0.1:1","wokers":3}"#).unwrap_err().to_string();
        assert!(err.contains("wokers"), "{err}");
    }

    #[test]
    fn seed_keys_are_aliases() {
        let c = Config::from_json(
            br#"{"CACHE_SERVER_IP":"0.0.0.0","CACHE_SERVER_PORT":10002,"CACHE_WORKERS":4,"CACHE_VERBOSE":1,"API_PATH":"/api"}"#,
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:10002");
        assert_eq!(c.workers, 4);
        assert_eq!(c.log_level, LogLevel::Debug);
        let c = Config::from_json(br#"{"SERVER_IP":"127.0.0.1","SERVER_PORT":7,"WORKERS":3}"#).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7");
        assert_eq!(c.workers, 3);
        let c = Config::from_json(br#"{"CACHE_VERBOSE":false}"#).unwrap();
        assert_eq!(c.log_level, LogLevel::Warn);
    }

    /// The original's Python read its numbers with `int()`: a string holding one is fine there too.
    #[test]
    fn the_original_keys_take_numbers_written_as_strings() {
        let c =
            Config::from_json(br#"{"SERVER_IP":"127.0.0.1","SERVER_PORT":"10002","WORKERS":" 3 "}"#).unwrap();
        assert_eq!((c.listen.as_str(), c.workers), ("127.0.0.1:10002", 3));
        let c = Config::from_json(br#"{"CACHE_SERVER_PORT":"7","CACHE_WORKERS":"4"}"#).unwrap();
        assert_eq!((c.listen.as_str(), c.workers), ("127.0.0.1:7", 4));
        for (text, key) in [
            (r#"{"SERVER_PORT":"port"}"#, "SERVER_PORT"),
            (r#"{"CACHE_SERVER_PORT":"70000"}"#, "CACHE_SERVER_PORT"),
            (r#"{"WORKERS":"-1"}"#, "WORKERS"),
            (r#"{"WORKERS":[]}"#, "WORKERS"),
        ] {
            let err = Config::from_json(text.as_bytes()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{key}: ")),
                "{text}: {err:?} does not start with the key written"
            );
        }
    }

    /// Two names of one setting, or a new key with an original one: the message names both as written.
    #[test]
    fn two_names_of_one_setting_conflict_by_the_names_written() {
        for (text, key, other) in [
            (r#"{"CACHE_SERVER_PORT":1,"SERVER_PORT":2}"#, "CACHE_SERVER_PORT", "SERVER_PORT"),
            (r#"{"CACHE_SERVER_IP":"a","SERVER_IP":"b"}"#, "CACHE_SERVER_IP", "SERVER_IP"),
            (r#"{"CACHE_WORKERS":1,"WORKERS":2}"#, "CACHE_WORKERS", "WORKERS"),
            (r#"{"workers":1,"WORKERS":2}"#, "workers", "WORKERS"),
            (r#"{"workers":1,"CACHE_WORKERS":2}"#, "workers", "CACHE_WORKERS"),
        ] {
            let err = Config::from_json(text.as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), format!("give either {key} or {other}, not both"), "{text}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = Config::from_json(br#"{"workers":3,"listen":"127.0.0.1:5"}"#).unwrap();
        let cli = Cli::parse_from(["bankcache", "--workers", "7", "--max-key-bytes", "9"]);
        c.apply(&cli);
        assert_eq!(c.workers, 7);
        assert_eq!(c.max_key_bytes, 9);
        assert_eq!(c.listen, "127.0.0.1:5");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::from_json(br#"{"workers":0}"#).unwrap().validate().is_err());
        assert!(Config::from_json(br#"{"log_level":"loud"}"#).is_err());
        assert!(Config::from_json(br#"{"max_key_bytes":0}"#).unwrap().validate().is_err());
        assert!(Config::from_json(br#"{"workers":"two"}"#).is_err());
        assert!(Config::from_json(br#"{"listen":"x","CACHE_SERVER_PORT":1}"#).is_err());
    }
}
