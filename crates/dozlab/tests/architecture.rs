//! ARCHITECTURE.md's code map stays true: every crate has a line in the crate
//! table, every module a line in the module table, and each module's line is
//! the first sentence of its `//!` doc. On failure the message lists the
//! exact lines to write.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Test-only modules (`tests.rs`, `*_tests.rs`) are not part of the map.
fn is_test_module(path: &Path) -> bool {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name == "tests" || name.ends_with("_tests")
}

/// The first sentence of a file's leading `//!` paragraph, without its final
/// period, or `None` when the file has no module doc.
fn first_sentence(source: &str) -> Option<String> {
    let mut words = Vec::new();
    for line in source.lines() {
        let Some(text) = line.strip_prefix("//!") else {
            break;
        };
        let text = text.trim();
        if text.is_empty() {
            if words.is_empty() {
                continue;
            }
            break;
        }
        words.push(text.to_string());
    }
    if words.is_empty() {
        return None;
    }
    let para = words.join(" ");
    let end = para
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && para[i + 1..].chars().next().is_none_or(char::is_whitespace)
        })
        .map_or(para.len(), |(i, _)| i);
    Some(para[..end].to_string())
}

/// Table cell text as Markdown needs it (`|` escaped).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `crate/src/path.rs` → first sentence, for every module of every crate.
fn modules(root: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    let mut map = BTreeMap::new();
    let mut undocumented = Vec::new();
    for krate in fs::read_dir(root.join("crates")).unwrap().flatten() {
        let src = krate.path().join("src");
        for file in rust_files(&src) {
            if is_test_module(&file) {
                continue;
            }
            let key = file
                .strip_prefix(root.join("crates"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            match first_sentence(&fs::read_to_string(&file).unwrap()) {
                Some(s) => {
                    map.insert(key, cell(&s));
                }
                None => undocumented.push(key),
            }
        }
    }
    (map, undocumented)
}

/// The module rows of ARCHITECTURE.md: `` | `path.rs` | text | ``.
fn mapped(arch: &str) -> BTreeMap<String, String> {
    arch.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("| `")?;
            let (path, rest) = rest.split_once("` | ")?;
            if !path.ends_with(".rs") {
                return None;
            }
            Some((path.to_string(), rest.strip_suffix(" |")?.to_string()))
        })
        .collect()
}

#[test]
fn every_module_has_a_doc_and_its_line_in_the_code_map() {
    let root = workspace();
    let arch = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let (actual, undocumented) = modules(&root);
    let written = mapped(&arch);
    let mut problems = Vec::new();
    for m in &undocumented {
        problems.push(format!("{m}: no `//!` module doc"));
    }
    for (path, doc) in &actual {
        match written.get(path) {
            None => problems.push(format!("missing row: | `{path}` | {doc} |")),
            Some(w) if w != doc => problems.push(format!(
                "row differs from the module doc, write: | `{path}` | {doc} |"
            )),
            Some(_) => {}
        }
    }
    for path in written.keys().filter(|p| !actual.contains_key(*p)) {
        problems.push(format!("stale row (no such module): `{path}`"));
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's code map is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_crate_has_its_line_in_the_crate_table() {
    let root = workspace();
    let arch = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let missing: Vec<String> = fs::read_dir(root.join("crates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| format!("crates/{}", e.file_name().to_string_lossy()))
        .filter(|c| !arch.contains(&format!("| `{c}` |")))
        .collect();
    assert!(missing.is_empty(), "crates without a row: {missing:?}");
}

#[test]
fn first_sentence_rules() {
    assert_eq!(
        first_sentence("//! One. Two.\n//! Three\nfn x() {}").as_deref(),
        Some("One")
    );
    assert_eq!(
        first_sentence("//! Reads `a.b` files and\n//! more.\n\nuse x;").as_deref(),
        Some("Reads `a.b` files and more")
    );
    assert_eq!(first_sentence("use x;\n//! late"), None);
    assert_eq!(cell("a|b"), "a\\|b");
}
