//! Black-box tests of the command line and config file (README
//! "Configuration"), the stdout listening line, and graceful shutdown on
//! SIGTERM / SIGINT.

mod common;

use common::*;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// Writes `config` to a temp file; returns the dir (keep it alive) and path.
fn config_file(config: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config).unwrap();
    let p = path.to_str().unwrap().to_string();
    (dir, p)
}

/// Starts a server from `config` (no flags) and checks it serves.
#[track_caller]
fn assert_config_serves(config: &str) -> TestServer {
    let s = TestServer::start_with_config(config, &[]);
    assert_eq!(s.addr().ip().to_string(), "127.0.0.1", "listening line: {:?}", s.listen_line());
    let mut c = s.connect();
    c.check(PING, PONG);
    s
}

/// `--version` prints the crate version and exits 0.
#[test]
fn version_flag_prints_version() {
    let out = run_to_exit(&["--version"], EXIT_LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version output lacks {}: {:?}",
        env!("CARGO_PKG_VERSION"),
        out.stdout
    );
}

/// `--help` exits 0 and lists the documented flags.
#[test]
fn help_flag_lists_flags() {
    let out = run_to_exit(&["--help"], EXIT_LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    for flag in [
        "--listen",
        "--workers",
        "--log-level",
        "--slow-log-ms",
        "--max-request-bytes",
        "--max-key-bytes",
        "--max-value-bytes",
        "--max-connections",
        "--sweep-interval-ms",
    ] {
        assert!(out.stdout.contains(flag), "--help does not mention {flag}: {}", out.stdout);
    }
}

/// An unknown config key is an error that names the key: non-zero exit and
/// the key in stderr (a typo must not silently fall back to defaults).
#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let (_dir, path) = config_file(r#"{"listen":"127.0.0.1:0","max_conections":5}"#);
    let out = run_to_exit(&["--listen", "127.0.0.1:0", &path], EXIT_LIMIT);
    assert!(!out.status.success(), "server accepted an unknown key; stdout: {:?}", out.stdout);
    assert!(out.stderr.contains("max_conections"), "stderr does not name the unknown key: {:?}", out.stderr);
}

/// Asserts `out` is a refusal at startup whose stderr mentions every one of `parts`.
#[track_caller]
fn assert_refused_naming(out: &Finished, parts: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "stdout: {:?}; stderr: {:?}", out.stdout, out.stderr);
    for part in parts {
        assert!(out.stderr.contains(part), "stderr does not mention {part:?}: {:?}", out.stderr);
    }
}

/// A bad `fsync` or `log_level` in the config file is refused at startup, and the error names the key,
/// the value given and the allowed values (no silent fallback to the default).
#[test]
fn bad_enum_value_in_config_file_is_an_error_naming_key_value_and_choices() {
    let (_dir, path) = config_file(r#"{"listen":"127.0.0.1:0","fsync":"sometimes"}"#);
    let out = run_to_exit(&[&path], EXIT_LIMIT);
    assert_refused_naming(&out, &["fsync", "sometimes", "never", "every_sec", "always"]);

    let (_dir, path) = config_file(r#"{"listen":"127.0.0.1:0","log_level":"loud"}"#);
    let out = run_to_exit(&[&path], EXIT_LIMIT);
    assert_refused_naming(&out, &["log_level", "loud", "off", "error", "warn", "info", "debug", "trace"]);
}

/// A bad `--fsync` or `--log-level` is refused the same way: flag, value and allowed values.
#[test]
fn bad_enum_flag_is_an_error_naming_flag_value_and_choices() {
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--fsync", "sometimes"], EXIT_LIMIT);
    assert_refused_naming(&out, &["--fsync", "sometimes", "never", "every_sec", "always"]);

    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--log-level", "loud"], EXIT_LIMIT);
    assert_refused_naming(&out, &["--log-level", "loud", "off", "error", "warn", "info", "debug", "trace"]);
}

/// Every fsync policy and log level is accepted, from the file and from the flags.
#[test]
fn every_fsync_policy_and_log_level_serves() {
    for (fsync, level) in [("never", "off"), ("every_sec", "error"), ("always", "trace")] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let s = TestServer::start(&[
            "--data-dir",
            data,
            "--volume-size",
            "65536",
            "--volume-count",
            "2",
            "--fsync",
            fsync,
            "--log-level",
            level,
        ]);
        let mut c = s.connect();
        c.check(&put("b", "k", "1"), OK_EMPTY);
        c.check(&get("b", "k"), &ok("1"));
    }
    assert_config_serves(r#"{"listen":"127.0.0.1:0","fsync":"always","log_level":"warn","data_dir":null}"#);
}

/// The seed's config file keys (`CACHE_SERVER_IP`, `CACHE_SERVER_PORT`,
/// `CACHE_WORKERS`, `CACHE_VERBOSE`, `API_PATH`) are accepted and the server
/// listens where they say.
#[test]
fn seed_config_keys_are_accepted() {
    assert_config_serves(
        r#"{"CACHE_SERVER_IP":"127.0.0.1","CACHE_SERVER_PORT":0,"CACHE_WORKERS":4,"CACHE_VERBOSE":false,"API_PATH":"/api"}"#,
    );
    assert_config_serves(
        r#"{"CACHE_SERVER_IP":"127.0.0.1","CACHE_SERVER_PORT":0,"CACHE_WORKERS":2,"CACHE_VERBOSE":true,"API_PATH":"/api"}"#,
    );
}

/// The seed README's old key names (`SERVER_IP`, `SERVER_PORT`, `WORKERS`)
/// are accepted too.
#[test]
fn readme_alias_keys_are_accepted() {
    assert_config_serves(r#"{"SERVER_IP":"127.0.0.1","SERVER_PORT":0,"WORKERS":3}"#);
}

/// Every documented config key is accepted, and the values are used.
#[test]
fn all_documented_config_keys_are_accepted() {
    let s = assert_config_serves(
        r#"{"listen":"127.0.0.1:0","workers":3,"log_level":"warn","slow_log_ms":50,
            "max_request_bytes":100000,"max_key_bytes":100,"max_value_bytes":20,
            "max_connections":50,"sweep_interval_ms":50}"#,
    );
    let mut c = s.connect();
    c.check(
        &put("b", "k", &format!("\"{}\"", "v".repeat(30))),
        &err("Value too large: 32 bytes, max_value_bytes is 20"),
    );
}

/// Settings from the config file take effect when no flag overrides them.
#[test]
fn config_file_settings_apply() {
    let s = assert_config_serves(r#"{"listen":"127.0.0.1:0","max_key_bytes":4}"#);
    let mut c = s.connect();
    c.check(&put("b", "1234", "1"), OK_EMPTY);
    c.check(&put("b", "12345", "1"), &err("Key too long: 5 bytes, max_key_bytes is 4"));
}

/// Command-line flags override the config file: `--listen` beats both
/// `listen` and the seed's `CACHE_SERVER_*` keys (pointed at a port that
/// is taken), and `--max-key-bytes` beats `max_key_bytes`.
#[test]
fn flags_override_config_file() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let s = TestServer::start_with_config(
        &format!(r#"{{"listen":"127.0.0.1:{port}","max_key_bytes":4}}"#),
        &["--listen", "127.0.0.1:0", "--max-key-bytes", "8"],
    );
    assert_ne!(s.addr().port(), port, "the file's listen address won over --listen");
    let mut c = s.connect();
    c.check(&put("b", "12345678", "1"), OK_EMPTY);
    c.check(&put("b", "123456789", "1"), &err("Key too long: 9 bytes, max_key_bytes is 8"));

    let s2 = TestServer::start_with_config(
        &format!(r#"{{"CACHE_SERVER_IP":"127.0.0.1","CACHE_SERVER_PORT":{port},"CACHE_VERBOSE":false}}"#),
        &["--listen", "127.0.0.1:0"],
    );
    assert_ne!(s2.addr().port(), port, "CACHE_SERVER_PORT won over --listen");
    s2.connect().check(PING, PONG);
    drop(taken);
}

/// The server prints exactly one stdout line,
/// `bankcache: json listening on 127.0.0.1:PORT`, with the real port, and
/// nothing else on stdout (logs go to stderr), even through shutdown.
#[test]
fn stdout_is_exactly_the_listening_line() {
    let mut s = TestServer::start(&["--log-level", "debug"]);
    let port = s.addr().port();
    assert_ne!(port, 0);
    assert_eq!(s.listen_line(), format!("bankcache: json listening on 127.0.0.1:{port}\n"));
    // The HTTP port's line came right after it (the harness read it): its port is a real one.
    assert_ne!(s.http_addr().port(), 0);
    let mut c = s.connect();
    c.check(PING, PONG);
    c.check(r#"{"op":"nope"}"#, INVALID_OP);
    drop(c);
    s.signal("TERM");
    let status = s.wait_exit(EXIT_LIMIT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(s.remaining_stdout(), "", "extra stdout output after the listening line");
}

/// The server turns transparent huge pages off for itself (they inflate the RSS of many small entries),
/// which Linux reports in the process's status.
#[cfg(target_os = "linux")]
#[test]
fn transparent_huge_pages_are_off() {
    let mut s = TestServer::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    // Kernels before 5.0 do not report it; nothing to check there.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    s.signal("TERM");
    assert_eq!(s.wait_exit(EXIT_LIMIT).code(), Some(0));
}

/// Sends `sig` while a request is in flight and an idle client is
/// connected: the in-flight requests are answered, the server closes the
/// connections, stops listening and exits with status 0.
fn graceful_stop(sig: &str) {
    let mut s = TestServer::start(&[]);
    let addr = s.addr();
    let mut idle = s.connect();
    idle.check(PING, PONG);
    let mut c = s.connect();
    c.check(PING, PONG);

    c.send(&format!("{}\n{}\n", put("b", "k", r#""in flight""#), get("b", "k")));
    s.signal(sig);
    c.expect_line(OK_EMPTY, "put sent just before the signal");
    c.expect_line(&ok(r#""in flight""#), "get sent just before the signal");

    let status = s.wait_exit(EXIT_LIMIT);
    assert_eq!(status.code(), Some(0), "exit status after SIG{sig}: {status}; stderr:\n{}", s.stderr());
    c.expect_eof();
    idle.expect_eof();
    assert!(TcpStream::connect(addr).is_err(), "still accepting connections after exit");
}

/// SIGTERM stops the server gracefully (exit 0, in-flight request answered).
#[test]
fn sigterm_answers_in_flight_request_and_exits_zero() {
    graceful_stop("TERM");
}

/// SIGINT (Ctrl-C) stops the server gracefully too.
#[test]
fn sigint_answers_in_flight_request_and_exits_zero() {
    graceful_stop("INT");
}

/// At start the server says, on stderr at info level, which config file it read, its ports, where its
/// data lives and how much there is (or that nothing persists), the memory limit and the fsync policy.
#[test]
fn startup_summary_says_what_the_server_is_doing() {
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start(&["--data-dir", data.path().to_str().unwrap(), "--fsync", "always"]);
    assert!(eventually(Duration::from_secs(5), || s.stderr().contains("memory limit")), "{}", s.stderr());
    let log = s.stderr();
    let data_dir = std::fs::canonicalize(data.path()).unwrap();
    for part in [
        format!("bankcache {}: config ", env!("CARGO_PKG_VERSION")),
        "config.json".into(),
        format!("json port {}", s.addr()),
        format!("http port {}", s.http_addr()),
        "2 workers".into(),
        format!("disk store in {}: 10 volume files of 1 GiB (created sparse", data_dir.display()),
        "fsync always; data persists across restarts".into(),
        "memory limit 1 GiB".into(),
    ] {
        assert!(log.contains(&part), "the start-up log lacks {part:?}:\n{log}");
    }

    let s = TestServer::start(&["--data-dir", "none", "--memory-max-bytes", "1572864"]);
    assert!(eventually(Duration::from_secs(5), || s.stderr().contains("memory limit")), "{}", s.stderr());
    let log = s.stderr();
    for part in ["memory only (no data_dir): nothing persists across restarts", "memory limit 1.5 MiB"] {
        assert!(log.contains(part), "the start-up log lacks {part:?}:\n{log}");
    }
}

/// Started where there is no `config.json` and given none, the server says it runs on built-in defaults
/// (rather than silently becoming memory-only, as a server started from the wrong directory would).
#[test]
fn startup_summary_says_when_no_config_file_was_read() {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(server_program())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "none"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let said = eventually(Duration::from_secs(10), || read().contains("memory limit"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(said, "{}", read());
    assert!(
        read().contains("built-in defaults (no config file named, and no ./config.json here)"),
        "{}",
        read()
    );
}
