#![no_main]
//! Fuzzes reply encoding, decoding and peeking. The check, and what it holds the code to, is `bankcache_proto::fuzzing::reply`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache_proto::fuzzing::reply(data));
