#![no_main]
//! Fuzzes op parsing: a request frame into an op, and its encoding back. The check, and what it holds the code to, is `bankcache_proto::fuzzing::op`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache_proto::fuzzing::op(data));
