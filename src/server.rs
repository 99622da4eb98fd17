//! Wiring and lifecycle: bind, start the store's sweeper and the workers, run the reactor, shut down in
//! order (reactor finishes what is in flight → workers drain and exit → sweeper stops).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::config::Config;
use crate::protocol::Limits;
use crate::reactor::{self, NetLimits, Parts, Reactor, StopFlag};
use crate::stats::Stats;
use crate::store::{Store, Sweeper};
use crate::worker::{self, Context};

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// `listen` names no usable address.
    Resolve { addr: String, source: Option<std::io::Error> },
    /// The listener could not be bound.
    Bind { addr: SocketAddr, source: std::io::Error },
    /// A system call of the server's own machinery failed.
    Io { context: &'static str, source: std::io::Error },
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
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Resolve { source, .. } => source.as_ref().map(|e| e as _),
            ServerError::Bind { source, .. } | ServerError::Io { source, .. } => Some(source),
        }
    }
}

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { context, source }
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
    stop: Arc<StopFlag>,
    signals: Option<Signals>,
}

impl Server {
    /// Binds the listener. Nothing is served until [`Server::run`].
    pub fn bind(config: Config) -> Result<Server, ServerError> {
        let addr = resolve(&config.listen)?;
        let poll = Poll::new().map_err(io_error("cannot create the event loop"))?;
        let mut listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
        let json_addr = listener.local_addr().map_err(io_error("cannot read the listener's address"))?;
        poll.registry()
            .register(&mut listener, reactor::JSON_LISTENER, Interest::READABLE)
            .map_err(io_error("cannot register the listener"))?;
        let waker =
            Waker::new(poll.registry(), reactor::WAKER).map_err(io_error("cannot create the waker"))?;
        let stop = Arc::new(StopFlag { requested: AtomicBool::new(false), waker: Arc::new(waker) });
        Ok(Server { config, poll, listener, json_addr, stop, signals: None })
    }

    /// The JSON port's address (the real port when port 0 was asked for).
    pub fn json_addr(&self) -> SocketAddr {
        self.json_addr
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
        let store = Arc::new(Store::new());
        let stats = Arc::new(Stats::new(config.workers));
        let sweeper = Sweeper::start(Arc::clone(&store), Duration::from_millis(config.sweep_interval_ms))
            .map_err(io_error("cannot start the expiry sweeper"))?;
        let ctx = Arc::new(Context {
            store,
            stats: Arc::clone(&stats),
            limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
            slow_op: (config.slow_log_ms > 0).then(|| Duration::from_millis(config.slow_log_ms)),
        });
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let notified = Arc::new(AtomicBool::new(false));
        let notify: worker::Notify = {
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
        let workers = worker::spawn(config.workers, ctx, jobs_rx, done_tx, notify)
            .map_err(io_error("cannot start the worker threads"))?;
        let reactor = Reactor::new(Parts {
            poll: self.poll,
            listener: self.listener,
            signals: self.signals,
            jobs: jobs_tx,
            done: done_rx,
            notified,
            workers: config.workers,
            stats,
            limits: NetLimits {
                max_connections: config.max_connections,
                max_request_bytes: config.max_request_bytes,
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
        drop(sweeper);
        log::info!("stopped");
        result
    }
}

fn resolve(listen: &str) -> Result<SocketAddr, ServerError> {
    let mut addrs = listen
        .to_socket_addrs()
        .map_err(|e| ServerError::Resolve { addr: listen.into(), source: Some(e) })?;
    addrs.next().ok_or_else(|| ServerError::Resolve { addr: listen.into(), source: None })
}
