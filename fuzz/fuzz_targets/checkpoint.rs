#![no_main]
//! Fuzzes the CHECKPOINT file. The check, and what it holds the code to, is `bankcache::fuzzing::checkpoint`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache::fuzzing::checkpoint(data));
