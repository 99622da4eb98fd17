#![no_main]
//! Fuzzes HTTP/1.1 request splitting, chunked bodies included. The check, and what it holds the code to, is `bankcache::fuzzing::http`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache::fuzzing::http(data));
