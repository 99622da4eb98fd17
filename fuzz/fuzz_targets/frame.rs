#![no_main]
//! Fuzzes JSON framing: the splitter that cuts a connection's stream into requests. The check, and what it holds the code to, is `bankcache_proto::fuzzing::frame`, which
//! `tests/fuzz_corpus.rs` also runs on the saved corpus in plain `cargo test`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| bankcache_proto::fuzzing::frame(data));
