//! Unit tests of `classroom render` on real files in a temporary directory.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn opts(dir: &Path, roster: &str) -> Options {
    let path = dir.join("roster.csv");
    fs::write(&path, roster).unwrap();
    Options {
        roster: path,
        image_url: "https://example.com/dozlab-k8s.ext4".into(),
        out: dir.join("out"),
        course: Some("kubernetes-101".into()),
        cohort: Some("2024-spring".into()),
        chart_source: "dozlab-infra".into(),
        chart_source_namespace: "flux-system".into(),
        chart: "charts/dozlab-session".into(),
        namespace: "default".into(),
        sealed: false,
        lab: None,
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn renders_releases_secrets_and_private_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), "id,user\nAlice,alice\nbob,\n");
    let summary = render(&o).unwrap();
    assert_eq!(summary.sessions.len(), 2);
    let s = &summary.sessions[0];
    assert_eq!(s.session_id, "kubernetes-101-alice");
    let hr = fs::read_to_string(
        o.out
            .join("helmreleases/lab-session-kubernetes-101-alice.yaml"),
    )
    .unwrap();
    assert!(!hr.contains(&s.password));
    assert!(
        hr.contains("existingSecret: \"lab-session-kubernetes-101-alice-secrets\""),
        "{hr}"
    );
    assert!(hr.contains("course: \"kubernetes-101\""));
    let secret_path = o
        .out
        .join("secrets/lab-session-kubernetes-101-alice-secrets.yaml");
    assert!(
        fs::read_to_string(&secret_path)
            .unwrap()
            .contains(&s.password)
    );
    assert_eq!(mode(&secret_path), 0o600);
    assert_eq!(mode(&o.out.join("secrets")), 0o700);
    let creds = o.out.join("credentials.csv");
    assert_eq!(mode(&creds), 0o600);
    assert!(fs::read_to_string(&creds).unwrap().contains(&s.password));
    assert!(!o.out.join("seal-secrets.sh").exists());
}

#[test]
fn sealed_mode_writes_a_kubeseal_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), "id\ncarol\n");
    o.sealed = true;
    render(&o).unwrap();
    let script = fs::read_to_string(o.out.join("seal-secrets.sh")).unwrap();
    assert!(
        script.contains("kubeseal -o yaml < secrets/lab-session-kubernetes-101-carol-secrets.yaml")
    );
}

#[test]
fn bad_roster_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), "id\nalice\nALICE\n");
    let e = render(&o).unwrap_err();
    assert!(e.is_usage());
    assert!(e.to_string().contains("line 3"), "{e}");
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("roster.csv")]);
}

#[test]
fn refuses_a_non_empty_out_dir_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), "id\nalice\n");
    fs::create_dir(&o.out).unwrap();
    fs::write(o.out.join("keep"), "x").unwrap();
    assert!(matches!(render(&o), Err(ClassroomError::OutNotEmpty(_))));
    assert_eq!(fs::read_to_string(o.out.join("keep")).unwrap(), "x");

    let mut o2 = opts(dir.path(), "id\nalice\n");
    o2.out = dir.path().join("fresh");
    o2.image_url = "ftp://x".into();
    assert!(matches!(render(&o2), Err(ClassroomError::ImageUrl(_))));
    o2.image_url = "https://x/y.ext4".into();
    o2.course = Some("k 101".into());
    let e = dozlab_core::error_chain(&render(&o2).unwrap_err());
    assert!(e.starts_with("--course: course \"k 101\""), "{e}");
    assert_eq!(e.matches("\"k 101\"").count(), 1, "the cause once: {e}");
    assert!(!o2.out.exists());
}

#[test]
fn an_empty_existing_out_dir_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), "id\nalice\n");
    fs::create_dir(&o.out).unwrap();
    render(&o).unwrap();
    assert!(o.out.join("helmreleases").is_dir());
}

#[test]
fn a_lab_reaches_every_students_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), "id\nalice\nbob\n");
    let sha = "ab".repeat(32);
    o.lab = crate::lab::LabSource::from_flags(
        Some("https://labs.example.com/first.tar.gz"),
        Some(&sha.to_ascii_uppercase()),
    )
    .unwrap();
    let summary = render(&o).unwrap();
    assert_eq!(summary.sessions.len(), 2);
    for s in &summary.sessions {
        let hr = helm_release(&o, s);
        assert_eq!(
            hr["spec"]["values"]["lab"],
            json!({"url": "https://labs.example.com/first.tar.gz", "sha256": sha})
        );
        let text = fs::read_to_string(o.out.join(format!("helmreleases/{}.yaml", s.name))).unwrap();
        assert!(
            text.contains("url: \"https://labs.example.com/first.tar.gz\""),
            "{text}"
        );
        assert!(text.contains(&format!("sha256: \"{sha}\"")), "{text}");
    }
}

#[test]
fn without_a_lab_no_lab_key() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), "id\nalice\n");
    let summary = render(&o).unwrap();
    let hr = helm_release(&o, &summary.sessions[0]);
    assert!(hr["spec"]["values"].get("lab").is_none(), "{hr}");
}
