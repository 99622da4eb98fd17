//! The worker pool: threads that take batches of jobs, run them, and send them back.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bankcache_proto::{reply, Limits};
use crossbeam_channel::{Receiver, Sender};

use super::job::{Ending, Front, Job};
use crate::access_log::{self, AccessLog};
use crate::cmd;
use crate::http::codec::text_error;
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
    /// `metrics_public`: `GET /metrics` needs no token.
    pub metrics_public: bool,
    /// Where HTTP requests are logged (`access_log`), if anywhere.
    pub access_log: Option<AccessLog>,
    /// Set by [`Queue::cancel`] (the queue's [`Queue::cancel_flag`]): a job then stops before its next
    /// request, unrun.
    pub cancelled: Arc<AtomicBool>,
}

/// Called after a worker has queued finished jobs, so the reactor wakes up to write them.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What a worker takes from its queue.
pub enum Work {
    /// Jobs to run, in order.
    Batch(Vec<Job>),
    /// Finish: the server is stopping.
    Stop,
}

/// The workers' queue, with the count of batches given out and not yet back: the reactor sends batches,
/// and a worker hands back the jobs queued behind one that will take long, so that another worker runs
/// them meanwhile (one connection's slow request must not hold up other connections' requests).
///
/// A stop whose grace is ending cancels the queue: jobs then stop before their next request and go back
/// unrun, so that a request is either run and answered, or not run at all, except for the requests
/// running at that moment.
#[derive(Clone)]
pub struct Queue {
    tx: Sender<Work>,
    outstanding: Arc<AtomicUsize>,
    cancelled: Arc<AtomicBool>,
}

impl Queue {
    /// A queue and the receiving end the workers share.
    pub fn new() -> (Queue, Receiver<Work>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let queue = Queue {
            tx,
            outstanding: Arc::new(AtomicUsize::new(0)),
            cancelled: Arc::new(AtomicBool::new(false)),
        };
        (queue, rx)
    }

    /// Queues a batch; false if the workers are gone.
    pub fn send(&self, batch: Vec<Job>) -> bool {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.tx.send(Work::Batch(batch)).is_ok()
    }

    /// Batches given out and not yet back.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// A batch came back.
    pub fn returned(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }

    /// From now on, requests not yet started are left unrun (their connections no longer wait for
    /// replies).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// The flag [`Queue::cancel`] sets, for [`Services::cancelled`].
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    /// Tells `workers` workers to finish once they have run what is queued before.
    pub fn stop(&self, workers: usize) {
        for _ in 0..workers {
            let _ = self.tx.send(Work::Stop);
        }
    }
}

/// Starts `count` worker threads that take job batches from `work` and return them on `done`. Worker `id`
/// writes counter block `id`.
pub fn spawn(
    count: usize,
    services: Arc<Services>,
    queue: Queue,
    work: Receiver<Work>,
    done: Sender<Vec<Job>>,
    notify: Notify,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|id| {
            let (services, queue, work, done, notify) =
                (Arc::clone(&services), queue.clone(), work.clone(), done.clone(), Arc::clone(&notify));
            thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
                let counters = services.cmd.stats.worker(id);
                // The worker's access log lines, handed over once per batch of jobs.
                let mut lines = access_log::Batch::default();
                for message in work.iter() {
                    let Work::Batch(mut batch) = message else { break };
                    run_batch(&services, counters, &queue, &mut batch, &mut lines);
                    if let Some(log) = &services.access_log {
                        log.send(&mut lines, counters);
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

/// Runs a batch's jobs in order. A job with other jobs behind it runs only ops of bounded cost; at the
/// first op that walks a bank or the server, the jobs behind it go back to the queue for another worker,
/// and then it runs on.
pub fn run_batch(
    services: &Services,
    counters: &WorkerCounters,
    queue: &Queue,
    batch: &mut Vec<Job>,
    lines: &mut access_log::Batch,
) {
    let mut i = 0;
    while i < batch.len() {
        if i + 1 < batch.len() {
            let stop = run_guarded(services, counters, &mut batch[i], Gate::Bounded, lines);
            if stop != Stop::Declined {
                i += 1;
                continue;
            }
            let rest = batch.split_off(i + 1);
            if !queue.send(rest) {
                log::error!("cannot hand jobs back to the worker queue");
            }
        }
        run_guarded(services, counters, &mut batch[i], Gate::Any, lines);
        i += 1;
    }
}

/// Runs a job from its next request on, adding the access log's lines of its HTTP requests to `lines`; if a
/// bug makes an op panic, every request of the job is answered with an error instead, so the connection
/// still gets one reply per request and the thread lives on.
pub fn run_guarded(
    services: &Services,
    counters: &WorkerCounters,
    job: &mut Job,
    gate: Gate,
    lines: &mut access_log::Batch,
) -> Stop {
    let ran =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(services, counters, job, gate, lines)));
    let Ok(stop) = ran else {
        log::error!("an op panicked; answering its batch of {} requests with errors", job.spans.len());
        job.output.clear();
        job.segments.clear();
        match job.front {
            Front::Json => {
                for _ in &job.spans {
                    counters.error();
                    reply::error(&mut job.output, "Internal error");
                }
            }
            Front::Http => {
                counters.error();
                let why = "Internal Server Error: the request's handler failed (see the server's log)";
                let body_bytes =
                    text_error(&mut job.output, 500, "Internal Server Error", &[], why, false, true);
                job.close_after = true;
                if let (Some(_), Some(span)) = (&services.access_log, job.spans.get(job.next)) {
                    let sent = routes::Sent { status: 500, body_bytes };
                    let now = crate::store::now_ms();
                    lines.push(&entry(job, &job.input[span.start..span.end], sent, 0, now));
                }
            }
        }
        job.next = job.spans.len();
        return Stop::Finished;
    };
    stop
}

/// Why a run of a job stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every request was run (or the connection is to close).
    Finished,
    /// The gate kept the next request from running here.
    Declined,
    /// The replies reached `max_output` bytes: the rest waits for the client to read them.
    Full,
    /// The queue was cancelled (a stop's grace is ending): the rest is left unrun.
    Cancelled,
    /// A JSON `auth` with a wrong token was answered: the rest waits for the reactor, which holds the
    /// requests of connections that have not authenticated while failures come too fast
    /// ([`crate::auth::Throttle`]).
    AuthFailed,
}

/// Runs a job's requests in order from `job.next`, until one the gate declines (which stays next), one that
/// closes the connection, `max_output` bytes of replies, a cancel, or a wrong token.
fn run(
    services: &Services,
    counters: &WorkerCounters,
    job: &mut Job,
    gate: Gate,
    lines: &mut access_log::Batch,
) -> Stop {
    // One clock read per request: each one's end is the next one's start.
    let mut began = Instant::now();
    loop {
        if job.next >= job.spans.len() || job.close_after {
            return Stop::Finished;
        }
        if job.is_abandoned() {
            job.next = job.spans.len();
            return Stop::Finished;
        }
        if job.output_bytes() >= services.max_output {
            return Stop::Full;
        }
        // One load per request: a cancel leaves at most the request running unanswered.
        if services.cancelled.load(Ordering::Relaxed) {
            return Stop::Cancelled;
        }
        let span = job.spans[job.next];
        if span.ending == Ending::LateLine {
            // Not a request: the `\n` an earlier bare reply is owed now. Neither timed nor counted.
            job.output.push(b'\n');
            job.next += 1;
            continue;
        }
        let frame = &job.input[span.start..span.end];
        let now = crate::store::now_ms();
        // What an HTTP response said, for the access log.
        let mut sent = None;
        let ran = match job.front {
            Front::Json => {
                let (ctx, limits, auth) = (&services.cmd, &services.limits, &mut job.auth);
                let ran = json::run(ctx, limits, counters, frame, now, gate, auth, &mut job.output);
                // The original's replies had no line end; a request without one gets its exact bytes
                // (an `auth`'s reply too: every answered request wrote one line).
                if ran != Ran::Declined && span.ending == Ending::Bare {
                    debug_assert_eq!(job.output.last(), Some(&b'\n'));
                    job.output.pop();
                }
                ran
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
                    gate,
                    metrics_public: services.metrics_public,
                };
                match routes::execute(&env, head, body, &mut job.auth, &mut job.output, &mut job.segments) {
                    routes::Handled::Open(said) => {
                        sent = Some(said);
                        Ran::Answered
                    }
                    routes::Handled::Close(said) => {
                        sent = Some(said);
                        job.close_after = true;
                        Ran::Answered
                    }
                    routes::Handled::Declined => Ran::Declined,
                }
            }
        };
        if ran == Ran::Declined {
            return Stop::Declined;
        }
        job.next += 1;
        let ended = Instant::now();
        let took = ended.saturating_duration_since(began);
        began = ended;
        counters.latency(took.as_micros() as u64);
        if let (Some(_), Some(sent)) = (&services.access_log, sent) {
            lines.push(&entry(job, frame, sent, took.as_micros() as u64, now));
        }
        if let Some(limit) = services.slow_op {
            if took > limit {
                log::warn!(
                    "slow op: {:.1} ms: {}",
                    took.as_secs_f64() * 1000.0,
                    shown(job.front, frame, ran)
                );
            }
        }
        if let Ran::AuthFailed { close } = ran {
            job.close_after = close;
            return Stop::AuthFailed;
        }
    }
}

/// The access log's entry of the HTTP request `frame` of `job`, run at `now_ms` (Unix ms) in `micros`,
/// answered as `sent`.
fn entry<'a>(
    job: &Job,
    frame: &'a [u8],
    sent: routes::Sent,
    micros: u64,
    now_ms: u64,
) -> access_log::Entry<'a> {
    let line = frame.split(|&b| b == b'\n').next().unwrap_or_default();
    access_log::Entry {
        peer: job.peer,
        request_line: line.strip_suffix(b"\r").unwrap_or(line),
        status: sent.status,
        body_bytes: sent.body_bytes,
        micros,
        now_ms,
    }
}

/// A request as the slow log shows it, never with a token: a JSON request unless it is an `auth` (or
/// mentions a token at all: a malformed `auth` is answered as bad JSON), an HTTP request's line only (its
/// headers may hold `Authorization`).
fn shown(front: Front, frame: &[u8], ran: Ran) -> String {
    let text = match (front, ran) {
        (Front::Json, Ran::Authenticated | Ran::AuthFailed { .. }) => return "an auth op".into(),
        (Front::Json, _) if memchr::memmem::find(frame, b"token").is_some() => {
            return "a request that mentions a token".into()
        }
        (Front::Json, _) => frame,
        (Front::Http, _) => frame.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default(),
    };
    String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Span;
    use crate::stats::Stats;
    use crate::store::Store;

    fn services() -> Services {
        Services {
            cmd: cmd::Context {
                store: Arc::new(Store::new()),
                stats: Arc::new(Stats::new(1)),
                max_reply_bytes: 1 << 20,
                auth_token: None,
            },
            limits: Limits { max_key_bytes: 64, max_value_bytes: 1024 },
            http_bank: "files".into(),
            slow_op: None,
            max_output: 1 << 20,
            metrics_public: false,
            access_log: None,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A JSON job of one connection (`slot`) with these requests.
    fn job(slot: usize, requests: &[&str]) -> Job {
        let (mut input, mut spans) = (Vec::new(), Vec::new());
        for r in requests {
            let start = input.len();
            input.extend_from_slice(r.as_bytes());
            spans.push(Span::json(start, input.len(), Ending::Line));
            input.push(b'\n');
        }
        Job {
            slot,
            generation: 1,
            front: Front::Json,
            input,
            spans,
            next: 0,
            output: Vec::new(),
            segments: Vec::new(),
            close_after: false,
            auth: crate::auth::Auth::Open,
            abandoned: Arc::default(),
            peer: None,
        }
    }

    #[test]
    fn a_job_whose_connection_is_gone_stops() {
        let services = services();
        let mut j = job(0, &[r#"{"op":"ping"}"#, r#"{"op":"ping"}"#]);
        j.abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            run_guarded(
                &services,
                services.cmd.stats.worker(0),
                &mut j,
                Gate::Any,
                &mut access_log::Batch::default()
            ),
            Stop::Finished
        );
        assert!(j.output.is_empty(), "nothing run for no one");
    }

    #[test]
    fn jobs_behind_a_walk_over_a_bank_go_to_another_worker_first() {
        let services = services();
        let counters = services.cmd.stats.worker(0);
        let (queue, work) = Queue::new();
        let mut batch = vec![
            job(0, &[r#"{"op":"put","bank":"b","key":"k","value":1}"#]),
            job(1, &[r#"{"op":"ping"}"#, r#"{"op":"bank.keys","bank":"b"}"#, r#"{"op":"ping"}"#]),
            job(2, &[r#"{"op":"get","bank":"b","key":"k"}"#]),
            job(3, &[r#"{"op":"ping"}"#]),
        ];
        run_batch(&services, counters, &queue, &mut batch, &mut access_log::Batch::default());
        // The walk's own connection keeps its order: everything of job 1 ran, in order, here.
        assert_eq!(batch.iter().map(|j| j.slot).collect::<Vec<_>>(), [0, 1]);
        assert!(batch.iter().all(Job::finished));
        let replies = String::from_utf8(batch[1].output.clone()).unwrap();
        assert_eq!(replies.lines().count(), 3, "{replies}");
        // The jobs behind it were handed back before the walk ran, untouched.
        let Ok(Work::Batch(rest)) = work.try_recv() else { panic!("nothing handed back") };
        assert_eq!(
            rest.iter().map(|j| (j.slot, j.next, j.output.len())).collect::<Vec<_>>(),
            [(2, 0, 0), (3, 0, 0)]
        );
        assert_eq!(queue.outstanding(), 1, "the handed-back batch is counted out");
    }

    #[test]
    fn a_cancelled_queue_leaves_the_requests_not_started_unrun() {
        let (queue, _work) = Queue::new();
        let services = Services { cancelled: queue.cancel_flag(), ..services() };
        let counters = services.cmd.stats.worker(0);
        let put = |key: &str| format!(r#"{{"op":"put","bank":"b","key":"{key}","value":1}}"#);
        let mut first = job(0, &[&put("a")]);
        assert_eq!(
            run_guarded(&services, counters, &mut first, Gate::Any, &mut access_log::Batch::default()),
            Stop::Finished
        );
        queue.cancel();
        let mut batch = vec![job(0, &[&put("b"), &put("c")]), job(1, &[&put("d")])];
        run_batch(&services, counters, &queue, &mut batch, &mut access_log::Batch::default());
        for job in &batch {
            assert_eq!((job.next, job.output.len()), (0, 0), "nothing ran, nothing answered");
        }
        assert_eq!(services.cmd.store.totals().keys, 1, "only the put run before the cancel was applied");
    }

    /// A wrong token stops the job right after its reply, so that the reactor decides when the rest runs;
    /// the last allowed failure closes the connection instead. A right token lets the rest run at once.
    #[test]
    fn a_wrong_token_stops_the_job_and_the_last_one_closes() {
        let mut services = services();
        services.cmd.auth_token = Some(crate::auth::AuthToken::new("s3cret".into()));
        let counters = services.cmd.stats.worker(0);
        let wrong = r#"{"op":"auth","token":"guess"}"#;
        let put = r#"{"op":"put","bank":"b","key":"k","value":1}"#;
        let mut j = job(0, &[wrong, wrong, wrong, put]);
        j.auth = crate::auth::Auth::new(true);
        for failures in 1..=2 {
            assert_eq!(
                run_guarded(&services, counters, &mut j, Gate::Any, &mut access_log::Batch::default()),
                Stop::AuthFailed
            );
            assert_eq!((j.next, j.auth.failures(), j.close_after), (failures, failures as u8, false));
        }
        assert_eq!(
            run_guarded(&services, counters, &mut j, Gate::Any, &mut access_log::Batch::default()),
            Stop::AuthFailed
        );
        assert!(j.close_after && j.finished(), "the third wrong token is the last");
        assert_eq!(services.cmd.store.totals().keys, 0, "nothing after it ran");

        let mut j =
            job(1, &[r#"{"op":"auth","token":"s3cret"}"#, put, r#"{"op":"get","bank":"b","key":"k"}"#]);
        j.auth = crate::auth::Auth::new(true);
        assert_eq!(
            run_guarded(&services, counters, &mut j, Gate::Any, &mut access_log::Batch::default()),
            Stop::Finished
        );
        assert_eq!(j.auth, crate::auth::Auth::Open);
        let replies = String::from_utf8(j.output.clone()).unwrap();
        assert!(replies.ends_with("{\"status\": \"ok\", \"data\": 1}\n"), "{replies}");
    }

    #[test]
    fn the_slow_log_never_shows_a_token() {
        let auth = br#"{"op":"auth","token":"s3cret"}"#;
        assert!(!shown(Front::Json, auth, Ran::Authenticated).contains("s3cret"));
        assert!(!shown(Front::Json, auth, Ran::AuthFailed { close: false }).contains("s3cret"));
        let http = b"GET /k HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
        assert_eq!(shown(Front::Http, http, Ran::Answered), "GET /k HTTP/1.1");
        assert_eq!(shown(Front::Json, br#"{"op":"ping"}"#, Ran::Answered), r#"{"op":"ping"}"#);
        let malformed = br#"{"op":"auth","token":"s3cret"#;
        assert!(!shown(Front::Json, malformed, Ran::Answered).contains("s3cret"));
    }

    #[test]
    fn a_batch_of_bounded_ops_stays_whole() {
        let services = services();
        let (queue, work) = Queue::new();
        let mut batch =
            vec![job(0, &[r#"{"op":"ping"}"#]), job(1, &[r#"{"op":"get","bank":"b","key":"k"}"#])];
        run_batch(
            &services,
            services.cmd.stats.worker(0),
            &queue,
            &mut batch,
            &mut access_log::Batch::default(),
        );
        assert_eq!(batch.len(), 2);
        assert!(work.try_recv().is_err());
    }

    #[test]
    fn a_job_stops_at_the_output_cap_and_goes_on_from_there() {
        let mut services = services();
        services.max_output = 100;
        let counters = services.cmd.stats.worker(0);
        let value = format!("\"{}\"", "x".repeat(80));
        let put = format!(r#"{{"op":"put","bank":"b","key":"k","value":{value}}}"#);
        let get = r#"{"op":"get","bank":"b","key":"k"}"#;
        let mut j = job(0, &[&put, get, get, get]);
        // Each get's reply alone crosses the cap: the job goes on one get per run, never stuck.
        for next in [2, 3] {
            assert_eq!(
                run_guarded(&services, counters, &mut j, Gate::Any, &mut access_log::Batch::default()),
                Stop::Full
            );
            assert_eq!(j.next, next);
            j.output.clear();
        }
        assert_eq!(
            run_guarded(&services, counters, &mut j, Gate::Any, &mut access_log::Batch::default()),
            Stop::Finished
        );
        assert_eq!(j.next, 4);
    }
}
