//! The hand-off between the reactor and the workers: what a job is, the worker pool that runs jobs, and
//! what the reactor may run itself.
//!
//! A job is the requests one connection sent in one reactor turn. Jobs travel in batches (one channel send
//! and at most one wake-up per batch, never one per request) and come back the same way with their replies.
//! A worker runs a job's requests in order through their front (JSON or HTTP), so a connection's ops run and
//! are answered in the order sent.

pub mod inline;
pub mod job;
pub mod pool;

pub use inline::Inline;
pub use job::{Ending, Front, Job, Span};
pub use pool::{Notify, Queue, Services};
