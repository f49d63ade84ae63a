//! CLI tests of `dozlab lab fetch`, the chart's init step: a lab from a
//! directory, from a `.tar.gz` path and from a URL on a loopback HTTP
//! server (sha256 right and wrong), into a new directory and into an empty
//! one (a mounted volume), run twice; a ConfigMap-like directory of flat
//! files and one holding a single `lab.tar.gz`; refused archives (a
//! symlink), invalid labs and unusable destinations, each leaving nothing.

mod common;
use common::labfiles::{examples_dir, tar_gz};
use common::{assert_exit, sigterm, text};
use dozlab_fetch::testing::{FaultServer, sha256_hex};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

/// A copy of the `toolbox` example in `d/labs/toolbox`, one asset made
/// 0750 (the example's files are all 0644) so modes are seen to travel.
fn toolbox(d: &Path) -> PathBuf {
    let labs = d.join("labs");
    std::fs::create_dir_all(&labs).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(examples_dir().join("toolbox"))
        .arg(&labs)
        .status()
        .unwrap();
    assert!(st.success());
    let copy = labs.join("toolbox");
    std::fs::set_permissions(
        copy.join("assets/bin/site-stats.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    copy
}

fn fetch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["lab", "fetch"])
        .args(args)
        .env_remove("LAB_URL")
        .env_remove("LAB_DIR")
        .env_remove("LAB_SHA256")
        .env_remove("DOZLAB_CACHE")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts the fetched toolbox lab is whole in `dest`, modes kept.
fn assert_toolbox(dest: &Path) {
    let out = Command::new(BIN)
        .args(["lab", "validate", s(dest)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for f in [
        "index.json",
        "step1.md",
        "assets/site/pages/guides/start.md",
        ".dozlab-fetch.json",
    ] {
        assert!(dest.join(f).is_file(), "{f} in {}", dest.display());
    }
    // Permission bits kept, readable by all.
    assert_eq!(mode(&dest.join("assets/bin/site-stats.sh")), 0o754);
    assert_eq!(mode(&dest.join("setup.sh")), 0o644);
}

#[test]
fn a_directory_is_copied_into_a_new_dest_and_validated() {
    let d = tempfile::tempdir().unwrap();
    let src = toolbox(d.path());
    let dest = d.path().join("deep/lab");
    let out = fetch(&[s(&src), "--dest", s(&dest)]);
    assert_exit(&out, 0, "lab \"A small toolbox\" (3 steps");
    assert_toolbox(&dest);
    assert_eq!(names(&d.path().join("deep")), vec!["lab"], "no stage left");
}

#[test]
fn a_url_archive_is_checked_against_its_sha256() {
    let d = tempfile::tempdir().unwrap();
    // A single top-level directory holding index.json, as `tar -C labs toolbox` makes.
    let src = toolbox(d.path());
    let archive = tar_gz(
        &d.path().join("toolbox.tar.gz"),
        src.parent().unwrap(),
        &["toolbox"],
    );
    let server = FaultServer::start().unwrap();
    server.add("/labs/toolbox.tar.gz", archive.clone());
    let url = server.url("/labs/toolbox.tar.gz");
    let dest = d.path().join("lab");

    let wrong = sha256_hex(b"another archive");
    let out = fetch(&[&url, "--dest", s(&dest), "--sha256", &wrong]);
    assert_exit(&out, 1, "sha256");
    assert!(!dest.exists(), "nothing at --dest after a refused download");
    assert_eq!(
        names(d.path()),
        vec!["labs", "toolbox.tar.gz"],
        "no stage left"
    );

    let bad = fetch(&[&url, "--dest", s(&dest), "--sha256", "abc"]);
    assert_exit(&bad, 2, "64 hex digits");

    let right = sha256_hex(&archive);
    let out = fetch(&[&url, "--dest", s(&dest), "--sha256", &right]);
    assert_exit(&out, 0, &right);
    assert!(!text(&out).contains("not verified"), "{}", text(&out));
    assert_toolbox(&dest);

    // Without a digest it works, with a warning.
    let dest2 = d.path().join("lab2");
    let out = fetch(&[&url, "--dest", s(&dest2)]);
    assert_exit(&out, 0, "is not verified");
}

#[test]
fn an_empty_mounted_dest_is_filled_and_a_second_run_replaces_it() {
    let d = tempfile::tempdir().unwrap();
    let archive = d.path().join("lab.tar.gz");
    // The lab at the archive's top (`tar -C toolbox .`).
    tar_gz(&archive, &toolbox(d.path()), &["."]);
    let dest = d.path().join("mnt");
    std::fs::create_dir(&dest).unwrap();
    // Through the environment, as an init container might give it.
    let out = Command::new(BIN)
        .args(["lab", "fetch"])
        .env("LAB_URL", s(&archive))
        .env("LAB_DIR", s(&dest))
        .env("LAB_SHA256", sha256_hex(&std::fs::read(&archive).unwrap()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_toolbox(&dest);
    // The init step runs again (the pod restarted): replaced, not refused.
    std::fs::write(dest.join("stale.md"), "old").unwrap();
    let out = fetch(&[s(&archive), "--dest", s(&dest)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_toolbox(&dest);
    assert!(!dest.join("stale.md").exists());
    assert!(
        !names(&dest).iter().any(|n| n.starts_with(".dozlab-fetch-")),
        "{:?}",
        names(&dest)
    );
    // A directory holding something else is never overwritten.
    let other = d.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out = fetch(&[s(&archive), "--dest", s(&other)]);
    assert_exit(&out, 2, "is not empty");
    assert_eq!(names(&other), vec!["notes.txt"]);
}

#[test]
fn configmap_mounts_flat_files_or_a_single_archive() {
    let d = tempfile::tempdir().unwrap();
    // Flat keys, as the kubelet lays them: files are symlinks into ..data.
    let cm = d.path().join("lab-src");
    let data = cm.join("..2026_12_02_08_00_00.1");
    std::fs::create_dir_all(&data).unwrap();
    let hello = examples_dir().join("hello-file");
    for e in std::fs::read_dir(&hello).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), data.join(e.file_name())).unwrap();
        std::os::unix::fs::symlink(
            Path::new("..data").join(e.file_name()),
            cm.join(e.file_name()),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("..2026_12_02_08_00_00.1", cm.join("..data")).unwrap();
    let dest = d.path().join("lab");
    let out = fetch(&[s(&cm), "--dest", s(&dest)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut want = names(&hello);
    want.push(".dozlab-fetch.json".into());
    want.sort();
    assert_eq!(names(&dest), want);
    assert!(!dest.join("index.json").is_symlink(), "copied, not linked");
    // A sha256 names an archive, not a directory.
    let out = fetch(&[
        s(&cm),
        "--dest",
        s(&d.path().join("x")),
        "--sha256",
        &sha256_hex(b""),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // One `lab.tar.gz` key (binaryData): unpacked.
    let cm2 = d.path().join("lab-src2");
    std::fs::create_dir(&cm2).unwrap();
    let bytes = tar_gz(&cm2.join("lab.tar.gz"), &toolbox(d.path()), &["."]);
    let dest2 = d.path().join("lab2");
    let out = fetch(&[
        s(&cm2),
        "--dest",
        s(&dest2),
        "--sha256",
        &sha256_hex(&bytes),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_toolbox(&dest2);
}

#[test]
fn refused_and_invalid_labs_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let src = toolbox(d.path());
    let dest = d.path().join("lab");
    let mounted = d.path().join("mnt");
    std::fs::create_dir(&mounted).unwrap();

    // A symlink in an archive (it could point anywhere).
    std::os::unix::fs::symlink("/etc/shadow", src.join("assets/site/pages/shadow.md")).unwrap();
    let archive = d.path().join("evil.tar.gz");
    tar_gz(&archive, &src, &["."]);
    for target in [&dest, &mounted] {
        let out = fetch(&[s(&archive), "--dest", s(target)]);
        assert_exit(&out, 1, "shadow.md\" is a symlink");
    }
    // The same link in a source directory leads outside it: refused too.
    let out = fetch(&[s(&src), "--dest", s(&dest)]);
    assert_exit(&out, 1, "outside");
    std::fs::remove_file(src.join("assets/site/pages/shadow.md")).unwrap();

    // An invalid lab: the report names the file and line.
    std::fs::remove_file(src.join("step2.md")).unwrap();
    tar_gz(&archive, &src, &["."]);
    for target in [&dest, &mounted] {
        let out = fetch(&[s(&archive), "--dest", s(target)]);
        assert_exit(&out, 1, "index.json:8: error: \"step2.md\" does not exist");
    }
    // Not a lab at all.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("README"), "hi").unwrap();
    tar_gz(&archive, &empty, &["."]);
    let out = fetch(&[s(&archive), "--dest", s(&dest)]);
    assert_exit(&out, 1, "holds no index.json");

    // A source that does not exist; a dest that is a file.
    let out = fetch(&["/nonexistent/lab.tar.gz", "--dest", s(&dest)]);
    assert_exit(&out, 2, "not found");
    let out = fetch(&[s(&src), "--dest", s(&archive)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = fetch(&[s(&src), "--dest", s(&src.join("copy"))]);
    assert_exit(&out, 2, "inside the lab directory");
    assert!(!src.join("copy").exists());

    assert!(!dest.exists(), "nothing at a new --dest");
    assert!(names(&mounted).is_empty(), "{:?}", names(&mounted));
    assert_eq!(names(d.path()), vec!["empty", "evil.tar.gz", "labs", "mnt"]);
}

#[test]
fn a_stopped_fetch_leaves_nothing_and_a_killed_ones_stage_is_swept() {
    use dozlab_fetch::testing::Fault;
    let d = tempfile::tempdir().unwrap();
    let archive = tar_gz(&d.path().join("lab.tar.gz"), &toolbox(d.path()), &["."]);
    let server = FaultServer::start().unwrap();
    server.add("/lab.tar.gz", archive);
    server.fail_always("/lab.tar.gz", Fault::StallAfter(100));
    let url = server.url("/lab.tar.gz");
    let dest = d.path().join("lab");
    // A stage a SIGKILLed run left behind, for this destination.
    let stale = d.path().join(".lab.dozlab-fetch-left");
    std::fs::create_dir_all(stale.join("lab")).unwrap();
    let child = Command::new(BIN)
        .args(["lab", "fetch", &url, "--dest", s(&dest)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped (as the kubelet does) once the download is under way.
    let t0 = std::time::Instant::now();
    while server.requests("/lab.tar.gz").is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "the download never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!stale.exists(), "the stale stage was swept");
    let staged: Vec<String> = names(d.path())
        .into_iter()
        .filter(|n| n.starts_with(".lab.dozlab-fetch-"))
        .collect();
    assert_eq!(staged.len(), 1, "{:?}", names(d.path()));
    sigterm(child.id());
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 130, "interrupted");
    assert_eq!(names(d.path()), vec!["lab.tar.gz", "labs"], "nothing left");
}

#[test]
fn a_private_archive_fetched_under_umask_077_is_readable_by_all() {
    // The terminal serving the lab may be another user than the fetch.
    let d = tempfile::tempdir().unwrap();
    let src = toolbox(d.path());
    let st = Command::new("chmod")
        .args(["-R", "go-rwx"])
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let archive = d.path().join("private.tar.gz");
    tar_gz(&archive, &src, &["."]);
    let dest = d.path().join("lab");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077; exec {BIN} lab fetch {} --dest {}",
            s(&archive),
            s(&dest)
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut seen = 0;
    let mut dirs = vec![dest.clone()];
    while let Some(dir) = dirs.pop() {
        assert_eq!(mode(&dir), 0o755, "{}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                assert_eq!(mode(&p) & 0o444, 0o444, "{}", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen > 10, "{seen} files");
    assert_eq!(mode(&dest.join("assets/bin/site-stats.sh")), 0o740 | 0o444);
}
