//! Access control: the server's token, where each connection stands, and the brake on guessing.
//!
//! With an `auth_token` set, a JSON connection runs nothing before `{"op":"auth","token":"..."}`, and every
//! HTTP request carries `Authorization: Bearer <token>`. Three pieces:
//!
//! - [`AuthToken`]: the secret. Compared in constant time, as SHA-256 digests with `subtle`, so that the
//!   time a check takes says nothing about how much of a guess was right, nor the token's length; its
//!   `Debug` never shows it.
//! - [`Auth`]: one connection's standing, carried by its jobs. Once a JSON connection has authenticated it
//!   is [`Auth::Open`], and every later request costs one comparison of this enum.
//! - [`Throttle`]: failed attempts, server-wide. A wrong token is answered at once, but it spends a credit
//!   of a small bucket (a burst of [`FAILURE_BURST`], then one per [`FAILURE_INTERVAL`]); while the bucket
//!   is empty, the requests of connections that have not authenticated wait in the reactor (a timer, not
//!   a sleep: no thread is held) until it has a credit again. A connection is closed at its
//!   [`MAX_FAILURES`]th wrong token, so no connection guesses on for ever, and opening more connections
//!   does not guess faster: the bucket is shared. Connections that have authenticated never wait.

use std::fmt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Wrong tokens a connection may send: at this one the error reply is its last and it is closed.
pub const MAX_FAILURES: u8 = 3;
/// Failed attempts the server takes in a burst before they are spaced out.
pub const FAILURE_BURST: u32 = 10;
/// Once the burst is spent, one failed attempt per this long, server-wide.
pub const FAILURE_INTERVAL: Duration = Duration::from_millis(200);

/// The shared secret of `auth_token`. Kept as its text (the config file serializes it back) and as the
/// digest every check compares against.
#[derive(Clone)]
pub struct AuthToken {
    text: String,
    digest: [u8; 32],
}

impl AuthToken {
    /// A token of `text`. [`AuthToken::check_text`] says whether the text can be one.
    pub fn new(text: String) -> AuthToken {
        let digest = Sha256::digest(text.as_bytes()).into();
        AuthToken { text, digest }
    }

    /// Why `text` cannot be a token, if it cannot: it must be 1 to 4096 bytes of printable ASCII without
    /// spaces, so that it fits in an HTTP `Authorization` header as it is.
    pub fn check_text(text: &str) -> Result<(), &'static str> {
        if text.is_empty() || text.len() > 4096 {
            return Err("1 to 4096 bytes long");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("printable ASCII without spaces");
        }
        Ok(())
    }

    /// Whether `candidate` is the token. Constant time in the token: both sides are hashed and the
    /// digests compared with `subtle`, so neither a matching prefix nor the length shows in the timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let candidate: [u8; 32] = Sha256::digest(candidate).into();
        self.digest.ct_eq(&candidate).into()
    }

    /// The token's text, for writing the configuration back out.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl PartialEq for AuthToken {
    fn eq(&self, other: &AuthToken) -> bool {
        self.matches(other.text.as_bytes())
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// Where a connection stands with access control. Copied into each of its jobs and back, since a
/// connection has one job out at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Its requests run: no token is set, or it has shown the token.
    Open,
    /// A token is set and the connection has not shown it: on JSON only `auth` runs; on HTTP each request
    /// is checked as always, and the connection's requests wait while the [`Throttle`] is shut.
    Locked {
        /// Wrong tokens it has sent.
        failures: u8,
    },
}

impl Auth {
    /// A new connection's standing: locked when a token is set.
    pub fn new(token_set: bool) -> Auth {
        if token_set {
            Auth::Locked { failures: 0 }
        } else {
            Auth::Open
        }
    }

    /// Wrong tokens sent while locked (0 once open).
    pub fn failures(self) -> u8 {
        match self {
            Auth::Open => 0,
            Auth::Locked { failures } => failures,
        }
    }

    /// True until the connection has shown the token (when one is set).
    pub fn is_locked(self) -> bool {
        matches!(self, Auth::Locked { .. })
    }

    /// The standing after a wrong token: locked (an open connection that sends a wrong token is locked
    /// again), one more failure. Returns whether the connection has now used up its [`MAX_FAILURES`].
    pub fn fail(&mut self) -> bool {
        let failures = self.failures().saturating_add(1);
        *self = Auth::Locked { failures };
        failures >= MAX_FAILURES
    }
}

/// Failed authentications, server-wide, as a bucket of credits kept as one instant (the generic cell rate
/// algorithm): each failure pushes `debt_until` one [`FAILURE_INTERVAL`] further, from now at the
/// earliest, and locked connections may run while it is at most [`FAILURE_BURST`] - 1 intervals ahead.
/// So failures come at most [`FAILURE_BURST`] at once and then one per interval, however many connections
/// guess, and after a quiet spell the whole burst is there again. Owned by the reactor thread.
#[derive(Debug, Clone)]
pub struct Throttle {
    debt_until: Instant,
    interval: Duration,
    window: Duration,
}

impl Throttle {
    /// The server's throttle: [`FAILURE_BURST`] at once, then one per [`FAILURE_INTERVAL`].
    pub fn new(now: Instant) -> Throttle {
        Throttle::with(now, FAILURE_BURST, FAILURE_INTERVAL)
    }

    /// A throttle of `burst` failures at once, then one per `interval`.
    pub fn with(now: Instant, burst: u32, interval: Duration) -> Throttle {
        Throttle { debt_until: now, interval, window: interval * burst.saturating_sub(1) }
    }

    /// Whether a connection that has not authenticated may run a request at `now`.
    pub fn admits(&self, now: Instant) -> bool {
        self.debt_until <= now + self.window
    }

    /// `count` attempts failed at `now`.
    pub fn failed(&mut self, now: Instant, count: u32) {
        self.debt_until = self.debt_until.max(now) + self.interval * count;
    }

    /// When [`Throttle::admits`] becomes true again.
    pub fn opens_at(&self) -> Instant {
        self.debt_until.checked_sub(self.window).unwrap_or(self.debt_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_matches() {
        let token = AuthToken::new("s3cret-token".into());
        assert!(token.matches(b"s3cret-token"));
        for wrong in [&b""[..], b"s3cret-toke", b"s3cret-tokenX", b"S3cret-token", b"s3cret-token\n"] {
            assert!(!token.matches(wrong), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn token_text_is_printable_ascii_without_spaces() {
        assert!(AuthToken::check_text("abc-._~+/=123").is_ok());
        for bad in ["", "a b", "tab\there", "é", "new\nline"] {
            assert!(AuthToken::check_text(bad).is_err(), "{bad:?}");
        }
        assert!(AuthToken::check_text(&"a".repeat(4096)).is_ok());
        assert!(AuthToken::check_text(&"a".repeat(4097)).is_err());
    }

    #[test]
    fn a_connection_is_locked_until_it_authenticates_and_closes_at_its_last_failure() {
        assert_eq!(Auth::new(false), Auth::Open);
        let mut auth = Auth::new(true);
        assert!(auth.is_locked());
        for n in 1..MAX_FAILURES {
            assert!(!auth.fail());
            assert_eq!(auth.failures(), n);
        }
        assert!(auth.fail(), "the last failure closes");
        let mut open = Auth::Open;
        assert!(!open.fail());
        assert_eq!(open, Auth::Locked { failures: 1 }, "a wrong token locks an open connection again");
    }

    /// The mechanism, on made-up instants: a burst, then one failure per interval, shared by every
    /// connection, and whole again after a quiet spell.
    #[test]
    fn the_throttle_lets_a_burst_through_then_one_failure_per_interval() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(100);
        let mut throttle = Throttle::with(t0, 3, interval);
        for _ in 0..3 {
            assert!(throttle.admits(t0));
            throttle.failed(t0, 1);
        }
        assert!(!throttle.admits(t0), "shut after the burst");
        assert_eq!(throttle.opens_at(), t0 + interval);
        assert!(!throttle.admits(t0 + interval / 2));
        assert!(throttle.admits(t0 + interval), "one more after an interval");
        throttle.failed(t0 + interval, 1);
        assert!(!throttle.admits(t0 + interval));
        // Many connections failing at once push it shut for as long as their failures are worth.
        throttle.failed(t0 + interval, 10);
        assert!(!throttle.admits(t0 + interval * 11));
        assert!(throttle.admits(t0 + interval * 12));
        // After a quiet spell the burst is back.
        let later = t0 + interval * 100;
        for _ in 0..3 {
            assert!(throttle.admits(later));
            throttle.failed(later, 1);
        }
        assert!(!throttle.admits(later));
    }
}
