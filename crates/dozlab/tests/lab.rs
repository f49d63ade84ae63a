//! CLI tests of `dozlab lab validate|test`. `validate` runs over the example
//! labs and over broken ones written on the fly (exit codes 0/1/2, messages
//! naming file and line). As root, `lab test` runs every lab under
//! `labs/examples/` in a real session (QEMU/TCG boot of the cached `vm`
//! image through `dozlab up`), catches a verify that always passes and one
//! that hangs, and boots (and removes) a session of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("labs/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.json").exists())
        .collect();
    v.sort();
    v
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, rel: &str, t: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, t).unwrap();
}

/// A one-step lab with `verify` as its check.
fn small_lab(verify: &str, extra_index: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "index.json",
        &format!(
            "{{\n  \"title\": \"small\",\n  \"details\": {{\n    \"steps\": [ {{ \"title\": \"one\", \"text\": \"step1.md\", \"verify\": \"verify.sh\" }} ]\n  }}{extra_index}\n}}\n"
        ),
    );
    write(d.path(), "step1.md", "`touch /tmp/small-lab`{{exec}}\n");
    write(d.path(), "verify.sh", verify);
    d
}

#[test]
fn validate_accepts_every_example() {
    let ex = examples();
    assert!(ex.len() >= 3, "{ex:?}");
    for dir in ex {
        let out = Command::new(BIN)
            .args(["lab", "validate"])
            .arg(&dir)
            .output()
            .unwrap();
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
    let run = |dir: &Path| {
        Command::new(BIN)
            .args(["lab", "validate"])
            .arg(dir)
            .output()
            .unwrap()
    };
    // A missing text file.
    let d = small_lab("test -f /tmp/x\n", "");
    std::fs::remove_file(d.path().join("step1.md")).unwrap();
    let out = run(d.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("index.json:4: error: \"step1.md\" does not exist"),
        "{}",
        text(&out)
    );
    // Bad JSON.
    write(d.path(), "index.json", "{\n  \"title\": \"x\",,\n}\n");
    let out = run(d.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("index.json:2:"), "{}", text(&out));
    // A glob that matches nothing.
    let d = small_lab(
        "test -f /tmp/x\n",
        ",\n  \"x-assets\": 1, \"details\": { \"steps\": [ { \"title\": \"one\", \"text\": \"step1.md\" } ], \"assets\": { \"host01\": [ { \"file\": \"*.conf\", \"target\": \"/etc\" } ] } }",
    );
    let out = run(d.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("\"*.conf\" matches no file under assets/"),
        "{}",
        text(&out)
    );
    // JSON for scripts.
    let d = small_lab("if true; then\n", "");
    let out = Command::new(BIN)
        .args(["lab", "validate", "--json"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problems"][0]["file"], "verify.sh", "{v}");
    // Cannot read.
    let out = run(&d.path().join("missing"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // `lab test` refuses an invalid lab before booting anything.
    let d = small_lab("test -f /tmp/x\n", "");
    std::fs::remove_file(d.path().join("step1.md")).unwrap();
    let out = Command::new(BIN)
        .args(["lab", "test"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("lab validate"), "{}", text(&out));
}

/// Private state roots, so the test's sessions stay apart from others.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("DOZLAB_RUN_DIR", self.dir.path().join("run"))
            .env("DOZLAB_DATA_DIR", self.dir.path().join("data"))
            .env_remove("DOZLAB_IMAGE");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn sessions(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("run/sessions"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Stops the session however the test ends.
struct Down<'a>(&'a Env, String);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down", &self.1]);
    }
}

/// The cached `vm` image directory (built once).
fn vm_image() -> String {
    let out = Command::new("bash")
        .arg(root().join("scripts/test-image"))
        .arg("vm")
        .env("DOZLAB_BIN", BIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[test]
fn root_lab_test_runs_every_example_and_catches_broken_checks() {
    dozlab_testkit::require_root!("needs root (dozlab up: namespaces, tap, QEMU)");
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let image = vm_image();
    let name = format!("lt{}", std::process::id());
    let out = env.run(&[
        "up", "--detach", "--name", &name, "--image", &image, "--accel", "tcg",
    ]);
    let _down = Down(&env, name.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for dir in examples() {
        let out = env
            .cmd(&["lab", "test", "--session", &name])
            .arg(&dir)
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{}: {t}", dir.display());
        assert!(t.contains("STEP") && t.contains("passes"), "{t}");
    }
    // A verify that always passes is a bug `lab test` reports.
    let d = small_lab("#!/bin/bash\nexit 0\n", "");
    let out = env
        .cmd(&["lab", "test", "--session", &name])
        .arg(d.path())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("PASSES") && t.contains("always passes"), "{t}");
    // A verify that hangs times out with a clear message.
    let d = small_lab(
        "#!/bin/bash\nsleep 600\n",
        ",\n  \"dozlab\": { \"verifyTimeout\": 2 }",
    );
    let out = env
        .cmd(&["lab", "test", "--session", &name])
        .arg(d.path())
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("TIMEOUT") && t.contains("did not finish within 2s (timed out)"),
        "{t}"
    );
    // A session that does not exist.
    let out = env
        .cmd(&["lab", "test", "--session", "nosuch"])
        .arg(&examples()[0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn root_lab_test_boots_and_removes_its_own_session() {
    dozlab_testkit::require_root!("needs root (dozlab up: namespaces, tap, QEMU)");
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let image = vm_image();
    let name = format!("lb{}", std::process::id());
    let lab = root().join("labs/examples/hello-file");
    let out = env
        .cmd(&[
            "lab", "test", "--image", &image, "--accel", "tcg", "--name", &name,
        ])
        .arg(&lab)
        .output()
        .unwrap();
    let _down = Down(&env, name.clone());
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
