//! The README's examples, run as written against a real server: the netcat session, the session of every
//! op, the curl commands of the file API and the `bankcache-cli` session. Each example is read from the
//! README itself, so an example that drifts from what the server does fails here. Only the address changes:
//! the tests' servers listen on free ports, so `localhost:1234`, `127.0.0.1:10001` and the CLI's default
//! address become the test server's.
//!
//! (The README's Rust snippet is compiled as a doctest, see `ReadmeDoctests` in src/lib.rs.)

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

const README: &str = include_str!("../README.md");

/// A fenced code block of the README: the line its fence is on, and its lines.
struct Block {
    line: usize,
    lines: Vec<&'static str>,
}

/// Every fenced code block.
fn blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in README.lines().enumerate() {
        if line.starts_with("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => open = Some(Block { line: n + 1, lines: Vec::new() }),
            }
        } else if let Some(block) = open.as_mut() {
            block.lines.push(line);
        }
    }
    blocks
}

/// The one block whose first line is `first`.
fn block_starting(first: &str) -> Block {
    let mut found: Vec<Block> = blocks().into_iter().filter(|b| b.lines.first() == Some(&first)).collect();
    assert_eq!(found.len(), 1, "the README has {} blocks starting with {first:?}", found.len());
    found.remove(0)
}

/// Plays a session of request lines, each followed by its reply line, on one connection; `...` in a reply
/// stands for the rest of it.
fn play_session(block: &Block, what: &str) {
    let server = TestServer::start(&[]);
    let mut c = server.connect();
    let lines: Vec<&str> = block.lines.iter().copied().filter(|l| !l.starts_with("$ ")).collect();
    assert!(
        lines.len() >= 2 && lines.len() % 2 == 0,
        "{what} (README line {}): not request/reply pairs",
        block.line
    );
    for pair in lines.chunks(2) {
        let (request, reply) = (pair[0], pair[1]);
        let got = c.request(request);
        let got = got.trim_end_matches('\n');
        match reply.split_once("...") {
            Some((head, _)) => {
                assert!(got.starts_with(head), "{what}: {request} answered {got}, README says {reply}")
            }
            None => assert_eq!(got, reply, "{what}: the reply to {request}"),
        }
    }
}

/// "A netcat session" runs as shown.
#[test]
fn the_netcat_session_runs_as_shown() {
    play_session(&block_starting("$ nc localhost 10001"), "the netcat session");
}

/// The session of every op ("Operations") runs in order as shown.
#[test]
fn the_session_of_every_op_runs_as_shown() {
    let first = r#"{"op":"put","bank":"1","key":"test1","value":"test1v","lifetime":60}"#;
    play_session(&block_starting(first), "the ops session");
}

/// What a curl line's comment promises: `STATUS "BODY"`, then `Header: value` pairs, or `HEAD: ...`.
struct Promise {
    status: u16,
    body: Option<String>,
    headers: Vec<(String, String)>,
}

fn promise(comment: &str) -> Promise {
    // A remark in parentheses at the end says when it holds; the test's store is as it says (empty).
    let comment = comment.split(" (").next().unwrap_or(comment).trim();
    if let Some(rest) = comment.strip_prefix("HEAD:") {
        assert!(rest.contains("no body"), "{comment}");
        return Promise { status: 200, body: Some(String::new()), headers: Vec::new() };
    }
    let mut parts = comment.split(", ");
    let first = parts.next().unwrap();
    let (status, body) = first.split_once(' ').unwrap_or((first, ""));
    let body = body.trim();
    let body = (!body.is_empty()).then(|| body.trim_matches('"').to_owned());
    let headers = parts
        .map(|h| {
            let (name, value) =
                h.split_once(": ").unwrap_or_else(|| panic!("not a header: {h:?} in {comment}"));
            (name.to_ascii_lowercase(), value.to_owned())
        })
        .collect();
    Promise { status: status.parse().unwrap_or_else(|_| panic!("no status in {comment:?}")), body, headers }
}

/// The file API's curl commands get the statuses, bodies and headers their comments say.
#[test]
fn the_curl_commands_of_the_file_api_answer_as_shown() {
    let curl = ["/usr/bin/curl", "/usr/local/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("this test needs curl (scripts/test.sh installs it)");
    let data = tempfile::tempdir().unwrap();
    let server =
        TestServer::start(&["--data-dir", data.path().to_str().unwrap(), "--volume-size", "1048576"]);
    let block = block_starting("curl -X PUT localhost:1234/foo --data-binary 'hello world'   # 200 \"ok\", X-Position: 0,0,83 (on an empty store)");
    let scratch = tempfile::tempdir().unwrap();
    let (head_path, body_path) = (scratch.path().join("head"), scratch.path().join("body"));
    for line in &block.lines {
        let (command, comment) = line.split_once('#').expect("a comment saying what the answer is");
        let words = shell_words::split(command).unwrap();
        assert_eq!(words[0], "curl");
        let mut args: Vec<String> = words[1..]
            .iter()
            .filter(|w| *w != "-i") // the headers are read from -D below
            .map(|w| w.replace("localhost:1234", &server.http_addr().to_string()))
            .collect();
        args.extend(["-s".into(), "-D".into(), head_path.display().to_string()]);
        args.extend(["-o".into(), body_path.display().to_string()]);
        let out = Command::new(curl).args(&args).output().unwrap();
        assert!(out.status.success(), "{line}: curl failed: {out:?}");
        let head = std::fs::read_to_string(&head_path).unwrap();
        let body = std::fs::read_to_string(&body_path).unwrap_or_default();
        let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let want = promise(comment);
        assert_eq!(status, want.status, "{line}\n{head}{body}");
        if let Some(want_body) = &want.body {
            // With -I curl writes the head where the body would go: nothing else may follow it.
            let body = if words.iter().any(|w| w == "-I") {
                body.strip_prefix(&head).unwrap_or(&body)
            } else {
                &body
            };
            assert_eq!(body.trim_end_matches('\n'), want_body, "{line}");
        }
        for (name, value) in &want.headers {
            let got = head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
            });
            assert_eq!(got.as_deref(), Some(value.as_str()), "{line}: header {name}\n{head}");
        }
    }
}

/// The REST API's curl commands (`?as=json`, an entry's headers) answer the envelopes and headers their
/// comments say: `# BODY, Header: value, …` (a `max-age` within a few seconds of the one shown).
#[test]
fn the_curl_commands_of_the_rest_api_answer_as_shown() {
    let curl = ["/usr/bin/curl", "/usr/local/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("this test needs curl (scripts/test.sh installs it)");
    let server = TestServer::start(&[]);
    let block = block_starting("curl -X POST 'localhost:1234/bank/b/entry/cfg?as=json&lifetime=60' --data-binary '{\"a\": [1, 2]}'   # {\"status\": \"ok\", \"data\": {}}");
    for line in &block.lines {
        let (command, comment) = line.split_once("# ").expect("a comment saying what the answer is");
        let mut args: Vec<String> = shell_words::split(command).unwrap()[1..]
            .iter()
            .map(|w| w.replace("localhost:1234", &server.http_addr().to_string()))
            .collect();
        args.push("-s".into());
        let out = Command::new(curl).args(&args).output().unwrap();
        assert!(out.status.success(), "{line}: curl failed: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
        let (head, body) =
            text.split_once("\n\n").filter(|_| args.contains(&"-i".into())).unwrap_or(("", &text));
        let (want_body, headers) = comment.split_once(", X-").map_or((comment, None), |(b, h)| (b, Some(h)));
        assert_eq!(body.trim_end(), want_body.trim_end(), "{line}");
        for header in headers.map(|h| format!("X-{h}")).iter().flat_map(|h| h.split(", ")) {
            let (name, value) = header.split_once(": ").unwrap_or_else(|| panic!("not a header: {header:?}"));
            let got = head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            });
            let got = got.unwrap_or_else(|| panic!("{line}: no {name}\n{head}"));
            match value.strip_prefix("max-age=") {
                Some(shown) => {
                    let (shown, got): (u64, u64) =
                        (shown.parse().unwrap(), got.trim_start_matches("max-age=").parse().unwrap());
                    assert!(got <= shown + 1 && got + 5 >= shown, "{line}: {name}: {got}");
                }
                None => assert_eq!(got, value, "{line}: header {name}\n{head}"),
            }
        }
    }
}

/// `bankcache-cli`, built beside the server by `cargo test --workspace`.
fn cli_binary() -> PathBuf {
    let cli = PathBuf::from(server_program()).with_file_name("bankcache-cli");
    assert!(cli.exists(), "{} is missing: run the tests with `cargo test --workspace`", cli.display());
    cli
}

/// The `bankcache-cli` session prints what it shows, and exits with the codes it shows.
#[test]
fn the_cli_session_runs_as_shown() {
    let server = TestServer::start(&[]);
    let addr = server.addr().to_string();
    let block = block_starting("$ bankcache-cli ping");
    // Commands with what they print (stdout, then stderr, then the exit code where `echo $?` asks).
    let mut steps: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in &block.lines {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command, Vec::new())),
            None => steps.last_mut().expect("output before any command").1.push(line),
        }
    }
    for (command, shown) in steps {
        let command = command.split("  #").next().unwrap().trim();
        let (command, echo_status) = match command.strip_suffix("; echo $?") {
            Some(c) => (c, true),
            None => (command, false),
        };
        let mut words = shell_words::split(command).unwrap();
        assert_eq!(words.remove(0), "bankcache-cli");
        let mut args = vec!["--addr".to_string(), addr.clone()];
        let mut input = String::new();
        let mut want: Vec<&str> = shown.clone();
        if let Some(i) = words.iter().position(|w| w == "--addr") {
            // The prompt: the lines shown after it are typed at it, and what they print follows.
            words.drain(i..=i + 1);
            let prompt = format!("bankcache {}> ", "127.0.0.1:10001");
            want.clear();
            for line in &shown {
                match line.strip_prefix(&prompt) {
                    Some(typed) => input.push_str(&format!("{typed}\n")),
                    None => want.push(line),
                }
            }
        }
        args.extend(words);
        let mut child = Command::new(cli_binary())
            .args(&args)
            .env("HOME", std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let mut printed = String::from_utf8_lossy(&out.stdout).into_owned();
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
        if echo_status {
            printed.push_str(&format!("{}\n", out.status.code().unwrap_or(-1)));
        }
        let want: String = want.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(printed, want, "`{command}` (README line {})", block.line);
    }
}
