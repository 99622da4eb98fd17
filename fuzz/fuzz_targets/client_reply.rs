#![no_main]
//! Fuzzes the client's reading of reply lines from a stream. The check, and what it holds the code to, is `bankcache_client::fuzzing::replies`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache_client::fuzzing::replies(data));
