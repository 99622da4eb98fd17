//! `bankcache-bench compare`: the issue's comparison in one command.
//!
//! Starts bankcache (the release build beside this executable, or
//! `--bankcache PATH`), `redis-server` and `memcached` (from PATH; a missing
//! one is skipped with the command that installs it) on free loopback ports,
//! each in its own temporary directory and fresh for every run, and drives
//! each through the matrix of cells with the run mode's own driver, called
//! in-process. Every round runs every server once per cell, in an order that
//! alternates between rounds so that neither goes first every time; the table
//! shows medians over rounds. Servers are killed and reaped when a run ends,
//! when it fails, on ctrl-c (a handler stops the driver at its next turn) and,
//! should this process die some other way, by the kernel (`PR_SET_PDEATHSIG`).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use serde_json::{json, Value};

use crate::driver::{self, BenchConfig, Report, Stop, INTERRUPTED};
use crate::proto::Proto;
use crate::svg;

/// bankcache may keep this many bytes of values in RAM: more than any cell stores.
const BANKCACHE_MEMORY: &str = "34359738368";
/// How long a server may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to start redis or memcached, whose free port is picked before they
/// bind it and may be taken in between.
const START_ATTEMPTS: usize = 3;
/// Connections and window of the RSS cell's load: it only has to be quick.
const RSS_CONNECTIONS: usize = 20;
/// Requests per window of the RSS cell's load.
const RSS_PIPELINE: usize = 64;
/// The issue's targets: ops/s at least Redis's, p99 at most this times Redis's.
const P99_TARGET: f64 = 1.2;
/// How to get the servers that are not bankcache, told whenever one is missing.
const INSTALL_HINT: &str = "sudo apt-get install redis-server memcached";

/// The servers `compare` knows how to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum ServerKind {
    Bankcache,
    Redis,
    Memcached,
}

impl ServerKind {
    /// The name used on the command line, in the table and in compare.json.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Bankcache => "bankcache",
            ServerKind::Redis => "redis",
            ServerKind::Memcached => "memcached",
        }
    }
}

/// The cells of the issue's matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum CellId {
    A,
    B,
    C,
    D,
    E,
    F,
}

impl CellId {
    /// The cell's letter, as the issue names it.
    pub fn name(self) -> &'static str {
        match self {
            CellId::A => "a",
            CellId::B => "b",
            CellId::C => "c",
            CellId::D => "d",
            CellId::E => "e",
            CellId::F => "f",
        }
    }
}

/// `compare`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Rounds; each runs every server once per cell, the order alternating between rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Cells to run, a subset of a,b,c,d,e,f.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "a,b,c,d,e,f")]
    pub cells: Vec<CellId>,
    /// Servers to run, a subset of bankcache,redis,memcached.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bankcache,redis,memcached")]
    pub servers: Vec<ServerKind>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Unmeasured seconds of load before each measured run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Keys loaded in cell f, the RSS per key cell.
    #[arg(long, default_value_t = 1_000_000)]
    pub rss_keys: u64,
    /// Directory for compare.json and compare.svg.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// The bankcache server executable [default: `bankcache` beside this executable].
    #[arg(long)]
    pub bankcache: Option<PathBuf>,
    /// Driver threads per run.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Check every byte of every get hit (costs the driver time, equally for every server).
    #[arg(long)]
    pub verify: bool,
    /// Seed of the request streams and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// bankcache's front in cell e: its HTTP file API (CacheFS's benchmark; bodies taken as they are) or
    /// its JSON port (values as JSON strings)
    #[arg(long, value_enum, default_value_t = Front::Http)]
    pub e_front: Front,
    /// Run bankcache with this auth_token (handed to it in its environment, not its arguments), and
    /// drive it with the token: `auth` first on each JSON connection, a bearer header on each HTTP request
    #[arg(long, env = "BANKCACHE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

/// A bankcache front for cell e.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Front {
    /// The HTTP file API.
    Http,
    /// The JSON port.
    Json,
}

/// One cell's workload.
#[derive(Clone, Debug)]
pub struct Cell {
    pub id: CellId,
    pub title: String,
    /// A few words for table rows and chart groups.
    pub short: String,
    pub connections: usize,
    pub pipeline: usize,
    pub value_size: usize,
    pub keys: u64,
    pub get_ratio: f64,
    /// bankcache runs with the disk store on.
    pub disk: bool,
}

impl Cell {
    /// The matrix of issue 6; `rss_keys` sizes cell f.
    pub fn of(id: CellId, rss_keys: u64) -> Cell {
        // connections, pipeline, value bytes, keys, get ratio, disk store
        let (connections, pipeline, value_size, keys, get_ratio, disk) = match id {
            CellId::A => (50, 1, 32, 100_000, 0.9, false),
            CellId::B => (50, 16, 32, 100_000, 0.9, false),
            CellId::C => (1, 1, 32, 100_000, 0.9, false),
            CellId::D => (50, 1, 4096, 100_000, 0.9, false),
            CellId::E => (20, 1, 204_800, 2_000, 0.5, true),
            CellId::F => (RSS_CONNECTIONS, RSS_PIPELINE, 32, rss_keys, 1.0, false),
        };
        let size = size_text(value_size);
        let (title, short) = if id == CellId::F {
            (
                format!("RSS bytes per key after loading {} keys of {size} values", grouped(keys as f64)),
                format!("RSS/key, {} keys", grouped(keys as f64)),
            )
        } else {
            let plural = if connections == 1 { "" } else { "s" };
            let percent = get_ratio * 100.0;
            let disk_text = if disk { ", bankcache with the disk store" } else { "" };
            (
                format!(
                    "{connections} connection{plural}, pipeline {pipeline}, {size} values, {} keys, \
                     {percent:.0}% get{disk_text}",
                    grouped(keys as f64)
                ),
                format!("{connections} conn, p{pipeline}, {size}{}", if disk { ", disk" } else { "" }),
            )
        };
        Cell { id, title, short, connections, pipeline, value_size, keys, get_ratio, disk }
    }

    /// Cell f measures memory, not rates.
    fn is_rss(&self) -> bool {
        self.id == CellId::F
    }
}

// ---------------------------------------------------------------------------
// Temporary directories and server processes

/// A fresh directory under the system's temp dir, removed on drop (with
/// everything a server left in it).
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!("bankcache-compare-{what}-{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where each server's executable is; `None` when it is not installed.
struct Programs {
    bankcache: Option<PathBuf>,
    redis: Option<PathBuf>,
    memcached: Option<PathBuf>,
}

impl Programs {
    fn get(&self, kind: ServerKind) -> Option<&Path> {
        match kind {
            ServerKind::Bankcache => self.bankcache.as_deref(),
            ServerKind::Redis => self.redis.as_deref(),
            ServerKind::Memcached => self.memcached.as_deref(),
        }
    }
}

/// An executable file named `name` in one of PATH's directories.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// How a server is started for a run.
#[derive(Clone, Copy, Debug, Default)]
struct Launch<'a> {
    /// bankcache: the disk store on (`--fsync every_sec`).
    disk: bool,
    /// bankcache: the HTTP port on too.
    http: bool,
    /// bankcache: its `auth_token`.
    auth_token: Option<&'a str>,
}

/// A server child process, killed and reaped on drop; then its directory goes.
struct Server {
    kind: ServerKind,
    child: Child,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    stderr_path: PathBuf,
    // Declared last so it is removed after `drop` has killed the child.
    dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The last lines the server wrote to stderr, for error messages.
    fn stderr_tail(&self) -> String {
        stderr_tail(&self.stderr_path)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn stderr_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends:\n  {tail}")
    }
}

/// A command for a server: its own process group (so that a ctrl-c reaches
/// only this process, which then stops it in order), and killed by the kernel
/// if this process dies first.
fn server_command(program: &Path, dir: &Path) -> io::Result<Command> {
    let mut command = Command::new(program);
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(dir.join("stdout.log"))?))
        .stderr(Stdio::from(File::create(dir.join("stderr.log"))?))
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// A loopback port nobody listens on right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn interrupted_error() -> String {
    "interrupted".to_string()
}

/// Starts `kind` fresh, in a new temporary directory, and waits until it serves.
fn start_server(kind: ServerKind, program: &Path, launch: Launch<'_>) -> Result<Server, String> {
    let name = kind.name();
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        let dir = TempDir::new(name).map_err(|e| format!("{name}: {e}"))?;
        let result = match kind {
            ServerKind::Bankcache => start_bankcache(program, launch, dir),
            ServerKind::Redis | ServerKind::Memcached => start_other(kind, program, dir),
        };
        match result {
            Ok(server) => return Ok(server),
            Err(e) if interrupted() => return Err(e),
            // bankcache binds port 0 itself, so a retry cannot help it.
            Err(e) if kind == ServerKind::Bankcache => return Err(e),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// bankcache on port 0, memory-only or with the disk store (and with `launch.auth_token` when given),
/// learning its ports from its stdout lines.
fn start_bankcache(program: &Path, launch: Launch<'_>, dir: TempDir) -> Result<Server, String> {
    let fail = |e: io::Error| format!("bankcache: starting {}: {e}", program.display());
    let config = dir.path().join("config.json");
    fs::write(&config, "{}").map_err(fail)?;
    let mut command = server_command(program, dir.path()).map_err(fail)?;
    command.args(["--listen", "127.0.0.1:0", "--log-level", "warn", "--max-connections", "100000"]);
    command.args(["--memory-max-bytes", BANKCACHE_MEMORY]);
    command.args(["--http-listen", if launch.http { "127.0.0.1:0" } else { "none" }]);
    if launch.disk {
        command.arg("--data-dir").arg(dir.path().join("data")).args(["--fsync", "every_sec"]);
    } else {
        command.args(["--data-dir", "none"]);
    }
    command.arg(&config);
    // In the environment rather than the arguments, as an operator would, and never inherited by chance.
    command.env_remove("BANKCACHE_AUTH_TOKEN");
    if let Some(token) = launch.auth_token {
        command.env("BANKCACHE_AUTH_TOKEN", token);
    }
    let child = command.spawn().map_err(fail)?;
    let mut server = Server {
        kind: ServerKind::Bankcache,
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: None,
        stderr_path: dir.path().join("stderr.log"),
        dir,
    };
    let stdout_path = server.dir.path().join("stdout.log");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let text = fs::read_to_string(&stdout_path).unwrap_or_default();
        let json = listen_addr(&text, "bankcache: json listening on ");
        let http = listen_addr(&text, "bankcache: http listening on ");
        if let Some(addr) = json {
            if !launch.http || http.is_some() {
                server.addr = addr;
                server.http_addr = http;
                return Ok(server);
            }
        }
        check_starting(&mut server, deadline, "print its listening lines")?;
        thread::sleep(Duration::from_millis(10));
    }
}

/// The address on the complete stdout line starting with `prefix`.
fn listen_addr(stdout: &str, prefix: &str) -> Option<SocketAddr> {
    stdout
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|addr| addr.trim().parse().ok())
}

/// Fails if the starting server has exited, the deadline passed or the user
/// pressed ctrl-c.
fn check_starting(server: &mut Server, deadline: Instant, what: &str) -> Result<(), String> {
    let name = server.kind.name();
    if interrupted() {
        return Err(interrupted_error());
    }
    if let Ok(Some(status)) = server.child.try_wait() {
        return Err(format!("{name} exited ({status}) before it would {what}{}", server.stderr_tail()));
    }
    if Instant::now() > deadline {
        return Err(format!(
            "{name} did not {what} within {} s{}",
            STARTUP_TIMEOUT.as_secs(),
            server.stderr_tail()
        ));
    }
    Ok(())
}

/// redis-server or memcached on a free port, ready once it answers a ping.
fn start_other(kind: ServerKind, program: &Path, dir: TempDir) -> Result<Server, String> {
    let name = kind.name();
    let fail = |e: io::Error| format!("{name}: starting {}: {e}", program.display());
    let port = free_port().map_err(fail)?;
    let mut command = server_command(program, dir.path()).map_err(fail)?;
    let port_text = port.to_string();
    let (probe, answer): (&[u8], &[u8]) = match kind {
        ServerKind::Redis => {
            command.args(["--bind", "127.0.0.1", "--port", &port_text, "--save", "", "--appendonly", "no"]);
            command.arg("--dir").arg(dir.path());
            (b"PING\r\n", b"+PONG")
        }
        _ => {
            command.args(["-l", "127.0.0.1", "-p", &port_text, "-U", "0", "-m", "16384", "-I", "2m"]);
            if is_root() {
                command.args(["-u", "root"]);
            }
            (b"version\r\n", b"VERSION ")
        }
    };
    let child = command.spawn().map_err(fail)?;
    let mut server = Server {
        kind,
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        http_addr: None,
        stderr_path: dir.path().join("stderr.log"),
        dir,
    };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if answers(server.addr, probe, answer) {
            return Ok(server);
        }
        check_starting(&mut server, deadline, "accept connections")?;
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server at `addr` answers `probe` with a line starting `answer`.
fn answers(addr: SocketAddr, probe: &[u8], answer: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    if stream.set_read_timeout(Some(Duration::from_secs(2))).is_err() || stream.write_all(probe).is_err() {
        return false;
    }
    let mut line = Vec::new();
    BufReader::new(stream).read_until(b'\n', &mut line).is_ok() && line.starts_with(answer)
}

/// The server's anonymous resident memory, in KiB: what its data costs, not
/// counting mapped files (the page cache's) or shared libraries.
fn rss_anon_kb(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path} has no RssAnon line"))
}

// ---------------------------------------------------------------------------
// Runs

/// What one run of one server in one cell gave.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub ops: u64,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub errors: u64,
    pub prefill_failures: u64,
    pub conn_failures: u64,
    pub verify_failures: u64,
    /// Cell f only.
    pub bytes_per_key: Option<f64>,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
}

impl Figures {
    fn from_report(report: &Report) -> Figures {
        let stats = &report.stats;
        Figures {
            ops_per_sec: report.ops_per_sec(),
            p50_us: stats.latency_us(0.5),
            p99_us: stats.latency_us(0.99),
            p999_us: stats.latency_us(0.999),
            max_us: stats.max_us(),
            ops: stats.ops(),
            hits: stats.hits,
            misses: stats.misses,
            sets: stats.stored,
            errors: stats.errors,
            prefill_failures: report.prefill_failures,
            conn_failures: report.conn_failures,
            verify_failures: report.verify_failures,
            ..Figures::default()
        }
    }

    fn to_json(&self) -> Value {
        if let Some(bytes_per_key) = self.bytes_per_key {
            // An RSS run only loads keys: its rates and latencies are not figures.
            return json!({
                "bytes_per_key": bytes_per_key,
                "rss_before_kb": self.rss_before_kb,
                "rss_after_kb": self.rss_after_kb,
                "prefill_failures": self.prefill_failures,
                "connection_failures": self.conn_failures,
            });
        }
        json!({
            "ops_per_sec": self.ops_per_sec,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "ops": self.ops,
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
            "errors": self.errors,
            "prefill_failures": self.prefill_failures,
            "connection_failures": self.conn_failures,
            "verify_failures": self.verify_failures,
        })
    }
}

/// One run in the record: where, when, how, and what came of it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub cell: CellId,
    pub server: ServerKind,
    pub round: usize,
    pub proto: Proto,
    pub outcome: Result<Figures, String>,
}

/// The driver configuration of `cell` against `addr`.
fn bench_config(
    cell: &Cell,
    args: &CompareArgs,
    addr: SocketAddr,
    proto: Proto,
    duration: f64,
    warmup: f64,
) -> BenchConfig {
    BenchConfig {
        addr,
        proto,
        connections: cell.connections,
        pipeline: cell.pipeline,
        value_size: cell.value_size,
        keys: cell.keys,
        get_ratio: cell.get_ratio,
        stop: if cell.is_rss() {
            Stop::Requests(0)
        } else {
            Stop::Duration(Duration::from_secs_f64(duration))
        },
        warmup: if cell.is_rss() { Duration::ZERO } else { Duration::from_secs_f64(warmup) },
        prefill: true,
        seed: args.seed,
        verify: args.verify,
        threads: args.threads,
        http_prefix: "/".to_string(),
        progress: false,
        auth_token: None,
    }
}

/// The protocol each server is driven with; bankcache's depends on the front.
fn proto_of(kind: ServerKind, http: bool) -> Proto {
    match kind {
        ServerKind::Bankcache if http => Proto::Http,
        ServerKind::Bankcache => Proto::Json,
        ServerKind::Redis => Proto::Resp,
        ServerKind::Memcached => Proto::Memcache,
    }
}

/// One run: a fresh server, the cell's load (prefill, warmup, measurement; or,
/// for f, the load alone between two RSS readings), the server stopped.
fn run_once(
    kind: ServerKind,
    program: &Path,
    cell: &Cell,
    args: &CompareArgs,
    http: bool,
    timing: (f64, f64),
) -> Result<Figures, String> {
    let bankcache = kind == ServerKind::Bankcache;
    let auth_token = args.auth_token.as_deref().filter(|_| bankcache);
    let launch = Launch { disk: cell.disk && bankcache, http, auth_token };
    let server = start_server(kind, program, launch)?;
    let proto = proto_of(kind, http);
    let addr = if proto == Proto::Http { server.http_addr.unwrap_or(server.addr) } else { server.addr };
    let mut cfg = bench_config(cell, args, addr, proto, timing.0, timing.1);
    cfg.auth_token = auth_token.map(str::to_owned);
    let before = if cell.is_rss() { Some(rss_anon_kb(server.pid())?) } else { None };
    let report = driver::run_bench(&cfg).map_err(|e| {
        if interrupted() {
            interrupted_error()
        } else {
            format!("{} at {addr}: {e}{}", kind.name(), server.stderr_tail())
        }
    })?;
    let mut figures = Figures::from_report(&report);
    if let Some(before) = before {
        let after = rss_anon_kb(server.pid())?;
        if report.prefill_failures > 0 {
            return Err(format!(
                "{}: {} of {} sets failed while loading",
                kind.name(),
                report.prefill_failures,
                cell.keys
            ));
        }
        figures.bytes_per_key = Some((after as f64 - before as f64) * 1024.0 / cell.keys as f64);
        figures.rss_before_kb = Some(before);
        figures.rss_after_kb = Some(after);
    }
    drop(server);
    Ok(figures)
}

/// A value size as the issue writes it: 32 B, 4 KB, 200 KB.
fn size_text(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// Thousands separators: 152301 -> "152,301".
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line per run on stderr, so a long compare shows where it is.
fn describe_run(record: &RunRecord, rounds: usize) -> String {
    let head = format!(
        "bankcache-bench compare: round {}/{rounds} cell {} {:<9}",
        record.round,
        record.cell.name(),
        record.server.name()
    );
    match &record.outcome {
        Err(e) => format!("{head} FAILED: {e}"),
        Ok(f) => {
            let mut line = match f.bytes_per_key {
                Some(bytes) => format!("{head} {bytes:.1} B/key"),
                None => format!(
                    "{head} {:>9} ops/s  p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us ({})",
                    grouped(f.ops_per_sec),
                    f.p50_us,
                    f.p99_us,
                    f.p999_us,
                    record.proto.name()
                ),
            };
            for (count, what) in [
                (f.misses, "misses"),
                (f.errors, "errors"),
                (f.prefill_failures, "failed prefill sets"),
                (f.conn_failures, "failed connections"),
                (f.verify_failures, "verify failures"),
            ] {
                if count > 0 {
                    let _ = write!(line, ", {count} {what}");
                }
            }
            line
        }
    }
}

// ---------------------------------------------------------------------------
// Medians, table, targets

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 })
}

/// Medians of one server in one cell, each figure over the successful runs
/// on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Median {
    pub runs: usize,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub bytes_per_key: Option<f64>,
}

/// Medians of each figure over `runs`; `None` when there are no runs.
fn median_of(runs: &[&Figures]) -> Option<Median> {
    let pick = |f: fn(&Figures) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    Some(Median {
        runs: runs.len(),
        ops_per_sec: pick(|f| f.ops_per_sec)?,
        p50_us: pick(|f| f.p50_us)?,
        p99_us: pick(|f| f.p99_us)?,
        p999_us: pick(|f| f.p999_us)?,
        bytes_per_key: median(&runs.iter().filter_map(|r| r.bytes_per_key).collect::<Vec<_>>()),
    })
}

/// One cell's medians, per server in `servers` order.
#[derive(Clone, Debug)]
pub struct CellSummary {
    pub cell: Cell,
    pub medians: Vec<(ServerKind, Option<Median>)>,
}

impl CellSummary {
    fn of(&self, kind: ServerKind) -> Option<Median> {
        self.medians.iter().find(|(k, _)| *k == kind).and_then(|(_, m)| *m)
    }
}

/// Per cell, each server's medians over its successful runs.
fn summarize(cells: &[Cell], servers: &[ServerKind], records: &[RunRecord]) -> Vec<CellSummary> {
    cells
        .iter()
        .map(|cell| CellSummary {
            cell: cell.clone(),
            medians: servers
                .iter()
                .map(|&kind| {
                    let runs: Vec<&Figures> = records
                        .iter()
                        .filter(|r| r.cell == cell.id && r.server == kind)
                        .filter_map(|r| r.outcome.as_ref().ok())
                        .collect();
                    (kind, median_of(&runs))
                })
                .collect(),
        })
        .collect()
}

/// `a / b`, when both are known and `b` is positive.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn cell_text(value: Option<String>, width: usize) -> String {
    format!("{:>width$}", value.unwrap_or_else(|| "-".to_string()))
}

/// The table: per cell, each server's median ops/s and p99 (f: bytes per
/// key), then bankcache's ratios to redis and to memcached.
pub fn format_table(summaries: &[CellSummary], servers: &[ServerKind]) -> String {
    const LABEL: usize = 30;
    const NUM: usize = 11;
    const RATIO: usize = 9;
    let others: Vec<ServerKind> = if servers.contains(&ServerKind::Bankcache) {
        servers.iter().copied().filter(|&s| s != ServerKind::Bankcache).collect()
    } else {
        Vec::new()
    };
    let mut out = String::new();
    let _ = write!(out, "{:<LABEL$}", "cell");
    for server in servers {
        let _ = write!(out, " {:>width$}", server.name(), width = 2 * NUM + 1);
    }
    for other in &others {
        let _ = write!(out, " {:>width$}", format!("bankcache/{}", other.name()), width = 2 * RATIO + 1);
    }
    out.push('\n');
    let _ = write!(out, "{:<LABEL$}", "");
    for _ in servers {
        let _ = write!(out, " {:>NUM$} {:>NUM$}", "ops/s", "p99 us");
    }
    for _ in &others {
        let _ = write!(out, " {:>RATIO$} {:>RATIO$}", "ops/s", "p99");
    }
    out.push('\n');
    let x = |r: Option<f64>| r.map(|r| format!("{r:.2}x"));
    for summary in summaries {
        let label: String =
            format!("{} {}", summary.cell.id.name(), summary.cell.short).chars().take(LABEL).collect();
        let _ = write!(out, "{label:<LABEL$}");
        let bc = summary.of(ServerKind::Bankcache);
        if summary.cell.is_rss() {
            for &server in servers {
                let bytes = summary.of(server).and_then(|m| m.bytes_per_key);
                let _ =
                    write!(out, " {} {:>NUM$}", cell_text(bytes.map(|b| format!("{b:.1} B/key")), NUM), "");
            }
            for &other in &others {
                let r =
                    ratio(bc.and_then(|m| m.bytes_per_key), summary.of(other).and_then(|m| m.bytes_per_key));
                let _ = write!(out, " {} {:>RATIO$}", cell_text(x(r), RATIO), "");
            }
        } else {
            for &server in servers {
                let m = summary.of(server);
                let _ = write!(
                    out,
                    " {} {}",
                    cell_text(m.map(|m| grouped(m.ops_per_sec)), NUM),
                    cell_text(m.map(|m| format!("{:.1}", m.p99_us)), NUM)
                );
            }
            for &other in &others {
                let o = summary.of(other);
                let ops = ratio(bc.map(|m| m.ops_per_sec), o.map(|m| m.ops_per_sec));
                let p99 = ratio(bc.map(|m| m.p99_us), o.map(|m| m.p99_us));
                let _ = write!(out, " {} {}", cell_text(x(ops), RATIO), cell_text(x(p99), RATIO));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// Whether the issue's target holds in one cell, and the figures that say so.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// `None` when it cannot be judged (a server or figure is missing).
    pub holds: Option<bool>,
    pub detail: String,
}

/// a–e: ops/s at least Redis's and p99 at most 1.2 times Redis's;
/// f: bytes per key below memcached's.
pub fn judge(summary: &CellSummary) -> Target {
    let bc = summary.of(ServerKind::Bankcache);
    if summary.cell.is_rss() {
        let ours = bc.and_then(|m| m.bytes_per_key);
        let theirs = summary.of(ServerKind::Memcached).and_then(|m| m.bytes_per_key);
        return match (ours, theirs) {
            (Some(ours), Some(theirs)) => Target {
                holds: Some(ours < theirs),
                detail: format!(
                    "bankcache {ours:.1} B/key vs memcached {theirs:.1} B/key ({:.2}x; needs < 1.00x)",
                    ours / theirs
                ),
            },
            _ => Target { holds: None, detail: "needs bankcache and memcached figures".to_string() },
        };
    }
    let redis = summary.of(ServerKind::Redis);
    let (Some(bc), Some(redis)) = (bc, redis) else {
        return Target { holds: None, detail: "needs bankcache and redis figures".to_string() };
    };
    let ops = bc.ops_per_sec / redis.ops_per_sec;
    let p99 = bc.p99_us / redis.p99_us;
    let ops_ok = ops >= 1.0;
    let p99_ok = p99 <= P99_TARGET;
    let mut detail =
        format!("ops/s {ops:.2}x redis (needs >= 1.00x), p99 {p99:.2}x redis (needs <= {P99_TARGET:.2}x)");
    if !ops_ok {
        let _ = write!(detail, "; ops/s short by {:.1}%", (1.0 - ops) * 100.0);
    }
    if !p99_ok {
        let _ = write!(detail, "; p99 over by {:.1}%", (p99 / P99_TARGET - 1.0) * 100.0);
    }
    Target { holds: Some(ops_ok && p99_ok), detail }
}

/// One line per cell saying whether the issue's target holds there.
pub fn format_targets(summaries: &[CellSummary]) -> String {
    let mut out =
        String::from("targets (a-e: ops/s >= redis and p99 <= 1.2x redis; f: bytes/key < memcached):\n");
    for summary in summaries {
        let target = judge(summary);
        let verdict = match target.holds {
            Some(true) => "holds ",
            Some(false) => "MISSED",
            None => "n/a   ",
        };
        let _ = writeln!(out, "  {}: {verdict}  {}", summary.cell.id.name(), target.detail);
    }
    out
}

// ---------------------------------------------------------------------------
// Machine, JSON and SVG

/// What the results were measured on.
struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
    date: String,
    versions: Vec<(ServerKind, Option<String>)>,
}

/// The first line a program prints for `--version`.
fn version_of(program: &Path) -> Option<String> {
    let output = Command::new(program).arg("--version").stdin(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map(|line| line.trim().to_string()).filter(|line| !line.is_empty())
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (civil-from-days, proleptic Gregorian).
fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// CPU, cores, kernel, date and server versions, for the record and the chart's title.
fn machine(programs: &Programs, servers: &[ServerKind]) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
        .map_or_else(|| "unknown CPU".to_string(), |(_, model)| model.trim().to_string());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown kernel".to_string(), |k| k.trim().to_string());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Machine {
        nproc: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
        date: utc_date(now),
        versions: servers.iter().map(|&kind| (kind, programs.get(kind).and_then(version_of))).collect(),
    }
}

/// Everything `compare` found out, for `compare.json` and the chart.
struct Outcome<'a> {
    args: &'a CompareArgs,
    machine: &'a Machine,
    servers: &'a [ServerKind],
    missing: &'a [ServerKind],
    front: Option<&'a FrontChoice>,
    records: &'a [RunRecord],
    summaries: &'a [CellSummary],
    interrupted: bool,
}

/// compare.json: machine, settings, every run, medians and targets.
fn to_json(o: &Outcome) -> Value {
    let m = o.machine;
    let versions: serde_json::Map<String, Value> =
        m.versions.iter().map(|(kind, v)| (kind.name().to_string(), json!(v))).collect();
    let cells: Vec<Value> = o
        .summaries
        .iter()
        .map(|s| {
            let c = &s.cell;
            json!({
                "id": c.id.name(), "title": c.title, "connections": c.connections, "pipeline": c.pipeline,
                "value_size": c.value_size, "keys": c.keys, "get_ratio": c.get_ratio, "disk_store": c.disk,
            })
        })
        .collect();
    let runs: Vec<Value> = o
        .records
        .iter()
        .map(|r| {
            let mut run = json!({
                "cell": r.cell.name(), "server": r.server.name(), "round": r.round, "proto": r.proto.name(),
            });
            match &r.outcome {
                Ok(f) => run["figures"] = f.to_json(),
                Err(e) => run["error"] = json!(e),
            }
            run
        })
        .collect();
    let mut medians = serde_json::Map::new();
    let mut targets = serde_json::Map::new();
    for s in o.summaries {
        let per_server: serde_json::Map<String, Value> = s
            .medians
            .iter()
            .filter_map(|(kind, m)| m.map(|m| (kind, m)))
            .map(|(kind, m)| {
                (
                    kind.name().to_string(),
                    // The RSS cell measures memory only: no rates or latencies to show.
                    if s.cell.is_rss() {
                        json!({ "runs": m.runs, "bytes_per_key": m.bytes_per_key })
                    } else {
                        json!({
                            "runs": m.runs, "ops_per_sec": m.ops_per_sec, "p50_us": m.p50_us,
                            "p99_us": m.p99_us, "p999_us": m.p999_us,
                        })
                    },
                )
            })
            .collect();
        medians.insert(s.cell.id.name().to_string(), Value::Object(per_server));
        let t = judge(s);
        targets.insert(s.cell.id.name().to_string(), json!({ "holds": t.holds, "detail": t.detail }));
    }
    json!({
        "machine": {
            "nproc": m.nproc, "cpu": m.cpu, "kernel": m.kernel, "date": m.date, "versions": versions,
        },
        "settings": {
            "rounds": o.args.rounds, "duration_s": o.args.duration, "warmup_s": o.args.warmup,
            "rss_keys": o.args.rss_keys, "threads": o.args.threads, "verify": o.args.verify,
            "seed": o.args.seed, "bankcache_auth_token": o.args.auth_token.is_some(),
        },
        "servers": o.servers.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "missing": o.missing.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "cell_e_bankcache_front": o.front.map(FrontChoice::to_json),
        "cells": cells,
        "runs": runs,
        "medians": medians,
        "targets": targets,
        "interrupted": o.interrupted,
    })
}

/// The chart's data: medians of cells a-e per server, and f's bytes per key.
fn chart(o: &Outcome) -> svg::Chart {
    let m = o.machine;
    let series: Vec<String> = o.servers.iter().map(|s| s.name().to_string()).collect();
    let cells = o
        .summaries
        .iter()
        .filter(|s| !s.cell.is_rss())
        .map(|s| svg::Cell {
            id: s.cell.id.name().to_string(),
            label: s.cell.short.clone(),
            points: s
                .medians
                .iter()
                .map(|(_, m)| {
                    m.map(|m| svg::Point { ops_per_sec: m.ops_per_sec, p50_us: m.p50_us, p99_us: m.p99_us })
                })
                .collect(),
        })
        .collect();
    let rss = o.summaries.iter().find(|s| s.cell.is_rss()).map(|s| {
        (
            format!("{} keys of 32 B", grouped(s.cell.keys as f64)),
            s.medians.iter().map(|(_, m)| m.and_then(|m| m.bytes_per_key)).collect(),
        )
    });
    svg::Chart {
        title: format!("bankcache vs Redis vs memcached on {}, {} cores, {}", m.cpu, m.nproc, m.date),
        subtitle: format!(
            "Linux {}; medians of {} round(s), {} s runs, driver on {} thread(s); bankcache-bench compare",
            m.kernel, o.args.rounds, o.args.duration, o.args.threads
        ),
        series,
        baseline: o.servers.iter().position(|&s| s == ServerKind::Redis),
        cells,
        rss,
    }
}

/// Writes compare.json and compare.svg into `--out`, creating it if needed.
fn write_results(o: &Outcome) -> Result<(PathBuf, PathBuf), String> {
    let dir = &o.args.out;
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let json_path = dir.join("compare.json");
    let text =
        serde_json::to_string_pretty(&to_json(o)).map_err(|e| format!("encoding compare.json: {e}"))?;
    fs::write(&json_path, text + "\n").map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    let svg_path = dir.join("compare.svg");
    fs::write(&svg_path, svg::render(&chart(o)))
        .map_err(|e| format!("writing {}: {e}", svg_path.display()))?;
    Ok((json_path, svg_path))
}

// ---------------------------------------------------------------------------
// The command

/// Which front bankcache uses in cell e.
struct FrontChoice {
    http: bool,
}

impl FrontChoice {
    fn to_json(&self) -> Value {
        json!({ "front": if self.http { "http" } else { "json" } })
    }
}

/// Sets `INTERRUPTED` on the first SIGINT or SIGTERM; the handler then
/// resets itself, so a second ctrl-c ends this process at once (the kernel
/// still kills the servers, through `PR_SET_PDEATHSIG`).
fn install_signal_handlers() {
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
    // the sigaction struct is fully initialized before use.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The items without repeats, first occurrence kept (`--cells a,a` runs a once).
fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for &item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Refuses flags that cannot make a comparison.
fn validate(args: &CompareArgs) -> Result<(), String> {
    if args.rounds == 0 || args.threads == 0 || args.rss_keys == 0 {
        return Err("--rounds, --threads and --rss-keys must be positive".into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err("--warmup must be a non-negative number of seconds".into());
    }
    if args.cells.is_empty() || args.servers.is_empty() {
        return Err("--cells and --servers must name at least one each".into());
    }
    Ok(())
}

/// Finds the servers: bankcache must be there if asked for; a missing redis
/// or memcached is reported with how to install it, and skipped.
fn find_programs(args: &CompareArgs, servers: &[ServerKind]) -> Result<(Programs, Vec<ServerKind>), String> {
    let mut programs = Programs { bankcache: None, redis: None, memcached: None };
    let mut missing = Vec::new();
    if servers.contains(&ServerKind::Bankcache) {
        let path = match &args.bankcache {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|e| format!("finding this executable's directory: {e}"))?
                .with_file_name("bankcache"),
        };
        if !path.is_file() {
            return Err(format!(
                "no bankcache server at {}: run `cargo build --release` (or pass --bankcache PATH)",
                path.display()
            ));
        }
        programs.bankcache = Some(path);
    }
    for (kind, program) in [(ServerKind::Redis, "redis-server"), (ServerKind::Memcached, "memcached")] {
        if !servers.contains(&kind) {
            continue;
        }
        match find_in_path(program) {
            Some(path) => match kind {
                ServerKind::Redis => programs.redis = Some(path),
                _ => programs.memcached = Some(path),
            },
            None => {
                eprintln!(
                    "bankcache-bench compare: {program} is not installed (not on PATH); install it with \
                     `{INSTALL_HINT}`. Carrying on without {}.",
                    kind.name()
                );
                missing.push(kind);
            }
        }
    }
    Ok((programs, missing))
}

/// `bankcache-bench compare`.
pub fn main(args: &CompareArgs) -> ExitCode {
    if let Err(message) = validate(args) {
        eprintln!("bankcache-bench compare: {message}");
        return ExitCode::from(2);
    }
    let mut cells_ids = dedup(&args.cells);
    cells_ids.sort();
    let mut requested = dedup(&args.servers);
    requested.sort();
    let (programs, missing) = match find_programs(args, &requested) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("bankcache-bench compare: {message}");
            return ExitCode::FAILURE;
        }
    };
    let servers: Vec<ServerKind> = requested.iter().copied().filter(|s| !missing.contains(s)).collect();
    if servers.is_empty() {
        eprintln!("bankcache-bench compare: no server to run; install them with `{INSTALL_HINT}`");
        return ExitCode::FAILURE;
    }
    install_signal_handlers();
    let machine = machine(&programs, &servers);
    let cells: Vec<Cell> = cells_ids.iter().map(|&id| Cell::of(id, args.rss_keys)).collect();
    eprintln!(
        "bankcache-bench compare: {} on {} ({} cores, Linux {}); servers {}; cells {}; \
         {} round(s) of {} s (+{} s warmup)",
        machine.date,
        machine.cpu,
        machine.nproc,
        machine.kernel,
        servers.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        cells.iter().map(|c| c.id.name()).collect::<Vec<_>>().join(","),
        args.rounds,
        args.duration,
        args.warmup
    );

    let front = (programs.bankcache.is_some() && cells.iter().any(|c| c.id == CellId::E))
        .then_some(FrontChoice { http: args.e_front == Front::Http });

    let mut records = Vec::new();
    'rounds: for round in 1..=args.rounds {
        let mut order = servers.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for cell in &cells {
            for &kind in &order {
                if interrupted() {
                    break 'rounds;
                }
                let Some(program) = programs.get(kind) else { continue };
                let http = kind == ServerKind::Bankcache
                    && cell.id == CellId::E
                    && front.as_ref().is_some_and(|f| f.http);
                let outcome = run_once(kind, program, cell, args, http, (args.duration, args.warmup));
                let record =
                    RunRecord { cell: cell.id, server: kind, round, proto: proto_of(kind, http), outcome };
                eprintln!("{}", describe_run(&record, args.rounds));
                records.push(record);
            }
        }
    }
    let was_interrupted = interrupted();

    let summaries = summarize(&cells, &servers, &records);
    let outcome = Outcome {
        args,
        machine: &machine,
        servers: &servers,
        missing: &missing,
        front: front.as_ref(),
        records: &records,
        summaries: &summaries,
        interrupted: was_interrupted,
    };
    println!(
        "bankcache-bench compare: {} on {}, {} cores, Linux {}; medians of {} round(s)",
        machine.date, machine.cpu, machine.nproc, machine.kernel, args.rounds
    );
    for (kind, version) in &machine.versions {
        println!("  {:<10} {}", kind.name(), version.as_deref().unwrap_or("version unknown"));
    }
    for cell in &cells {
        println!("  {}: {}", cell.id.name(), cell.title);
    }
    if let Some(choice) = &front {
        println!("  e: bankcache over {} (--e-front)", if choice.http { "HTTP" } else { "JSON" });
    }
    if args.auth_token.is_some() {
        println!(
            "  bankcache ran with an auth_token (--auth-token): auth on each JSON connection, bearer on HTTP"
        );
    }
    println!();
    print!("{}", format_table(&summaries, &servers));
    println!();
    print!("{}", format_targets(&summaries));
    let written = write_results(&outcome);
    match &written {
        Ok((json_path, svg_path)) => println!("\nwrote {} and {}", json_path.display(), svg_path.display()),
        Err(e) => eprintln!("bankcache-bench compare: {e}"),
    }
    if was_interrupted {
        eprintln!("bankcache-bench compare: interrupted; the results above are partial");
        return ExitCode::from(130);
    }
    let failed = records.iter().filter(|r| r.outcome.is_err()).count();
    let bad_values: u64 =
        records.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|f| f.verify_failures).sum();
    if failed > 0 || bad_values > 0 || written.is_err() {
        eprintln!(
            "bankcache-bench compare: {failed} run(s) failed, {bad_values} value(s) failed verification"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0, 1.0]), Some(1.5));
    }

    fn m(ops: f64, p99: f64) -> Option<Median> {
        Some(Median {
            runs: 3,
            ops_per_sec: ops,
            p50_us: p99 / 2.0,
            p99_us: p99,
            p999_us: p99 * 2.0,
            bytes_per_key: None,
        })
    }

    fn bytes(b: f64) -> Option<Median> {
        Some(Median {
            runs: 1,
            ops_per_sec: 0.0,
            p50_us: 0.0,
            p99_us: 0.0,
            p999_us: 0.0,
            bytes_per_key: Some(b),
        })
    }

    fn summaries() -> Vec<CellSummary> {
        use ServerKind::*;
        vec![
            CellSummary {
                cell: Cell::of(CellId::A, 1000),
                medians: vec![
                    (Bankcache, m(150_000.0, 500.0)),
                    (Redis, m(140_000.0, 450.0)),
                    (Memcached, m(130_000.0, 400.0)),
                ],
            },
            CellSummary {
                cell: Cell::of(CellId::E, 1000),
                medians: vec![
                    (Bankcache, m(20_000.0, 3000.0)),
                    (Redis, m(25_000.0, 2000.0)),
                    (Memcached, None),
                ],
            },
            CellSummary {
                cell: Cell::of(CellId::F, 1_000_000),
                medians: vec![(Bankcache, bytes(60.0)), (Redis, bytes(133.0)), (Memcached, bytes(125.0))],
            },
        ]
    }

    #[test]
    fn the_table_has_medians_and_ratios() {
        let servers = [ServerKind::Bankcache, ServerKind::Redis, ServerKind::Memcached];
        let table = format_table(&summaries(), &servers);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[0].starts_with("cell")
                && lines[0].contains("bankcache/redis")
                && lines[0].contains("bankcache/memcached")
        );
        assert!(lines[1].contains("ops/s") && lines[1].contains("p99 us"));
        let a = lines[2];
        assert!(a.starts_with("a 50 conn, p1, 32 B"), "{a}");
        for expected in
            ["150,000", "140,000", "130,000", "500.0", "450.0", "1.07x", "1.11x", "1.15x", "1.25x"]
        {
            assert!(a.contains(expected), "{expected} in {a}");
        }
        assert!(lines[3].contains(" - "), "a missing median is a dash: {}", lines[3]);
        assert!(
            lines[4].contains("60.0 B/key") && lines[4].contains("0.45x") && lines[4].contains("0.48x"),
            "{}",
            lines[4]
        );
        // Columns line up: every row's ratio columns end where the header's do.
        assert_eq!(lines[0].len(), lines[1].len());
        assert_eq!(lines[2].len(), lines[1].len());
        // bankcache alone: no ratio columns.
        let alone = format_table(&summaries()[..1], &[ServerKind::Bankcache]);
        assert!(!alone.contains("bankcache/"), "{alone}");
    }

    #[test]
    fn targets_are_judged_as_the_issue_says() {
        let s = summaries();
        let a = judge(&s[0]);
        assert_eq!(a.holds, Some(true), "{}", a.detail);
        let e = judge(&s[1]);
        assert_eq!(e.holds, Some(false));
        assert!(
            e.detail.contains("short by 20.0%") && e.detail.contains("p99 over by 25.0%"),
            "{}",
            e.detail
        );
        assert_eq!(judge(&s[2]).holds, Some(true));
        let mut no_redis = s[0].clone();
        no_redis.medians.retain(|(k, _)| *k != ServerKind::Redis);
        assert_eq!(judge(&no_redis).holds, None);
        let text = format_targets(&s);
        assert!(
            text.contains("a: holds") && text.contains("e: MISSED") && text.contains("f: holds"),
            "{text}"
        );
    }

    #[test]
    fn dates_and_numbers() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_660), "2000-02-29 01:01 UTC");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31 23:59 UTC");
        assert_eq!(grouped(152_301.4), "152,301");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1_000_000.0), "1,000,000");
    }

    #[test]
    fn listening_lines_are_read_only_when_complete() {
        let out = "bankcache: json listening on 127.0.0.1:4000\nbankcache: http listening on 127.0.0.1:40";
        assert_eq!(
            listen_addr(out, "bankcache: json listening on "),
            Some(SocketAddr::from(([127, 0, 0, 1], 4000)))
        );
        assert_eq!(listen_addr(out, "bankcache: http listening on "), None);
    }

    #[test]
    fn the_chart_and_json_hold_every_cell() {
        let servers = [ServerKind::Bankcache, ServerKind::Redis, ServerKind::Memcached];
        let args = CompareArgs {
            rounds: 1,
            cells: vec![CellId::A, CellId::E, CellId::F],
            servers: servers.to_vec(),
            duration: 1.0,
            warmup: 0.0,
            rss_keys: 1_000_000,
            out: PathBuf::from("unused"),
            bankcache: None,
            threads: 1,
            verify: false,
            seed: 1,
            e_front: Front::Http,
            auth_token: None,
        };
        let machine = Machine {
            nproc: 2,
            cpu: "Test CPU".into(),
            kernel: "6.1".into(),
            date: "2025-01-01 00:00 UTC".into(),
            versions: vec![(ServerKind::Redis, Some("Redis server v=7".into()))],
        };
        let summaries = summaries();
        let records = vec![RunRecord {
            cell: CellId::A,
            server: ServerKind::Redis,
            round: 1,
            proto: Proto::Resp,
            outcome: Err("boom".into()),
        }];
        let outcome = Outcome {
            args: &args,
            machine: &machine,
            servers: &servers,
            missing: &[],
            front: None,
            records: &records,
            summaries: &summaries,
            interrupted: false,
        };
        let value = to_json(&outcome);
        assert_eq!(value["medians"]["a"]["bankcache"]["ops_per_sec"], 150_000.0);
        assert_eq!(value["medians"]["f"]["memcached"]["bytes_per_key"], 125.0);
        assert_eq!(value["runs"][0]["error"], "boom");
        assert_eq!(value["targets"]["e"]["holds"], false);
        let svg = svg::render(&chart(&outcome));
        assert!(svg.contains("Test CPU, 2 cores, 2025-01-01"));
        assert!(svg.contains(">a</text>") && svg.contains(">e</text>") && svg.contains("RSS bytes per key"));
    }
}
