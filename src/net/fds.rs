//! File descriptors: every connection holds one, so they bound how many clients the server can hold.
//!
//! At start-up [`raise_nofile_limit`] lifts the soft `RLIMIT_NOFILE` as far as the hard limit allows (many
//! systems start processes at a soft 1024, far below the default `max_connections`), as nginx's
//! `worker_rlimit_nofile` and Redis do. When the process still runs out, the reactor uses a [`SpareFd`]
//! to accept and close what waits in the backlog, so those clients are told at once instead of hanging,
//! and the reactor neither spins on a listener it cannot drain nor stalls (nginx and libuv do the same).

use std::fs::File;
use std::io;

/// What [`raise_nofile_limit`] found and did (in `rlim_t`, which `RLIM_INFINITY` fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub before: libc::rlim_t,
    /// The soft limit now.
    pub after: libc::rlim_t,
    /// The hard limit (the ceiling an unprivileged process may raise its soft limit to).
    pub hard: libc::rlim_t,
}

/// The most file descriptors asked for when the hard limit is unlimited: Linux refuses a soft limit above
/// `fs.nr_open`, whose default is this.
const UNLIMITED_CAP: libc::rlim_t = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or, when that is unlimited, to the largest the
/// kernel takes). Idempotent, so every server started in a process may call it (each `bind` does).
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (before, hard) = (limit.rlim_cur, limit.rlim_max);
    let mut target = if hard == libc::RLIM_INFINITY { UNLIMITED_CAP } else { hard };
    if before == libc::RLIM_INFINITY || before >= target {
        return Ok(NofileLimit { before, after: before, hard });
    }
    loop {
        let wanted = libc::rlimit { rlim_cur: target, rlim_max: hard };
        // SAFETY: setrlimit reads one `rlimit` from a pointer to a live local; it changes only this
        // process's descriptor limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            return Ok(NofileLimit { before, after: target, hard });
        }
        let e = io::Error::last_os_error();
        // A kernel ceiling below the hard limit (macOS's OPEN_MAX, a lowered fs.nr_open) refuses the
        // value: try half as much, as long as that is still a raise.
        let too_high = matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL));
        if !too_high || target / 2 <= before {
            return Err(e);
        }
        target /= 2;
    }
}

/// One file descriptor kept open (on `/dev/null`) for the moment the process runs out: closing it frees a
/// descriptor to accept a waiting connection with, and close it again at once.
pub struct SpareFd(Option<File>);

impl SpareFd {
    /// Opens the spare. A failure is logged and leaves none; [`SpareFd::restore`] tries again later.
    pub fn open() -> SpareFd {
        match File::open("/dev/null") {
            Ok(file) => SpareFd(Some(file)),
            Err(e) => {
                log::warn!("cannot keep a spare file descriptor (for when they run out): {e}");
                SpareFd(None)
            }
        }
    }

    /// Closes the spare, freeing its descriptor. False when there was none to close.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Reopens the spare if it is closed. Returns whether one is held afterwards. Silent: it fails only
    /// while descriptors are short, which the caller reports (at most once a second).
    pub fn restore(&mut self) -> bool {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
        self.0.is_some()
    }
}

/// Accepting failed for want of file descriptors (the process's, `EMFILE`, or the system's, `ENFILE`):
/// errors a spare descriptor can get a waiting connection past.
pub fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_idempotent_and_never_lowers() {
        let first = raise_nofile_limit().expect("getrlimit works");
        assert!(first.after >= first.before);
        let again = raise_nofile_limit().expect("getrlimit works");
        assert_eq!(again.before, again.after, "already raised");
        assert!(again.after >= first.after);
    }

    #[test]
    fn the_spare_is_released_and_restored() {
        let mut spare = SpareFd::open();
        assert!(spare.release());
        assert!(!spare.release(), "nothing left to release");
        assert!(spare.restore());
        assert!(spare.restore(), "restoring a held spare keeps it");
    }

    #[test]
    fn fd_exhaustion_is_recognised() {
        assert!(out_of_fds(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_fds(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!out_of_fds(&io::Error::from_raw_os_error(libc::ENOBUFS)));
        assert!(!out_of_fds(&io::ErrorKind::WouldBlock.into()));
    }
}
