//! Ops per second of one `Client` connection, in lockstep and pipelined, to compare with the original
//! CacheServer's published figures for its Python client (12,871 put/s and 11,064 get/s on one connection).
//!
//! Usage: `cargo run --release -p bankcache-client --example throughput -- [HOST:PORT] [OPS]`
//! (default 127.0.0.1:10001, 100000 ops), against a running server; `BANKCACHE_AUTH_TOKEN`, when set, is
//! sent first, for a server with an `auth_token`.

use std::time::Instant;

use bankcache_client::{Client, Error};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:10001".into());
    let ops: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let mut builder = Client::builder();
    if let Ok(token) = std::env::var("BANKCACHE_AUTH_TOKEN") {
        builder = builder.auth_token(token);
    }
    let mut client = builder.connect(addr.as_str())?;
    let value = "v".repeat(32);
    let key = |i: usize| format!("key:{:08}", i % 10_000);

    let rate = |n: usize, started: Instant| n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..ops {
        client.put("throughput", &key(i), &value, None)?;
    }
    let put_lockstep = rate(ops, started);
    let started = Instant::now();
    for i in 0..ops {
        client.get::<String>("throughput", &key(i))?;
    }
    let get_lockstep = rate(ops, started);

    const DEPTH: usize = 100;
    let started = Instant::now();
    for chunk in (0..ops).collect::<Vec<_>>().chunks(DEPTH) {
        let mut pipeline = client.pipeline();
        for &i in chunk {
            pipeline.put("throughput", &key(i), &value, None);
        }
        pipeline.run()?;
    }
    let put_pipelined = rate(ops, started);
    let started = Instant::now();
    for chunk in (0..ops).collect::<Vec<_>>().chunks(DEPTH) {
        let mut pipeline = client.pipeline();
        for &i in chunk {
            pipeline.get("throughput", &key(i));
        }
        pipeline.run()?;
    }
    let get_pipelined = rate(ops, started);

    println!("one connection, {ops} ops of 32-byte values, against {addr}:");
    println!("  lockstep:            put {put_lockstep:>9.0} ops/s   get {get_lockstep:>9.0} ops/s");
    println!("  pipelined ({DEPTH} deep): put {put_pipelined:>9.0} ops/s   get {get_pipelined:>9.0} ops/s");
    println!("  the original (Python client, its README): put 12871 ops/s, get 11064 ops/s");
    Ok(())
}
