//! Pipelines: many ops in one write, replies in order.

use bankcache_proto::reply;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::{
    decode_bytes, decode_typed, json_text, missing_key, put_bytes_op, put_op, Client, Error, Op, RawReply,
    Result,
};

/// The reply to one op of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The op succeeded; its `data` (for `put`, `delete`, `touch` and `bank.reset`: `{}`).
    Value(Value),
    /// The op read a byte value; its bytes, decoded.
    Bytes(Vec<u8>),
    /// The op's key does not exist: the server's missing-key error (recognised by
    /// [`bankcache_proto::reply::is_missing`]) for the op's own key, from `get`, `getouch`, `delete`,
    /// `touch` or `incr`.
    Missing,
    /// The server refused the op with this message.
    Error(String),
}

impl Reply {
    /// Whether the op succeeded ([`Reply::Value`] or [`Reply::Bytes`]).
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Value(_) | Reply::Bytes(_))
    }

    /// As [`Client::get`] would answer: the value as a `T` (bytes parsed as JSON), `None` when missing, the
    /// server's message as [`Error::Server`].
    pub fn decode<T: DeserializeOwned>(self) -> Result<Option<T>> {
        match self {
            Reply::Value(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| Error::Protocol(format!("unexpected value: {e}"))),
            Reply::Bytes(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Protocol(format!("the value is bytes that are not JSON of the expected type ({e})"))
            }),
            Reply::Missing => Ok(None),
            Reply::Error(message) => Err(Error::Server(message)),
        }
    }

    /// As [`Client::get_bytes`] would answer: the bytes (a JSON value's JSON text), `None` when missing, the
    /// server's message as [`Error::Server`].
    pub fn into_bytes(self) -> Result<Option<Vec<u8>>> {
        match self {
            Reply::Value(value) => Ok(Some(value.to_string().into_bytes())),
            Reply::Bytes(bytes) => Ok(Some(bytes)),
            Reply::Missing => Ok(None),
            Reply::Error(message) => Err(Error::Server(message)),
        }
    }

    /// The reply to an op whose missing-key error for `key` means [`Reply::Missing`].
    pub(crate) fn from_raw(raw: RawReply, key: Option<&str>) -> Result<Reply> {
        match raw {
            RawReply::Ok { data, base64: true } => Ok(Reply::Bytes(decode_bytes(&data, true)?)),
            RawReply::Ok { data, base64: false } => Ok(Reply::Value(decode_typed(&data, false)?)),
            RawReply::Err(message) if key.is_some_and(|key| reply::is_missing(&message, key)) => {
                Ok(Reply::Missing)
            }
            RawReply::Err(message) => Ok(Reply::Error(message)),
        }
    }
}

/// Ops queued to be sent together; from [`Client::pipeline`].
///
/// ```no_run
/// # let mut client = bankcache_client::Client::connect("127.0.0.1:10001")?;
/// let mut pipeline = client.pipeline();
/// for i in 0..1000 {
///     pipeline.put("bank", &format!("k{i}"), &i, None);
/// }
/// let replies = pipeline.get("bank", "k7").run()?;
/// assert_eq!(replies.len(), 1001);
/// assert_eq!(replies[1000].clone().decode::<i32>()?, Some(7));
/// # Ok::<(), bankcache_client::Error>(())
/// ```
///
/// [`Pipeline::run`] writes every op at once (from a second thread while reading the replies when the ops
/// are large, so a big pipeline cannot deadlock on full socket buffers) and returns one [`Reply`] per op, in
/// order. A connection failure fails the whole run (and drops the connection); an op the server refuses is
/// just its [`Reply::Error`].
pub struct Pipeline<'c> {
    client: &'c mut Client,
    payload: Vec<u8>,
    /// Per op: the key whose missing-key error means [`Reply::Missing`].
    keys: Vec<Option<String>>,
    error: Option<Error>,
}

impl<'c> Pipeline<'c> {
    pub(crate) fn new(client: &'c mut Client) -> Pipeline<'c> {
        Pipeline { client, payload: Vec::new(), keys: Vec::new(), error: None }
    }

    /// Queues any op given as JSON (an object with an `op` field), sent as it is; its reply is never
    /// [`Reply::Missing`]. For requests the typed calls and [`Pipeline::push_op`] cannot make.
    pub fn op(&mut self, op: &Value) -> &mut Self {
        match serde_json::to_writer(&mut self.payload, op) {
            Ok(()) => {
                self.payload.push(b'\n');
                self.keys.push(None);
            }
            Err(e) => {
                self.error.get_or_insert(Error::Protocol(e.to_string()));
            }
        }
        self
    }

    /// Queues one op, built as [`Op`] and encoded by [`Op::encode`]; its reply is [`Reply::Missing`] when
    /// it is the missing-key error of an op that reads or changes its key (as [`Client::send`] answers).
    /// Every typed method below comes through here.
    pub fn push_op(&mut self, op: &Op<'_>) -> &mut Self {
        op.encode(&mut self.payload);
        self.keys.push(missing_key(op).map(str::to_owned));
        self
    }

    /// Queues a `put` of a JSON value (see [`Client::put`]).
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        bank: &str,
        key: &str,
        value: &T,
        lifetime: Option<f64>,
    ) -> &mut Self {
        match json_text(value) {
            Ok(text) => self.push_op(&put_op(bank, key, text, lifetime)),
            Err(e) => {
                self.error.get_or_insert(e);
                self
            }
        }
    }

    /// Queues a `put` of bytes (see [`Client::put_bytes`]).
    pub fn put_bytes(&mut self, bank: &str, key: &str, bytes: &[u8], lifetime: Option<f64>) -> &mut Self {
        self.push_op(&put_bytes_op(bank, key, bytes, lifetime))
    }

    /// Queues a `get`.
    pub fn get(&mut self, bank: &str, key: &str) -> &mut Self {
        self.push_op(&Op::Get { bank: bank.into(), key: key.into() })
    }

    /// Queues a `getouch`.
    pub fn getouch(&mut self, bank: &str, key: &str) -> &mut Self {
        self.push_op(&Op::GetTouch { bank: bank.into(), key: key.into() })
    }

    /// Queues a `delete`.
    pub fn delete(&mut self, bank: &str, key: &str) -> &mut Self {
        self.push_op(&Op::Delete { bank: bank.into(), key: key.into() })
    }

    /// Queues a `touch`.
    pub fn touch(&mut self, bank: &str, key: &str) -> &mut Self {
        self.push_op(&Op::Touch { bank: bank.into(), key: key.into() })
    }

    /// Queues an `incr` (its reply is the new value, a float).
    pub fn incr(&mut self, bank: &str, key: &str, delta: f64) -> &mut Self {
        self.push_op(&Op::Incr { bank: bank.into(), key: key.into(), delta })
    }

    /// Queues a `bank.keys`.
    pub fn bank_keys(&mut self, bank: &str) -> &mut Self {
        self.push_op(&Op::BankKeys { bank: bank.into() })
    }

    /// Queues a `bank.scan` (see [`Client::bank_scan`]); its reply is the page as JSON,
    /// `{"cursor": <next>, "keys": [...]}`.
    pub fn bank_scan(&mut self, bank: &str, cursor: u64, prefix: &str, count: u64) -> &mut Self {
        self.push_op(&Op::BankScan { bank: bank.into(), cursor, prefix: prefix.into(), count })
    }

    /// Queues a `bank.list`.
    pub fn bank_list(&mut self) -> &mut Self {
        self.push_op(&Op::BankList)
    }

    /// Queues a `bank.reset`.
    pub fn bank_reset(&mut self, bank: &str) -> &mut Self {
        self.push_op(&Op::BankReset { bank: bank.into() })
    }

    /// Queues a `ping`.
    pub fn ping(&mut self) -> &mut Self {
        self.push_op(&Op::Ping)
    }

    /// Queues a `stats`.
    pub fn stats(&mut self) -> &mut Self {
        self.push_op(&Op::Stats)
    }

    /// How many ops are queued.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no op is queued.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Sends every queued op in one write and returns their replies in order. The pipeline is empty
    /// afterwards (and can be filled again), whatever the outcome.
    pub fn run(&mut self) -> Result<Vec<Reply>> {
        let payload = std::mem::take(&mut self.payload);
        let keys = std::mem::take(&mut self.keys);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let raw = self.client.exchange(&payload, keys.len())?;
        raw.into_iter().zip(&keys).map(|(raw, key)| Reply::from_raw(raw, key.as_deref())).collect()
    }
}
