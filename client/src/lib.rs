//! A blocking client for bankcache's JSON protocol: one connection ([`Client`]), pipelines ([`Pipeline`]), a
//! thread-safe connection pool ([`Pool`]) and a sharded cluster ([`Cluster`]) that routes keys exactly as
//! nginx's `hash $uri consistent` does.
//!
//! The protocol is one JSON request per line and one reply line per request,
//! `{"status": "ok", "data": ...}` or `{"status": "error", "message": "..."}` (see the server's README).
//!
//! # What it is built on
//!
//! This crate is the library only (the command line is `bankcache-cli`, the load driver `bankcache-bench`).
//! It does no protocol work of its own: every request is an [`Op`] written by [`Op::encode`], every reply
//! line is read by [`proto::reply::decode`], and a missing key is recognised only by
//! [`proto::reply::is_missing`], all from `bankcache-proto`, the crate the server parses and answers with;
//! so the wire format is written once and a change to it cannot leave the client behind. Its other
//! dependencies are what a library needs: `serde` and `serde_json` for typed values, `base64` to decode byte
//! values, `crc32fast` for the cluster's ring, and `libc` for the one non-blocking peek that checks an idle
//! connection. The typed calls cover every op; [`Client::send`] and [`Pipeline::push_op`] take an [`Op`]
//! chosen at run time, and [`Client::request`] and [`Pipeline::op`] send any JSON object as it is. A big
//! bank's keys come a page at a time with [`Client::bank_scan`] or the iterator [`Client::scan_keys`]
//! (each server on its own: [`Cluster`] has no scan across servers).
//!
//! # Values
//!
//! Values are any `serde` type ([`Client::put`], [`Client::get`]) or raw bytes ([`Client::put_bytes`],
//! [`Client::get_bytes`], sent base64-encoded with `"encoding": "base64"`). The server keeps one model for
//! both, and so does this client:
//!
//! - [`Client::get_bytes`] of a JSON value returns the value's JSON text, byte for byte as it was stored (as
//!   an HTTP `GET` of it does);
//! - [`Client::get`] of a byte value parses the bytes as JSON; bytes that are not JSON of the requested type
//!   are an [`Error::Protocol`].
//!
//! A missing key is `Ok(None)` (reads) or `Ok(false)` ([`Client::delete`], [`Client::touch`]), never an
//! error.
//!
//! # Access control
//!
//! A server with an `auth_token` runs nothing on a connection before `{"op":"auth","token":"..."}`. Give
//! the token to [`ClientBuilder::auth_token`] (or [`ClusterBuilder::auth_token`]) and every connection the
//! client, its pools and its cluster open sends it first, reconnections included; a token the server
//! refuses is [`Error::Auth`], and so is an op refused because no token was sent. A server without a token
//! answers `auth` with ok, so a client can be given the token before the server is.
//!
//! # Errors and reconnection
//!
//! [`Error`] separates connection failures ([`Error::Connect`], [`Error::Io`]: retryable), replies that do not
//! follow the protocol ([`Error::Protocol`]), refused authentication ([`Error::Auth`]) and the server's own
//! answers ([`Error::Server`]). A connection
//! that failed, or whose reply was only partly read, is dropped, and the next call opens a new one; before
//! each call an idle connection is checked, so a connection the server closed meanwhile (for instance
//! because it restarted) is replaced before the request is sent rather than failing it.
//!
//! # Example
//!
//! ```no_run
//! use bankcache_client::{Client, Pool, Reply};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct User {
//!     name: String,
//!     age: u32,
//! }
//!
//! let mut client = Client::builder()
//!     .connect_timeout(Duration::from_secs(1))
//!     .read_timeout(Duration::from_secs(5))
//!     .connect("127.0.0.1:10001")?;
//! let ann = User { name: "ann".into(), age: 41 };
//! client.put("users", "ann", &ann, Some(60.0))?;
//! assert_eq!(client.get::<User>("users", "ann")?, Some(ann));
//! assert_eq!(client.get::<User>("users", "nobody")?, None);
//!
//! client.put_bytes("files", "logo.png", &[0x89, b'P', b'N', b'G'], None)?;
//! assert_eq!(client.get_bytes("files", "logo.png")?.unwrap(), b"\x89PNG");
//!
//! // Many ops, one write, replies in order.
//! let replies = client.pipeline().put("n", "hits", &1, None).incr("n", "hits", 2.0).get("n", "nope").run()?;
//! assert_eq!(replies[1], Reply::Value(serde_json::json!(3.0)));
//! assert_eq!(replies[2], Reply::Missing);
//!
//! // From many threads: a pool of up to 8 connections.
//! let pool = Pool::new("127.0.0.1:10001", 8)?;
//! let worker = {
//!     let pool = pool.clone();
//!     std::thread::spawn(move || pool.get()?.incr("n", "hits", 1.0))
//! };
//! worker.join().unwrap()?;
//! # Ok::<(), bankcache_client::Error>(())
//! ```

#![deny(missing_docs)]

mod cluster;
#[doc(hidden)]
pub mod fuzzing;
mod pipeline;
mod pool;
mod scan;

pub use cluster::{Cluster, ClusterBuilder, Node};
pub use pipeline::{Pipeline, Reply};
pub use pool::{Pool, PooledClient};
pub use scan::{ScanKeys, SCAN_KEYS_PAGE};

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use bankcache_proto::reply::{self, Decoded};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The wire protocol crate this client speaks through, so that an [`Op`] for [`Client::send`] (and its
/// [`proto::Value`]) can be built without depending on it separately.
pub use bankcache_proto as proto;
/// One op of the protocol, for [`Client::send`] and [`Pipeline::push_op`].
pub use bankcache_proto::Op;

/// What can go wrong talking to a server.
#[derive(Debug)]
pub enum Error {
    /// No connection could be opened (or the address did not resolve): the request was not sent.
    Connect(io::Error),
    /// The connection failed or closed while a request was under way (a timeout is one). The connection was
    /// dropped; the next call opens a new one.
    Io(io::Error),
    /// The server's reply was not a reply, or a value did not have the expected type.
    Protocol(String),
    /// The server answered with an error message (exactly as sent).
    Server(String),
    /// The server refused the token ([`ClientBuilder::auth_token`]), or needs one and none was given; the
    /// server's message, exactly as sent. Trying again with the same token cannot help.
    Auth(String),
}

impl Error {
    /// Whether trying again may succeed: connection failures yes; protocol and server errors no (the same
    /// request would get the same answer).
    ///
    /// A retried [`Error::Io`] may run the op twice (the server may have run it before the connection
    /// failed), which matters for `incr`; [`Error::Connect`] never sent the request.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::Io(_))
    }

    /// The server's message when this is [`Error::Server`].
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Server(message) => Some(message),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
            Error::Server(message) => write!(f, "server error: {message}"),
            Error::Auth(message) => write!(f, "authentication failed: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            Error::Protocol(_) | Error::Server(_) | Error::Auth(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Result of a client call.
pub type Result<T> = std::result::Result<T, Error>;

/// Options for new connections; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    nodelay: bool,
    auth_token: Option<Secret>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            connect_timeout: None,
            read_timeout: None,
            write_timeout: None,
            nodelay: true,
            auth_token: None,
        }
    }
}

/// A token kept so that `Debug` (of a builder, a pool, a cluster) never prints it; cheap to clone for the
/// connections of a pool.
#[derive(Clone)]
struct Secret(std::sync::Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl ClientBuilder {
    /// The longest a connection attempt may take (per resolved address); default: the system's.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// The longest a call may wait for (more of) a reply; default: forever. A call that times out fails
    /// with [`Error::Io`] and its connection is dropped, since the late reply would desynchronise it.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// The longest a write may block; default: forever.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout);
        self
    }

    /// Sets `TCP_NODELAY`; default `true`, since every call is a small write that waits for its reply.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// The server's `auth_token`: every new connection sends `auth` with it before anything else (one
    /// round trip per connection, none per op); default: none.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(Secret(token.into().into()));
        self
    }

    /// Resolves `addr` and connects (and authenticates, with a token).
    pub fn connect(self, addr: impl ToSocketAddrs) -> Result<Client> {
        let addrs = resolve(addr)?;
        let conn = Conn::open(&addrs, &self)?;
        Ok(Client { addrs, options: self, conn: Some(conn), line: Vec::new(), request: Vec::new() })
    }
}

pub(crate) fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(Error::Connect)?.collect();
    if addrs.is_empty() {
        return Err(Error::Connect(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )));
    }
    Ok(addrs)
}

/// Request bytes above which a call writes from a second thread while reading replies, so that a big
/// pipeline cannot deadlock with both directions' socket buffers full.
const CONCURRENT_WRITE_BYTES: usize = 64 * 1024;

/// One open connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects, and with a token authenticates: a connection is handed out only once it may run ops.
    fn open(addrs: &[SocketAddr], options: &ClientBuilder) -> Result<Conn> {
        let mut conn = Conn::connect(addrs, options).map_err(Error::Connect)?;
        if let Some(Secret(token)) = &options.auth_token {
            conn.authenticate(token)?;
        }
        Ok(conn)
    }

    /// Sends `auth` with `token` and reads its reply. A failed exchange is [`Error::Connect`]: no request
    /// of the caller's was sent yet, so it is safe to retry.
    fn authenticate(&mut self, token: &str) -> Result<()> {
        let mut request = Vec::new();
        Op::Auth { token: proto::Token(token.into()) }.encode(&mut request);
        let mut line = Vec::new();
        let replies = self.exchange(&request, 1, &mut line).map_err(|e| match e {
            Error::Io(e) => Error::Connect(e),
            other => other,
        })?;
        match replies.into_iter().next() {
            Some(RawReply::Ok { .. }) => Ok(()),
            Some(RawReply::Err(message)) => Err(Error::Auth(message)),
            None => Err(Error::Protocol("auth got no reply".into())),
        }
    }

    fn connect(addrs: &[SocketAddr], options: &ClientBuilder) -> io::Result<Conn> {
        let mut last = None;
        for addr in addrs {
            let stream = match options.connect_timeout {
                Some(timeout) => TcpStream::connect_timeout(addr, timeout),
                None => TcpStream::connect(addr),
            };
            match stream {
                Ok(stream) => {
                    stream.set_nodelay(options.nodelay)?;
                    stream.set_read_timeout(options.read_timeout)?;
                    stream.set_write_timeout(options.write_timeout)?;
                    let writer = stream.try_clone()?;
                    return Ok(Conn { reader: BufReader::with_capacity(64 * 1024, stream), writer });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to")))
    }

    /// Whether an idle connection can take a request: nothing unasked-for is waiting in it, and the server
    /// has not closed it. One system call: a peek that does not block.
    fn is_usable(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let fd = self.reader.get_ref().as_raw_fd();
        let mut byte = 0u8;
        // SAFETY: `fd` is this connection's open socket, and the buffer is one writable byte.
        let n =
            unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    /// Writes `payload` (`count` requests) and reads `count` replies.
    fn exchange(&mut self, payload: &[u8], count: usize, line: &mut Vec<u8>) -> Result<Vec<RawReply>> {
        if payload.len() <= CONCURRENT_WRITE_BYTES {
            (&self.writer).write_all(payload)?;
            return read_replies(&mut self.reader, count, line);
        }
        let writer = &self.writer;
        let reader = &mut self.reader;
        std::thread::scope(|scope| {
            let write = scope.spawn(move || {
                let written = (&*writer).write_all(payload);
                if written.is_err() {
                    // Unblock the reader: no more replies are coming.
                    let _ = writer.shutdown(Shutdown::Both);
                }
                written
            });
            let replies = read_replies(reader, count, line);
            if replies.is_err() {
                let _ = writer.shutdown(Shutdown::Both);
            }
            let written =
                write.join().unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
            match (written, replies) {
                (Ok(()), replies) => replies,
                (Err(e), _) => Err(Error::Io(e)),
            }
        })
    }
}

/// Reads `count` reply lines from `reader` (a connection's, or a fuzz input's).
fn read_replies(reader: &mut impl BufRead, count: usize, line: &mut Vec<u8>) -> Result<Vec<RawReply>> {
    let mut replies = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_until(b'\n', line)?;
        if line.last() != Some(&b'\n') {
            let why =
                if line.is_empty() { "the server closed the connection" } else { "a reply was cut short" };
            return Err(Error::Io(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
        }
        replies.push(RawReply::parse(line)?);
    }
    Ok(replies)
}

/// A reply line, decoded by [`reply::decode`] and kept past the buffer it was read into.
pub(crate) enum RawReply {
    /// `data` as sent by the server (JSON text), base64 of bytes when `base64`.
    Ok { data: Box<RawValue>, base64: bool },
    /// The server's error message.
    Err(String),
}

impl RawReply {
    fn parse(line: &[u8]) -> Result<RawReply> {
        if line.starts_with(b"HTTP/") {
            // The commonest mistake: the address of bankcache's HTTP port, which answers a JSON op with 400.
            return Err(Error::Protocol(format!(
                "the server answered in HTTP ({:?}): this client speaks to bankcache's JSON port (10001 by \
                 default), not its HTTP port",
                String::from_utf8_lossy(line).trim_end()
            )));
        }
        match reply::decode(line) {
            Ok(Decoded::Ok { data, base64 }) => Ok(RawReply::Ok { data: data.into_owned(), base64 }),
            Ok(Decoded::Error(message)) => Ok(RawReply::Err(message)),
            Err(why) => Err(Error::Protocol(format!(
                "bad reply {:?}: {why}",
                String::from_utf8_lossy(line).trim_end()
            ))),
        }
    }

    /// `data` as a value, or the server's error ([`Error::Auth`] when the op was refused for want of a
    /// token).
    fn into_data(self) -> Result<(Box<RawValue>, bool)> {
        match self {
            RawReply::Ok { data, base64 } => Ok((data, base64)),
            RawReply::Err(message) if message == proto::op::AUTH_REQUIRED => Err(Error::Auth(message)),
            RawReply::Err(message) => Err(Error::Server(message)),
        }
    }
}

/// Decodes a base64 `data` (a JSON string).
pub(crate) fn decode_base64(data: &RawValue) -> Result<Vec<u8>> {
    let text: String = serde_json::from_str(data.get())
        .map_err(|e| Error::Protocol(format!("a base64 value that is not a string: {e}")))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Protocol(format!("a value marked base64 that is not base64: {e}")))
}

/// A JSON `data` (or the bytes of a byte value, parsed as JSON) as a `T`.
pub(crate) fn decode_typed<T: DeserializeOwned>(data: &RawValue, base64: bool) -> Result<T> {
    if base64 {
        let bytes = decode_base64(data)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "the value is bytes that are not JSON of the expected type ({e}); use get_bytes"
            ))
        })
    } else {
        serde_json::from_str(data.get()).map_err(|e| Error::Protocol(format!("unexpected value: {e}")))
    }
}

/// The `data` of an `incr` reply: the new value.
pub(crate) fn incr_result(data: &RawValue) -> Result<f64> {
    serde_json::from_str(data.get()).map_err(|_| Error::Protocol(format!("incr answered {}", data.get())))
}

/// The bytes of a `data`: decoded base64, or the JSON text itself.
pub(crate) fn decode_bytes(data: &RawValue, base64: bool) -> Result<Vec<u8>> {
    if base64 {
        decode_base64(data)
    } else {
        Ok(data.get().as_bytes().to_vec())
    }
}

/// A serializable value as the JSON text a `put` stores.
///
/// The value goes through [`serde_json::to_value`] and then [`serde_json::to_vec`], as it always has: a
/// struct's fields and a map's keys come out sorted (serde_json's `Value` keeps its objects sorted while its
/// `preserve_order` feature is off, as it is in this workspace), so the same value is stored as the same
/// bytes whatever the field order of its Rust type, and values stored by earlier versions of this client
/// compare equal to new ones.
pub(crate) fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let cannot = |e: serde_json::Error| Error::Protocol(format!("cannot serialize the value: {e}"));
    serde_json::to_vec(&serde_json::to_value(value).map_err(cannot)?).map_err(cannot)
}

/// A `put` of JSON text made by [`json_text`].
pub(crate) fn put_op<'a>(bank: &'a str, key: &'a str, text: Vec<u8>, lifetime: Option<f64>) -> Op<'a> {
    Op::Put { bank: bank.into(), key: key.into(), value: proto::Value::Json(Cow::Owned(text)), lifetime }
}

/// A `put` of raw bytes (sent base64-encoded with `"encoding": "base64"`).
pub(crate) fn put_bytes_op<'a>(
    bank: &'a str,
    key: &'a str,
    bytes: &'a [u8],
    lifetime: Option<f64>,
) -> Op<'a> {
    Op::Put { bank: bank.into(), key: key.into(), value: proto::Value::Bytes(Cow::Borrowed(bytes)), lifetime }
}

/// Whether the server's error `message` says that the key of `op` is missing (see [`missing_key`]).
pub(crate) fn is_missing(message: &str, op: &Op<'_>) -> bool {
    missing_key(op).is_some_and(|key| reply::is_missing(message, key))
}

/// The key whose missing-key error answers `op` with "missing" ([`Reply::Missing`], `Ok(None)`,
/// `Ok(false)`) rather than with an error: the key of an op that reads or changes an existing entry. Every
/// op is listed, so a new one must say.
pub(crate) fn missing_key<'o>(op: &'o Op<'_>) -> Option<&'o str> {
    match op {
        Op::Get { key, .. }
        | Op::GetTouch { key, .. }
        | Op::Delete { key, .. }
        | Op::Touch { key, .. }
        | Op::Incr { key, .. } => Some(key),
        Op::Put { .. }
        | Op::BankKeys { .. }
        | Op::BankScan { .. }
        | Op::BankList
        | Op::BankReset { .. }
        | Op::Ping
        | Op::Stats
        | Op::Auth { .. } => None,
    }
}

/// A connection to one bankcache server. Not thread-safe by itself (calls take `&mut self`); share a
/// [`Pool`] between threads instead.
pub struct Client {
    addrs: Vec<SocketAddr>,
    options: ClientBuilder,
    conn: Option<Conn>,
    /// The reply line being read, kept for its capacity.
    line: Vec<u8>,
    /// The request being written by a typed call, kept for its capacity.
    request: Vec<u8>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("addrs", &self.addrs).field("connected", &self.conn.is_some()).finish()
    }
}

impl Client {
    /// Connects to a server with the default options (see [`ClientBuilder`]).
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        ClientBuilder::default().connect(addr)
    }

    /// Options for a connection: timeouts and `TCP_NODELAY`.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Whether the client holds an open connection (it reconnects on its next call when not).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The server's address (the first one it resolved to).
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The open connection, after replacing one that the server closed or that cannot be used.
    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.as_ref().is_some_and(|conn| !conn.is_usable()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.addrs, &self.options)?);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Sends `count` requests (each a line of `payload`) and reads their replies. Any failure drops the
    /// connection, so it is never left with a reply half-read.
    pub(crate) fn exchange(&mut self, payload: &[u8], count: usize) -> Result<Vec<RawReply>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut line = std::mem::take(&mut self.line);
        let result = self.conn().and_then(|conn| conn.exchange(payload, count, &mut line));
        self.line = line;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Sends one request line and reads its reply.
    fn call_line(&mut self, payload: &[u8]) -> Result<RawReply> {
        self.exchange(payload, 1)?
            .pop()
            .ok_or_else(|| Error::Protocol("the exchange of one request returned no reply".into()))
    }

    /// Sends one op, encoded by [`Op::encode`], and reads its reply.
    fn call(&mut self, op: &Op<'_>) -> Result<RawReply> {
        let mut request = std::mem::take(&mut self.request);
        request.clear();
        op.encode(&mut request);
        let result = self.call_line(&request);
        self.request = request;
        result
    }

    /// Sends one op (a JSON object with an `op` field) and returns the reply's `data` (for a byte value, its
    /// base64 text), or the server's error message as [`Error::Server`]. For requests the typed calls and
    /// [`Client::send`] cannot make (the object is sent as it is).
    pub fn request(&mut self, op: &Value) -> Result<Value> {
        let mut payload = serde_json::to_vec(op).map_err(|e| Error::Protocol(e.to_string()))?;
        payload.push(b'\n');
        let (data, _) = self.call_line(&payload)?.into_data()?;
        serde_json::from_str(data.get()).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Sends one op, built as [`Op`], and returns its reply as one op of a [`Pipeline`] would get it: a
    /// server error is [`Reply::Error`] (and a missing key [`Reply::Missing`] for the ops that name one),
    /// so only a failed connection or a reply that is not the protocol is an `Err`. For callers that pick
    /// the op at run time, such as a command line, and still want typed answers.
    pub fn send(&mut self, op: &Op<'_>) -> Result<Reply> {
        let raw = self.call(op)?;
        Reply::from_raw(raw, missing_key(op))
    }

    /// Stores `value` (serialized as JSON) under `key`; `lifetime` in seconds, `None` for no expiry.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        bank: &str,
        key: &str,
        value: &T,
        lifetime: Option<f64>,
    ) -> Result<()> {
        let text = json_text(value)?;
        self.call(&put_op(bank, key, text, lifetime))?.into_data().map(drop)
    }

    /// Stores raw bytes under `key` (sent base64-encoded); `lifetime` in seconds, `None` for no expiry.
    pub fn put_bytes(&mut self, bank: &str, key: &str, bytes: &[u8], lifetime: Option<f64>) -> Result<()> {
        self.call(&put_bytes_op(bank, key, bytes, lifetime))?.into_data().map(drop)
    }

    /// Reads a key as a `T`; `Ok(None)` when it does not exist. A byte value is parsed as JSON.
    pub fn get<T: DeserializeOwned>(&mut self, bank: &str, key: &str) -> Result<Option<T>> {
        self.read(&Op::Get { bank: bank.into(), key: key.into() })?
            .map(|(data, base64)| decode_typed(&data, base64))
            .transpose()
    }

    /// Reads a key as bytes; `Ok(None)` when it does not exist. A JSON value gives its JSON text.
    pub fn get_bytes(&mut self, bank: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(&Op::Get { bank: bank.into(), key: key.into() })?
            .map(|(data, base64)| decode_bytes(&data, base64))
            .transpose()
    }

    /// Reads a key and restarts its lifetime; `Ok(None)` when it does not exist.
    pub fn getouch<T: DeserializeOwned>(&mut self, bank: &str, key: &str) -> Result<Option<T>> {
        self.read(&Op::GetTouch { bank: bank.into(), key: key.into() })?
            .map(|(data, base64)| decode_typed(&data, base64))
            .transpose()
    }

    /// The `data` of a reading op, `None` when its key is missing.
    fn read(&mut self, op: &Op<'_>) -> Result<Option<(Box<RawValue>, bool)>> {
        match self.call(op)?.into_data() {
            Ok(data) => Ok(Some(data)),
            Err(Error::Server(message)) if is_missing(&message, op) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.existed(&Op::Delete { bank: bank.into(), key: key.into() })
    }

    /// Restarts a key's lifetime; returns whether it existed.
    pub fn touch(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.existed(&Op::Touch { bank: bank.into(), key: key.into() })
    }

    /// Whether the key of a changing op existed: `false` when it answered the missing-key error.
    fn existed(&mut self, op: &Op<'_>) -> Result<bool> {
        match self.call(op)?.into_data() {
            Ok(_) => Ok(true),
            Err(Error::Server(message)) if is_missing(&message, op) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta` to a numeric value and returns the new value. A missing key is an [`Error::Server`]
    /// with the missing-key message ([`proto::reply::missing_message`]): `incr` creates nothing.
    pub fn incr(&mut self, bank: &str, key: &str, delta: f64) -> Result<f64> {
        let (data, _) = self.call(&Op::Incr { bank: bank.into(), key: key.into(), delta })?.into_data()?;
        incr_result(&data)
    }

    /// Lists a bank's live keys in insertion order (empty for a bank that does not exist).
    pub fn bank_keys(&mut self, bank: &str) -> Result<Vec<String>> {
        self.typed(&Op::BankKeys { bank: bank.into() })
    }

    /// One page of a bank's keys that start with `prefix`, from `cursor` (0 starts a scan): at most
    /// `count` keys (positive; the server caps it at [`proto::op::SCAN_COUNT_MAX`]) and the cursor to pass
    /// next, 0 when the scan is done. A page may hold fewer keys than asked, even none, before the end;
    /// a bank that does not exist scans as empty. For big banks, where `bank_keys` would be one huge reply
    /// (or refused); [`Client::scan_keys`] does the paging. See the README for the cursor's guarantee.
    pub fn bank_scan(
        &mut self,
        bank: &str,
        cursor: u64,
        prefix: &str,
        count: u64,
    ) -> Result<(u64, Vec<String>)> {
        scan::scan_page(self.call(&Op::BankScan {
            bank: bank.into(),
            cursor,
            prefix: prefix.into(),
            count,
        })?)
    }

    /// Every key of a bank that starts with `prefix`, fetched with [`Client::bank_scan`] a page at a time
    /// as the iterator is consumed, so no reply holds the whole list.
    pub fn scan_keys(&mut self, bank: &str, prefix: &str) -> ScanKeys<'_> {
        ScanKeys::new(self, bank, prefix)
    }

    /// Lists the banks in creation order.
    pub fn bank_list(&mut self) -> Result<Vec<String>> {
        self.typed(&Op::BankList)
    }

    /// Removes every entry of a bank (the bank stays, empty).
    pub fn bank_reset(&mut self, bank: &str) -> Result<()> {
        self.call(&Op::BankReset { bank: bank.into() })?.into_data().map(drop)
    }

    /// Authenticates the connection with `token`, and keeps the token for the connections opened after
    /// this one (as [`ClientBuilder::auth_token`] does). A wrong token is [`Error::Auth`], and the server
    /// then runs nothing more on this connection until a right one.
    pub fn auth(&mut self, token: &str) -> Result<()> {
        self.options.auth_token = Some(Secret(token.into()));
        match self.call(&Op::Auth { token: proto::Token(token.into()) })? {
            RawReply::Ok { .. } => Ok(()),
            RawReply::Err(message) => Err(Error::Auth(message)),
        }
    }

    /// Checks the server is alive (it answers `"pong"`).
    pub fn ping(&mut self) -> Result<()> {
        let pong: String = self.typed(&Op::Ping)?;
        if pong == "pong" {
            Ok(())
        } else {
            Err(Error::Protocol(format!("ping answered {pong:?}")))
        }
    }

    /// The server's counters (see the README's `stats`).
    pub fn stats(&mut self) -> Result<serde_json::Map<String, Value>> {
        self.typed(&Op::Stats)
    }

    /// The `data` of an op that always has one, as a `T`.
    fn typed<T: DeserializeOwned>(&mut self, op: &Op<'_>) -> Result<T> {
        let (data, base64) = self.call(op)?.into_data()?;
        decode_typed(&data, base64)
    }

    /// Starts a pipeline: ops queued on it are sent in one write by [`Pipeline::run`], which returns their
    /// replies in order.
    pub fn pipeline(&mut self) -> Pipeline<'_> {
        Pipeline::new(self)
    }

    /// The original Python client's `entry_set`: [`Client::put`].
    pub fn entry_set<T: Serialize + ?Sized>(
        &mut self,
        bank: &str,
        key: &str,
        value: &T,
        lifetime: Option<f64>,
    ) -> Result<()> {
        self.put(bank, key, value, lifetime)
    }

    /// The original Python client's `entry_get`: [`Client::get`].
    pub fn entry_get<T: DeserializeOwned>(&mut self, bank: &str, key: &str) -> Result<Option<T>> {
        self.get(bank, key)
    }

    /// The original Python client's `entry_delete`: [`Client::delete`].
    pub fn entry_delete(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.delete(bank, key)
    }

    /// The original Python client's `entry_touch`: [`Client::touch`].
    pub fn entry_touch(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.touch(bank, key)
    }

    /// The original Python client's `entry_incr`: [`Client::incr`].
    pub fn entry_incr(&mut self, bank: &str, key: &str, delta: f64) -> Result<f64> {
        self.incr(bank, key, delta)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bankcache_proto::{parse, Limits};
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits { max_key_bytes: 1 << 16, max_value_bytes: 1 << 20 };

    /// The float an `incr` answers (Python's repr of it) reads back as exactly that float, and so does a
    /// number in a pipeline's reply or a typed `get`: serde_json's default float parsing is off by one
    /// in the last place for many of them. Found by the `client_reply` fuzz target.
    #[test]
    fn floats_read_back_exactly() {
        for value in [1.3940905008371511e-142, -1.81996730402717e-179, 1.0715660391465826e-75, 0.1 + 0.2, 6.0]
        {
            let mut line = Vec::new();
            reply::Reply::Float(value).encode(&mut line);
            let Ok(RawReply::Ok { data, base64 }) = RawReply::parse(&line) else { panic!("{line:?}") };
            assert_eq!(incr_result(&data).unwrap().to_bits(), value.to_bits(), "incr of {value:e}");
            assert_eq!(
                decode_typed::<f64>(&data, base64).unwrap().to_bits(),
                value.to_bits(),
                "get of {value:e}"
            );
            let Ok(Reply::Value(read)) = RawReply::parse(&line).and_then(|raw| Reply::from_raw(raw, None))
            else {
                panic!("{line:?}")
            };
            assert_eq!(read.as_f64().map(f64::to_bits), Some(value.to_bits()), "pipeline of {value:e}");
        }
    }

    /// A `put` stores the value's text as `to_value` then `to_vec` gives it: fields and keys sorted,
    /// compact, non-ASCII as is. Serializing the value straight to bytes would keep the struct's field
    /// order and silently store other bytes for the same value.
    #[test]
    fn put_text_is_the_sorted_json_of_the_value() {
        #[derive(Serialize)]
        struct Unsorted {
            zeta: u32,
            alpha: &'static str,
            middle: HashMap<&'static str, f64>,
        }
        let value = Unsorted { zeta: 1, alpha: "Zoë \"q\"", middle: [("b", 2.5), ("a", -0.0)].into() };
        let text = json_text(&value).unwrap();
        assert_eq!(
            String::from_utf8(text.clone()).unwrap(),
            r#"{"alpha":"Zoë \"q\"","middle":{"a":-0.0,"b":2.5},"zeta":1}"#
        );
        let mut line = Vec::new();
        put_op("b", "k", text, None).encode(&mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"op\":\"put\",\"bank\":\"b\",\"key\":\"k\",\
             \"value\":{\"alpha\":\"Zoë \\\"q\\\"\",\"middle\":{\"a\":-0.0,\"b\":2.5},\"zeta\":1}}\n"
        );
        assert!(matches!(json_text(&HashMap::from([((1, 2), 3)])), Err(Error::Protocol(_))));
    }

    /// What this client sent before it used [`Op::encode`]: `serde_json::json!` objects.
    fn old_request(
        op: &str,
        bank: Option<&str>,
        key: Option<&str>,
        value: Option<Value>,
        lifetime: Option<f64>,
    ) -> Value {
        let mut request = json!({"op": op});
        if let Some(bank) = bank {
            request["bank"] = json!(bank);
        }
        if let Some(key) = key {
            request["key"] = json!(key);
        }
        if let Some(value) = value {
            request["value"] = value;
        }
        if let Some(lifetime) = lifetime {
            request["lifetime"] = json!(lifetime);
        }
        request
    }

    /// Every request the typed calls make parses, on the server, to exactly what the old JSON objects
    /// parsed to: the same op, names, value text, lifetime and delta, and the same refusal for a
    /// non-finite lifetime or delta.
    #[test]
    fn typed_requests_parse_as_the_old_ones_did() {
        let names = [("b", "k"), ("b\"q", "k\"ey\\"), ("ключ", "😀 k"), ("1", "2"), ("", "")];
        let numbers = [None, Some(0.0), Some(60.0), Some(1.5), Some(-1.0), Some(1e300), Some(f64::NAN)];
        let values = [json!(null), json!("v"), json!({"z": [1, {"y": null}], "a": 2.5}), json!(u64::MAX)];
        let same = |old: Value, op: Op<'_>| {
            let old = serde_json::to_vec(&old).unwrap();
            let mut new = Vec::new();
            op.encode(&mut new);
            assert_eq!(new.pop(), Some(b'\n'));
            assert_eq!(
                parse(&old, &LIMITS).map(Op::into_owned),
                parse(&new, &LIMITS).map(Op::into_owned),
                "{} vs {}",
                String::from_utf8_lossy(&old),
                String::from_utf8_lossy(&new)
            );
        };
        for (bank, key) in names {
            for lifetime in numbers {
                for value in &values {
                    let text = json_text(value).unwrap();
                    same(
                        old_request("put", Some(bank), Some(key), Some(value.clone()), lifetime),
                        put_op(bank, key, text, lifetime),
                    );
                }
                let bytes = [0u8, 1, 2, 255, b'"'];
                let mut old = old_request("put", Some(bank), Some(key), Some(json!("AAEC/yI=")), lifetime);
                old["encoding"] = json!("base64");
                same(old, put_bytes_op(bank, key, &bytes, lifetime));
                let delta = lifetime.unwrap_or(-2.5);
                same(
                    old_request("incr", Some(bank), Some(key), Some(json!(delta)), None),
                    Op::Incr { bank: bank.into(), key: key.into(), delta },
                );
            }
            let (b, k) = (bank.into(), key.into());
            same(old_request("get", Some(bank), Some(key), None, None), Op::Get { bank: b, key: k });
            let (b, k) = (bank.into(), key.into());
            same(old_request("getouch", Some(bank), Some(key), None, None), Op::GetTouch { bank: b, key: k });
            let (b, k) = (bank.into(), key.into());
            same(old_request("delete", Some(bank), Some(key), None, None), Op::Delete { bank: b, key: k });
            let (b, k) = (bank.into(), key.into());
            same(old_request("touch", Some(bank), Some(key), None, None), Op::Touch { bank: b, key: k });
            same(old_request("bank.keys", Some(bank), None, None, None), Op::BankKeys { bank: bank.into() });
            same(
                old_request("bank.reset", Some(bank), None, None, None),
                Op::BankReset { bank: bank.into() },
            );
        }
        same(old_request("bank.list", None, None, None, None), Op::BankList);
        same(old_request("ping", None, None, None, None), Op::Ping);
        same(old_request("stats", None, None, None, None), Op::Stats);
    }

    /// Only ops that read or change an existing key answer "missing", and only for their own key.
    #[test]
    fn missing_is_the_ops_own_key() {
        let message = reply::missing_message("k");
        for op in [
            Op::Get { bank: "b".into(), key: "k".into() },
            Op::GetTouch { bank: "b".into(), key: "k".into() },
            Op::Delete { bank: "b".into(), key: "k".into() },
            Op::Touch { bank: "b".into(), key: "k".into() },
            Op::Incr { bank: "b".into(), key: "k".into(), delta: 1.0 },
        ] {
            assert!(is_missing(&message, &op), "{op:?}");
            assert!(!is_missing(&reply::missing_message("j"), &op), "{op:?}");
            assert!(!is_missing("Invalid operation", &op), "{op:?}");
        }
        for op in [put_op("b", "k", b"1".to_vec(), None), Op::BankKeys { bank: "k".into() }, Op::Ping] {
            assert!(!is_missing(&message, &op), "{op:?}");
        }
    }
}
