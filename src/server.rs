//! Wiring and lifecycle: bind, start the store's sweeper and the workers, run the reactor, shut down in
//! order (the reactor answers what it had read and delivers the replies, within `shutdown_timeout` → the
//! workers, their last jobs back, exit → the sweeper stops → the store is synced).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::access_log;
use crate::cmd;
use crate::config::Config;
use crate::dispatch::{self, Inline, Services};
use crate::net;
use crate::net::reactor::{self, NetLimits, Parts, Reactor, StopFlag};
use crate::stats::Stats;
use crate::store::{Fsync, Maintenance, Store, StoreConfig, VolumeConfig};
use bankcache_proto::Limits;

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// `listen` names no usable address.
    Resolve { addr: String, source: Option<std::io::Error> },
    /// The listener could not be bound.
    Bind { addr: SocketAddr, source: std::io::Error },
    /// A system call of the server's own machinery failed.
    Io { context: &'static str, source: std::io::Error },
    /// The store could not be opened.
    Store(crate::store::StoreError),
    /// The access log could not be opened.
    AccessLog { path: std::path::PathBuf, source: std::io::Error },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Resolve { addr, source: Some(e) } => {
                write!(f, "cannot resolve listen address {addr:?}: {e}")
            }
            ServerError::Resolve { addr, source: None } => {
                write!(f, "listen address {addr:?} resolves to nothing")
            }
            ServerError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            ServerError::Io { context, source } => write!(f, "{context}: {source}"),
            ServerError::Store(e) => write!(f, "cannot open the store: {e}"),
            ServerError::AccessLog { path, source } => {
                write!(f, "cannot open the access log {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Resolve { source, .. } => source.as_ref().map(|e| e as _),
            ServerError::Bind { source, .. }
            | ServerError::Io { source, .. }
            | ServerError::AccessLog { source, .. } => Some(source),
            ServerError::Store(e) => Some(e),
        }
    }
}

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { context, source }
}

/// The listeners' addresses that other machines may reach: any but loopback (an unspecified address such
/// as `0.0.0.0` listens on every interface).
fn exposed(json: SocketAddr, http: Option<SocketAddr>) -> Vec<SocketAddr> {
    std::iter::once(json).chain(http).filter(|addr| !addr.ip().is_loopback()).collect()
}

/// Asks a running server to shut down gracefully, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    stop: Arc<StopFlag>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, answer what is in flight, return from [`Server::run`].
    pub fn shutdown(&self) {
        self.stop.requested.store(true, Ordering::Release);
        if let Err(e) = self.stop.waker.wake() {
            log::error!("cannot wake the reactor for shutdown: {e}");
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    json_addr: SocketAddr,
    http_listener: Option<TcpListener>,
    http_addr: Option<SocketAddr>,
    stop: Arc<StopFlag>,
    signals: Option<Signals>,
    store: Arc<Store>,
    /// The access log's file, opened at bind so that a bad path stops the start.
    access_log: Option<std::fs::File>,
}

impl Server {
    /// Opens the store (replaying the disk store, so the listening line appears only once the data is
    /// back) and binds the listener. Nothing is served until [`Server::run`].
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        raise_fd_limit(&config);
        let addr = resolve(&config.listen)?;
        let access_log = match &config.access_log {
            Some(path) => Some(
                access_log::open(path)
                    .map_err(|source| ServerError::AccessLog { path: path.clone(), source })?,
            ),
            None => None,
        };
        let store = Arc::new(open_store(&config)?);
        let poll = Poll::new().map_err(io_error("cannot create the event loop"))?;
        let mut listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        deepen_backlog(&listener);
        let json_addr = listener.local_addr().map_err(io_error("cannot read the listener's address"))?;
        poll.registry()
            .register(&mut listener, reactor::JSON_LISTENER, Interest::READABLE)
            .map_err(io_error("cannot register the listener"))?;
        let (mut http_listener, mut http_addr) = (None, None);
        if let Some(listen) = &config.http_listen {
            let addr = resolve(listen)?;
            let mut listener =
                TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
            deepen_backlog(&listener);
            http_addr = Some(listener.local_addr().map_err(io_error("cannot read the listener's address"))?);
            poll.registry()
                .register(&mut listener, reactor::HTTP_LISTENER, Interest::READABLE)
                .map_err(io_error("cannot register the listener"))?;
            http_listener = Some(listener);
        }
        if config.auth_token.is_none() {
            for addr in exposed(json_addr, http_addr) {
                log::warn!(
                    "listening on {addr}, beyond loopback, with no auth_token: anyone who can reach it can \
                     read, change and wipe every bank (set auth_token, or BANKCACHE_AUTH_TOKEN)"
                );
            }
        }
        let waker =
            Waker::new(poll.registry(), reactor::WAKER).map_err(io_error("cannot create the waker"))?;
        let stop = Arc::new(StopFlag { requested: AtomicBool::new(false), waker: Arc::new(waker) });
        Ok(Server {
            config,
            poll,
            listener,
            json_addr,
            http_listener,
            http_addr,
            stop,
            signals: None,
            store,
            access_log,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What an operator needs to know at start, one line each: ports, workers, where data lives (or that
    /// none persists), its size on disk, the memory limit and the fsync policy.
    pub fn summary(&self) -> Vec<String> {
        let c = &self.config;
        let http = match self.http_addr {
            Some(addr) => format!("http port {addr} (file API in bank {:?})", c.http_bank),
            None => "no http port".into(),
        };
        let mut lines = vec![format!("json port {}, {http}, {} workers", self.json_addr, c.workers)];
        lines.push(match &c.data_dir {
            Some(dir) => {
                let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                format!(
                    "disk store in {}: {} volume files of {} (created sparse: they take only what is written, \
                     now {} on disk), fsync {}; data persists across restarts",
                    shown.display(),
                    c.volume_count,
                    human_bytes(c.volume_size),
                    human_bytes(disk_usage(dir)),
                    c.fsync,
                )
            }
            None => "memory only (no data_dir): nothing persists across restarts".into(),
        });
        lines.push(format!(
            "memory limit {} (memory_max_bytes), {} connections at most (max_connections)",
            human_bytes(c.memory_max_bytes),
            c.max_connections
        ));
        lines.push(match (&c.auth_token, c.metrics_public) {
            (Some(_), false) => "access: clients must show the auth_token (JSON auth op, HTTP bearer)".into(),
            (Some(_), true) => {
                "access: clients must show the auth_token, except for /metrics (metrics_public)".into()
            }
            (None, _) => "access: open, no auth_token: anyone who reaches the ports may do anything".into(),
        });
        if let Some(path) = &c.access_log {
            let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            lines.push(format!(
                "access log {}: one line per HTTP request (SIGHUP reopens it)",
                shown.display()
            ));
        }
        lines
    }

    /// The JSON port's address (the real port when port 0 was asked for).
    pub fn json_addr(&self) -> SocketAddr {
        self.json_addr
    }

    /// The HTTP port's address, if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A handle that stops the server from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { stop: Arc::clone(&self.stop) }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (for the binary; tests use the handle).
    pub fn handle_signals(&mut self) -> Result<(), ServerError> {
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(io_error("cannot install signal handlers"))?;
        self.poll
            .registry()
            .register(&mut signals, reactor::SIGNALS, Interest::READABLE)
            .map_err(io_error("cannot register signal handlers"))?;
        self.signals = Some(signals);
        Ok(())
    }

    /// Serves until shut down, then finishes in order: in-flight replies, workers, sweeper.
    pub fn run(self) -> Result<(), ServerError> {
        let config = &self.config;
        let store = self.store;
        let maintenance =
            Maintenance::start(Arc::clone(&store), Duration::from_millis(config.sweep_interval_ms))
                .map_err(io_error("cannot start the maintenance thread"))?;
        // One block of counters per worker, and one for the reactor when it runs requests itself.
        let stats = Arc::new(Stats::new(config.workers + 1));
        let (queue, work) = dispatch::Queue::new();
        // The writer stops, after writing every line queued, when dropped: once the workers are joined.
        let (access_log, writer) = match (self.access_log, &config.access_log) {
            (Some(file), Some(path)) => {
                let (log, writer) = access_log::start(path.clone(), file)
                    .map_err(io_error("cannot start the access log's writer"))?;
                (Some(log), Some(writer))
            }
            _ => (None, None),
        };
        let services = Arc::new(Services {
            cmd: cmd::Context {
                store: Arc::clone(&store),
                stats: Arc::clone(&stats),
                max_reply_bytes: config.max_output_bytes,
                auth_token: config.auth_token.clone(),
            },
            limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
            http_bank: config.http_bank.clone(),
            slow_op: (config.slow_log_ms > 0).then(|| Duration::from_millis(config.slow_log_ms)),
            max_output: config.max_output_bytes,
            metrics_public: config.metrics_public,
            access_log,
            cancelled: queue.cancel_flag(),
        });
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let notified = Arc::new(AtomicBool::new(false));
        let notify: dispatch::Notify = {
            let notified = Arc::clone(&notified);
            let waker = Arc::clone(&self.stop.waker);
            Arc::new(move || {
                // Only the first worker to finish since the reactor last looked pays for a wake-up.
                if !notified.swap(true, Ordering::SeqCst) {
                    if let Err(e) = waker.wake() {
                        log::error!("cannot wake the reactor: {e}");
                    }
                }
            })
        };
        // A worker's counters are block `id`; the reactor's, for requests it runs itself, the next one.
        let inline = (config.inline_ops > 0)
            .then(|| Inline::new(Arc::clone(&services), config.workers, config.inline_ops));
        let workers = dispatch::pool::spawn(config.workers, services, queue.clone(), work, done_tx, notify)
            .map_err(io_error("cannot start the worker threads"))?;
        let reactor = Reactor::new(Parts {
            poll: self.poll,
            listener: self.listener,
            http_listener: self.http_listener,
            signals: self.signals,
            queue,
            done: done_rx,
            notified,
            workers: config.workers,
            inline,
            stats,
            limits: NetLimits {
                max_connections: config.max_connections,
                max_request_bytes: config.max_request_bytes,
                http: crate::http::codec::Limits {
                    max_head: HTTP_MAX_HEAD,
                    max_body: config.max_value_bytes,
                },
                http_idle: Duration::from_secs_f64(config.http_idle_timeout),
                idle: (config.idle_timeout > 0.0).then(|| Duration::from_secs_f64(config.idle_timeout)),
                max_output: config.max_output_bytes,
                output_timeout: (config.output_timeout > 0.0)
                    .then(|| Duration::from_secs_f64(config.output_timeout)),
                shutdown_grace: Duration::from_secs_f64(config.shutdown_timeout),
                auth_token: config.auth_token.clone(),
            },
            stop: self.stop,
        });
        log::info!("serving with {} workers", config.workers);
        let result = reactor.run().map_err(io_error("event loop failed"));
        for worker in workers {
            if worker.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        drop(writer);
        drop(maintenance);
        if let Err(e) = store.sync() {
            log::error!("final sync failed: {e}");
        }
        log::info!("stopped");
        result
    }
}

/// `n` bytes in the largest binary unit that keeps a whole number before the point: `1 GiB`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Bytes the disk store's files take on disk (allocated blocks, not their sparse sizes); 0 for what cannot
/// be read.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(meta) if meta.is_dir() => pending.push(entry.path()),
                Ok(meta) => total += meta.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Descriptors the server needs besides its connections: stdio, the poll, the waker, signals, the
/// listeners, the spare, and slack for the odd file; the disk store adds its volume and index files.
const RESERVED_FDS: u64 = 64;

/// Raises the process's descriptor limit as far as allowed (each connection holds one) and says what it
/// got, warning when that is less than `max_connections` needs: a server that runs out closes new
/// connections at once rather than serve them.
fn raise_fd_limit(config: &Config) {
    let store_files = if config.data_dir.is_some() { 2 * u64::from(config.volume_count) } else { 0 };
    let needed = (config.max_connections as u64).saturating_add(RESERVED_FDS + store_files);
    let limit = match net::fds::raise_nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            log::warn!("file descriptors: cannot raise the soft limit (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    if limit.after > limit.before {
        log::info!("file descriptors: soft limit raised from {} to {}", limit.before, limit.after);
    } else {
        log::info!("file descriptors: soft limit {} (hard limit {})", limit.after, limit.hard);
    }
    if limit.after < needed {
        log::warn!(
            "file descriptors: the limit {} is below the {needed} that max_connections {} needs; connections \
             past it are closed at once (raise the hard limit: ulimit -Hn, or LimitNOFILE= under systemd)",
            limit.after,
            config.max_connections,
        );
    }
}

/// Connections the kernel may hold completed for a listener before the reactor accepts them.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Deepens a listener's backlog from the 128 that mio (as std) listens with to [`LISTEN_BACKLOG`] (the
/// kernel caps it at `net.core.somaxconn`): with 128, a burst of connections, such as a pool of clients
/// reconnecting at once, overflows it while the reactor is busy, and each dropped handshake costs its
/// client a one-second SYN retransmit. Listening again on a listening socket only changes the backlog.
/// Best effort: the listener works either way.
fn deepen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen takes a descriptor the listener owns and an integer; it changes only its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        log::warn!("cannot deepen the listen backlog: {}", std::io::Error::last_os_error());
    }
}

/// Longest HTTP request head (request line and headers) accepted.
const HTTP_MAX_HEAD: usize = 16 * 1024;

/// The store's fsync policy for the configured one. The store keeps its own enum so it depends on neither
/// serde nor clap; the match is exhaustive, so a policy added to the config cannot fall back to a default.
fn store_fsync(policy: crate::config::Fsync) -> Fsync {
    use crate::config::Fsync as Policy;
    match policy {
        Policy::Never => Fsync::Never,
        Policy::EverySec => Fsync::EverySec,
        Policy::Always => Fsync::Always,
    }
}

/// Opens the store the configuration describes, replaying the disk store if there is one.
fn open_store(config: &Config) -> Result<Store, ServerError> {
    let fsync = store_fsync(config.fsync);
    let volumes = config.data_dir.as_ref().map(|dir| VolumeConfig {
        dir: dir.clone(),
        volume_size: config.volume_size,
        volume_count: config.volume_count,
        fsync,
        disk: None,
    });
    let store_config = StoreConfig {
        volumes,
        memory_max_bytes: usize::try_from(config.memory_max_bytes).unwrap_or(usize::MAX),
        admit_after_reads: u8::try_from(config.cache_after_miss_count).unwrap_or(u8::MAX),
        admit_window_ms: (config.cache_after_miss_count_duration * 1000.0) as u32,
    };
    let started = std::time::Instant::now();
    let (store, report) = Store::open(store_config).map_err(ServerError::Store)?;
    if let (Some(report), Some(dir)) = (report, &config.data_dir) {
        for line in &report.lines {
            log::info!("recovered {line}");
        }
        let took = started.elapsed().as_secs_f64() * 1000.0;
        if report.volumes == 0 {
            log::info!("disk store {}: new (nothing to recover), opened in {took:.1} ms", dir.display());
        } else {
            log::info!(
                "disk store {}: {} records from {} volume{} recovered in {took:.1} ms ({} indexes rewritten, {} \
                 torn bytes cut); dropped: {} damaged, {} unprovable, {} stale index entries",
                dir.display(),
                report.records,
                report.volumes,
                if report.volumes == 1 { "" } else { "s" },
            report.rebuilt_indexes,
            report.torn_tail_bytes,
            report.damaged_records,
            report.unprovable_keys,
                report.recycled_entries,
            );
        }
    }
    Ok(store)
}

fn resolve(listen: &str) -> Result<SocketAddr, ServerError> {
    let mut addrs = listen
        .to_socket_addrs()
        .map_err(|e| ServerError::Resolve { addr: listen.into(), source: Some(e) })?;
    addrs.next().ok_or_else(|| ServerError::Resolve { addr: listen.into(), source: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_beyond_loopback_are_exposed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(exposed(addr("127.0.0.1:1"), Some(addr("127.0.0.2:2"))).is_empty());
        assert!(exposed(addr("[::1]:1"), None).is_empty());
        assert_eq!(exposed(addr("0.0.0.0:1"), Some(addr("127.0.0.1:2"))), [addr("0.0.0.0:1")]);
        assert_eq!(exposed(addr("127.0.0.1:1"), Some(addr("[::]:2"))), [addr("[::]:2")]);
        assert_eq!(exposed(addr("10.1.2.3:1"), None), [addr("10.1.2.3:1")]);
    }
}
