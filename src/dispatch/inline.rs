//! What the reactor may run itself.
//!
//! A hand-off to a worker costs two thread wake-ups, tens of microseconds each on a small machine, while a
//! one-key JSON op costs well under one. So the server runs a connection's few JSON requests on the reactor
//! thread, within a per-turn budget. Which ops qualify is decided from the op's kind (its
//! [`bankcache_proto::Scope`]), never from the request's bytes: at the first op that walks a bank or the
//! server, the rest of the job goes to a worker. HTTP and pipelined batches (a worker runs them while the
//! reactor serves everyone else) always go to the workers.
//!
//! The reactor never does disk I/O: with a disk store it runs under [`crate::store::Access::Try`], which
//! refuses ([`crate::store::StoreError::Busy`]) every op that would append a record (put, delete, touch,
//! getouch, incr) and every get whose value is not in RAM, before the op does anything. Such a request,
//! and the rest of its job, go to a worker, which runs it from the start as if the reactor had not
//! tried: nothing was answered, counted or changed. So under a disk store the reactor serves the reads
//! of values in RAM, which the JSON port's puts keep there ([`crate::store::Keep::Memory`]).

use std::sync::Arc;

use super::job::{Ending, Front, Job};
use super::pool::{self, Services};
use crate::access_log;
use crate::json::Gate;

/// Most requests of one connection's job the reactor runs itself.
const MAX_JOB: usize = 4;

/// The reactor's means to run requests: the services, and a block of counters of its own.
pub struct Inline {
    services: Arc<Services>,
    /// The counter block the reactor writes (one past the workers').
    counters: usize,
    /// Requests per turn run inline at most.
    max_per_turn: usize,
}

impl Inline {
    /// Runs up to `max_per_turn` requests per turn, counting in block `counters`.
    pub fn new(services: Arc<Services>, counters: usize, max_per_turn: usize) -> Inline {
        Inline { services, counters, max_per_turn }
    }

    /// The per-turn budget.
    pub fn max_per_turn(&self) -> usize {
        self.max_per_turn
    }

    /// Runs as much of `job` as may run here, spending `budget`; returns how many requests ran. The job
    /// is finished when [`Job::finished`] says so; otherwise a worker must run the rest.
    pub fn run(&self, job: &mut Job, budget: &mut usize) -> usize {
        let waiting = job.spans.len() - job.next;
        if job.front != Front::Json || waiting > MAX_JOB || waiting > *budget {
            return 0;
        }
        let before = job.next;
        let counters = self.services.cmd.stats.worker(self.counters);
        // Only JSON requests run here, and the access log shows HTTP ones: no line comes of them.
        let mut lines = access_log::Batch::default();
        pool::run_guarded(&self.services, counters, job, Gate::BoundedNoWait, &mut lines);
        debug_assert!(lines.is_empty());
        // A late line end is owed bytes, not a request: it is neither counted nor charged.
        let ran = job.spans[before..job.next].iter().filter(|span| span.ending != Ending::LateLine).count();
        *budget = budget.saturating_sub(ran);
        ran
    }
}
