//! Jobs: what travels between the reactor and the workers.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::auth::Auth;
use crate::http::routes::Segment;

/// The protocol a connection speaks, which decides how its requests are run and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// JSON ops, one reply line each.
    Json,
    /// HTTP/1.1: the file API and the REST API.
    Http,
}

/// How a JSON reply ends: as its request did (see [`bankcache_proto::Ending`]). HTTP replies are framed by
/// their heads; their spans say `Line`, which nothing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The reply is a line.
    Line,
    /// The reply has no `\n`: its request had no line end after it (the original's raw clients).
    Bare,
    /// No request: the line end of an earlier request answered bare arrived, and the reply is the `\n`
    /// alone, so the reply stream is the same whatever the segments.
    LateLine,
}

impl From<bankcache_proto::Ending> for Ending {
    fn from(ending: bankcache_proto::Ending) -> Ending {
        match ending {
            bankcache_proto::Ending::Line => Ending::Line,
            bankcache_proto::Ending::Bare => Ending::Bare,
        }
    }
}

/// Where one request lies in a job's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte of the request.
    pub start: usize,
    /// An HTTP request's body (its head is `start..body.0`); empty for JSON.
    pub body: (usize, usize),
    /// One past the last byte (a JSON request is `start..end`).
    pub end: usize,
    /// How the reply ends (JSON only).
    pub ending: Ending,
}

impl Span {
    /// A JSON request at `start..end`.
    pub fn json(start: usize, end: usize, ending: Ending) -> Span {
        Span { start, body: (end, end), end, ending }
    }

    /// An HTTP request at `start..end` with its body at `body`.
    pub fn http(start: usize, body: (usize, usize), end: usize) -> Span {
        Span { start, body, end, ending: Ending::Line }
    }
}

/// The requests one connection sent in one reactor turn, and the replies to them.
pub struct Job {
    /// The connection's slab slot.
    pub slot: usize,
    /// The connection's generation, so a reply never reaches a later connection that reused the slot.
    pub generation: u64,
    /// How to read the requests and write the replies.
    pub front: Front,
    /// The bytes the requests were read into.
    pub input: Vec<u8>,
    /// Where each request lies in `input`.
    pub spans: Vec<Span>,
    /// The first request not yet run (the reactor may have run the ones before it).
    pub next: usize,
    /// Replies, in request order.
    pub output: Vec<u8>,
    /// Reply bodies sent from volume files, each after its place in `output`, in order.
    pub segments: Vec<Segment>,
    /// Set when a reply asked to close the connection (HTTP `Connection: close`, or a connection's last
    /// allowed wrong token); requests after it were not run.
    pub close_after: bool,
    /// The connection's standing with access control: the connection's when the job left, the new one
    /// when it comes back (a connection has one job out at a time, so this is never stale).
    pub auth: Auth,
    /// Set by the reactor when the connection is gone: the rest of the job is for no one, so a worker stops
    /// running it rather than spend itself on a client that left.
    pub abandoned: Arc<AtomicBool>,
    /// The client's address, for the access log (`None` when the system did not say).
    pub peer: Option<IpAddr>,
}

impl Job {
    /// True once every request has been run (or skipped after a close).
    pub fn finished(&self) -> bool {
        self.close_after || self.next >= self.spans.len()
    }

    /// Bytes of replies: `output` and the bodies sent from files.
    pub fn output_bytes(&self) -> usize {
        self.output.len() + self.segments.iter().map(|s| s.slice.len()).sum::<usize>()
    }

    /// True when the connection it came from is gone.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }
}
