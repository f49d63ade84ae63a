//! CLI tests of `dozlab lab validate|test`. `validate` runs over the example
//! labs and over broken ones written on the fly (exit codes 0/1/2, messages
//! naming file and line). As root, `lab test` runs every lab under
//! `labs/examples/` in a real session (QEMU/TCG boot of the cached `vm`
//! image through `dozlab up`), catches a verify that always passes and one
//! that hangs, and boots (and removes) a session of its own.

mod common;
use common::labfiles::{examples_dir, write_file};
use common::session::{BIN, Env, vm_image};
use common::{assert_exit, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").exists())
        .collect();
    v.sort();
    v
}

/// `dozlab lab validate [--json] DIR`.
fn validate(flags: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(["lab", "validate"])
        .args(flags)
        .arg(dir)
        .output()
        .unwrap()
}

/// A one-step lab with `verify` as its check.
fn small_lab(verify: &str, extra_index: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write_file(
        d.path(),
        "index.json",
        &format!(
            "{{\n  \"title\": \"small\",\n  \"details\": {{\n    \"steps\": [ {{ \"title\": \"one\", \"text\": \"step1.md\", \"verify\": \"verify.sh\" }} ]\n  }}{extra_index}\n}}\n"
        ),
    );
    write_file(d.path(), "step1.md", "`touch /tmp/small-lab`{{exec}}\n");
    write_file(d.path(), "verify.sh", verify);
    d
}

#[test]
fn validate_accepts_every_example() {
    let ex = examples();
    assert!(ex.len() >= 3, "{ex:?}");
    for dir in ex {
        let out = validate(&[], &dir);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            dir.display(),
            text(&out)
        );
        assert!(text(&out).contains(": valid ("), "{}", text(&out));
    }
}

#[test]
fn validate_reports_broken_labs_with_file_line_and_exit_code() {
    // A missing text file.
    let d = small_lab("test -f /tmp/x\n", "");
    std::fs::remove_file(d.path().join("step1.md")).unwrap();
    let out = validate(&[], d.path());
    assert_exit(&out, 1, "index.json:4: error: \"step1.md\" does not exist");
    // Bad JSON.
    write_file(d.path(), "index.json", "{\n  \"title\": \"x\",,\n}\n");
    let out = validate(&[], d.path());
    assert_exit(&out, 1, "index.json:2:");
    // A glob that matches nothing.
    let d = small_lab(
        "test -f /tmp/x\n",
        ",\n  \"x-assets\": 1, \"details\": { \"steps\": [ { \"title\": \"one\", \"text\": \"step1.md\" } ], \"assets\": { \"host01\": [ { \"file\": \"*.conf\", \"target\": \"/etc\" } ] } }",
    );
    let out = validate(&[], d.path());
    assert_exit(&out, 1, "\"*.conf\" matches no file under assets/");
    // JSON for scripts.
    let d = small_lab("if true; then\n", "");
    let out = validate(&["--json"], d.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["file"], "verify.sh", "{v}");
    // Cannot read.
    let out = validate(&[], &d.path().join("missing"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // `lab test` refuses an invalid lab before booting anything.
    let d = small_lab("test -f /tmp/x\n", "");
    std::fs::remove_file(d.path().join("step1.md")).unwrap();
    let out = Command::new(BIN)
        .args(["lab", "test"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_exit(&out, 2, "lab validate");
}

/// `dozlab lab test --session SESSION DIR` under `env`'s state roots.
fn lab_test_in(env: &Env, session: &str, dir: &Path) -> Output {
    env.cmd(&["lab", "test", "--session", session])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn root_lab_test_runs_every_example_and_catches_broken_checks() {
    dozlab_testkit::require_root!("needs root (dozlab up: namespaces, tap, QEMU)");
    let env = Env::new();
    let image = vm_image();
    let name = format!("lt{}", std::process::id());
    let out = env.up(
        &name,
        image.to_str().unwrap(),
        &["--detach", "--accel", "tcg"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for dir in examples() {
        let out = lab_test_in(&env, &name, &dir);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {t}", dir.display());
        assert!(t.contains("STEP") && t.contains("passes"), "{t}");
    }
    // A verify that always passes is a bug `lab test` reports.
    let d = small_lab("#!/bin/bash\nexit 0\n", "");
    let out = lab_test_in(&env, &name, d.path());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("PASSES") && t.contains("always passes"), "{t}");
    // A verify that hangs times out with a clear message.
    let d = small_lab(
        "#!/bin/bash\nsleep 600\n",
        ",\n  \"dozlab\": { \"verifyTimeout\": 2 }",
    );
    let out = lab_test_in(&env, &name, d.path());
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("TIMEOUT") && t.contains("did not finish within 2s (timed out)"),
        "{t}"
    );
    // A session that does not exist.
    let out = lab_test_in(&env, "nosuch", &examples()[0]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn root_lab_test_boots_and_removes_its_own_session() {
    dozlab_testkit::require_root!("needs root (dozlab up: namespaces, tap, QEMU)");
    let env = Env::new();
    let image = vm_image();
    let name = format!("lb{}", std::process::id());
    let lab = examples_dir().join("hello-file");
    let out = env
        .cmd(&["lab", "test", "--image", image.to_str().unwrap()])
        .args(["--accel", "tcg", "--name", &name])
        .arg(&lab)
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("Write a greeting") && t.contains("fails") && t.contains("passes"),
        "{t}"
    );
    assert!(
        env.sessions().is_empty(),
        "session left: {:?}",
        env.sessions()
    );
}
