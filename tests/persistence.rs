//! Black-box tests of the disk store (`--data-dir`): what survives a restart
//! (graceful or `kill -9`), lifetimes across a restart, FIFO reuse of the
//! volume files (the CacheFS seed's `test_rotate` / `test_multi_files` with
//! JSON values), CacheFS's bugs B.7-1 to B.7-5 (seed-spec.md Part B), damaged
//! volume and index files, writes racing volume reuse, the memory tier's
//! admission after N disk reads, and a full disk.
//!
//! Every test owns a fresh temporary data directory and restarts the real
//! binary on it. A record on disk is a 64-byte header followed by the bank,
//! the key and the value's JSON text, and a record never spans volumes; the
//! arithmetic in the FIFO tests relies on exactly that.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Bytes of a record's header on disk.
const HEADER: usize = 64;

/// A data directory that outlives the servers started on it.
struct DataDir {
    dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> DataDir {
        DataDir { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a server on this data directory with the extra flags.
    fn start(&self, flags: &[&str]) -> TestServer {
        let dir = self.path().to_str().unwrap().to_string();
        let mut args = vec!["--data-dir", dir.as_str()];
        args.extend_from_slice(flags);
        TestServer::start(&args)
    }

    /// `DIR/data/<n>`.
    fn volume(&self, n: u32) -> PathBuf {
        self.path().join("data").join(n.to_string())
    }

    /// `DIR/index/<n>`.
    fn index(&self, n: u32) -> PathBuf {
        self.path().join("index").join(n.to_string())
    }

    /// The volume number `META.txt` names (trailing newline tolerated).
    #[track_caller]
    fn meta(&self) -> String {
        let text = fs::read_to_string(self.path().join("META.txt")).expect("META.txt must exist");
        text.trim_end().to_string()
    }
}

/// SIGTERM, then waits for a clean exit (status 0).
#[track_caller]
fn stop_gracefully(mut s: TestServer) {
    s.signal("TERM");
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "graceful stop exited with {status}; stderr:\n{}", s.stderr());
}

/// SIGKILL, then waits for the process to be gone.
#[track_caller]
fn kill9(mut s: TestServer) {
    s.signal("KILL");
    s.wait_exit(Duration::from_secs(10));
}

/// A JSON string literal whose text is exactly `len` bytes, quotes
/// included, made of `fill`.
fn text_value(len: usize, fill: char) -> String {
    assert!(len >= 2 && fill.is_ascii_alphanumeric());
    format!("\"{}\"", fill.to_string().repeat(len - 2))
}

/// Bytes of the record a put of `value` (JSON text) to `bank`/`key` takes.
fn record_len(bank: &str, key: &str, value: &str) -> usize {
    HEADER + bank.len() + key.len() + value.len()
}

/// A value whose put to `bank`/`key` makes a record of exactly `len` bytes.
fn value_for_record(bank: &str, key: &str, len: usize, fill: char) -> String {
    text_value(len - HEADER - bank.len() - key.len(), fill)
}

/// `s` as it appears inside a JSON string the server writes itself
/// (Python's `json.dumps` with `ensure_ascii`: everything outside
/// printable ASCII as lowercase `\uXXXX`, surrogate pairs above the BMP).
fn py_inner(s: &str) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for u in ch.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out
}

/// The `data` of a `bank.keys` / `bank.list` reply, as the server writes it.
fn py_names<S: AsRef<str>>(list: &[S]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("\"{}\"", py_inner(s.as_ref()))).collect();
    format!("[{}]", items.join(", "))
}

/// `Key <key> doesn't exist`, with the key escaped as the server writes it.
fn missing(key: &str) -> String {
    no_key(&py_inner(key))
}

/// Sends each op in lockstep and asserts its exact reply.
#[track_caller]
fn script(c: &mut Conn, steps: &[(String, String)]) {
    for (op, expected) in steps {
        c.check(op, expected);
    }
}

/// One bank's expected contents: live keys in insertion order with the
/// exact JSON text of their values.
type BankState = (String, Vec<(String, String)>);

/// Asserts the whole visible state: `bank.list` is exactly the banks in
/// order, each bank's `bank.keys` is exactly its keys in order, every key
/// reads back its exact value, and every `(bank, key)` in `gone` is a miss.
#[track_caller]
fn assert_state(c: &mut Conn, banks: &[BankState], gone: &[(&str, &str)]) {
    let bank_names: Vec<&str> = banks.iter().map(|(b, _)| b.as_str()).collect();
    c.check(BANK_LIST, &ok(&py_names(&bank_names)));
    for (bank, entries) in banks {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        c.check(&bank_keys(bank), &ok(&py_names(&keys)));
        for (key, value) in entries {
            c.check(&get(bank, key), &ok(value));
        }
    }
    for (bank, key) in gone {
        c.check(&get(bank, key), &missing(key));
    }
}

/// Puts every `(key, value)` into `bank`, asserting `OK_EMPTY` each time.
#[track_caller]
fn put_all(c: &mut Conn, bank: &str, entries: &[(String, String)]) {
    for (k, v) in entries {
        c.check(&put(bank, k, v), OK_EMPTY);
    }
}

/// Asserts each `(key, value)` of `bank` reads back exactly.
#[track_caller]
fn assert_values(c: &mut Conn, bank: &str, entries: &[(String, String)]) {
    for (k, v) in entries {
        c.check(&get(bank, k), &ok(v));
    }
}

/// Asserts each key of `bank` is a miss.
#[track_caller]
fn assert_missing(c: &mut Conn, bank: &str, keys: &[&str]) {
    for k in keys {
        c.check(&get(bank, k), &missing(k));
    }
}

/// Owned `(key, value)` pairs.
fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The `message` of an error reply line (fails the test on anything else).
#[track_caller]
fn error_message(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}"));
    assert_eq!(v["status"], "error", "expected an error reply, got {line:?}");
    v["message"].as_str().unwrap_or_else(|| panic!("error reply without a message: {line:?}")).to_string()
}

/// Where the first occurrence of `needle` starts in the file.
#[track_caller]
fn find_in_file(path: &Path, needle: &[u8]) -> usize {
    let bytes = fs::read(path).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found in {}", String::from_utf8_lossy(needle), path.display()))
}

/// XORs the byte at `offset` of the file with `mask` in place.
fn flip_byte(path: &Path, offset: usize, mask: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= mask;
    fs::write(path, bytes).unwrap();
}

/// Where the data of a volume ends: one past its last non-zero byte (the
/// files are preallocated, sparse, to the volume size and every record ends
/// with its value's JSON text, which is never a zero byte).
fn data_end(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// One counter from a fresh `stats`.
#[track_caller]
fn counter(c: &mut Conn, name: &str) -> f64 {
    stat(&stats(c), name)
}

// ---------------------------------------------------------------------------
// 1. Every op kind, in every bank, survives a restart
// ---------------------------------------------------------------------------

/// A bank name with non-ASCII, a slash, spaces, quotes and an emoji.
const WEIRD_BANK: &str = "bänk / \"q\" 🎉";

/// Keys any UTF-8 must cover (seed bug B.7-4: multi-byte keys were stored
/// but unreadable; B.7-8: a space broke the loader).
const WEIRD_KEYS: &[&str] = &[
    "with space",
    "a/b/c",
    "/leading/slash/",
    "quo\"te",
    "back\\slash",
    "émoji 🎉",
    "日本語のキー",
    "line\nbreak",
    "tab\tkey",
    "{\"json\":[1,2]}",
    "   ",
    "ctl\u{1}\u{7f}",
    "info",
    "flush",
];

/// Raw JSON text of the value stored under `WEIRD_KEYS[i]`.
fn weird_value(i: usize) -> String {
    match i % 3 {
        0 => format!(r#"{{"i":{i},"s":"wért ✓ 🎉","esc":"\u00e9\"\\"}}"#),
        1 => format!(r#"[ {i} , "x" , null , {{ "deep" : [ [ ] ] }} ]"#),
        _ => format!(r#""line {i}\nnext ☃""#),
    }
}

/// Runs one op of every kind over several banks, each checked against its
/// exact reply, and returns the state the store must then hold and the
/// keys that must be missing.
fn run_every_op(c: &mut Conn) -> (Vec<BankState>, Vec<(&'static str, &'static str)>) {
    let mut steps: Vec<(String, String)> = vec![
        (put("users", "ann", r#"{"age":41}"#), OK_EMPTY.into()),
        (put("users", "moved", "1"), OK_EMPTY.into()),
    ];
    for (i, k) in WEIRD_KEYS.iter().enumerate() {
        steps.push((put(WEIRD_BANK, k, &weird_value(i)), OK_EMPTY.into()));
    }
    let nums = [
        ("int", "5"),
        ("big", "12345678901234567890"),
        ("float", "1.50"),
        ("exp", "1e2"),
        ("neg", "-17"),
        ("null", "null"),
        ("bool", "true"),
        ("strnum", r#""10""#),
        ("nested", r#"{ "x" : [ 1 , {"y": null, "z": "é"} ] ,"w":{}}"#),
    ];
    for (k, v) in nums {
        steps.push((put("nums", k, v), OK_EMPTY.into()));
    }
    steps.extend([
        (put("users", "bob", r#""text""#), OK_EMPTY.into()),
        // Overwrite: new value, same position in bank.keys.
        (put("users", "ann", r#"{ "age" : 42, "tags": ["x", {"y": null}] }"#), OK_EMPTY.into()),
        (put("users", "visits", "10"), OK_EMPTY.into()),
        (incr("users", "visits", r#""2.5""#), ok("12.5")),
        (incr("users", "visits", "1"), ok("13.5")),
        (incr("nums", "int", "2"), ok("7.0")),
        (incr("nums", "strnum", "1"), ok("11.0")),
        // Delete (seed bug B.7-1: deletes came back after a restart).
        (put("users", "gone", "1"), OK_EMPTY.into()),
        (delete("users", "gone"), OK_EMPTY.into()),
        // Delete then put again: moves to the end of bank.keys.
        (delete("users", "moved"), OK_EMPTY.into()),
        (put("users", "moved", r#""back""#), OK_EMPTY.into()),
        // bank.reset: keys before it are gone, keys after it stay.
        (put("reset_me", "k1", "1"), OK_EMPTY.into()),
        (put("reset_me", "k2", "2"), OK_EMPTY.into()),
        (bank_reset("reset_me"), OK_EMPTY.into()),
        (put("reset_me", "k3", r#""after""#), OK_EMPTY.into()),
        // A reset bank stays listed, empty.
        (put("emptied", "x", "1"), OK_EMPTY.into()),
        (bank_reset("emptied"), OK_EMPTY.into()),
        // A bank whose only key was deleted stays listed too.
        (put("deleted_only", "k", "1"), OK_EMPTY.into()),
        (delete("deleted_only", "k"), OK_EMPTY.into()),
        // touch and getouch are logged too.
        (put_ttl("ttl", "t", r#""touched""#, "3600"), OK_EMPTY.into()),
        (touch("ttl", "t"), OK_EMPTY.into()),
        (getouch("ttl", "t"), ok(r#""touched""#)),
        // Overwrite and delete among the weird keys.
        (put(WEIRD_BANK, "a/b/c", r#""overwritten""#), OK_EMPTY.into()),
        (delete(WEIRD_BANK, "line\nbreak"), OK_EMPTY.into()),
    ]);
    script(c, &steps);

    let weird: Vec<(String, String)> = WEIRD_KEYS
        .iter()
        .enumerate()
        .filter(|(_, k)| **k != "line\nbreak")
        .map(|(i, k)| {
            let v = if *k == "a/b/c" { r#""overwritten""#.to_string() } else { weird_value(i) };
            (k.to_string(), v)
        })
        .collect();
    let nums_after: Vec<(String, String)> = nums
        .iter()
        .map(|(k, v)| {
            let v = match *k {
                "int" => "7.0",
                "strnum" => "11.0",
                _ => v,
            };
            (k.to_string(), v.to_string())
        })
        .collect();
    let banks = vec![
        (
            "users".to_string(),
            kv(&[
                ("ann", r#"{ "age" : 42, "tags": ["x", {"y": null}] }"#),
                ("bob", r#""text""#),
                ("visits", "13.5"),
                ("moved", r#""back""#),
            ]),
        ),
        (WEIRD_BANK.to_string(), weird),
        ("nums".to_string(), nums_after),
        ("reset_me".to_string(), kv(&[("k3", r#""after""#)])),
        ("emptied".to_string(), vec![]),
        ("deleted_only".to_string(), vec![]),
        ("ttl".to_string(), kv(&[("t", r#""touched""#)])),
    ];
    let gone = vec![
        ("users", "gone"),
        ("reset_me", "k1"),
        ("reset_me", "k2"),
        ("emptied", "x"),
        ("deleted_only", "k"),
        (WEIRD_BANK, "line\nbreak"),
    ];
    (banks, gone)
}

/// Runs every op, checks the state live, restarts with `restart`, checks
/// the identical state, writes one more key, restarts again and checks
/// once more (a replayed store replays again).
fn every_op_survives(flags: &[&str], restart: fn(TestServer)) {
    let data = DataDir::new();
    let s = data.start(flags);
    let mut c = s.connect();
    let (mut banks, gone) = run_every_op(&mut c);
    assert_state(&mut c, &banks, &gone);
    drop(c);
    restart(s);

    let s = data.start(flags);
    let mut c = s.connect();
    assert_state(&mut c, &banks, &gone);
    c.check(&put("users", "late", r#"{"after":"restart"}"#), OK_EMPTY);
    banks[0].1.push(("late".into(), r#"{"after":"restart"}"#.into()));
    drop(c);
    restart(s);

    let s = data.start(flags);
    let mut c = s.connect();
    assert_state(&mut c, &banks, &gone);
}

/// After a graceful stop (SIGTERM) every bank holds exactly what it held:
/// puts of any JSON under any UTF-8 key, overwrites, deletes, incr results,
/// touch, bank.reset (bank listed and empty, later keys kept), and the
/// order of `bank.list` and `bank.keys`. Default volume settings.
#[test]
fn graceful_restart_keeps_every_op_in_every_bank() {
    every_op_survives(&[], stop_gracefully);
}

/// The same after `kill -9` with `--fsync always`: a killed process loses
/// nothing it acknowledged.
#[test]
fn sigkill_restart_with_fsync_always_keeps_every_op_in_every_bank() {
    every_op_survives(&["--fsync", "always", "--volume-size", "1048576"], kill9);
}

// ---------------------------------------------------------------------------
// 2. Lifetimes across a restart
// ---------------------------------------------------------------------------

/// Lifetimes are absolute deadlines: a key with 2 s to live survives a
/// restart and still expires at its original deadline (the restart does not
/// restart its lifetime); a key that expired before the restart, or was put
/// with a negative lifetime, stays gone; a touch's new deadline is the one
/// that counts after the restart; a key without lifetime stays.
#[test]
fn lifetimes_are_absolute_deadlines_across_restart() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let t0 = Instant::now();
    script(
        &mut c,
        &[
            (put_ttl("b", "short", r#""s""#, "2.0"), OK_EMPTY.into()),
            (put_ttl("b", "expired", r#""e""#, "0.2"), OK_EMPTY.into()),
            (put_ttl("b", "negative", r#""n""#, "-1"), OK_EMPTY.into()),
            (put_ttl("b", "touched", r#""t""#, "1.2"), OK_EMPTY.into()),
            (put("b", "forever", r#""f""#), OK_EMPTY.into()),
        ],
    );
    // touch at 0.5 s: deadline 0.5 + 1.2 = 1.7 s instead of 1.2 s.
    sleep_until(t0, Duration::from_millis(500));
    c.check(&touch("b", "touched"), OK_EMPTY);
    sleep_until(t0, Duration::from_millis(600));
    drop(c);
    stop_gracefully(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    // Shortly after the restart (~0.7 s): "expired" (0.2 s) and "negative"
    // stay gone, the others live.
    c.check(&get("b", "short"), &ok(r#""s""#));
    c.check(&get("b", "touched"), &ok(r#""t""#));
    c.check(&get("b", "forever"), &ok(r#""f""#));
    c.check(&get("b", "expired"), &missing("expired"));
    c.check(&get("b", "negative"), &missing("negative"));
    c.check(&bank_keys("b"), &ok(&py_names(&["short", "touched", "forever"])));

    // 1.35 s: past the original deadline of "touched" (1.2 s), before the
    // one its touch set (1.7 s).
    sleep_until(t0, Duration::from_millis(1350));
    c.check(&get("b", "touched"), &ok(r#""t""#));

    // 2.3 s: past every deadline; had the restart (at ~0.6 s) restarted
    // the lifetimes, "short" would live until ~2.6 s.
    sleep_until(t0, Duration::from_millis(2300));
    c.check(&get("b", "short"), &missing("short"));
    c.check(&get("b", "touched"), &missing("touched"));
    c.check(&bank_keys("b"), &ok(&py_names(&["forever"])));
}

// ---------------------------------------------------------------------------
// 3. FIFO reuse of the volumes
// ---------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// CacheFS's `test_rotate` with JSON values: 1 MiB × 2 volumes and three
/// values whose records are 1 MiB minus 100 bytes (each fits, two do not
/// share a volume). The third put reuses volume 0 and drops the first key;
/// the second and third stay (the seed, which rotated once a volume was
/// *at least* full, dropped the second too). Same after a restart.
#[test]
fn fifo_rotate_drops_the_oldest_volume() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2", "--max-value-bytes", "2000000"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let entries: Vec<(String, String)> = ["k1", "k2", "k3"]
        .iter()
        .zip(['a', 'b', 'c'])
        .map(|(k, fill)| (k.to_string(), value_for_record("b", k, MIB - 100, fill)))
        .collect();
    put_all(&mut c, "b", &entries[..2]);
    // Volumes 0 and 1 each hold one record; nothing is dropped yet.
    assert_values(&mut c, "b", &entries[..2]);
    c.check(&put("b", "k3", &entries[2].1), OK_EMPTY);

    let check = |c: &mut Conn| {
        assert_missing(c, "b", &["k1"]);
        assert_values(c, "b", &entries[1..]);
        c.check(&bank_keys("b"), &ok(&py_names(&["k2", "k3"])));
    };
    check(&mut c);
    assert!(counter(&mut c, "volume_reuses") >= 1.0);
    assert_eq!(data.meta(), "0");
    drop(c);
    stop_gracefully(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    check(&mut c);
}

/// CacheFS's `test_multi_files` with JSON values: 1 MiB × 2 volumes, nine
/// values of 600 KiB of JSON text. Each record (64 + 1 + 1 + 614400 =
/// 614466 bytes) fills a volume on its own, since two (1228932) exceed
/// 1048576, so key n lands in volume (n-1) % 2 and every put from the third
/// on reuses a volume: only keys 8 and 9 survive. (The seed kept 7–9
/// because its volumes grew past `volume_size` by one file: two 600 KiB
/// files per volume.) Same after a restart; `bank.keys` lists only them.
#[test]
fn fifo_multi_files_keeps_only_the_newest_volumes() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2", "--max-value-bytes", "2000000"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let entries: Vec<(String, String)> =
        (1..=9).map(|n| (n.to_string(), text_value(600 * 1024, char::from(b'0' + n as u8)))).collect();
    assert_eq!(record_len("b", "1", &entries[0].1), 614466);
    put_all(&mut c, "b", &entries);

    let check = |c: &mut Conn| {
        assert_missing(c, "b", &["1", "2", "3", "4", "5", "6", "7"]);
        assert_values(c, "b", &entries[7..]);
        c.check(&bank_keys("b"), &ok(&py_names(&["8", "9"])));
    };
    check(&mut c);
    assert!(counter(&mut c, "volume_reuses") >= 7.0);
    drop(c);
    kill9(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    check(&mut c);
}

/// Seed bugs B.7-3 and B.7-2. Volumes of 4096 bytes × 2, records of 1000
/// bytes (a delete's tombstone is 64 + 1 + 1 = 66). Volume 0 gets A(old),
/// B, C, D; volume 1 gets A(new), the tombstone of B, E, F, G (4050
/// bytes); H reuses volume 0. A, rewritten into volume 1 since, survives
/// with its new value (B.7-3: the seed dropped it); B, deleted before the
/// reuse, does not wedge anything and later puts work (B.7-2: the seed's
/// writer broke); C and D are gone. Same after a restart.
#[test]
fn fifo_reuse_keeps_rewritten_keys_and_survives_deleted_ones() {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "2"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let v = |key: &str, fill: char| value_for_record("b", key, 1000, fill);
    let a_new = v("A", 'N');
    script(
        &mut c,
        &[
            (put("b", "A", &v("A", 'o')), OK_EMPTY.into()),
            (put("b", "B", &v("B", 'b')), OK_EMPTY.into()),
            (put("b", "C", &v("C", 'c')), OK_EMPTY.into()),
            (put("b", "D", &v("D", 'd')), OK_EMPTY.into()),
            (put("b", "A", &a_new), OK_EMPTY.into()),
            (delete("b", "B"), OK_EMPTY.into()),
            (put("b", "E", &v("E", 'e')), OK_EMPTY.into()),
            (put("b", "F", &v("F", 'f')), OK_EMPTY.into()),
            (put("b", "G", &v("G", 'g')), OK_EMPTY.into()),
        ],
    );
    let reuses_before_h = counter(&mut c, "volume_reuses");
    c.check(&put("b", "H", &v("H", 'h')), OK_EMPTY);
    assert_eq!(counter(&mut c, "volume_reuses"), reuses_before_h + 1.0, "H must reuse volume 0");
    // Writing keeps working after the reuse (I and J go to volume 0).
    c.check(&put("b", "I", &v("I", 'i')), OK_EMPTY);
    c.check(&put("b", "J", &v("J", 'j')), OK_EMPTY);

    let live: Vec<(String, String)> =
        [("A", 'N'), ("E", 'e'), ("F", 'f'), ("G", 'g'), ("H", 'h'), ("I", 'i'), ("J", 'j')]
            .iter()
            .map(|(k, fill)| (k.to_string(), v(k, *fill)))
            .collect();
    let banks = vec![("b".to_string(), live)];
    let gone = [("b", "B"), ("b", "C"), ("b", "D")];
    assert_state(&mut c, &banks, &gone);
    drop(c);
    stop_gracefully(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    assert_state(&mut c, &banks, &gone);
}

/// `bank.keys` order is part of what a bank holds: when the reuse of a
/// volume drops the first puts of X and Y (put X, Y; then overwritten Y,
/// X in the next volume), the live order X, Y must still be the order after
/// a restart, although the surviving records are in the order Y, X.
#[test]
fn bank_keys_order_survives_restart_after_reuse_dropped_first_puts() {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "3"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let v = |key: &str, fill: char| value_for_record("b", key, 1000, fill);
    // Volume 0: X, Y, P, Q. Volume 1: Y', X', R, S. Volume 2: T, U, W, Z.
    // Then V reuses volume 0: P and Q are dropped, X and Y live on.
    let mut steps = Vec::new();
    for (k, fill) in [("X", 'x'), ("Y", 'y'), ("P", 'p'), ("Q", 'q'), ("Y", 'Y'), ("X", 'X')] {
        steps.push((put("b", k, &v(k, fill)), OK_EMPTY.to_string()));
    }
    for k in ["R", "S", "T", "U", "W", "Z", "V"] {
        steps.push((put("b", k, &v(k, 'z')), OK_EMPTY.to_string()));
    }
    script(&mut c, &steps);
    assert!(counter(&mut c, "volume_reuses") >= 1.0);
    let order = ["X", "Y", "R", "S", "T", "U", "W", "Z", "V"];
    c.check(&bank_keys("b"), &ok(&py_names(&order)));
    c.check(&get("b", "X"), &ok(&v("X", 'X')));
    assert_missing(&mut c, "b", &["P", "Q"]);
    drop(c);
    stop_gracefully(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    c.check(&get("b", "X"), &ok(&v("X", 'X')));
    c.check(&get("b", "Y"), &ok(&v("Y", 'Y')));
    assert_missing(&mut c, "b", &["P", "Q"]);
    c.check(&bank_keys("b"), &ok(&py_names(&order)));
}

/// A record of exactly `volume_size` bytes is stored; one byte more is
/// refused with `Value too large for the disk store...`, stores nothing
/// (the key keeps its value), and the server keeps working, also after a
/// restart.
#[test]
fn record_larger_than_a_volume_is_refused() {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "2"];
    let s = data.start(&flags);
    let mut c = s.connect();
    let exact = value_for_record("b", "big", 4096, 'e');
    c.check(&put("b", "big", &exact), OK_EMPTY);
    c.check(&get("b", "big"), &ok(&exact));

    let over = value_for_record("b", "big", 4097, 'o');
    let reply = c.request(&put("b", "big", &over));
    let msg = error_message(&reply);
    assert!(msg.starts_with("Value too large for the disk store"), "unexpected reply: {reply:?}");
    let reply = c.request(&put("b", "new", &value_for_record("b", "new", 10_000, 'n')));
    assert!(
        error_message(&reply).starts_with("Value too large for the disk store"),
        "unexpected reply: {reply:?}"
    );

    c.check(PING, PONG);
    c.check(&get("b", "big"), &ok(&exact));
    c.check(&get("b", "new"), &missing("new"));
    c.check(&put("b", "small", "1"), OK_EMPTY);
    c.check(&bank_keys("b"), &ok(&py_names(&["big", "small"])));
    drop(c);
    stop_gracefully(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    c.check(&get("b", "big"), &ok(&exact));
    c.check(&get("b", "small"), &ok("1"));
    c.check(&bank_keys("b"), &ok(&py_names(&["big", "small"])));
}

// ---------------------------------------------------------------------------
// 4. The current volume is kept (seed bug B.7-5)
// ---------------------------------------------------------------------------

/// Small keys written into volume 0 survive a restart, and more keys written
/// after it survive the next one (the seed lost everything in its current
/// volume, which had no index yet, and overwrote it from offset 0).
/// `META.txt` names the current volume: 0, then 1 once a volume is full.
#[test]
fn current_volume_survives_restarts() {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "3"];
    let small = |range: std::ops::Range<usize>| -> Vec<(String, String)> {
        range.map(|i| (format!("k{i}"), format!(r#"{{"n":{i}}}"#))).collect()
    };
    let first = small(0..5);
    let second = small(5..10);

    let s = data.start(&flags);
    let mut c = s.connect();
    put_all(&mut c, "b", &first);
    drop(c);
    stop_gracefully(s);
    assert_eq!(data.meta(), "0");

    let s = data.start(&flags);
    let mut c = s.connect();
    assert_values(&mut c, "b", &first);
    put_all(&mut c, "b", &second);
    drop(c);
    kill9(s);
    assert_eq!(data.meta(), "0");

    let s = data.start(&flags);
    let mut c = s.connect();
    let all: Vec<(String, String)> = first.iter().chain(&second).cloned().collect();
    assert_state(&mut c, &[("b".to_string(), all.clone())], &[]);
    // Four records of 1000 bytes: the fourth no longer fits in volume 0.
    let big: Vec<(String, String)> =
        (0..4).map(|i| (format!("big{i}"), value_for_record("b", &format!("big{i}"), 1000, 'x'))).collect();
    put_all(&mut c, "b", &big);
    drop(c);
    stop_gracefully(s);
    assert_eq!(data.meta(), "1");

    let s = data.start(&flags);
    let mut c = s.connect();
    let all: Vec<(String, String)> = all.into_iter().chain(big).collect();
    assert_state(&mut c, &[("b".to_string(), all)], &[]);
}

// ---------------------------------------------------------------------------
// 5. Damaged files
// ---------------------------------------------------------------------------

const VICTIM: &str = r#""VICTIM-VALUE-0123456789""#;

/// Puts `a`, `victim`, `b`, `c` into bank `b` and stops the server with
/// `stop`; returns the other three entries.
fn victim_between_others(data: &DataDir, flags: &[&str], stop: fn(TestServer)) -> Vec<(String, String)> {
    let others = kv(&[("a", r#""first""#), ("b", r#"{"second":2}"#), ("c", "[3]")]);
    let s = data.start(flags);
    let mut c = s.connect();
    put_all(&mut c, "b", &others[..1]);
    c.check(&put("b", "victim", VICTIM), OK_EMPTY);
    put_all(&mut c, "b", &others[1..]);
    drop(c);
    stop(s);
    others
}

/// Flips one byte inside the victim's value in `data/0` (the text stays
/// valid JSON, so only the CRC can tell).
fn flip_victim(data: &DataDir) {
    let at = find_in_file(&data.volume(0), b"VICTIM-VALUE");
    flip_byte(&data.volume(0), at, 0x20); // 'V' becomes 'v'
}

/// Asserts the victim is a miss counted in `crc_failures`, the others read
/// back, and the victim can be written again (and that survives a restart).
fn assert_victim_is_a_counted_miss(data: &DataDir, flags: &[&str], others: &[(String, String)]) {
    let s = data.start(flags);
    let mut c = s.connect();
    assert_values(&mut c, "b", others);
    c.check(&get("b", "victim"), &missing("victim"));
    assert!(counter(&mut c, "crc_failures") >= 1.0, "a damaged read must count in crc_failures");
    c.check(&put("b", "victim", r#""rewritten""#), OK_EMPTY);
    c.check(&get("b", "victim"), &ok(r#""rewritten""#));
    drop(c);
    stop_gracefully(s);

    let s = data.start(flags);
    let mut c = s.connect();
    assert_values(&mut c, "b", others);
    c.check(&get("b", "victim"), &ok(r#""rewritten""#));
}

/// A byte flipped inside a stored value while the server is stopped makes
/// that key a miss after the restart (counted in `crc_failures`), never the
/// damaged bytes; the keys written before and after it are fine.
#[test]
fn flipped_value_byte_is_a_counted_miss() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2"];
    let others = victim_between_others(&data, &flags, stop_gracefully);
    flip_victim(&data);
    assert_victim_is_a_counted_miss(&data, &flags, &others);
}

/// The same with the index files removed too, so start-up has to scan the
/// volume: the damaged record in the middle of the current volume is not
/// its torn tail, and the records after it must not be cut off.
#[test]
fn flipped_value_byte_mid_volume_with_indexes_missing_keeps_later_records() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2"];
    let others = victim_between_others(&data, &flags, stop_gracefully);
    flip_victim(&data);
    for n in 0..2 {
        let _ = fs::remove_file(data.index(n));
    }
    assert_victim_is_a_counted_miss(&data, &flags, &others);
}

/// The same after `kill -9` instead of a graceful stop (so start-up cannot
/// count on the current volume's index being complete): the records after
/// the damaged one must not be cut off either.
#[test]
fn flipped_value_byte_mid_volume_after_sigkill_keeps_later_records() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2"];
    let others = victim_between_others(&data, &flags, kill9);
    flip_victim(&data);
    assert_victim_is_a_counted_miss(&data, &flags, &others);
}

/// Puts `victim` (old value) and fillers into volume 0, then `victim` (new
/// value) into volume 1, preceded by `before` when `first_in_volume` is
/// false, and followed by `after`; stops the server, flips a byte of the
/// new value, restarts, and asserts the key is a miss (the intact older
/// value in volume 0 must not come back) and every other key is fine.
fn damaged_newest_record_case(first_in_volume: bool) {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "3"];
    let s = data.start(&flags);
    let mut c = s.connect();
    // Volume 0: victim(OLD) (77 bytes) + four fillers of 1000 bytes = 4077;
    // the next record opens volume 1.
    let old = r#""OLD-VALUE-0123456789""#;
    let new = r#""NEW-VALUE-0123456789""#;
    c.check(&put("b", "victim", old), OK_EMPTY);
    let fillers: Vec<(String, String)> =
        (0..4).map(|i| (format!("f{i}"), value_for_record("b", &format!("f{i}"), 1000, 'f'))).collect();
    put_all(&mut c, "b", &fillers);
    let mut others = fillers.clone();
    if !first_in_volume {
        let before = ("before".to_string(), value_for_record("b", "before", 1000, 'B'));
        others.push(before.clone());
        put_all(&mut c, "b", &[before]);
    }
    c.check(&put("b", "victim", new), OK_EMPTY);
    others.push(("after".into(), "1".into()));
    c.check(&put("b", "after", "1"), OK_EMPTY);
    drop(c);
    stop_gracefully(s);
    assert_eq!(data.meta(), "1");

    find_in_file(&data.volume(0), b"OLD-VALUE");
    let at = find_in_file(&data.volume(1), b"NEW-VALUE");
    assert_eq!(at == HEADER + "b".len() + "victim".len() + 1, first_in_volume);
    flip_byte(&data.volume(1), at + 2, 0x01);

    let s = data.start(&flags);
    let mut c = s.connect();
    c.check(&get("b", "victim"), &missing("victim"));
    c.check(&get("b", "victim"), &missing("victim"));
    assert_values(&mut c, "b", &others);
    assert!(counter(&mut c, "crc_failures") >= 1.0);
    drop(c);
    stop_gracefully(s);

    // Still a miss after one more restart, not the old value.
    let s = data.start(&flags);
    let mut c = s.connect();
    c.check(&get("b", "victim"), &missing("victim"));
    assert_values(&mut c, "b", &others);
}

/// When the newest record of a key (in volume 1, after another record) is
/// damaged, the key is a miss: its older value, still intact in volume 0,
/// must not come back.
#[test]
fn damaged_newest_record_never_brings_back_an_older_value() {
    damaged_newest_record_case(false);
}

/// The same when the damaged record is the first one of its volume: the
/// rest of the volume stays readable and the older value stays gone.
#[test]
fn damaged_first_record_of_a_volume_never_brings_back_an_older_value() {
    damaged_newest_record_case(true);
}

/// The current volume cut in the middle of its last record (a torn write):
/// after the restart the earlier keys are fine, the torn key is a miss, and
/// new writes work and survive another restart.
#[test]
fn torn_tail_of_current_volume_is_cut() {
    let data = DataDir::new();
    let flags = ["--volume-size", "1048576", "--volume-count", "2"];
    let earlier = kv(&[("k1", r#""one""#), ("k2", r#"{"two":[2]}"#), ("k3", "3")]);
    let torn = text_value(1000, 't');

    let s = data.start(&flags);
    let mut c = s.connect();
    put_all(&mut c, "b", &earlier);
    c.check(&put("b", "torn", &torn), OK_EMPTY);
    drop(c);
    kill9(s);

    let written: usize =
        earlier.iter().map(|(k, v)| record_len("b", k, v)).sum::<usize>() + record_len("b", "torn", &torn);
    let end = data_end(&data.volume(0));
    assert_eq!(end, written, "volume 0 should hold exactly the four records");
    OpenOptions::new().write(true).open(data.volume(0)).unwrap().set_len((end - 500) as u64).unwrap();

    let s = data.start(&flags);
    let mut c = s.connect();
    assert_values(&mut c, "b", &earlier);
    c.check(&get("b", "torn"), &missing("torn"));
    c.check(&put("b", "k4", r#""four""#), OK_EMPTY);
    c.check(&put("b", "torn", r#""whole""#), OK_EMPTY);
    c.check(&get("b", "torn"), &ok(r#""whole""#));
    drop(c);
    kill9(s);

    let s = data.start(&flags);
    let mut c = s.connect();
    let mut all = earlier.clone();
    all.push(("k4".into(), r#""four""#.into()));
    all.push(("torn".into(), r#""whole""#.into()));
    assert_state(&mut c, &[("b".to_string(), all)], &[]);
}

/// Fills volume 0 (with an older value of A and a key D deleted later) and
/// part of volume 1, stops the server, applies `damage` to the files, and
/// asserts the restart rebuilds what the index files would have said:
/// every key back with its newest value, D still deleted, order kept. A
/// second restart (on the rebuilt index) gives the same.
fn index_damage_is_rebuilt(damage: impl Fn(&DataDir)) {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "3"];
    let v = |key: &str, fill: char| value_for_record("b", key, 1000, fill);
    let s = data.start(&flags);
    let mut c = s.connect();
    script(
        &mut c,
        &[
            (put("b", "A", &v("A", 'o')), OK_EMPTY.into()),
            (put("b", "D", &v("D", 'd')), OK_EMPTY.into()),
            (put("b", "F", &v("F", 'f')), OK_EMPTY.into()),
            (put("b", "G", &v("G", 'g')), OK_EMPTY.into()),
            (put("b", "A", &v("A", 'N')), OK_EMPTY.into()),
            (delete("b", "D"), OK_EMPTY.into()),
            (put("b", "E", r#"{"e":"é"}"#), OK_EMPTY.into()),
        ],
    );
    drop(c);
    stop_gracefully(s);
    assert_eq!(data.meta(), "1");
    assert!(data.index(0).exists(), "index/0 must exist once volume 0 is full");

    damage(&data);

    let live: Vec<(String, String)> = vec![
        ("A".into(), v("A", 'N')),
        ("F".into(), v("F", 'f')),
        ("G".into(), v("G", 'g')),
        ("E".into(), r#"{"e":"é"}"#.into()),
    ];
    let banks = vec![("b".to_string(), live)];
    for _ in 0..2 {
        let s = data.start(&flags);
        let mut c = s.connect();
        assert_state(&mut c, &banks, &[("b", "D")]);
        drop(c);
        stop_gracefully(s);
    }
}

/// A missing `index/0` is rebuilt by scanning volume 0.
#[test]
fn missing_index_file_is_rebuilt() {
    index_damage_is_rebuilt(|d| fs::remove_file(d.index(0)).unwrap());
}

/// An `index/0` overwritten with garbage is rebuilt by scanning volume 0.
#[test]
fn garbage_index_file_is_rebuilt() {
    index_damage_is_rebuilt(|d| {
        let garbage: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(151) ^ 0x5a) as u8).collect();
        fs::write(d.index(0), garbage).unwrap();
    });
}

/// An `index/0` cut in half, and `index/1` (the current volume's) removed,
/// are both rebuilt.
#[test]
fn truncated_and_missing_index_files_are_rebuilt() {
    index_damage_is_rebuilt(|d| {
        let len = fs::metadata(d.index(0)).unwrap().len();
        OpenOptions::new().write(true).open(d.index(0)).unwrap().set_len(len / 2).unwrap();
        fs::remove_file(d.index(1)).unwrap();
    });
}

/// A volume file truncated to 0 bytes while the server runs (first a full
/// one, then the current one): gets of its keys are misses, not a crash;
/// the server keeps answering, other keys read fine, and puts keep working.
#[test]
fn volume_truncated_under_a_running_server_reads_as_misses() {
    let data = DataDir::new();
    let flags = ["--volume-size", "4096", "--volume-count", "3"];
    let s = data.start(&flags);
    let mut c = s.connect();
    // Volume 0: old0..old3 (4000 bytes); volume 1: cur0, cur1.
    let v = |key: &str| value_for_record("b", key, 1000, 'v');
    let old: Vec<(String, String)> = (0..4).map(|i| format!("old{i}")).map(|k| (k.clone(), v(&k))).collect();
    let cur: Vec<(String, String)> = (0..2).map(|i| format!("cur{i}")).map(|k| (k.clone(), v(&k))).collect();
    put_all(&mut c, "b", &old);
    put_all(&mut c, "b", &cur);
    // The puts kept their values in RAM too: after a restart they are on disk only, and reads go there.
    stop_gracefully(s);
    let s = data.start(&flags);
    let mut c = s.connect();

    OpenOptions::new().write(true).open(data.volume(0)).unwrap().set_len(0).unwrap();
    c.check(&get("b", "old0"), &missing("old0"));
    c.check(PING, PONG);
    assert_missing(&mut c, "b", &["old1", "old2", "old3"]);
    assert_values(&mut c, "b", &cur);
    c.check(&put("b", "new0", r#""n0""#), OK_EMPTY);
    c.check(&get("b", "new0"), &ok(r#""n0""#));

    OpenOptions::new().write(true).open(data.volume(1)).unwrap().set_len(0).unwrap();
    assert_missing(&mut c, "b", &["cur0", "cur1"]);
    // new0's put kept it in RAM: it is read from there (its newest value) until the server finds its volume
    // cut short; either answer keeps the promise.
    let new0 = c.request(&get("b", "new0"));
    assert!(new0 == ok(r#""n0""#) || new0 == missing("new0"), "{new0}");
    c.check(PING, PONG);
    c.check(&put("b", "new1", r#""n1""#), OK_EMPTY);
    c.check(&get("b", "new1"), &ok(r#""n1""#));
    let mut c2 = s.connect();
    c2.check(PING, PONG);
}

// ---------------------------------------------------------------------------
// 6. kill -9 under write load
// ---------------------------------------------------------------------------

/// Writes distinct keys `w<t>-<n>` in lockstep until the server goes away
/// (or `limit` puts), returning every put that was acknowledged.
fn acked_writer(addr: SocketAddr, t: usize, limit: usize) -> Vec<(String, String)> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut acked = Vec::new();
    for n in 0..limit {
        let key = format!("w{t}-{n}");
        let value = format!(r#"{{"t":{t},"n":{n},"pad":"{}"}}"#, "p".repeat(n % 50));
        if w.write_all(format!("{}\n", put("load", &key, &value)).as_bytes()).is_err() {
            break;
        }
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if !line.ends_with('\n') => break,
            Ok(_) => assert_eq!(line, OK_EMPTY, "put {key} was not acknowledged"),
        }
        acked.push((key, value));
    }
    acked
}

/// Asserts every acknowledged put reads back its value, pipelining the gets
/// in batches.
#[track_caller]
fn assert_all_present(c: &mut Conn, bank: &str, entries: &[(String, String)]) {
    for batch in entries.chunks(256) {
        let mut out = String::new();
        for (k, _) in batch {
            out.push_str(&get(bank, k));
            out.push('\n');
        }
        c.send(&out);
        for (k, v) in batch {
            let line = c.read_line();
            assert_eq!(line, ok(v), "acknowledged key {k} lost or changed");
        }
    }
}

/// `kill -9` while 4 clients write with `--fsync never`: acknowledged means
/// written to the kernel, which outlives the process, so after the restart
/// every acknowledged key is there with its value.
#[test]
fn sigkill_under_write_load_loses_no_acknowledged_put() {
    let data = DataDir::new();
    // 4 × 16 MiB: far more than half a second of writes, so no reuse drops
    // anything (checked below).
    let flags = ["--fsync", "never", "--volume-size", "16777216", "--volume-count", "4"];
    let s = data.start(&flags);
    let addr = s.addr();
    let writers: Vec<_> = (0..4).map(|t| thread::spawn(move || acked_writer(addr, t, 1_000_000))).collect();
    thread::sleep(Duration::from_millis(500));
    kill9(s);
    let acked: Vec<Vec<(String, String)>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    for (t, a) in acked.iter().enumerate() {
        assert!(!a.is_empty(), "writer {t} got no put acknowledged before the kill");
        assert!(a.len() < 1_000_000, "writer {t} finished before the kill");
    }

    let s = data.start(&flags);
    let mut c = s.connect();
    assert_eq!(counter(&mut c, "volume_reuses"), 0.0);
    for a in &acked {
        assert_all_present(&mut c, "load", a);
    }
    let total: usize = acked.iter().map(|a| a.len()).sum();
    let keys = counter(&mut c, "keys") as usize;
    // Each writer had at most one put in flight when the server died.
    assert!(keys >= total && keys <= total + 4, "{keys} keys after the restart, {total} puts acknowledged");
}

// ---------------------------------------------------------------------------
// 7. Reads racing volume reuse
// ---------------------------------------------------------------------------

/// The value written under key `k<n>` in the reuse race test: ~500 bytes
/// naming `n`, so another key's value can never pass for it.
fn race_value(n: i64) -> String {
    let fill = char::from(b'a' + (n % 26) as u8);
    format!(r#"{{"n":{n},"pad":"{}"}}"#, fill.to_string().repeat(480))
}

/// Tiny xorshift PRNG (no dependency needed for picking keys).
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// With 4 workers and 64 KiB × 3 volumes, one writer puts new keys
/// continuously (each volume holds ~120 records, so volumes are reused
/// again and again) while 3 readers read random earlier keys: every reply
/// is exactly the value that key was written with or `Key ... doesn't
/// exist`, never another key's value, a damaged value or a broken line.
#[test]
fn reads_racing_volume_reuse_see_own_value_or_miss() {
    let data = DataDir::new();
    let s = data.start(&["--workers", "4", "--volume-size", "65536", "--volume-count", "3"]);
    let addr = s.addr();
    let latest = Arc::new(AtomicI64::new(-1));
    let done = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..3u64)
        .map(|r| {
            let (latest, done) = (latest.clone(), done.clone());
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (r + 1).wrapping_mul(0x1234_5678_9abc_def1);
                let (mut hits, mut misses) = (0u64, 0u64);
                while !done.load(Ordering::Acquire) {
                    let top = latest.load(Ordering::Acquire);
                    if top < 0 {
                        thread::yield_now();
                        continue;
                    }
                    let x = next_rand(&mut rng);
                    // Half uniform over all keys so far, half among the
                    // ~300 newest (the ones likely still on disk).
                    let n = if x & 1 == 0 {
                        (x >> 1) as i64 % (top + 1)
                    } else {
                        (top - ((x >> 1) % 300) as i64).max(0)
                    };
                    let key = format!("k{n}");
                    let line = c.request(&get("race", &key));
                    if line == ok(&race_value(n)) {
                        hits += 1;
                    } else if line == no_key(&key) {
                        misses += 1;
                    } else {
                        panic!("get {key}: neither its value nor a miss: {line:?}");
                    }
                }
                (hits, misses)
            })
        })
        .collect();

    let mut c = s.connect();
    for n in 0..3000i64 {
        c.check(&put("race", &format!("k{n}"), &race_value(n)), OK_EMPTY);
        latest.store(n, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let (mut hits, mut misses) = (0, 0);
    for r in readers {
        let (h, m) = r.join().expect("a reader failed");
        hits += h;
        misses += m;
    }
    assert!(hits > 0 && misses > 0, "readers saw {hits} hits and {misses} misses");
    assert!(counter(&mut c, "volume_reuses") > 0.0);
    c.check(PING, PONG);
    c.check(&get("race", "k2999"), &ok(&race_value(2999)));
    c.check(&get("race", "k0"), &missing("k0"));
}

// ---------------------------------------------------------------------------
// 8. The memory tier
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Disk,
    Memory,
}

/// Gets `bank`/`key`, asserts the exact value, and asserts from the
/// `reads_disk` / `reads_memory` deltas that exactly one read happened, from
/// `tier`.
#[track_caller]
fn read_from(c: &mut Conn, bank: &str, key: &str, value: &str, tier: Tier) {
    let before = stats(c);
    c.check(&get(bank, key), &ok(value));
    let after = stats(c);
    let disk = stat(&after, "reads_disk") - stat(&before, "reads_disk");
    let mem = stat(&after, "reads_memory") - stat(&before, "reads_memory");
    let expected = match tier {
        Tier::Disk => (1.0, 0.0),
        Tier::Memory => (0.0, 1.0),
    };
    assert_eq!(
        (disk, mem),
        expected,
        "get {key}: expected a read from {tier:?} (reads_disk, reads_memory deltas)"
    );
}

/// A JSON `put` keeps its value in RAM beside its record, so it is read from memory at once. After a
/// restart values are on disk only, and default admission (`--cache-after-miss-count 3`) applies: three
/// reads from disk, then from memory. An overwrite is in RAM again at once.
#[test]
fn memory_tier_admits_after_three_disk_reads() {
    let data = DataDir::new();
    let s = data.start(&[]);
    let mut c = s.connect();
    c.check(&put("b", "k", r#""v1""#), OK_EMPTY);
    read_from(&mut c, "b", "k", r#""v1""#, Tier::Memory);
    assert!(counter(&mut c, "memory_bytes") > 0.0);
    stop_gracefully(s);
    let s = data.start(&[]);
    let mut c = s.connect();
    for tier in [Tier::Disk, Tier::Disk, Tier::Disk, Tier::Memory, Tier::Memory] {
        read_from(&mut c, "b", "k", r#""v1""#, tier);
    }
    c.check(&put("b", "k", r#"{"v":2}"#), OK_EMPTY);
    read_from(&mut c, "b", "k", r#"{"v":2}"#, Tier::Memory);
}

/// CacheFS's `test_memc`, on values read back after a restart (so from disk): with
/// `--cache-after-miss-count 2` and a 0.3 s window, reads go disk, disk, memory; a 0.6 s pause between
/// two disk reads restarts the count; a delete is a miss.
#[test]
fn memory_tier_count_restarts_after_idle_window() {
    let data = DataDir::new();
    let flags = ["--cache-after-miss-count", "2", "--cache-after-miss-count-duration", "0.3"];
    let s = data.start(&flags);
    let mut c = s.connect();
    c.check(&put("b", "q", r#""quick""#), OK_EMPTY);
    c.check(&put("b", "p", r#""paused""#), OK_EMPTY);
    stop_gracefully(s);
    let s = data.start(&flags);
    let mut c = s.connect();
    for tier in [Tier::Disk, Tier::Disk, Tier::Memory, Tier::Memory] {
        read_from(&mut c, "b", "q", r#""quick""#, tier);
    }

    read_from(&mut c, "b", "p", r#""paused""#, Tier::Disk);
    thread::sleep(Duration::from_millis(600));
    for tier in [Tier::Disk, Tier::Disk, Tier::Memory] {
        read_from(&mut c, "b", "p", r#""paused""#, tier);
    }

    c.check(&delete("b", "q"), OK_EMPTY);
    c.check(&get("b", "q"), &missing("q"));
}

/// `--memory-max-bytes 3000` with six values of 1000 bytes read over and
/// over: `memory_bytes` never exceeds the limit, `evictions` counts the
/// values pushed out, and every read returns the right value (from disk
/// when not in memory).
#[test]
fn memory_tier_respects_memory_max_bytes() {
    let data = DataDir::new();
    let s = data.start(&["--memory-max-bytes", "3000"]);
    let mut c = s.connect();
    let entries: Vec<(String, String)> =
        (0..6).map(|i| (format!("m{i}"), text_value(1000, char::from(b'a' + i as u8)))).collect();
    put_all(&mut c, "b", &entries);
    for _round in 0..8 {
        for (k, v) in &entries {
            c.check(&get("b", k), &ok(v));
            let st = stats(&mut c);
            assert!(stat(&st, "memory_bytes") <= 3000.0, "memory over --memory-max-bytes: {st:?}");
        }
    }
    let st = stats(&mut c);
    assert!(stat(&st, "evictions") > 0.0, "{st:?}");
    assert!(stat(&st, "reads_memory") > 0.0, "{st:?}");
    assert!(stat(&st, "reads_disk") >= 18.0, "{st:?}");
}

// ---------------------------------------------------------------------------
// 9. A full disk
// ---------------------------------------------------------------------------

/// A 1 MiB tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    #[track_caller]
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "this test needs root (or CAP_SYS_ADMIN) to mount a tmpfs: mount failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Flags for a 4 MiB sparse volume (bigger than the 1 MiB tmpfs it is on).
fn full_disk_flags(dir: &str) -> [&str; 6] {
    ["--data-dir", dir, "--volume-size", "4194304", "--volume-count", "1"]
}

/// Puts values of 100 KB until one fails; returns the acknowledged entries
/// and the failed key with its reply.
fn fill_until_a_put_fails(c: &mut Conn) -> (Vec<(String, String)>, String, String) {
    let mut stored = Vec::new();
    let mut failure = None;
    for i in 0..40 {
        let key = format!("k{i}");
        let value = text_value(100_000, char::from(b'a' + (i % 26) as u8));
        let reply = c.request(&put("b", &key, &value));
        if reply == OK_EMPTY {
            stored.push((key, value));
        } else {
            failure = Some((key, reply));
            break;
        }
    }
    let (failed_key, reply) = failure.expect("40 puts of 100 KB all succeeded on a 1 MiB tmpfs");
    assert!(!stored.is_empty(), "not even the first put fitted: {reply:?}");
    (stored, failed_key, reply)
}

/// A put that cannot be written (a 4 MiB sparse volume on a 1 MiB tmpfs) is
/// answered with an error naming the storage error, not a crash; the
/// server keeps answering, the earlier keys keep reading, and the failed
/// put stored nothing.
#[test]
fn disk_full_put_is_an_error_and_earlier_keys_stay() {
    let fs_guard = Tmpfs::mount("1m");
    let dir = fs_guard.path().to_str().unwrap().to_string();
    let s = TestServer::start(&full_disk_flags(&dir));
    let mut c = s.connect();
    let (stored, failed_key, reply) = fill_until_a_put_fails(&mut c);
    let msg = error_message(&reply);
    assert!(msg.contains("No space left on device"), "the error should name the storage error: {reply:?}");

    c.check(PING, PONG);
    c.check(&get("b", &stored[0].0), &ok(&stored[0].1));
    assert_values(&mut c, "b", &stored);
    c.check(&get("b", &failed_key), &missing(&failed_key));
    let mut c2 = s.connect();
    c2.check(PING, PONG);
}

/// After a put failed on a full disk and the server was killed, a restart
/// on the still-full disk serves every acknowledged key (start-up must not
/// need free space, and must not fault on the volume's unallocated pages).
#[test]
fn restart_on_a_full_disk_keeps_acknowledged_keys() {
    let fs_guard = Tmpfs::mount("1m");
    let dir = fs_guard.path().to_str().unwrap().to_string();
    let s = TestServer::start(&full_disk_flags(&dir));
    let mut c = s.connect();
    let (stored, failed_key, _) = fill_until_a_put_fails(&mut c);
    drop(c);
    kill9(s);

    let s = TestServer::start(&full_disk_flags(&dir));
    let mut c = s.connect();
    assert_values(&mut c, "b", &stored);
    c.check(&get("b", &failed_key), &missing(&failed_key));
    c.check(PING, PONG);
}

/// Byte values (`"encoding": "base64"` on the JSON port, HTTP bodies later) keep being bytes after a
/// restart: they come back base64-encoded, not as JSON text.
#[test]
fn byte_values_stay_bytes_across_restart() {
    let data = DataDir::new();
    let s = data.start(&[]);
    let mut c = s.connect();
    let put = r#"{"op":"put","bank":"files","key":"blob","value":"AAEC/w==","encoding":"base64"}"#;
    let want = "{\"status\": \"ok\", \"data\": \"AAEC/w==\", \"encoding\": \"base64\"}\n";
    c.check(put, OK_EMPTY);
    c.check(&get("files", "blob"), want);
    stop_gracefully(s);
    let s = data.start(&[]);
    let mut c = s.connect();
    c.check(&get("files", "blob"), want);
}

// ---------------------------------------------------------------------------
// The reactor under a disk store
// ---------------------------------------------------------------------------

/// The requests of a mixed workload over a few keys: every one-key op, with misses, lifetimes and incrs.
fn mixed_requests(n: usize) -> Vec<String> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 6);
            match (x >> 8) % 9 {
                0 | 1 => put("b", &key, &format!("\"v{i}\"")),
                2 => put_ttl("b", &key, &i.to_string(), "600"),
                3 => delete("b", &key),
                4 => touch("b", &key),
                5 => getouch("b", &key),
                6 => incr("b", &key, "2"),
                _ => get("b", &key),
            }
        })
        .collect()
}

/// Sends `requests` in bursts of 1 to 4 (jobs small enough for the reactor to try them) and returns every
/// reply line in order.
fn in_bursts(c: &mut Conn, requests: &[String]) -> Vec<String> {
    let mut replies = Vec::new();
    let mut rest = requests;
    let mut burst = 0;
    while !rest.is_empty() {
        burst = burst % 4 + 1;
        let (now, later) = rest.split_at(burst.min(rest.len()));
        c.send(&now.iter().map(|r| format!("{r}\n")).collect::<String>());
        replies.extend(now.iter().map(|_| c.read_line()));
        rest = later;
    }
    replies
}

/// The reactor runs requests under a disk store too, but never one that writes the log or reads the
/// disk: a disk-store server answers a mixed, pipelined workload byte for byte as a memory-only one does,
/// its gets of values the JSON port wrote are served from RAM (many on the reactor), and a restart brings
/// back what it held.
#[test]
fn a_disk_store_server_answers_as_a_memory_only_one_and_reads_from_ram() {
    let requests = mixed_requests(3_000);
    let memory = TestServer::start(&["--data-dir", "none"]);
    let expected = in_bursts(&mut memory.connect(), &requests);
    let data = DataDir::new();
    let s = data.start(&[]);
    let mut c = s.connect();
    assert_eq!(in_bursts(&mut c, &requests), expected);
    let before = stats(&mut c);
    assert_eq!(stat(&before, "reads_disk"), 0.0, "{before:?}");
    assert!(stat(&before, "reads_memory") > 500.0, "{before:?}");
    assert!(stat(&before, "requests_inline") > 0.0, "{before:?}");
    let keys: Vec<String> = (0..6).map(|k| format!("k{k}")).collect();
    let held: Vec<String> = keys.iter().map(|k| c.request(&get("b", k))).collect();
    stop_gracefully(s);
    let s = data.start(&[]);
    let mut c = s.connect();
    let after: Vec<String> = keys.iter().map(|k| c.request(&get("b", k))).collect();
    assert_eq!(after, held);
}
