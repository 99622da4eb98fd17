//! The `bankcache` binary: command line → config → logger → bind → print listen address → serve.

use std::io::Write;
use std::process::ExitCode;

use bankcache::{Cli, Config, Server};
use clap::Parser;

/// mimalloc's size classes fit small entries more tightly than glibc's (a 44-byte key and value take a
/// 48-byte block rather than 64), which matters at tens of millions of keys, and it is faster too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, as Redis does by default (`disable-thp yes`).
/// mimalloc asks for huge pages on its arena, and the kernel then backs each 2 MiB region it touches
/// whole: loading a million 32-byte values cost about 24 bytes more RSS per key (146.8 instead of 122.6,
/// measured in-process) for a TLB gain that a cache's scattered lookups barely see. Best effort: a kernel
/// or sandbox that refuses leaves things as they were, and nothing depends on it.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes nothing but the process's
    // huge-page policy; no memory is passed to the kernel.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

/// Makes mimalloc give freed pages back to the OS at once. By default it waits 10 ms and then purges only
/// when the thread that freed them next calls into it, so a worker that went idle after a burst of large
/// values kept tens of megabytes resident (with `memory_max_bytes` at 32 MB, 1 MB values left 77 MB of
/// RSS; purging at once, 38 MB). The limit is meant to bound RSS, so the allocator must not sit on what
/// the store has let go.
fn purge_freed_memory_at_once() {
    /// `mi_option_purge_delay` in mimalloc 2's option enum (libmimalloc-sys exports no constant for it).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: setting an option takes two integers and touches only mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bankcache: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(config.log_level.into())
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("bankcache: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("bankcache: {e}");
        return ExitCode::FAILURE;
    }
    match cli.config_file() {
        Some(path) => {
            let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            log::info!("bankcache {}: config {}", env!("CARGO_PKG_VERSION"), shown.display());
        }
        None => log::info!(
            "bankcache {}: built-in defaults (no config file named, and no ./config.json here)",
            env!("CARGO_PKG_VERSION")
        ),
    }
    for line in server.summary() {
        log::info!("{line}");
    }
    // Exactly one line per listener, flushed before serving, so scripts and tests can read the port.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "bankcache: json listening on {}", server.json_addr());
    if let Some(addr) = server.http_addr() {
        let _ = writeln!(stdout, "bankcache: http listening on {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
