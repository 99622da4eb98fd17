//! `put`, `get`, `getouch`, `delete` and `touch`: ops on one key.

use bankcache_proto::Value;

use super::{settle, Busy, Outcome};
use crate::store::record::FLAG_BYTES;
use crate::store::{Access, Keep, Lookup, Store, Ttl};

/// Stores a value; JSON text or bytes, with an optional lifetime in seconds, kept in RAM as `keep` says.
#[allow(clippy::too_many_arguments)]
pub fn put(
    store: &Store,
    bank: &str,
    key: &str,
    value: &Value<'_>,
    lifetime: Option<f64>,
    now: u64,
    access: Access,
    keep: Keep,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    let flags = if value.is_bytes() { FLAG_BYTES } else { 0 };
    let stored =
        store.put(bank, key.as_bytes(), value.bytes(), flags, Ttl::from_secs(lifetime), now, access, keep);
    respond(settle(stored, |location| Outcome::Stored { location })?);
    Ok(())
}

/// Reads a value, restarting its lifetime first with `touch` (`getouch`). The value is handed on while
/// the store holds it (under the bank's lock from RAM, or in the checked copy of its record).
pub fn get(
    store: &Store,
    bank: &str,
    key: &str,
    now: u64,
    touch: bool,
    access: Access,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    let mut respond = Some(respond);
    let found = store.get_with_file(bank, key.as_bytes(), now, touch, access, |value, served, file| {
        if let Some(respond) = respond.take() {
            respond(Outcome::Value { value, served: *served, file });
        }
    });
    let outcome = settle(found, |_| Outcome::Missing { key })?;
    if let Some(respond) = respond.take() {
        respond(outcome);
    }
    Ok(())
}

/// Removes a key.
pub fn delete(
    store: &Store,
    bank: &str,
    key: &str,
    now: u64,
    access: Access,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    respond(settle(store.delete(bank, key.as_bytes(), now, access), |found| done_or_missing(found, key))?);
    Ok(())
}

/// Restarts a key's lifetime.
pub fn touch(
    store: &Store,
    bank: &str,
    key: &str,
    now: u64,
    access: Access,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    respond(settle(store.touch(bank, key.as_bytes(), now, access), |found| done_or_missing(found, key))?);
    Ok(())
}

fn done_or_missing(found: Lookup<()>, key: &str) -> Outcome<'_> {
    match found {
        Lookup::Hit(()) => Outcome::Done,
        Lookup::Miss | Lookup::Expired => Outcome::Missing { key },
    }
}
