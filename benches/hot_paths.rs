//! Micro-benchmarks of the hot paths, so a regression shows before it reaches the end-to-end figures:
//! the frame splitter, the request parser, the reply encoder, and the store's get and put.
//!
//! `cargo bench --bench hot_paths` (criterion; reports land in target/criterion).

use std::hint::black_box;

use bankcache::store::{Access, Keep, Store, Ttl};
use bankcache_proto::{self as protocol, reply, Limits, Split, Splitter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const GET: &[u8] = br#"{"op":"get","bank":"bench","key":"key:00001234"}"#;
const PUT: &[u8] =
    br#"{"op":"put","bank":"bench","key":"key:00001234","value":"0123456789abcdef0123456789abcdef"}"#;
const LIMITS: Limits = Limits { max_key_bytes: 1024, max_value_bytes: 1 << 20 };

fn splitter(c: &mut Criterion) {
    let mut batch = Vec::new();
    for _ in 0..16 {
        batch.extend_from_slice(GET);
        batch.push(b'\n');
    }
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(16));
    group.bench_function("split 16 pipelined gets", |b| {
        b.iter(|| {
            let mut s = Splitter::new(1 << 20);
            let mut n = 0;
            while let Split::Frame { .. } = s.next(black_box(&batch)) {
                n += 1;
            }
            n
        })
    });
    let big = format!(r#"{{"op":"put","bank":"b","key":"k","value":"{}"}}"#, "x".repeat(200 * 1024));
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("split a 200 KB put", |b| {
        b.iter(|| Splitter::new(1 << 20).next(black_box(big.as_bytes())))
    });
    group.finish();
}

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.bench_function("get", |b| b.iter(|| protocol::parse(black_box(GET), &LIMITS).is_ok()));
    group.bench_function("put 32 B", |b| b.iter(|| protocol::parse(black_box(PUT), &LIMITS).is_ok()));
    group.finish();
}

fn encoder(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply");
    let mut out = Vec::with_capacity(4096);
    group.bench_function("ok with a 32 B value", |b| {
        b.iter(|| {
            out.clear();
            reply::ok_raw(&mut out, black_box(b"\"0123456789abcdef0123456789abcdef\""));
            out.len()
        })
    });
    group.bench_function("error with a key", |b| {
        b.iter(|| {
            out.clear();
            reply::error(&mut out, black_box("Key key:00001234 doesn't exist"));
            out.len()
        })
    });
    group.bench_function("float", |b| {
        b.iter(|| {
            out.clear();
            reply::float(&mut out, black_box(12345.678));
            out.len()
        })
    });
    group.finish();
}

fn store(c: &mut Criterion) {
    let store = Store::new();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i:08}")).collect();
    let value = b"\"0123456789abcdef0123456789abcdef\"";
    for k in &keys {
        store.put("bench", k.as_bytes(), value, 0, Ttl::Forever, 0, Access::Wait, Keep::Memory).unwrap();
    }
    let mut group = c.benchmark_group("store");
    let mut i = 0;
    group.bench_function("get of 100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            store.get("bench", keys[i].as_bytes(), 1, false, Access::Wait, |v, _| v.len()).unwrap()
        })
    });
    group.bench_function("put of 100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            store
                .put(
                    "bench",
                    keys[i].as_bytes(),
                    black_box(value),
                    0,
                    Ttl::Forever,
                    1,
                    Access::Wait,
                    Keep::Memory,
                )
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, splitter, parser, encoder, store);
criterion_main!(benches);
