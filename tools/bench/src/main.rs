//! `bankcache-bench`: a closed-loop load driver for bankcache (JSON protocol
//! and HTTP file API), redis (RESP), memcached (text protocol) and HTTP/1.1
//! file servers, so that every comparison is made with one tool.
//!
//! Two modes:
//!
//! - **run** (`bankcache-bench --addr HOST:PORT [flags]`): drives one server
//!   with `--connections` connections, each keeping `--pipeline` requests in
//!   flight, gets and sets of `key:NNNNNNNN` drawn from a fixed seed, for
//!   `--duration` seconds or `--requests` replies, on `--threads` mio loops.
//!   `--verify` checks every byte of every get hit against the key's own value.
//!   It prints ops/s, hits/misses/errors and HDR latency percentiles, as text
//!   or as one JSON line (`--json`), and a progress line on stderr while it
//!   runs. Exit codes: 0 done, 1 the run failed, 2 bad flags, 3 values failed
//!   verification.
//! - **compare** (`bankcache-bench compare [flags]`): starts bankcache,
//!   redis-server and memcached fresh for every run, drives each through the
//!   issue's matrix of cells with the same driver code in-process, and prints
//!   one table of medians with ratios, plus `compare.json` and `compare.svg`.
//!
//! Module map: `proto` (encoding, parsing, verification), `driver` (threads,
//! event loops, measurement), `compare` (servers, matrix, table, JSON),
//! `svg` (the chart).
//!
//! Dependencies: `bankcache-proto` for bankcache's JSON wire format (requests
//! encoded by `Op::encode`, replies classified by `reply::peek`), so the bench
//! measures the requests the client library sends and cannot drift from the
//! server. It does not use `bankcache-client`: that client blocks on one
//! connection, while the driver keeps many connections' windows in flight on
//! a few `mio` loops, with no allocation per reply. `mio` (the event loops),
//! `hdrhistogram` (latency percentiles), `httparse` (HTTP replies), `clap`
//! (flags), `serde_json` (the `--json` line and compare.json) and `libc`
//! (signals and child processes of `compare`) do the rest.

mod compare;
mod driver;
mod proto;
mod svg;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use driver::{BenchConfig, Report, Stop};
use proto::Proto;

#[derive(Parser, Debug)]
#[command(
    name = "bankcache-bench",
    about = "Closed-loop load driver for bankcache (json, http), redis (resp), memcached and HTTP/1.1 file \
             servers; `bankcache-bench compare` runs the whole comparison",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start bankcache, redis-server and memcached in turn and run the benchmark matrix against each.
    Compare(compare::CompareArgs),
}

/// The run mode's flags: one server, one workload.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Server address, HOST:PORT.
    #[arg(long, required = true)]
    addr: Option<String>,
    /// Wire protocol the server speaks.
    #[arg(long, value_enum, default_value_t = Proto::Json)]
    proto: Proto,
    /// Number of TCP connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests kept outstanding per connection (the window size).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Size of stored values, in bytes.
    #[arg(long, default_value_t = 32)]
    value_size: usize,
    /// Size of the key space; keys are drawn uniformly from it.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Fraction of requests that are gets; the rest are sets.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured replies (over all threads) instead of after --duration.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Unmeasured load before the measured run, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Store every key once before the run, so that gets hit.
    #[arg(long)]
    prefill: bool,
    /// Seed of the request generator and of the values; equal seeds give equal streams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Driver threads, each a mio loop over its share of the connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Check every byte of every get hit against the key's own value (values
    /// are per key: the key's digits on a seeded filler). Values stored with
    /// another seed or size count as failures; exit code 3 if any fails.
    #[arg(long)]
    verify: bool,
    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// With --proto http: the URL path in front of each key, so that the
    /// default asks for `/key:00000123`.
    #[arg(long, default_value = "/")]
    http_prefix: String,
    /// bankcache's auth_token: sent by `auth` first on each JSON connection,
    /// and as `Authorization: Bearer` on each HTTP request.
    #[arg(long, env = "BANKCACHE_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

/// Turns the run mode's flags into a driver configuration.
fn config(args: &RunArgs, addr: &str) -> Result<BenchConfig, String> {
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err("--warmup must be a non-negative number of seconds".into());
    }
    let stop = match args.requests {
        Some(0) => return Err("--requests must be positive".into()),
        Some(n) => Stop::Requests(n),
        None if args.duration > 0.0 && args.duration.is_finite() => {
            Stop::Duration(Duration::from_secs_f64(args.duration))
        }
        None => return Err("--duration must be a positive number of seconds".into()),
    };
    let addr = resolve(addr).map_err(|e| format!("--addr {addr}: {e}"))?;
    let cfg = BenchConfig {
        addr,
        proto: args.proto,
        connections: args.connections,
        pipeline: args.pipeline,
        value_size: args.value_size,
        keys: args.keys,
        get_ratio: args.get_ratio,
        stop,
        warmup: Duration::from_secs_f64(args.warmup),
        prefill: args.prefill,
        seed: args.seed,
        verify: args.verify,
        threads: args.threads,
        http_prefix: args.http_prefix.clone(),
        progress: true,
        auth_token: args.auth_token.clone(),
    };
    driver::validate(&cfg)?;
    Ok(cfg)
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

/// Value bytes moved per second, in MB (10^6 B): those of hits and of sets.
/// Protocol overhead (keys, headers, framing) is not counted.
fn value_mb_per_sec(args: &RunArgs, report: &Report) -> f64 {
    let stats = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (stats.hits + stats.stored) as f64 * args.value_size as f64 / secs / 1e6
}

fn print_text(args: &RunArgs, addr: &str, cfg: &BenchConfig, report: &Report) {
    let stats = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "bankcache-bench: proto={} addr={} connections={} pipeline={} value_size={} keys={} get_ratio={} \
         threads={}",
        args.proto.name(),
        addr,
        args.connections,
        args.pipeline,
        args.value_size,
        args.keys,
        args.get_ratio,
        cfg.threads.min(cfg.connections)
    );
    println!("duration:   {secs:.2} s");
    println!("ops/s:      {:.0}", report.ops_per_sec());
    println!("MB/s:       {:.1} (values of hits and sets, 10^6 B)", value_mb_per_sec(args, report));
    println!("total ops:  {}", stats.ops());
    println!(
        "hits:       {}\nmisses:     {}\nsets:       {}\nerrors:     {}",
        stats.hits, stats.misses, stats.stored, stats.errors
    );
    println!(
        "latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        stats.latency_us(0.5),
        stats.latency_us(0.99),
        stats.latency_us(0.999),
        stats.max_us()
    );
    if args.verify {
        println!("verified:   {} hits, {} failures", report.verified, report.verify_failures);
    }
    if report.prefill_failures > 0 || report.conn_failures > 0 {
        println!(
            "failures:   {} prefill sets, {} connections",
            report.prefill_failures, report.conn_failures
        );
    }
}

fn print_json(args: &RunArgs, addr: &str, cfg: &BenchConfig, report: &Report) {
    let stats = &report.stats;
    let line = serde_json::json!({
        "proto": args.proto.name(),
        "addr": addr,
        "connections": args.connections,
        "pipeline": args.pipeline,
        "value_size": args.value_size,
        "keys": args.keys,
        "get_ratio": args.get_ratio,
        "threads": cfg.threads.min(cfg.connections),
        "requests": args.requests,
        "duration_s": report.elapsed.as_secs_f64(),
        "ops_per_sec": report.ops_per_sec(),
        "value_mb_per_sec": value_mb_per_sec(args, report),
        "ops": stats.ops(),
        "hits": stats.hits,
        "misses": stats.misses,
        "sets": stats.stored,
        "errors": stats.errors,
        "prefill_failures": report.prefill_failures,
        "connection_failures": report.conn_failures,
        "verify": args.verify,
        "verified": report.verified,
        "verify_failures": report.verify_failures,
        "latency_us": {
            "p50": stats.latency_us(0.5),
            "p99": stats.latency_us(0.99),
            "p999": stats.latency_us(0.999),
            "max": stats.max_us(),
        },
    });
    println!("{line}");
}

/// The run mode: one benchmark against `--addr`.
fn run_mode(args: &RunArgs) -> ExitCode {
    let Some(addr) = args.addr.as_deref() else {
        eprintln!("bankcache-bench: --addr is required");
        return ExitCode::from(2);
    };
    let cfg = match config(args, addr) {
        Ok(cfg) => cfg,
        Err(message) => {
            eprintln!("bankcache-bench: {message}");
            return ExitCode::from(2);
        }
    };
    match driver::run_bench(&cfg) {
        Ok(report) => {
            if args.json {
                print_json(args, addr, &cfg, &report);
            } else {
                print_text(args, addr, &cfg, &report);
            }
            if report.verify_failures > 0 {
                eprintln!(
                    "bankcache-bench: {} of {} verified values were wrong",
                    report.verify_failures, report.verified
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bankcache-bench: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Compare(args)) => compare::main(args),
        None => run_mode(&cli.run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_mode_and_compare_parse_side_by_side() {
        let cli =
            Cli::try_parse_from(["bankcache-bench", "--addr", "127.0.0.1:1", "--threads", "2", "--verify"])
                .expect("run mode");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.threads, 2);
        let cli =
            Cli::try_parse_from(["bankcache-bench", "compare", "--cells", "c,f", "--servers", "bankcache"])
                .expect("compare");
        assert!(matches!(cli.command, Some(Command::Compare(_))));
        assert!(Cli::try_parse_from(["bankcache-bench"]).is_err(), "--addr is required without compare");
        assert!(Cli::try_parse_from(["bankcache-bench", "--addr", "x:1", "compare"]).is_err());
        assert!(Cli::try_parse_from([
            "bankcache-bench",
            "--addr",
            "x:1",
            "--duration",
            "1",
            "--requests",
            "5"
        ])
        .is_err());
    }
}
