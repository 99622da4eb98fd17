#![no_main]
//! Fuzzes on-disk records. The check, and what it holds the code to, is `bankcache::fuzzing::record`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache::fuzzing::record(data));
