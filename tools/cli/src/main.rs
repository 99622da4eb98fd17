//! `bankcache-cli`: a command-line client, as redis-cli is for Redis.
//!
//! With a command it runs that one op and exits with a code a shell script can rely on; without one it
//! opens an interactive prompt with line editing and history (kept in `~/.bankcache_history`).
//!
//! It is a thin shell over the client library, so that it talks to the server exactly as programs do and
//! knows nothing of the wire format: each command becomes one `bankcache_proto::Op`, sent by
//! `bankcache_client::Client::send`, whose typed reply says whether the op succeeded, found its key missing
//! or was refused. Its dependencies: `bankcache-client` (the connection and the typed replies),
//! `bankcache-proto` (the `Op` to send, and the missing-key message to show when the reply says "missing"),
//! `serde_json` (a VALUE given as JSON, and printing data), `base64` (a byte value is shown as the base64
//! text the wire carries), `clap`, `rustyline` and `shell-words` (the command line and the prompt).

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitCode;

use bankcache_client::{Client, Error, Reply};
use bankcache_proto::reply::missing_message;
use bankcache_proto::{Op, OpKind};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use rustyline::error::ReadlineError;
use serde_json::Value;

/// Exit codes.
mod code {
    /// The op succeeded.
    pub const OK: u8 = 0;
    /// The key (or bank) does not exist.
    pub const MISSING: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// The server answered with an error.
    pub const SERVER: u8 = 3;
    /// The server could not be reached, or answered something that is not a reply.
    pub const CONNECTION: u8 = 4;
    /// The server refused the token, or needs one and none was given.
    pub const AUTH: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "bankcache-cli",
    version,
    about = "Command-line client for bankcache",
    after_help = "Without a command, starts an interactive prompt (history in ~/.bankcache_history).\n\
                  Exit codes: 0 ok, 1 key does not exist, 2 usage error, 3 server error, 4 connection error,\n\
                  5 authentication failed."
)]
struct Cli {
    /// The server's JSON port, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:10001", global = true)]
    addr: String,
    /// Print string values without their JSON quotes.
    #[arg(long, global = true)]
    raw: bool,
    /// The server's auth_token, sent first on the connection; the flag wins over the environment variable
    /// (which keeps it out of the shell's history and of `ps`).
    #[arg(long, global = true, env = "BANKCACHE_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// One op. The same commands work at the interactive prompt.
#[derive(Subcommand, Debug)]
enum Command {
    /// Check that the server answers.
    Ping,
    /// Store VALUE under KEY. VALUE is taken as JSON when it parses as JSON (42, true, {"a":1}, "text"),
    /// and as a string otherwise; a VALUE that starts like JSON ({, [ or ") but is not JSON is refused.
    Put {
        bank: String,
        key: String,
        value: String,
        /// Seconds the value lives (fractions allowed).
        #[arg(long)]
        lifetime: Option<f64>,
        /// Store VALUE as a string even if it parses as JSON.
        #[arg(long)]
        string: bool,
    },
    /// Print the value of KEY.
    Get { bank: String, key: String },
    /// Delete KEY.
    Delete { bank: String, key: String },
    /// Restart KEY's lifetime.
    Touch { bank: String, key: String },
    /// Add DELTA to the number stored under KEY and print the result.
    Incr {
        bank: String,
        key: String,
        #[arg(allow_hyphen_values = true)]
        delta: f64,
    },
    /// List the keys of BANK, one per line.
    Keys { bank: String },
    /// List a page of the keys of BANK (bank.scan): the next cursor, then the keys, one per line.
    ///
    /// The first line is the cursor to pass next (0 when the scan is done), then the page's keys, one per
    /// line. Start with cursor 0 and repeat with the printed cursor until it is 0.
    Scan {
        bank: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Where to go on from: 0 starts a scan, then the cursor the last page printed.
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Keys per page at most (the server caps it at 10000).
        #[arg(long, default_value_t = bankcache_proto::op::SCAN_COUNT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
    },
    /// List the banks, one per line.
    Banks,
    /// Remove every key of BANK.
    Reset { bank: String },
    /// Print the server's counters, one `name value` per line.
    Stats,
}

/// The commands alone, for parsing lines typed at the prompt.
#[derive(Parser, Debug)]
#[command(
    name = "",
    no_binary_name = true,
    disable_version_flag = true,
    about = "Commands, one per line (`help COMMAND` for one):",
    after_help = "quit, exit or Ctrl-D leaves the prompt."
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bad VALUE is a usage error, found before any connection is tried.
    if let Some(Command::Put { value, string: false, .. }) = &cli.command {
        if let Err(why) = json_value(value) {
            eprintln!("bankcache-cli: {why}");
            return ExitCode::from(code::USAGE);
        }
    }
    let mut builder = Client::builder();
    if let Some(token) = &cli.auth_token {
        builder = builder.auth_token(token.as_str());
    }
    let mut client = match builder.connect(cli.addr.as_str()) {
        Ok(client) => client,
        Err(e @ Error::Auth(_)) => {
            eprintln!("bankcache-cli: {}: {e}", cli.addr);
            return ExitCode::from(code::AUTH);
        }
        // The client's error already says "cannot connect"; add where, and what to check.
        Err(e) => {
            eprintln!("bankcache-cli: {}: {e} (is bankcache running there? --addr HOST:PORT)", cli.addr);
            return ExitCode::from(code::CONNECTION);
        }
    };
    match cli.command {
        Some(command) => ExitCode::from(run(&mut client, command, cli.raw)),
        None => interactive(&mut client, &cli.addr, cli.raw),
    }
}

/// A `put`'s VALUE as JSON when it is JSON, or as a string; a VALUE that starts like JSON (an object, an
/// array or a quoted string) but does not parse is a mistake, not a string to store.
fn json_value(value: &str) -> Result<Value, String> {
    match serde_json::from_str(value) {
        Ok(json) => Ok(json),
        Err(e) if value.trim_start().starts_with(['{', '[', '"']) => {
            Err(format!("VALUE {value:?} is not valid JSON ({e}); use --string to store it as text"))
        }
        Err(_) => Ok(Value::String(value.to_owned())),
    }
}

/// Runs one command, printing its result to stdout and problems to stderr; returns the exit code.
fn run(client: &mut Client, command: Command, raw: bool) -> u8 {
    if let Command::Put { value, string: false, .. } = &command {
        if let Err(why) = json_value(value) {
            eprintln!("(error) {why}");
            return code::USAGE;
        }
    }
    let op = op(&command);
    match client.send(&op) {
        Ok(Reply::Value(data)) => {
            print_data(op.kind(), &data, raw);
            code::OK
        }
        Ok(Reply::Bytes(bytes)) => {
            // A byte value as the reply carries it: its base64 text, as a JSON string.
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            print_data(op.kind(), &Value::String(text), raw);
            code::OK
        }
        Ok(Reply::Missing) => {
            eprintln!("(error) {}", missing_message(op.key().unwrap_or_default()));
            code::MISSING
        }
        Ok(Reply::Error(message)) if message == bankcache_proto::op::AUTH_REQUIRED => {
            eprintln!("(error) {message} (give the token with --auth-token or BANKCACHE_AUTH_TOKEN)");
            code::AUTH
        }
        Ok(Reply::Error(message)) => {
            eprintln!("(error) {message}");
            code::SERVER
        }
        Err(e) => {
            eprintln!("bankcache-cli: {e}");
            code::CONNECTION
        }
    }
}

/// The op a command sends, borrowing its names. A `put`'s VALUE is JSON when it parses as JSON (and then
/// stored as serde_json writes it back: compact, keys sorted), a string otherwise or with `--string`.
fn op(command: &Command) -> Op<'_> {
    match command {
        Command::Ping => Op::Ping,
        Command::Put { bank, key, value, lifetime, string } => {
            // `run` refused a VALUE that is neither JSON nor plain text.
            let value = if *string {
                Value::String(value.clone())
            } else {
                json_value(value).unwrap_or_else(|_| Value::String(value.clone()))
            };
            // `Value`'s `Display` is serde_json's compact writer, which cannot fail.
            let text = value.to_string().into_bytes();
            Op::Put {
                bank: bank.into(),
                key: key.into(),
                value: bankcache_proto::Value::Json(Cow::Owned(text)),
                lifetime: *lifetime,
            }
        }
        Command::Get { bank, key } => Op::Get { bank: bank.into(), key: key.into() },
        Command::Delete { bank, key } => Op::Delete { bank: bank.into(), key: key.into() },
        Command::Touch { bank, key } => Op::Touch { bank: bank.into(), key: key.into() },
        Command::Incr { bank, key, delta } => Op::Incr { bank: bank.into(), key: key.into(), delta: *delta },
        Command::Keys { bank } => Op::BankKeys { bank: bank.into() },
        Command::Scan { bank, prefix, cursor, count } => {
            Op::BankScan { bank: bank.into(), cursor: *cursor, prefix: prefix.into(), count: *count }
        }
        Command::Banks => Op::BankList,
        Command::Reset { bank } => Op::BankReset { bank: bank.into() },
        Command::Stats => Op::Stats,
    }
}

/// Prints an op's `data`: lists one item per line, a scan's cursor and then its keys one per line (as
/// `redis-cli --raw SCAN` does), counters one `name value` per line, `OK` for ops that return nothing,
/// anything else as JSON (a string without its quotes with `--raw`).
fn print_data(kind: OpKind, data: &Value, raw: bool) {
    let mut out = std::io::stdout().lock();
    let item = |item: &Value| item.as_str().map_or_else(|| item.to_string(), str::to_owned);
    match (kind, data) {
        (OpKind::BankKeys | OpKind::BankList, Value::Array(items)) => {
            for i in items {
                let _ = writeln!(out, "{}", item(i));
            }
        }
        (OpKind::BankScan, Value::Object(page)) => {
            let _ = writeln!(out, "{}", page.get("cursor").map_or_else(String::new, Value::to_string));
            for i in page.get("keys").and_then(Value::as_array).into_iter().flatten() {
                let _ = writeln!(out, "{}", item(i));
            }
        }
        (OpKind::Stats, Value::Object(fields)) => {
            for (name, value) in fields {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        (OpKind::Put | OpKind::Delete | OpKind::Touch | OpKind::BankReset, _) => {
            let _ = writeln!(out, "OK");
        }
        // As redis-cli prints PONG: a word, not a JSON string.
        (OpKind::Ping, Value::String(s)) => {
            let _ = writeln!(out, "{s}");
        }
        (_, Value::String(s)) if raw => {
            let _ = writeln!(out, "{s}");
        }
        _ => {
            let _ = writeln!(out, "{data}");
        }
    }
}

/// The prompt: one command per line, with history; `help` lists the commands, `quit` or Ctrl-D leaves.
fn interactive(client: &mut Client, addr: &str, raw: bool) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("bankcache-cli: cannot start the prompt: {e}");
            return ExitCode::from(code::USAGE);
        }
    };
    let history =
        std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".bankcache_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let prompt = format!("bankcache {addr}> ");
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("bankcache-cli: {e}");
                break;
            }
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if line == "quit" || line == "exit" {
            break;
        }
        let words = match shell_words::split(line) {
            Ok(words) => words,
            Err(e) => {
                eprintln!("(error) {e}");
                continue;
            }
        };
        match Line::try_parse_from(words) {
            Ok(parsed) => {
                run(client, parsed.command, raw);
            }
            // clap's own text: the usage for `help`, the mistake otherwise.
            Err(e) => {
                let _ = e.print();
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}
