//! Loading and validating labs written on the fly: a good one, and broken
//! ones (bad JSON, a missing text file, a glob that matches nothing, a
//! script with a syntax error, paths leaving the lab, unknown keys).

use dozlab_lab::validate::{Report, validate};
use dozlab_lab::{PageId, load};
use std::path::Path;
use std::time::Duration;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const GOOD: &str = r#"{
  "title": "Files",
  "description": "Make a file",
  "details": {
    "intro": { "text": "intro.md", "background": "setup.sh" },
    "steps": [
      { "title": "Create", "text": "step1.md", "verify": "verify1.sh" },
      { "title": "Fill", "text": "step2.md", "verify": "verify2.sh", "foreground": "fg.sh" }
    ],
    "finish": { "text": "finish.md" },
    "assets": { "host01": [
      { "file": "bin/*.sh", "target": "/usr/local/bin", "chmod": "+x" },
      { "file": "**/*.txt", "target": "~/data" }
    ] }
  },
  "backend": { "imageid": "ubuntu" },
  "interface": { "layout": "terminal" },
  "dozlab": { "verifyTimeout": 5, "steps": [ {}, { "solution": "solve2.sh", "verifyTimeout": 9 } ] }
}
"#;

fn good_lab() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    write(p, "index.json", GOOD);
    write(p, "intro.md", "# Welcome\n![net](img/net.png)\n");
    write(p, "img/net.png", "png");
    write(p, "step1.md", "Create it: `touch /tmp/x`{{exec}}\n");
    write(
        p,
        "step2.md",
        "Fill it:\n\n```\necho hi > /tmp/x\n```{{exec}}\n",
    );
    write(p, "finish.md", "Done.\n");
    write(p, "setup.sh", "#!/bin/bash\nrm -f /tmp/x\n");
    write(p, "verify1.sh", "test -f /tmp/x\n");
    write(p, "verify2.sh", "#!/usr/bin/env bash\ngrep -q hi /tmp/x\n");
    write(p, "fg.sh", "echo go\n");
    write(p, "solve2.sh", "echo hi > /tmp/x\n");
    write(p, "assets/bin/tool.sh", "#!/bin/sh\necho tool\n");
    write(p, "assets/notes/a.txt", "a");
    d
}

fn errors(r: &Report) -> Vec<String> {
    r.problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn a_good_lab_loads_with_its_extensions() {
    let d = good_lab();
    let lab = load(d.path()).unwrap();
    assert_eq!(lab.title, "Files");
    assert_eq!(lab.steps.len(), 2);
    assert_eq!(lab.steps[0].verify.as_deref(), Some("verify1.sh"));
    assert_eq!(lab.steps[0].verify_timeout, Duration::from_secs(5));
    assert_eq!(lab.steps[1].verify_timeout, Duration::from_secs(9));
    assert_eq!(lab.steps[1].solution.as_deref(), Some("solve2.sh"));
    assert_eq!(
        lab.intro.as_ref().unwrap().background.as_deref(),
        Some("setup.sh")
    );
    assert_eq!(
        lab.page(PageId::Finish).unwrap().text.as_deref(),
        Some("finish.md")
    );
    assert_eq!(lab.image.image, "vm");
    // The unknown key is kept and warned about, with its line.
    assert_eq!(lab.raw["interface"]["layout"], "terminal");
    let w: Vec<_> = lab.warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        w,
        vec!["index.json:17: warning: key `interface` is not used by Dozlab: kept and ignored"]
    );
    let files: Vec<_> = lab
        .assets
        .iter()
        .flat_map(|a| a.expand(d.path()).unwrap())
        .map(|f| (f.dest, f.mode & 0o111 != 0))
        .collect();
    assert_eq!(
        files,
        vec![
            ("/usr/local/bin/tool.sh".into(), true),
            ("data/notes/a.txt".into(), false)
        ]
    );
    let report = validate(d.path()).unwrap();
    assert!(report.passed(), "{:?}", report.problems);
}

#[test]
fn unknown_image_falls_back_with_a_warning_and_dozlab_image_wins() {
    let d = good_lab();
    let text = GOOD.replace("\"ubuntu\"", "\"windows-server\"");
    write(d.path(), "index.json", &text);
    let lab = load(d.path()).unwrap();
    assert_eq!(lab.image.image, "vm");
    assert!(
        lab.warnings
            .iter()
            .any(|w| w.message.contains("windows-server") && w.line == Some(16)),
        "{:?}",
        lab.warnings
    );
    let text = GOOD.replace(
        "\"verifyTimeout\": 5,",
        "\"verifyTimeout\": 5, \"image\": \"k8s\",",
    );
    write(d.path(), "index.json", &text);
    assert_eq!(load(d.path()).unwrap().image.image, "k8s");
}

#[test]
fn bad_json_names_line_and_column() {
    let d = good_lab();
    write(
        d.path(),
        "index.json",
        "{\n  \"title\": \"x\",\n  \"details\": { \"steps\": [ }\n}\n",
    );
    let r = validate(d.path()).unwrap();
    assert!(!r.passed());
    let e = errors(&r);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("index.json:3:"), "{e:?}");
    assert!(e[0].contains("not valid JSON"), "{e:?}");
}

#[test]
fn wrong_types_and_missing_steps_are_errors() {
    let d = good_lab();
    write(
        d.path(),
        "index.json",
        "{\n  \"details\": {\n    \"steps\": \"step1.md\"\n  }\n}\n",
    );
    let e = errors(&validate(d.path()).unwrap());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("invalid type"), "{e:?}");
    write(d.path(), "index.json", "{ \"title\": \"no details\" }");
    let e = errors(&validate(d.path()).unwrap());
    assert!(e.iter().any(|m| m.contains("details")), "{e:?}");
    write(
        d.path(),
        "index.json",
        "{ \"details\": { \"steps\": [ { \"title\": \"no text\" } ] } }",
    );
    let e = errors(&validate(d.path()).unwrap());
    assert!(e.iter().any(|m| m.contains("has no `text`")), "{e:?}");
}

#[test]
fn missing_text_file_is_named_with_its_index_line() {
    let d = good_lab();
    std::fs::remove_file(d.path().join("step2.md")).unwrap();
    let e = errors(&validate(d.path()).unwrap());
    assert_eq!(e, vec!["index.json:8: error: \"step2.md\" does not exist"]);
    // `load` (what the terminal and `up --lab` use) names it too, and a
    // missing script, instead of failing later when the page is rendered.
    std::fs::remove_file(d.path().join("verify1.sh")).unwrap();
    let err = load(d.path()).unwrap_err();
    let shown = err.to_string();
    assert!(!err.is_unreadable(), "{shown}");
    assert!(
        shown.contains("index.json:8: error: \"step2.md\" does not exist")
            && shown.contains("index.json:7: error: \"verify1.sh\" does not exist"),
        "{shown}"
    );
}

#[test]
fn a_glob_that_matches_nothing_is_an_error() {
    let d = good_lab();
    std::fs::remove_dir_all(d.path().join("assets/notes")).unwrap();
    let e = errors(&validate(d.path()).unwrap());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("index.json:13:") && e[0].contains("matches no file under assets/"),
        "{e:?}"
    );
}

#[test]
fn script_syntax_errors_and_missing_images_name_file_and_line() {
    let d = good_lab();
    write(
        d.path(),
        "verify1.sh",
        "#!/bin/bash\nif [ -f /tmp/x ]; then\n  exit 0\n",
    );
    write(
        d.path(),
        "intro.md",
        "# Welcome\n\nsee ![net](img/missing.png)\n",
    );
    let e = errors(&validate(d.path()).unwrap());
    assert!(
        e.iter()
            .any(|m| m.starts_with("verify1.sh:") && m.contains("bash syntax")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("intro.md:3:") && m.contains("img/missing.png")),
        "{e:?}"
    );
}

#[test]
fn paths_may_not_leave_the_lab_and_bad_extensions_are_errors() {
    let d = good_lab();
    let text = GOOD
        .replace("\"verify1.sh\"", "\"../verify1.sh\"")
        .replace("\"chmod\": \"+x\"", "\"chmod\": \"+q\"")
        .replace("\"verifyTimeout\": 5", "\"verifyTimeout\": -1");
    write(d.path(), "index.json", &text);
    let e = errors(&validate(d.path()).unwrap());
    assert!(
        e.iter()
            .any(|m| m.starts_with("index.json:7:") && m.contains("leaves the lab")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("index.json:12:") && m.contains("chmod")),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("verifyTimeout")), "{e:?}");
}

#[test]
fn an_unreadable_lab_is_not_a_report() {
    let d = tempfile::tempdir().unwrap();
    let e = validate(&d.path().join("nope")).unwrap_err();
    assert!(e.is_unreadable(), "{e}");
    let e = validate(d.path()).unwrap_err();
    assert!(
        e.is_unreadable() && e.to_string().contains("index.json"),
        "{e}"
    );
}
