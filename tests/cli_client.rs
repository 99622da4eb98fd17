//! `bankcache-cli` (built from tools/cli/) against a real server: output and exit codes.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::TestServer;

/// The CLI binary, built beside the server's by `cargo test --workspace`.
fn cli_binary() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_bankcache"));
    let cli = server.with_file_name("bankcache-cli");
    assert!(cli.exists(), "{} is missing: run the tests with `cargo test --workspace`", cli.display());
    cli
}

fn cli(server: &TestServer, args: &[&str]) -> Output {
    Command::new(cli_binary()).arg("--addr").arg(server.addr().to_string()).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each command prints what a shell script expects and exits 0, 1 for a missing key, 2 for a usage
/// error, 3 for any other server error.
#[test]
fn commands_print_and_exit_as_documented() {
    let s = TestServer::start(&[]);
    let ok = |out: &Output| assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ping = cli(&s, &["ping"]);
    ok(&ping);
    assert_eq!(stdout(&ping), "pong\n", "a word, as redis-cli prints PONG");
    ok(&cli(&s, &["put", "users", "ann", r#"{"age":41}"#]));
    ok(&cli(&s, &["put", "users", "bob", "hello", "--lifetime", "60"]));
    ok(&cli(&s, &["put", "users", "num", "42", "--string"]));
    assert_eq!(stdout(&cli(&s, &["get", "users", "ann"])), "{\"age\":41}\n");
    assert_eq!(stdout(&cli(&s, &["get", "users", "bob"])), "\"hello\"\n");
    assert_eq!(stdout(&cli(&s, &["--raw", "get", "users", "bob"])), "hello\n");
    assert_eq!(stdout(&cli(&s, &["get", "users", "num"])), "\"42\"\n");
    assert_eq!(stdout(&cli(&s, &["incr", "users", "num", "-2.5"])), "39.5\n");
    assert_eq!(stdout(&cli(&s, &["keys", "users"])), "ann\nbob\nnum\n");
    // A scan page: the next cursor, then the keys (slot order: put order here).
    assert_eq!(stdout(&cli(&s, &["scan", "users"])), "0\nann\nbob\nnum\n");
    assert_eq!(stdout(&cli(&s, &["scan", "users", "--count", "2"])), "2\nann\nbob\n");
    assert_eq!(stdout(&cli(&s, &["scan", "users", "--cursor", "2", "--count", "2"])), "0\nnum\n");
    assert_eq!(stdout(&cli(&s, &["scan", "users", "--prefix", "b"])), "0\nbob\n");
    assert_eq!(stdout(&cli(&s, &["scan", "nobody"])), "0\n");
    assert_eq!(stdout(&cli(&s, &["banks"])), "users\n");
    assert!(stdout(&cli(&s, &["stats"])).contains("ops_put 3\n"));

    let missing = cli(&s, &["get", "users", "nobody"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing), "");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Key nobody doesn't exist"));
    assert_eq!(cli(&s, &["delete", "users", "nobody"]).status.code(), Some(1));
    assert_eq!(cli(&s, &["incr", "users", "ann", "1"]).status.code(), Some(3));
    assert_eq!(cli(&s, &["get", "users"]).status.code(), Some(2));
    ok(&cli(&s, &["delete", "users", "ann"]));
    ok(&cli(&s, &["reset", "users"]));
    assert_eq!(stdout(&cli(&s, &["keys", "users"])), "");
}

/// What the CLI shows for what the reply alone tells: a byte value as the base64 text the wire carries,
/// and a missing key (of any op that names one, any characters) as the server's own message, exit 1.
#[test]
fn byte_values_and_missing_keys_print_as_the_wire_says() {
    let s = TestServer::start(&[]);
    let mut client = bankcache_client::Client::connect(s.addr()).unwrap();
    client.put_bytes("files", "logo", b"\x89PNG\r\n", None).unwrap();
    let get = cli(&s, &["get", "files", "logo"]);
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert_eq!(stdout(&get), "\"iVBORw0K\"\n");
    assert_eq!(stdout(&cli(&s, &["--raw", "get", "files", "logo"])), "iVBORw0K\n");
    for args in [
        ["get", "b", "ключ \"q\""],
        ["delete", "b", "ключ \"q\""],
        ["touch", "b", "ключ \"q\""],
        ["incr", "b", "ключ \"q\""],
    ] {
        let args: Vec<&str> = if args[0] == "incr" { [&args[..], &["1"]].concat() } else { args.to_vec() };
        let out = cli(&s, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(stdout(&out), "");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "(error) Key ключ \"q\" doesn't exist\n",
            "{args:?}"
        );
    }
    // A refusal that names the key is a server error, not a miss.
    client.put("b", "text", "abc", None).unwrap();
    let out = cli(&s, &["incr", "b", "text", "1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "(error) The value for key text isn't a number\n");
}

/// A server that cannot be reached is exit code 4, with one message that says where and what to check.
#[test]
fn unreachable_server_is_exit_4() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out =
        Command::new(cli_binary()).args(["--addr", &format!("127.0.0.1:{port}"), "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("bankcache-cli: 127.0.0.1:{port}: cannot connect: ")), "{err}");
    assert_eq!(err.matches("connect").count(), 1, "the message repeats itself: {err}");
    assert!(err.contains("is bankcache running there?"), "{err}");
}

/// Pointed at the HTTP port by mistake, the CLI says so instead of a bare protocol error.
#[test]
fn the_http_port_by_mistake_gets_a_hint() {
    let s = TestServer::start(&[]);
    let out =
        Command::new(cli_binary()).args(["--addr", &s.http_addr().to_string(), "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("answered in HTTP") && err.contains("JSON port (10001 by default)"), "{err}");
}

/// A VALUE that starts like JSON but is not JSON is refused (exit 2, nothing stored), not stored as a
/// string; `--string` stores it as text; plain words are strings as before.
#[test]
fn a_value_that_is_almost_json_is_refused() {
    let s = TestServer::start(&[]);
    for bad in ["[1,2", "{\"a\":", "\"unterminated"] {
        let out = cli(&s, &["put", "users", "k", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not valid JSON") && err.contains("--string"), "{err}");
    }
    assert_eq!(cli(&s, &["get", "users", "k"]).status.code(), Some(1), "nothing was stored");
    let ok = |out: &Output| assert_eq!(out.status.code(), Some(0), "{out:?}");
    ok(&cli(&s, &["put", "users", "k", "[1,2", "--string"]));
    assert_eq!(stdout(&cli(&s, &["get", "users", "k"])), "\"[1,2\"\n");
    ok(&cli(&s, &["put", "users", "w", "hello world"]));
    assert_eq!(stdout(&cli(&s, &["get", "users", "w"])), "\"hello world\"\n");
}

/// Without a command the CLI reads commands line by line, as a prompt would, with quoting.
#[test]
fn interactive_mode_runs_each_line() {
    let s = TestServer::start(&[]);
    let mut child = Command::new(cli_binary())
        .args(["--addr", &s.addr().to_string()])
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"put b \"two words\" '{\"x\": 1}'\nget b \"two words\"\nnonsense\nkeys b\nhelp\nquit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = stdout(&out);
    assert!(printed.starts_with("OK\n{\"x\":1}\ntwo words\n"), "{printed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
    // `help` lists the commands and how to leave, and nothing meant for the code's readers.
    let help = format!("{printed}{}", String::from_utf8_lossy(&out.stderr));
    for part in ["put", "scan", "stats", "quit, exit or Ctrl-D leaves the prompt"] {
        assert!(help.contains(part), "help lacks {part:?}: {help}");
    }
    assert!(!help.contains("for parsing lines"), "help shows a code comment: {help}");
}

/// With a token on the server: the CLI sends `--auth-token` or `BANKCACHE_AUTH_TOKEN` first (the flag
/// wins), and exits 5 when the token is wrong or missing.
#[test]
fn the_token_comes_from_the_flag_or_the_environment_and_a_bad_one_exits_5() {
    let s = TestServer::start(&["--auth-token", "cli-s3cret"]);
    let with_env = |token: &str, args: &[&str]| {
        Command::new(cli_binary())
            .arg("--addr")
            .arg(s.addr().to_string())
            .args(args)
            .env("BANKCACHE_AUTH_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = cli(&s, &["--auth-token", "cli-s3cret", "put", "b", "k", "1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = with_env("cli-s3cret", &["get", "b", "k"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), "1\n".to_string()), "{out:?}");
    let out = with_env("wrong", &["--auth-token", "cli-s3cret", "get", "b", "k"]);
    assert_eq!(out.status.code(), Some(0), "the flag wins over the environment: {out:?}");
    let out = with_env("wrong", &["get", "b", "k"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid token"), "{out:?}");
    let out = cli(&s, &["get", "b", "k"]);
    assert_eq!(out.status.code(), Some(5), "no token: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-token"), "{out:?}");
}
