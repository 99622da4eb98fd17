//! `bankcache-bench --help` and flag errors, without a server. Its runs against real servers are tested at
//! the workspace root, in tests/bench_compare.rs, which finds this crate's binary beside the server's: this
//! file is also what makes `cargo test --workspace` build that binary on a clean checkout.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_bankcache-bench");

/// The help names both modes and every wire protocol the driver speaks.
#[test]
fn help_names_modes_and_protocols() {
    let out = Command::new(BENCH).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["compare", "--addr", "json", "resp", "memcache", "http"] {
        assert!(help.contains(word), "help does not mention {word}:\n{help}");
    }
}

/// Bad flags exit 2 before any connection is attempted (port 9 would refuse it anyway).
#[test]
fn bad_flags_exit_2() {
    for bad in [&["--connections", "0"][..], &["--pipeline", "0"], &["--proto", "bogus"], &["--keys", "x"]] {
        let out = Command::new(BENCH).args(["--addr", "127.0.0.1:9"]).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
