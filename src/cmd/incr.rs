//! `incr`: add a delta to a numeric value, atomically under its bank's lock.

use bankcache_proto::number::{self, NotANumber};
use bankcache_proto::reply;

use super::{settle, Busy, Failure, Outcome};
use crate::store::record::FLAG_BYTES;
use crate::store::{Access, Lookup, Store};

/// Why an `incr` cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The stored value is not a number.
    NotANumber(NotANumber),
    /// The result would not be finite.
    Overflow,
}

/// Adds `delta` to the value under `key`; a missing key stays missing (`incr` creates nothing).
pub fn run(
    store: &Store,
    bank: &str,
    key: &str,
    delta: f64,
    now: u64,
    access: Access,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    let updated = store.update(bank, key.as_bytes(), now, access, |old, flags| incr(old, flags, delta));
    respond(settle(updated, |found| match found {
        Lookup::Hit(Ok(value)) => Outcome::Number(value),
        Lookup::Hit(Err(IncrError::NotANumber(why))) => Outcome::Failed(Failure::NotANumber { key, why }),
        Lookup::Hit(Err(IncrError::Overflow)) => Outcome::Failed(Failure::Overflow { key }),
        Lookup::Miss | Lookup::Expired => Outcome::Missing { key },
    })?);
    Ok(())
}

/// The new value of an `incr`, stored as JSON: always a float, always finite. A stored byte value counts
/// if its text is a number.
pub fn incr(old: &[u8], flags: u8, delta: f64) -> Result<(Vec<u8>, u8, f64), IncrError> {
    let current = if flags & FLAG_BYTES != 0 {
        std::str::from_utf8(old)
            .ok()
            .and_then(number::python_float)
            .filter(|v| v.is_finite())
            .ok_or(IncrError::NotANumber(NotANumber::Text))?
    } else {
        number::stored(old).map_err(IncrError::NotANumber)?
    };
    let value = current + delta;
    if !value.is_finite() {
        return Err(IncrError::Overflow);
    }
    let mut text = Vec::with_capacity(24);
    reply::float(&mut text, value);
    Ok((text, 0, value))
}
