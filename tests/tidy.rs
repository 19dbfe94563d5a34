//! House rules checked over the source tree: module docs, no ignored or should_panic tests.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "actors", "config", "dashboard", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found the sources: {files:?}");
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let missing: Vec<_> =
        sources().into_iter().filter(|f| !std::fs::read_to_string(f).unwrap_or_default().starts_with("//!")).collect();
    assert!(missing.is_empty(), "files without a leading //! line: {missing:#?}");
}

#[test]
fn no_test_is_ignored_or_expected_to_panic() {
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let offenders: Vec<_> = sources()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            banned.iter().any(|b| text.contains(b))
        })
        .collect();
    assert!(offenders.is_empty(), "ignored or should_panic tests: {offenders:#?}");
}

#[test]
fn insights_stay_pure() {
    // `src/insights.rs` is a function of its arguments: no clock, no files, no store, no randomness.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/insights.rs");
    let text = std::fs::read_to_string(&path).expect("src/insights.rs");
    let banned = [
        "std::fs",
        "std::time",
        "SystemTime",
        "Instant",
        "std::env",
        "std::process",
        "std::net",
        "std::thread",
        "tokio",
        "rand::",
        "crate::store",
        "crate::app",
        "now_ms()",
    ];
    let found: Vec<&str> = banned.iter().copied().filter(|b| text.contains(b)).collect();
    assert!(found.is_empty(), "src/insights.rs must stay pure, but names {found:?}");
}
