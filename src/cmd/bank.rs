//! `bank.keys`, `bank.list` and `bank.reset`: ops on a whole bank, or on the list of banks.

use super::{Failure, Outcome};
use crate::store::Store;

/// Lists a bank's live keys in insertion order (none for a bank that does not exist).
pub fn keys(store: &Store, bank: &str, now: u64, respond: impl FnOnce(Outcome<'_>)) {
    let mut respond = Some(respond);
    store.keys(bank, now, |keys| {
        if let Some(respond) = respond.take() {
            respond(Outcome::Keys(keys));
        }
    });
    if let Some(respond) = respond.take() {
        respond(Outcome::Keys(&[]));
    }
}

/// Lists the banks in creation order.
pub fn list(store: &Store, respond: impl FnOnce(Outcome<'_>)) {
    store.bank_names(|names| respond(Outcome::Banks(names)))
}

/// Empties a bank; it stays listed. A bank that never existed is not created.
pub fn reset(store: &Store, bank: &str, respond: impl FnOnce(Outcome<'_>)) {
    match store.reset(bank) {
        Ok(()) => respond(Outcome::Done),
        Err(e) => respond(Outcome::Failed(Failure::Store(e))),
    }
}
