//! `put`, `get`, `getouch`, `delete` and `touch`: ops on one key.

use bankcache_proto::Value;

use super::{Failure, Outcome};
use crate::store::record::FLAG_BYTES;
use crate::store::{Lookup, Store, StoreError, Ttl};

/// Stores a value; JSON text or bytes, with an optional lifetime in seconds.
pub fn put(
    store: &Store,
    bank: &str,
    key: &str,
    value: &Value<'_>,
    lifetime: Option<f64>,
    now: u64,
    respond: impl FnOnce(Outcome<'_>),
) {
    let flags = if value.is_bytes() { FLAG_BYTES } else { 0 };
    match store.put(bank, key.as_bytes(), value.bytes(), flags, Ttl::from_secs(lifetime), now) {
        Ok(location) => respond(Outcome::Stored { location }),
        Err(e) => respond(Outcome::Failed(Failure::Store(e))),
    }
}

/// Reads a value, restarting its lifetime first with `touch` (`getouch`). The value is handed on while
/// the store holds it (under the bank's lock from RAM, or in the checked copy of its record).
pub fn get(store: &Store, bank: &str, key: &str, now: u64, touch: bool, respond: impl FnOnce(Outcome<'_>)) {
    let mut respond = Some(respond);
    let found = store.get(bank, key.as_bytes(), now, touch, |value, served| {
        if let Some(respond) = respond.take() {
            respond(Outcome::Value { value, served: *served });
        }
    });
    if let Some(respond) = respond.take() {
        match found {
            Ok(_) => respond(Outcome::Missing { key }),
            Err(e) => respond(Outcome::Failed(Failure::Store(e))),
        }
    }
}

/// Removes a key.
pub fn delete(store: &Store, bank: &str, key: &str, now: u64, respond: impl FnOnce(Outcome<'_>)) {
    respond(done_or_missing(store.delete(bank, key.as_bytes(), now), key))
}

/// Restarts a key's lifetime.
pub fn touch(store: &Store, bank: &str, key: &str, now: u64, respond: impl FnOnce(Outcome<'_>)) {
    respond(done_or_missing(store.touch(bank, key.as_bytes(), now), key))
}

fn done_or_missing<'a>(found: Result<Lookup<()>, StoreError>, key: &'a str) -> Outcome<'a> {
    match found {
        Ok(Lookup::Hit(())) => Outcome::Done,
        Ok(Lookup::Miss | Lookup::Expired) => Outcome::Missing { key },
        Err(e) => Outcome::Failed(Failure::Store(e)),
    }
}
