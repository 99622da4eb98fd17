#![no_main]
//! Fuzzes a whole data directory, opened (replayed), read, written and opened again. The check, and what it holds the code to, is `bankcache::fuzzing::volume`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache::fuzzing::volume(data));
