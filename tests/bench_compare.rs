//! `bankcache-bench` (built from tools/bench/) against real bankcache servers: the
//! run mode's `--verify` and `--requests`, and `compare` end to end with
//! bankcache alone (CI has neither redis nor memcached, so these tests hide
//! them even where they are installed) and with nginx in the file cells (CI
//! installs nginx; like tests/nginx.rs, that test fails without it). No test
//! asserts a timing.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::TestServer;
use serde_json::Value;

/// The bench binary, built beside the server's by `cargo test --workspace` (tools/bench has tests of
/// its own, which is what makes cargo build it).
fn bench_binary() -> PathBuf {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_bankcache"));
    let bench = server.with_file_name("bankcache-bench");
    assert!(bench.exists(), "{} is missing: run the tests with `cargo test --workspace`", bench.display());
    bench
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the bench and parses the one JSON line it prints.
fn run_json(args: &[&str]) -> (Output, Value) {
    let out = Command::new(bench_binary()).args(args).arg("--json").output().expect("bankcache-bench runs");
    let stdout = text(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr:\n{}", text(&out.stderr)));
    let value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (out, value)
}

fn count(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("{key} in {value}"))
}

/// Every byte of every hit is checked, on the JSON port and over HTTP, on
/// two threads, and exactly the requested number of replies is measured.
#[test]
fn run_mode_verifies_every_value() {
    let s = TestServer::start(&[]);
    for (addr, proto) in [(s.addr(), "json"), (s.http_addr(), "http")] {
        let addr = addr.to_string();
        let (out, value) = run_json(&[
            "--addr",
            &addr,
            "--proto",
            proto,
            "--connections",
            "4",
            "--threads",
            "2",
            "--pipeline",
            "4",
            "--keys",
            "1000",
            "--value-size",
            "100",
            "--prefill",
            "--warmup",
            "0",
            "--requests",
            "2000",
            "--verify",
        ]);
        assert!(out.status.success(), "{proto}: {:?}\n{}", out.status, text(&out.stderr));
        assert_eq!(count(&value, "verify_failures"), 0, "{proto}: {value}");
        assert!(count(&value, "verified") > 0, "{proto}: gets were checked: {value}");
        assert_eq!(count(&value, "ops"), 2000, "{proto}: {value}");
        assert_eq!(count(&value, "errors") + count(&value, "misses"), 0, "{proto}: {value}");
        assert_eq!(count(&value, "threads"), 2);
    }
}

/// Values of another size (as another run left them) fail verification, and
/// the exit code says so.
#[test]
fn run_mode_reports_wrong_values() {
    let s = TestServer::start(&[]);
    let addr = s.addr().to_string();
    let common = ["--addr", &addr, "--connections", "2", "--keys", "200", "--warmup", "0", "--verify"];
    let (out, value) =
        run_json(&[&common[..], &["--prefill", "--requests", "10", "--value-size", "32"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(count(&value, "verify_failures"), 0);
    let (out, value) =
        run_json(&[&common[..], &["--requests", "500", "--value-size", "33", "--get-ratio", "1"]].concat());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(count(&value, "verify_failures"), count(&value, "verified"));
    assert!(count(&value, "verify_failures") > 0, "{value}");
    assert!(text(&out.stderr).contains("returned other bytes"));
}

/// `compare` with bankcache alone: the table, compare.json with cells c and f
/// and positive figures, and compare.svg. redis-server and memcached are kept
/// off PATH, so the test is the same with or without them, and the bench must
/// say how to install them and carry on.
#[test]
fn compare_runs_cells_c_and_f_with_bankcache_alone() {
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = compare(
        &[
            "--servers",
            "bankcache,redis,memcached",
            "--cells",
            "c,f",
            "--rounds",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--rss-keys",
            "20000",
        ],
        out_dir.path(),
        true,
    );
    assert!(stderr.contains("sudo apt-get install redis-server memcached"), "{stderr}");
    assert!(stdout.contains("\nc 1 conn") && stdout.contains("\nf RSS/key"), "{stdout}");

    let report = read_report(out_dir.path());
    let c = &report["medians"]["c"]["bankcache"];
    for figure in ["ops_per_sec", "p50_us", "p99_us", "p999_us"] {
        assert!(c[figure].as_f64().is_some_and(|v| v > 0.0), "c {figure}: {c}");
    }
    let f = &report["medians"]["f"]["bankcache"];
    assert!(f["bytes_per_key"].as_f64().is_some_and(|v| v > 0.0), "f: {f}");
    assert_eq!(report["missing"], serde_json::json!(["redis", "memcached"]));
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(2), "{}", report["runs"]);
    assert!(report["machine"]["nproc"].as_u64().is_some_and(|n| n > 0));

    let svg = std::fs::read_to_string(out_dir.path().join("compare.svg")).expect("compare.svg");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(100)]);
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// Without the bankcache executable, compare says how to build it.
#[test]
fn compare_without_bankcache_says_to_build_it() {
    let missing = tempfile::tempdir().unwrap();
    let out = Command::new(bench_binary())
        .args(["compare", "--servers", "bankcache", "--bankcache"])
        .arg(missing.path().join("bankcache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cargo build --release"), "{}", text(&out.stderr));
}

/// With a token on the server, the run mode sends it (`auth` on each JSON connection, a bearer header on
/// each HTTP request) and every request succeeds; without it, the JSON run fails at once.
#[test]
fn run_mode_sends_the_token() {
    let s = TestServer::start(&["--auth-token", "bench-s3cret"]);
    for (addr, proto) in [(s.addr(), "json"), (s.http_addr(), "http")] {
        let addr = addr.to_string();
        let args =
            ["--addr", &addr, "--proto", proto, "--connections", "3", "--keys", "100", "--warmup", "0"];
        let (out, value) = run_json(
            &[&args[..], &["--prefill", "--requests", "500", "--auth-token", "bench-s3cret"]].concat(),
        );
        assert!(out.status.success(), "{proto}: {}", text(&out.stderr));
        assert_eq!(count(&value, "errors") + count(&value, "misses"), 0, "{proto}: {value}");
        assert_eq!(count(&value, "ops"), 500, "{proto}: {value}");
    }
    let addr = s.addr().to_string();
    let out = Command::new(bench_binary())
        .args(["--addr", &addr, "--connections", "1", "--requests", "10", "--warmup", "0"])
        .env("BANKCACHE_AUTH_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("auth refused"), "{}", text(&out.stderr));
}

/// `compare --auth-token` starts bankcache with the token (in its environment) and drives it with it.
#[test]
fn compare_runs_bankcache_with_a_token() {
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, _) = compare(
        &[
            "--servers",
            "bankcache",
            "--cells",
            "c",
            "--rounds",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--auth-token",
            "compare-s3cret",
        ],
        out_dir.path(),
        true,
    );
    assert!(stdout.contains("bankcache ran with an auth_token"), "{stdout}");
    let report = read_report(out_dir.path());
    assert_eq!(report["settings"]["bankcache_auth_token"], true);
    let c = &report["medians"]["c"]["bankcache"];
    assert!(c["ops_per_sec"].as_f64().is_some_and(|v| v > 0.0), "c: {c}");
    assert_eq!(report["runs"][0]["figures"]["errors"], 0, "{}", report["runs"]);
}

/// Runs `bankcache-bench compare` with `args` against the server built beside it, writing into `out_dir`,
/// with an empty PATH when `alone` (so that no peer is found, installed or not); it must exit 0. Returns its
/// stdout and stderr.
fn compare(args: &[&str], out_dir: &std::path::Path, alone: bool) -> (String, String) {
    let empty_path = tempfile::tempdir().unwrap();
    let mut command = Command::new(bench_binary());
    command.arg("compare").args(args).arg("--bankcache").arg(env!("CARGO_BIN_EXE_bankcache"));
    command.arg("--out").arg(out_dir);
    if alone {
        command.env("PATH", empty_path.path());
    }
    let out = command.output().expect("bankcache-bench compare runs");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

fn read_report(dir: &std::path::Path) -> Value {
    let json_text = std::fs::read_to_string(dir.join("compare.json")).expect("compare.json");
    serde_json::from_str(&json_text).expect("compare.json parses")
}

fn positive(value: &Value) -> bool {
    value.as_f64().is_some_and(|v| v > 0.0)
}

/// The file cells against nginx: bankcache's HTTP file API and nginx (static files written beforehand,
/// WebDAV PUT) both give figures, with every byte read back checked on both, and the ratios, the
/// targets and dd's figure are in the table and in compare.json.
#[test]
fn compare_runs_the_file_cells_against_nginx() {
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, _) = compare(
        &[
            "--servers",
            "bankcache,nginx",
            "--cells",
            "file-get,file-put",
            "--rounds",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--file-keys",
            "40",
            "--dd-mib",
            "8",
            "--verify",
        ],
        out_dir.path(),
        false,
    );
    assert!(stdout.contains("bankcache/nginx") && stdout.contains("\ndd "), "{stdout}");
    assert!(stdout.contains("\n  file-get:") && stdout.contains("\n  file-put:"), "{stdout}");

    let report = read_report(out_dir.path());
    for cell in ["file-get", "file-put"] {
        for server in ["bankcache", "nginx"] {
            let m = &report["medians"][cell][server];
            assert!(positive(&m["ops_per_sec"]) && positive(&m["mb_per_sec"]), "{cell} {server}: {m}");
        }
        let target = &report["targets"][cell];
        assert!(positive(&target["ratio"]), "{cell}: {target}");
        assert_eq!(target["peer"], "nginx");
        assert!(target["holds"].is_boolean(), "{cell}: judged either way: {target}");
    }
    assert_eq!(report["targets"]["file-put"]["needs"], ">= 2.00x, MB/s >= 0.50x dd");
    assert!(positive(&report["dd"]["mb_per_sec"]), "{}", report["dd"]);
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4, "{runs:?}");
    for run in runs {
        let figures = &run["figures"];
        assert_eq!(run["proto"], "http");
        for count in ["errors", "misses", "verify_failures", "connection_failures", "prefill_failures"] {
            assert_eq!(figures[count], 0, "{count}: {run}");
        }
    }
    let svg = std::fs::read_to_string(out_dir.path().join("compare.svg")).expect("compare.svg");
    assert!(svg.contains(">file-get</text>") && svg.contains(">file-put</text>"));
}

/// A disk-store cell with bankcache alone: it runs with its disk store, and a missing redis is reported
/// with how to install it, its target left unjudged. (One cell: a-d differ only in their loads.)
#[test]
fn compare_runs_the_disk_cells_with_bankcache_alone() {
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = compare(
        &[
            "--servers",
            "bankcache,redis",
            "--cells",
            "a-disk",
            "--rounds",
            "1",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
        out_dir.path(),
        true,
    );
    assert!(stderr.contains("redis-server is not installed"), "{stderr}");
    assert!(stderr.contains("sudo apt-get install redis-server memcached"), "{stderr}");
    assert!(!stderr.contains("memcached is not installed"), "the disk cells do not run memcached: {stderr}");
    assert!(stdout.contains("\na-disk 50 conn, p1, 32 B, disk"), "{stdout}");

    let report = read_report(out_dir.path());
    assert_eq!(report["missing"], serde_json::json!(["redis"]));
    let m = &report["medians"]["a-disk"]["bankcache"];
    assert!(positive(&m["ops_per_sec"]) && positive(&m["p99_us"]), "{m}");
    assert_eq!(report["targets"]["a-disk"]["holds"], Value::Null);
    assert_eq!(report["targets"]["a-disk"]["detail"], "needs bankcache and redis figures");
    let cell = &report["cells"][0];
    assert!(cell["disk_store"] == true && cell["redis_aof_everysec"] == true, "{cell}");
    for run in report["runs"].as_array().expect("runs") {
        assert_eq!(run["figures"]["errors"], 0, "{run}");
        assert_eq!(run["figures"]["misses"], 0, "{run}");
    }
}
