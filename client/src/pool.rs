//! A pool of connections to one server, shared between threads.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::{resolve, Client, ClientBuilder, Error, Result};

/// Connections to one server for many threads: a cheap `Clone + Send + Sync` handle.
///
/// [`Pool::get`] hands out an idle connection, or opens a new one while fewer than `size` are open, or
/// else blocks until another thread gives one back. A [`PooledClient`] goes back to the pool when dropped,
/// unless its connection broke (then it is closed and a later [`Pool::get`] opens a fresh one).
///
/// ```no_run
/// let pool = bankcache_client::Pool::new("127.0.0.1:10001", 4)?;
/// let threads: Vec<_> = (0..8)
///     .map(|t| {
///         let pool = pool.clone();
///         std::thread::spawn(move || pool.get()?.put("bank", &format!("k{t}"), &t, None))
///     })
///     .collect();
/// for thread in threads {
///     thread.join().unwrap()?;
/// }
/// # Ok::<(), bankcache_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<SocketAddr>,
    options: ClientBuilder,
    size: usize,
    state: Mutex<State>,
    returned: Condvar,
}

struct State {
    idle: Vec<Client>,
    /// Connections open: idle ones and those handed out.
    open: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("addrs", &self.inner.addrs)
            .field("size", &self.inner.size)
            .field("open", &self.open_count())
            .finish()
    }
}

impl Pool {
    /// A pool of at most `size` connections (at least 1) to `addr`, with default options. Resolves the
    /// address now; connects on demand.
    pub fn new(addr: impl ToSocketAddrs, size: usize) -> Result<Pool> {
        Pool::with_options(ClientBuilder::default(), addr, size)
    }

    /// As [`Pool::new`], with the options (timeouts, `TCP_NODELAY`) of `options` for every connection.
    pub fn with_options(options: ClientBuilder, addr: impl ToSocketAddrs, size: usize) -> Result<Pool> {
        let addrs = resolve(addr)?;
        Ok(Pool {
            inner: Arc::new(Inner {
                addrs,
                options,
                size: size.max(1),
                state: Mutex::new(State { idle: Vec::new(), open: 0 }),
                returned: Condvar::new(),
            }),
        })
    }

    /// A connection, waiting as long as it takes for one to be free.
    pub fn get(&self) -> Result<PooledClient> {
        self.checkout(None)
    }

    /// A connection, waiting at most `timeout` for one to be free ([`Error::Connect`] with
    /// [`io::ErrorKind::TimedOut`] when none was).
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledClient> {
        self.checkout(Some(Instant::now() + timeout))
    }

    /// Runs `f` with a connection of the pool.
    pub fn with<R>(&self, f: impl FnOnce(&mut Client) -> Result<R>) -> Result<R> {
        f(&mut *self.get()?)
    }

    /// The most connections the pool opens.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Connections open now (idle or handed out).
    pub fn open_count(&self) -> usize {
        self.lock().open
    }

    /// Connections open and idle now.
    pub fn idle_count(&self) -> usize {
        self.lock().idle.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the state consistent (every change is one statement).
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn checkout(&self, deadline: Option<Instant>) -> Result<PooledClient> {
        let mut state = self.lock();
        loop {
            if let Some(client) = state.idle.pop() {
                return Ok(PooledClient { client: Some(client), pool: self.inner.clone() });
            }
            if state.open < self.inner.size {
                state.open += 1;
                drop(state);
                return match self.inner.options.clone().connect(&self.inner.addrs[..]) {
                    Ok(client) => Ok(PooledClient { client: Some(client), pool: self.inner.clone() }),
                    Err(e) => {
                        self.inner.release(None);
                        Err(e)
                    }
                };
            }
            state = match deadline {
                None => self.inner.returned.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Connect(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no pooled connection became free in time",
                        )));
                    }
                    self.inner.returned.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}

impl Inner {
    /// Gives back a connection (kept when it is still connected) and wakes one waiting thread.
    fn release(&self, client: Option<Client>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match client {
            Some(client) if client.is_connected() => state.idle.push(client),
            _ => state.open -= 1,
        }
        drop(state);
        self.returned.notify_one();
    }
}

/// A connection borrowed from a [`Pool`]; use it as a [`Client`]. It goes back to the pool when dropped.
pub struct PooledClient {
    client: Option<Client>,
    pool: Arc<Inner>,
}

impl fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PooledClient").field(&self.client).finish()
    }
}

impl Deref for PooledClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        self.pool.release(self.client.take());
    }
}
