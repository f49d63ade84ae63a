//! No test in the workspace skips the old way (a printed "skip" message and
//! an early return, hidden by libtest's capture): every skip goes through
//! dozlab-testkit, so it is visible, logged and strict in CI.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, depth first.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("node_modules") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The 1-based lines of `text` where a print macro's message starts with
/// "skip" (any case), also when the message is on the next line.
fn skip_prints(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for mac in ["println!(", "print!("] {
        for (i, _) in text.match_indices(mac) {
            let rest = text[i + mac.len()..].trim_start();
            let msg = rest.strip_prefix('"').unwrap_or("");
            if msg.to_ascii_lowercase().starts_with("skip") {
                lines.push(text[..i].lines().count().max(1));
            }
        }
    }
    lines
}

#[test]
fn the_detector_sees_the_old_pattern_and_not_the_new() {
    assert_eq!(
        skip_prints("x\n    eprintln!(\"skipping: needs root\");"),
        [2]
    );
    assert_eq!(skip_prints("eprintln!(\n    \"SKIP: no sshd\",\n);"), [1]);
    assert!(skip_prints(r#"dozlab_testkit::require_root!("skip me");"#).is_empty());
    assert!(skip_prints(r#"out.push_str("docker checks skipped");"#).is_empty());
    assert!(skip_prints(r#"eprintln!("{SKIP}");"#).is_empty());
}

#[test]
fn no_test_prints_its_own_skip_message() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    let mine = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut found = Vec::new();
    for file in files {
        if file.canonicalize().unwrap().starts_with(&mine) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for n in skip_prints(&text) {
            found.push(format!("{}:{n}", file.display()));
        }
    }
    assert!(
        found.is_empty(),
        "skip with dozlab_testkit::require_root!/require_tool!/skip_if! (docs/testing.md), \
         not a printed message and a return:\n{}",
        found.join("\n")
    );
}
