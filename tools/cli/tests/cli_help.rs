//! `bankcache-cli --help` and usage errors, without a server. (The CLI's commands against a real server are
//! tested at the workspace root, in tests/cli_client.rs, which finds this crate's binary beside the server's.)

use std::process::Command;

const CLI: &str = env!("CARGO_BIN_EXE_bankcache-cli");

/// The help lists every command and documents the exit codes a script relies on.
#[test]
fn help_lists_commands_and_exit_codes() {
    let out = Command::new(CLI).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in
        ["ping", "put", "get", "delete", "touch", "incr", "scan", "keys", "banks", "reset", "stats"]
    {
        assert!(help.contains(command), "help does not mention {command}:\n{help}");
    }
    assert!(help.contains("Exit codes: 0 ok, 1 key does not exist, 2 usage error"), "{help}");
}

/// A malformed command line is exit code 2, before any connection is attempted.
#[test]
fn usage_errors_exit_2() {
    let out = Command::new(CLI).args(["--addr", "127.0.0.1:9", "put", "only-a-bank"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    for bad in [["--count", "0"], ["--count", "x"], ["--cursor", "-1"]] {
        let out = Command::new(CLI).args(["--addr", "127.0.0.1:9", "scan", "b"]).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "scan b {bad:?}");
    }
}

/// The token can come from a flag or the environment, and `--help` says so without showing its value.
#[test]
fn help_documents_the_token_without_showing_it() {
    let out = Command::new(CLI).arg("--help").env("BANKCACHE_AUTH_TOKEN", "s3cret-in-env").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--auth-token"), "{help}");
    assert!(help.contains("BANKCACHE_AUTH_TOKEN"), "{help}");
    assert!(help.contains("5 authentication failed"), "{help}");
    assert!(!help.contains("s3cret-in-env"), "--help shows the token: {help}");
}
