//! Every saved fuzz input, through its fuzz target's check, in plain `cargo test` on stable: the
//! minimized corpus (`fuzz/corpus/<target>/`) keeps covering what the fuzzers reached, and every crash
//! they found (`fuzz/regressions/<target>/`) stays fixed. The checks are the very functions the fuzz
//! targets call (`fuzz/fuzz_targets/<target>.rs`), so the two cannot drift; docs/fuzzing.md says how to
//! run the fuzzers and grow the corpus.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

type Check = fn(&[u8]);

/// Each fuzz target and its check.
const TARGETS: &[(&str, Check)] = &[
    ("frame", bankcache_proto::fuzzing::frame),
    ("op", bankcache_proto::fuzzing::op),
    ("reply", bankcache_proto::fuzzing::reply),
    ("client_reply", bankcache_client::fuzzing::replies),
    ("http", bankcache::fuzzing::http),
    ("record", bankcache::fuzzing::record),
    ("index", bankcache::fuzzing::index),
    ("checkpoint", bankcache::fuzzing::checkpoint),
    ("meta", bankcache::fuzzing::meta),
    ("volume", bankcache::fuzzing::volume),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => {
            entries.map(|e| e.expect("a directory entry").path()).filter(|p| p.is_file()).collect()
        }
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Runs `target`'s check on each of its saved inputs; fails naming every input whose check failed.
fn run(target: &str) {
    let check = TARGETS.iter().find(|(name, _)| *name == target).map(|(_, check)| *check);
    let check = check.unwrap_or_else(|| panic!("no check for {target}"));
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty");
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "the {target} check failed on:\n{}", failed.join("\n"));
}

macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                run(stringify!($target));
            }
        )*
    };
}

corpus_tests!(frame, op, reply, client_reply, http, record, index, checkpoint, meta, volume);

/// The fuzz targets, the checks and the saved inputs name the same targets: a target added to `fuzz/`
/// without a check here (or a corpus without a target) fails.
#[test]
fn every_fuzz_target_has_its_check_and_its_corpus() {
    let names = |dir: &Path, suffix: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let mut checked: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    checked.sort();
    assert_eq!(names(&fuzz_dir().join("fuzz_targets"), ".rs"), checked, "fuzz/fuzz_targets");
    assert_eq!(names(&fuzz_dir().join("corpus"), ""), checked, "fuzz/corpus");
    for regressions in names(&fuzz_dir().join("regressions"), "") {
        assert!(checked.contains(&regressions), "fuzz/regressions/{regressions} has no target");
    }
}
