//! A small blocking client for bankcache's JSON protocol.
//!
//! One [`Client`] owns one TCP connection and sends one op at a time, waiting for its reply line.
//! Values are any `serde` type; a missing key is `Ok(None)`, not an error.
//!
//! ```no_run
//! let mut client = bankcache_client::Client::connect("127.0.0.1:10001")?;
//! client.put("users", "ann", &serde_json::json!({"age": 41}), Some(60.0))?;
//! let ann: Option<serde_json::Value> = client.get("users", "ann")?;
//! assert_eq!(ann.unwrap()["age"], 41);
//! # Ok::<(), bankcache_client::Error>(())
//! ```

#![deny(missing_docs)]

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What can go wrong talking to a server.
#[derive(Debug)]
pub enum Error {
    /// The connection failed or closed.
    Io(io::Error),
    /// The server's reply was not a reply, or a value did not have the expected type.
    Protocol(String),
    /// The server answered with an error message.
    Server(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "connection error: {e}"),
            Error::Protocol(why) => write!(f, "protocol error: {why}"),
            Error::Server(message) => write!(f, "server error: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(_) | Error::Server(_) => None,
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

/// One reply as it appears on the wire.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    message: String,
}

/// A connection to one bankcache server.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

impl Client {
    /// Connects to a server, with Nagle's algorithm off since every op is a small write waiting on a reply.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        Ok(Client { reader: BufReader::new(stream), writer, line: String::new() })
    }

    /// Sends one op (a JSON object with an `op` field) and returns the reply's `data`, or the server's
    /// error message as [`Error::Server`].
    pub fn request(&mut self, op: &Value) -> Result<Value> {
        let mut bytes = serde_json::to_vec(op).map_err(|e| Error::Protocol(e.to_string()))?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes)?;
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            )));
        }
        let reply: Envelope = serde_json::from_str(&self.line)
            .map_err(|e| Error::Protocol(format!("bad reply {:?}: {e}", self.line.trim_end())))?;
        match reply.status.as_str() {
            "ok" => Ok(reply.data),
            "error" => Err(Error::Server(reply.message)),
            other => Err(Error::Protocol(format!("unknown status {other:?}"))),
        }
    }

    /// Stores `value` under `key`; `lifetime` in seconds, `None` for no expiry.
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        bank: &str,
        key: &str,
        value: &T,
        lifetime: Option<f64>,
    ) -> Result<()> {
        let value = serde_json::to_value(value).map_err(|e| Error::Protocol(e.to_string()))?;
        let mut op = json!({"op": "put", "bank": bank, "key": key, "value": value});
        if let Some(lifetime) = lifetime {
            op["lifetime"] = json!(lifetime);
        }
        self.request(&op).map(drop)
    }

    /// Reads a key; `Ok(None)` when it does not exist.
    pub fn get<T: DeserializeOwned>(&mut self, bank: &str, key: &str) -> Result<Option<T>> {
        self.read("get", bank, key)
    }

    /// Reads a key and restarts its lifetime; `Ok(None)` when it does not exist.
    pub fn getouch<T: DeserializeOwned>(&mut self, bank: &str, key: &str) -> Result<Option<T>> {
        self.read("getouch", bank, key)
    }

    fn read<T: DeserializeOwned>(&mut self, op: &str, bank: &str, key: &str) -> Result<Option<T>> {
        match self.request(&json!({"op": op, "bank": bank, "key": key})) {
            Ok(data) => serde_json::from_value(data).map(Some).map_err(|e| Error::Protocol(e.to_string())),
            Err(Error::Server(message)) if is_missing(&message, key) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.existed(json!({"op": "delete", "bank": bank, "key": key}), key)
    }

    /// Restarts a key's lifetime; returns whether it existed.
    pub fn touch(&mut self, bank: &str, key: &str) -> Result<bool> {
        self.existed(json!({"op": "touch", "bank": bank, "key": key}), key)
    }

    fn existed(&mut self, op: Value, key: &str) -> Result<bool> {
        match self.request(&op) {
            Ok(_) => Ok(true),
            Err(Error::Server(message)) if is_missing(&message, key) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta` to a numeric value and returns the new value.
    pub fn incr(&mut self, bank: &str, key: &str, delta: f64) -> Result<f64> {
        let data = self.request(&json!({"op": "incr", "bank": bank, "key": key, "value": delta}))?;
        data.as_f64().ok_or_else(|| Error::Protocol(format!("incr answered {data}")))
    }

    /// Lists a bank's live keys in insertion order.
    pub fn bank_keys(&mut self, bank: &str) -> Result<Vec<String>> {
        self.typed(json!({"op": "bank.keys", "bank": bank}))
    }

    /// Lists the banks in creation order.
    pub fn bank_list(&mut self) -> Result<Vec<String>> {
        self.typed(json!({"op": "bank.list"}))
    }

    /// Removes every entry of a bank.
    pub fn bank_reset(&mut self, bank: &str) -> Result<()> {
        self.request(&json!({"op": "bank.reset", "bank": bank})).map(drop)
    }

    /// Checks the server is alive.
    pub fn ping(&mut self) -> Result<()> {
        self.request(&json!({"op": "ping"})).map(drop)
    }

    /// The server's counters.
    pub fn stats(&mut self) -> Result<serde_json::Map<String, Value>> {
        self.typed(json!({"op": "stats"}))
    }

    fn typed<T: DeserializeOwned>(&mut self, op: Value) -> Result<T> {
        let data = self.request(&op)?;
        serde_json::from_value(data).map_err(|e| Error::Protocol(e.to_string()))
    }
}

fn is_missing(message: &str, key: &str) -> bool {
    message.strip_prefix("Key ").and_then(|m| m.strip_suffix(" doesn't exist")) == Some(key)
}
