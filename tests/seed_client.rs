//! The original CacheServer's own Python client and test sequence against bankcache.

mod common;

use std::process::Command;

use common::TestServer;

/// The seed's client sends bare objects with no newline, one `send` per op, reading one `recv` per reply;
/// its test compares replies as strings. Python 3 is part of the build machine; a missing interpreter is
/// a failure, not a skip, so this check cannot silently stop running.
#[test]
fn seed_python_client_and_its_checks_work() {
    let server = TestServer::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/seed_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(server.addr().ip().to_string())
        .arg(server.addr().port().to_string())
        .output()
        .expect("python3 is needed for this test (Debian: apt-get install python3)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed client checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
