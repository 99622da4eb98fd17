//! The server's modules depend on each other in one direction only, as `src/lib.rs` draws it:
//! `server` → `net` → `dispatch` → `http` → `json` → `cmd` → {`store`, `stats`, `auth`}, and `dispatch` →
//! `access_log` → `stats`. This test reads the sources and fails when a `crate::` path points up or
//! sideways, so the layering cannot rot silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module and its layer: a module may use only modules of lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("main", 9),
    ("lib", 9),
    // The fuzz targets' checks: they drive decoders of every layer, and nothing uses them.
    ("fuzzing", 9),
    ("server", 8),
    ("config", 7),
    ("net", 6),
    ("dispatch", 5),
    ("http", 4),
    ("json", 3),
    ("cmd", 2),
    ("access_log", 2),
    ("store", 1),
    ("stats", 1),
    ("auth", 1),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names through `crate::` paths.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        // `$crate::` and `bankcache_crate::`-like names are not paths into this crate.
        if i > 0 && (text.as_bytes()[i - 1].is_ascii_alphanumeric() || text.as_bytes()[i - 1] == b'_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 10, "found only {} source files", files.len());
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative.components().next().expect("a component").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        let Some(from) = layer(&top) else {
            wrong.push(format!("{}: module {top} has no layer in tests/architecture.rs", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for used in uses(&text) {
            if used == top {
                continue;
            }
            match layer(&used) {
                Some(to) if to < from => {}
                Some(_) => wrong
                    .push(format!("{}: {top} uses crate::{used}, which is not below it", relative.display())),
                None => wrong.push(format!("{}: crate::{used} is not a known module", relative.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// The HTTP codec is pure: the reactor uses it to split requests, so it must not reach up into routes.
#[test]
fn the_http_codec_uses_nothing_of_the_server() {
    let codec = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/codec.rs");
    let text = std::fs::read_to_string(codec).expect("codec.rs is readable");
    assert_eq!(uses(&text), BTreeSet::new());
}
