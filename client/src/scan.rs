//! Paging through a bank's keys with `bank.scan`.

use serde_json::Value;

use crate::{decode_typed, Client, Error, RawReply, Result};

/// Keys [`Client::scan_keys`] asks for per call: few enough round trips for a big bank, small enough
/// replies (the server caps a call at [`bankcache_proto::op::SCAN_COUNT_MAX`] anyway).
pub const SCAN_KEYS_PAGE: u64 = 1000;

/// Reads a `bank.scan` reply's data: the next cursor (0 when the scan is done) and the page's keys.
pub(crate) fn scan_page(raw: RawReply) -> Result<(u64, Vec<String>)> {
    let (data, base64) = raw.into_data()?;
    let mut page: Value = decode_typed(&data, base64)?;
    let cursor = page.get("cursor").and_then(Value::as_u64);
    // `get_mut`, not `page["keys"]`: indexing anything but an object panics.
    let keys = page.get_mut("keys").map(|keys| serde_json::from_value::<Vec<String>>(keys.take()));
    match (cursor, keys) {
        (Some(cursor), Some(Ok(keys))) => Ok((cursor, keys)),
        _ => Err(Error::Protocol(format!("bank.scan answered {}", data.get()))),
    }
}

/// Every key of a bank under a prefix, fetched a page ([`SCAN_KEYS_PAGE`] keys) at a time with
/// `bank.scan`; from [`Client::scan_keys`].
///
/// It has the server's cursor guarantee: a key present for the whole iteration is yielded exactly once,
/// while keys added or removed meanwhile may or may not be (and a key removed and added again may come
/// twice). Keys come in the server's slot order, not insertion order. A failed call is yielded as an
/// `Err` and ends the iteration; [`ScanKeys::cursor`] then says where to go on from with
/// [`Client::bank_scan`].
///
/// ```no_run
/// # let mut client = bankcache_client::Client::connect("127.0.0.1:10001")?;
/// for key in client.scan_keys("users", "ann") {
///     println!("{}", key?);
/// }
/// # Ok::<(), bankcache_client::Error>(())
/// ```
pub struct ScanKeys<'c> {
    client: &'c mut Client,
    bank: String,
    prefix: String,
    cursor: u64,
    page: std::vec::IntoIter<String>,
    done: bool,
}

impl<'c> ScanKeys<'c> {
    pub(crate) fn new(client: &'c mut Client, bank: &str, prefix: &str) -> ScanKeys<'c> {
        ScanKeys {
            client,
            bank: bank.to_owned(),
            prefix: prefix.to_owned(),
            cursor: 0,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// The cursor of the next page to fetch: 0 once the scan is done (or before it started). After an
    /// error, the page that failed, so a caller can go on from there with [`Client::bank_scan`].
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}

impl Iterator for ScanKeys<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            // A page may be empty with a cursor that is not 0 (few keys under the prefix): go on.
            match self.client.bank_scan(&self.bank, self.cursor, &self.prefix, SCAN_KEYS_PAGE) {
                Ok((next, keys)) => {
                    self.cursor = next;
                    self.done = next == 0;
                    self.page = keys.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for ScanKeys<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(data: &str) -> Result<(u64, Vec<String>)> {
        let line = format!("{{\"status\": \"ok\", \"data\": {data}}}\n");
        scan_page(RawReply::parse(line.as_bytes())?)
    }

    /// A `bank.scan` reply whose data is not a page is a protocol error, whatever it is: indexing a JSON
    /// string or array by `"keys"` panicked (serde_json's `IndexMut`), so a wrong server (or a wrong port)
    /// crashed the client. Found by the `client_reply` fuzz target.
    #[test]
    fn a_reply_that_is_not_a_page_is_a_protocol_error() {
        for data in [
            "\"pong\"",
            "[1]",
            "3",
            "true",
            "null",
            "{}",
            "{\"cursor\": 0}",
            "{\"cursor\": -1, \"keys\": []}",
        ] {
            assert!(matches!(page(data), Err(Error::Protocol(_))), "{data}");
        }
        assert_eq!(page("{\"cursor\": 5, \"keys\": [\"a\"]}").unwrap(), (5, vec!["a".to_owned()]));
    }
}
