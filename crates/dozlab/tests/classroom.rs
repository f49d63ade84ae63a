//! CLI tests of `dozlab classroom render` and `dozlab session values`: the
//! real binary in a temporary directory. (Rendering the output through the
//! Helm chart is tested in tests/chart/test_classroom.py.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn dozlab(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dozlab"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run dozlab")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn render(dir: &Path, roster: &str, extra: &[&str]) -> Output {
    fs::write(dir.join("roster.csv"), roster).unwrap();
    let mut args = vec![
        "classroom",
        "render",
        "--roster",
        "roster.csv",
        "--image-url",
        "https://example.com/dozlab-k8s.ext4",
        "--out",
        "out",
    ];
    args.extend_from_slice(extra);
    dozlab(dir, &args)
}

#[test]
fn classroom_render_writes_releases_secrets_and_private_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let o = render(
        dir.path(),
        "id,user,name\nAlice,alice,Alice A\nBob Smith,,Bob\n",
        &["--course", "k8s-101", "--cohort", "2024-spring", "--sealed"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("out");
    let creds = fs::read_to_string(out.join("credentials.csv")).unwrap();
    assert_eq!(mode(&out.join("credentials.csv")), 0o600);
    let lines: Vec<&str> = creds.lines().collect();
    assert_eq!(lines.len(), 3, "{creds}");
    let password = lines[1].rsplit(',').next().unwrap();
    assert_eq!(password.len(), 32);

    let hr = fs::read_to_string(out.join("helmreleases/lab-session-k8s-101-alice.yaml")).unwrap();
    assert!(
        !hr.contains(password),
        "password leaked into the HelmRelease"
    );
    assert!(hr.contains("apiVersion: \"helm.toolkit.fluxcd.io/v2\""));
    assert!(hr.contains("interval: \"5m\""));
    assert!(hr.contains("existingSecret: \"lab-session-k8s-101-alice-secrets\""));
    assert!(hr.contains("course: \"k8s-101\"") && hr.contains("cohort: \"2024-spring\""));
    assert!(
        out.join("helmreleases/lab-session-k8s-101-bob-smith.yaml")
            .exists()
    );

    let secret = out.join("secrets/lab-session-k8s-101-alice-secrets.yaml");
    assert_eq!(mode(&secret), 0o600);
    assert!(fs::read_to_string(&secret).unwrap().contains(password));
    assert!(
        fs::read_to_string(out.join(".gitignore"))
            .unwrap()
            .contains("/secrets/")
    );
    assert!(out.join("seal-secrets.sh").exists());
}

#[test]
fn classroom_render_refuses_bad_rosters_naming_lines_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = render(dir.path(), "id\nalice\nbob\nAlice\n@@@\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("line 4: id \"Alice\" becomes \"alice\", already used by line 2"),
        "{e}"
    );
    assert!(e.contains("line 5: id \"@@@\""), "{e}");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the roster may remain");
}

#[test]
fn classroom_render_refuses_bad_flags_and_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let o = render(dir.path(), "id\nalice\n", &["--cohort", "spring 2024"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--cohort"), "{}", stderr(&o));
    let cause = "\"spring 2024\" is not a valid Kubernetes label value";
    assert_eq!(stderr(&o).matches(cause).count(), 1, "{}", stderr(&o));

    fs::create_dir(dir.path().join("out")).unwrap();
    fs::write(dir.path().join("out/keep"), "x").unwrap();
    let o = render(dir.path(), "id\nalice\n", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("exists and is not empty"),
        "{}",
        stderr(&o)
    );

    let o = dozlab(
        dir.path(),
        &[
            "classroom",
            "render",
            "--roster",
            "missing.csv",
            "--image-url",
            "https://x/y",
            "--out",
            "o2",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read roster missing.csv"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn session_values_writes_a_private_values_file() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "session",
        "values",
        "--id",
        "my-session",
        "--user",
        "my-user",
        "--image-url",
        "https://example.com/rootfs.ext4",
        "--out",
        "v.yaml",
    ];
    let o = dozlab(dir.path(), &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = dir.path().join("v.yaml");
    assert_eq!(mode(&p), 0o600);
    let text = fs::read_to_string(&p).unwrap();
    assert!(text.contains("  id: \"my-session\"") && text.contains("  password: \""));
    // A second run does not silently replace the password.
    let o = dozlab(dir.path(), &args);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(fs::read_to_string(&p).unwrap(), text);
}

#[test]
fn session_values_suggests_a_valid_id() {
    let dir = tempfile::tempdir().unwrap();
    let o = dozlab(
        dir.path(),
        &[
            "session",
            "values",
            "--id",
            "My_Session",
            "--user",
            "u",
            "--image-url",
            "https://x/y",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("use \"my-session\""), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}
