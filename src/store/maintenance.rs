//! The background thread: the expiry sweep every interval; with a disk store, once a second, a check that
//! the volume files are still there and, with `fsync: every_sec`, an fsync.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{now_ms, Fsync, Store, Volumes};

/// Share of expired entries among those a pass visits above which the next pass works longer, as Redis's
/// active expiry does: expired entries that linger hold memory for nothing.
const BUSY_SHARE: f64 = 0.10;

/// The sweep's work, bounded per pass: at least a tenth of its interval, at most a quarter (Redis's
/// `ACTIVE_EXPIRE_CYCLE_SLOW_TIME_PERC`), growing while passes keep finding many expired entries.
struct Budget {
    least: Duration,
    most: Duration,
    now: Duration,
}

impl Budget {
    fn new(interval: Duration) -> Budget {
        let least = (interval / 10).max(Duration::from_millis(1));
        Budget { least, most: (interval / 4).max(least), now: least }
    }

    /// Adapts to what the last pass found.
    fn after(&mut self, visited: u64, removed: u64) {
        let busy = visited > 0 && removed as f64 > BUSY_SHARE * visited as f64;
        self.now = if busy { (self.now * 2).min(self.most) } else { self.least };
    }
}

/// The background thread. Stops when dropped.
pub struct Maintenance {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Maintenance {
    /// Starts maintaining `store`.
    pub fn start(store: Arc<Store>, sweep_interval: Duration) -> std::io::Result<Maintenance> {
        let (stop, stopped): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        let fsync_every_sec = store.disk().map(Volumes::fsync_policy) == Some(Fsync::EverySec);
        let second = Duration::from_secs(1);
        let tick = if store.disk().is_some() { second.min(sweep_interval) } else { sweep_interval };
        let thread = thread::Builder::new().name("maintenance".into()).spawn(move || {
            let (mut last_sweep, mut last_sync) = (Instant::now(), Instant::now());
            let mut budget = Budget::new(sweep_interval);
            // Ends when the `Maintenance` is dropped (the channel disconnects).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                if last_sweep.elapsed() >= sweep_interval {
                    last_sweep = Instant::now();
                    let pass = store.sweep(now_ms(), budget.now);
                    budget.after(pass.visited, pass.removed);
                    if pass.removed > 0 {
                        log::debug!("sweep removed {} of {} entries visited", pass.removed, pass.visited);
                    }
                }
                if let (Some(disk), true) = (store.disk(), last_sync.elapsed() >= second) {
                    last_sync = Instant::now();
                    disk.check_files();
                    if fsync_every_sec {
                        if let Err(e) = store.sync() {
                            log::error!("periodic fsync failed: {e}");
                        }
                    }
                }
            }
        })?;
        Ok(Maintenance { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_grows_while_passes_find_many_expired_and_falls_back() {
        let mut budget = Budget::new(Duration::from_millis(100));
        assert_eq!(budget.now, Duration::from_millis(10));
        budget.after(1000, 500);
        assert_eq!(budget.now, Duration::from_millis(20));
        budget.after(1000, 500);
        budget.after(1000, 500);
        assert_eq!(budget.now, Duration::from_millis(25), "at most a quarter of the interval");
        budget.after(1000, 10);
        assert_eq!(budget.now, Duration::from_millis(10));
    }
}
