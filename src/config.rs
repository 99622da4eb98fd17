//! Configuration: the JSON file, its defaults, the original's key names, and command-line overrides.
//!
//! Every key has a default, so an empty file (or none) is a valid configuration. An unknown key is an
//! error that names it: a typo must not silently fall back to a default.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

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
    /// Startup, shutdown and recovery reports too
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

/// The server's settings after the file and the flags are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address of the JSON port, `HOST:PORT`.
    pub listen: String,
    /// Worker threads that execute ops.
    pub workers: usize,
    /// Requests per reactor turn that a memory-only server runs on the reactor thread itself instead of
    /// handing them to a worker; 0 always hands off.
    pub inline_ops: usize,
    /// Log level when `RUST_LOG` is not set.
    pub log_level: LogLevel,
    /// Ops slower than this many milliseconds are logged at warn; 0 turns it off.
    pub slow_log_ms: u64,
    /// Longest request, in bytes; a longer one closes the connection.
    pub max_request_bytes: usize,
    /// Longest key or bank name, in bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes of its JSON text.
    pub max_value_bytes: usize,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Interval of the background expiry sweep, in milliseconds.
    pub sweep_interval_ms: u64,
    /// Directory of the volume store; `None` for a memory-only cache.
    pub data_dir: Option<PathBuf>,
    /// Bytes per volume file.
    pub volume_size: u64,
    /// Number of volume files used in turn.
    pub volume_count: u32,
    /// When writes reach the disk.
    pub fsync: Fsync,
    /// Bytes of values kept in RAM at most.
    pub memory_max_bytes: u64,
    /// Disk reads of a value, each within the window of the last, after which it is kept in RAM.
    pub cache_after_miss_count: u32,
    /// That window, in seconds (fractions allowed).
    pub cache_after_miss_count_duration: f64,
    /// Address of the HTTP port, `HOST:PORT`; `None` for no HTTP port.
    pub http_listen: Option<String>,
    /// The bank the HTTP file API stores into.
    pub http_bank: String,
    /// Seconds an HTTP connection may sit idle (or stuck in a request) before it is closed.
    pub http_idle_timeout: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:10001".into(),
            workers: 2,
            inline_ops: 256,
            log_level: LogLevel::Info,
            slow_log_ms: 100,
            max_request_bytes: 2 * 1024 * 1024,
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_connections: 10_000,
            sweep_interval_ms: 100,
            data_dir: None,
            volume_size: 1 << 30,
            volume_count: 10,
            fsync: Fsync::EverySec,
            memory_max_bytes: 1 << 30,
            cache_after_miss_count: 3,
            cache_after_miss_count_duration: 60.0,
            http_listen: Some("127.0.0.1:1234".into()),
            http_bank: "files".into(),
            http_idle_timeout: 60.0,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid JSON, has an unknown key, or a value of the wrong type.
    Parse { path: PathBuf, source: serde_json::Error },
    /// A value is out of range or contradicts another.
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            ConfigError::Parse { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Parse { source, .. } => Some(source),
            ConfigError::Invalid(_) => None,
        }
    }
}

/// The config file as written. The original's keys are accepted under their old names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    #[serde(alias = "CACHE_WORKERS", alias = "WORKERS")]
    workers: Option<usize>,
    inline_ops: Option<usize>,
    log_level: Option<LogLevel>,
    slow_log_ms: Option<u64>,
    max_request_bytes: Option<usize>,
    max_key_bytes: Option<usize>,
    max_value_bytes: Option<usize>,
    max_connections: Option<usize>,
    sweep_interval_ms: Option<u64>,
    data_dir: Option<Option<PathBuf>>,
    volume_size: Option<u64>,
    volume_count: Option<u32>,
    fsync: Option<Fsync>,
    memory_max_bytes: Option<u64>,
    cache_after_miss_count: Option<u32>,
    cache_after_miss_count_duration: Option<f64>,
    http_listen: Option<Option<String>>,
    http_bank: Option<String>,
    http_idle_timeout: Option<f64>,
    #[serde(rename = "CACHE_SERVER_IP", alias = "SERVER_IP")]
    seed_ip: Option<String>,
    #[serde(rename = "CACHE_SERVER_PORT", alias = "SERVER_PORT")]
    seed_port: Option<u16>,
    #[serde(rename = "CACHE_VERBOSE")]
    seed_verbose: Option<serde_json::Value>,
    /// The original REST front's route prefix; read so old files load, otherwise unused.
    #[serde(rename = "API_PATH")]
    seed_api_path: Option<String>,
}

/// Command line: `bankcache [CONFIG_PATH] [flags]`. Flags override the file.
#[derive(Debug, Default, Parser)]
#[command(name = "bankcache", version, about = "A banked JSON-over-TCP cache server")]
pub struct Cli {
    /// JSON config file [default: ./config.json when present, else built-in defaults]
    pub config: Option<PathBuf>,
    /// Address of the JSON port, HOST:PORT (port 0 picks a free one)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Worker threads that execute ops
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Requests per reactor turn a memory-only server runs on the reactor thread (0: always hand off)
    #[arg(long, value_name = "N")]
    pub inline_ops: Option<usize>,
    /// Log level (RUST_LOG wins when set)
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Log ops slower than this many milliseconds at warn (0: off)
    #[arg(long, value_name = "MS")]
    pub slow_log_ms: Option<u64>,
    /// Longest request in bytes; a longer one closes the connection
    #[arg(long, value_name = "N")]
    pub max_request_bytes: Option<usize>,
    /// Longest key or bank name in bytes
    #[arg(long, value_name = "N")]
    pub max_key_bytes: Option<usize>,
    /// Longest value in bytes (of its JSON text)
    #[arg(long, value_name = "N")]
    pub max_value_bytes: Option<usize>,
    /// Most client connections open at once
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Interval of the background expiry sweep in milliseconds
    #[arg(long, value_name = "MS")]
    pub sweep_interval_ms: Option<u64>,
    /// Directory of the disk store (volumes); "none" for a memory-only cache
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Bytes per volume file
    #[arg(long, value_name = "BYTES")]
    pub volume_size: Option<u64>,
    /// Number of volume files used in turn
    #[arg(long, value_name = "N")]
    pub volume_count: Option<u32>,
    /// When writes reach the disk
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<Fsync>,
    /// Bytes of values kept in RAM at most
    #[arg(long, value_name = "BYTES")]
    pub memory_max_bytes: Option<u64>,
    /// Disk reads (each within the window of the last) after which a value is kept in RAM
    #[arg(long, value_name = "N")]
    pub cache_after_miss_count: Option<u32>,
    /// The window of --cache-after-miss-count, in seconds
    #[arg(long, value_name = "SECONDS")]
    pub cache_after_miss_count_duration: Option<f64>,
    /// Address of the HTTP port, HOST:PORT; "none" for no HTTP port
    #[arg(long, value_name = "ADDR:PORT")]
    pub http_listen: Option<String>,
    /// The bank the HTTP file API stores into
    #[arg(long, value_name = "BANK")]
    pub http_bank: Option<String>,
    /// Seconds an HTTP connection may sit idle before it is closed
    #[arg(long, value_name = "SECONDS")]
    pub http_idle_timeout: Option<f64>,
}

impl Config {
    /// Loads the configuration the command line asks for: its file (or `./config.json` when present),
    /// then its flags on top.
    pub fn from_cli(cli: &Cli) -> Result<Config, ConfigError> {
        let default_path = Path::new("config.json");
        let path = match &cli.config {
            Some(path) => Some(path.as_path()),
            None if default_path.is_file() => Some(default_path),
            None => None,
        };
        let mut config = match path {
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

    /// Parses config JSON over the defaults.
    pub fn from_json(text: &[u8]) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_json::from_slice(text)
            .map_err(|source| ConfigError::Parse { path: PathBuf::new(), source })?;
        let mut config = Config::default();
        if file.listen.is_some() && (file.seed_ip.is_some() || file.seed_port.is_some()) {
            return Err(ConfigError::Invalid(
                "give either listen or CACHE_SERVER_IP/CACHE_SERVER_PORT, not both".into(),
            ));
        }
        if let Some(listen) = file.listen {
            config.listen = listen;
        }
        if file.seed_ip.is_some() || file.seed_port.is_some() {
            let ip = file.seed_ip.unwrap_or_else(|| "127.0.0.1".into());
            let port = file.seed_port.unwrap_or(10001);
            config.listen = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        }
        if let Some(verbose) = file.seed_verbose {
            config.log_level = if truthy(&verbose) { LogLevel::Debug } else { LogLevel::Warn };
        }
        if file.seed_api_path.is_some() {
            log::debug!("API_PATH is read for compatibility with the original config and otherwise unused");
        }
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = file.$field { config.$field = v; } )* };
        }
        take!(workers, log_level, slow_log_ms, max_request_bytes, max_key_bytes, max_value_bytes);
        take!(max_connections, sweep_interval_ms, volume_size, volume_count, fsync, memory_max_bytes);
        take!(
            cache_after_miss_count,
            cache_after_miss_count_duration,
            http_bank,
            http_idle_timeout,
            inline_ops
        );
        if let Some(dir) = file.data_dir {
            config.data_dir = dir;
        }
        if let Some(listen) = file.http_listen {
            config.http_listen = listen;
        }
        Ok(config)
    }

    /// Puts the command line's flags over this configuration.
    pub fn apply(&mut self, cli: &Cli) {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = &cli.$field { self.$field = v.clone(); } )* };
        }
        take!(listen, workers, log_level, slow_log_ms, max_request_bytes, max_key_bytes, max_value_bytes);
        take!(max_connections, sweep_interval_ms, volume_size, volume_count, fsync, memory_max_bytes);
        take!(
            cache_after_miss_count,
            cache_after_miss_count_duration,
            http_bank,
            http_idle_timeout,
            inline_ops
        );
        if let Some(dir) = &cli.data_dir {
            self.data_dir = (dir != "none").then(|| PathBuf::from(dir));
        }
        if let Some(listen) = &cli.http_listen {
            self.http_listen = (listen != "none").then(|| listen.clone());
        }
    }

    /// Checks ranges and formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |why: String| Err(ConfigError::Invalid(why));
        if !(1..=1024).contains(&self.workers) {
            return invalid(format!("workers must be between 1 and 1024, not {}", self.workers));
        }
        for (name, value) in [
            ("max_request_bytes", self.max_request_bytes),
            ("max_key_bytes", self.max_key_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_connections", self.max_connections),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if self.max_key_bytes > usize::from(u16::MAX) {
            return invalid(format!("max_key_bytes must be at most {}", u16::MAX));
        }
        if self.volume_count == 0 || !(4096..=u64::from(u32::MAX)).contains(&self.volume_size) {
            return invalid(
                "volume_count must be at least 1 and volume_size between 4096 and 4294967295".into(),
            );
        }
        if self.memory_max_bytes == 0 || !(1..=255).contains(&self.cache_after_miss_count) {
            return invalid("memory_max_bytes must be at least 1 and cache_after_miss_count 1 to 255".into());
        }
        if !(self.cache_after_miss_count_duration >= 0.0 && self.cache_after_miss_count_duration < 4e6) {
            return invalid("cache_after_miss_count_duration must be between 0 and 4000000 seconds".into());
        }
        if !(self.http_idle_timeout > 0.0 && self.http_idle_timeout < 1e9) {
            return invalid("http_idle_timeout must be a positive number of seconds".into());
        }
        if self.http_bank.is_empty() || self.http_bank.len() > usize::from(u16::MAX) {
            return invalid("http_bank must be a non-empty bank name".into());
        }
        if self.http_listen.as_ref().is_some_and(|l| !l.contains(':')) {
            return invalid(format!("http_listen must be HOST:PORT, not {:?}", self.http_listen));
        }
        if self.sweep_interval_ms == 0 {
            return invalid("sweep_interval_ms must be at least 1".into());
        }
        if !self.listen.contains(':') {
            return invalid(format!("listen must be HOST:PORT, not {:?}", self.listen));
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
