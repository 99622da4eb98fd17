//! The worker pool: threads that take batches of jobs, run them, and send them back.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bankcache_proto::{reply, Limits};
use crossbeam_channel::{Receiver, Sender};

use super::job::{Front, Job};
use crate::cmd;
use crate::http::codec::response;
use crate::http::routes;
use crate::json::{self, Gate, Ran};
use crate::stats::WorkerCounters;

/// What running requests needs: the commands' context and the fronts' settings.
pub struct Services {
    /// The store and the counters.
    pub cmd: cmd::Context,
    /// Size limits for keys and values.
    pub limits: Limits,
    /// The bank the HTTP file API stores into.
    pub http_bank: String,
    /// Requests slower than this are logged at warn; `None` turns the slow log off.
    pub slow_op: Option<Duration>,
    /// Bytes of replies a job may hold: a job stops there and goes back to wait for its client to read
    /// them, so replies are produced as the client takes them, never all at once.
    pub max_output: usize,
}

/// Called after a worker has queued finished jobs, so the reactor wakes up to write them.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Starts `count` worker threads that take job batches from `jobs` and return them on `done`. Worker `id`
/// writes counter block `id`.
pub fn spawn(
    count: usize,
    services: Arc<Services>,
    jobs: Receiver<Vec<Job>>,
    done: Sender<Vec<Job>>,
    notify: Notify,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|id| {
            let (services, jobs, done, notify) =
                (Arc::clone(&services), jobs.clone(), done.clone(), Arc::clone(&notify));
            thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
                let counters = services.cmd.stats.worker(id);
                // Ends when the reactor drops the job sender at shutdown.
                for mut batch in jobs.iter() {
                    for job in &mut batch {
                        run_guarded(&services, counters, job, Gate::Any);
                    }
                    if done.send(batch).is_err() {
                        break;
                    }
                    notify();
                }
            })
        })
        .collect()
}

/// Runs a job from its next request on; if a bug makes an op panic, every request of the job is answered
/// with an error instead, so the connection still gets one reply per request and the thread lives on.
pub fn run_guarded(services: &Services, counters: &WorkerCounters, job: &mut Job, gate: Gate) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(services, counters, job, gate)));
    if ran.is_err() {
        log::error!("an op panicked; answering its batch of {} requests with errors", job.spans.len());
        job.output.clear();
        match job.front {
            Front::Json => {
                for _ in &job.spans {
                    counters.error();
                    reply::error(&mut job.output, "Internal error");
                }
            }
            Front::Http => {
                counters.error();
                let body = b"Internal Server Error";
                response(&mut job.output, 500, "Internal Server Error", &[], body, false, true);
                job.close_after = true;
            }
        }
        job.next = job.spans.len();
    }
}

/// Runs a job's requests in order from `job.next`, until one the gate declines (which stays next), one that
/// closes the connection, or `max_output` bytes of replies.
fn run(services: &Services, counters: &WorkerCounters, job: &mut Job, gate: Gate) {
    // One clock read per request: each one's end is the next one's start.
    let mut began = Instant::now();
    while job.next < job.spans.len() && !job.close_after && job.output.len() < services.max_output {
        let span = job.spans[job.next];
        let frame = &job.input[span.start..span.end];
        let now = crate::store::now_ms();
        match job.front {
            Front::Json => {
                let ran =
                    json::run(&services.cmd, &services.limits, counters, frame, now, gate, &mut job.output);
                if ran == Ran::Declined {
                    return;
                }
            }
            Front::Http => {
                let head = &job.input[span.start..span.body.0];
                let body = &job.input[span.body.0..span.body.1];
                let env = routes::Env {
                    ctx: &services.cmd,
                    limits: &services.limits,
                    bank: &services.http_bank,
                    counters,
                    now,
                };
                if !routes::execute(&env, head, body, &mut job.output) {
                    job.close_after = true;
                }
            }
        }
        job.next += 1;
        let ended = Instant::now();
        let took = ended.saturating_duration_since(began);
        began = ended;
        counters.latency(took.as_micros() as u64);
        if let Some(limit) = services.slow_op {
            if took > limit {
                let shown = String::from_utf8_lossy(&frame[..frame.len().min(200)]);
                log::warn!("slow op: {:.1} ms: {shown}", took.as_secs_f64() * 1000.0);
            }
        }
    }
}
