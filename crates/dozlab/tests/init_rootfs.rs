//! `dozlab init-rootfs` end to end: the real binary against a real HTTP
//! server on 127.0.0.1 (with injected faults), real e2fsprogs, a real tmpfs
//! (mounted by the test as root) and real signals.

use dozlab_fetch::Compression;
use dozlab_fetch::testing::{Fault, FaultServer, compress, make_ext4, sha256_hex};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dozlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dozlab"));
    c.arg("init-rootfs");
    for v in [
        "IMAGE_DOWNLOAD_URL",
        "IMAGE_PATH",
        "IMAGE_SIZE",
        "IMAGE_SHA256",
        "IMAGE_MANIFEST_URL",
        "IMAGE_CACHE_DIR",
    ] {
        c.env_remove(v);
    }
    c.env("DOZLAB_LOG", "info").stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run dozlab");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A small real ext4 image (via `mkfs.ext4 -d`) and its bytes.
fn ext4_image(size: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    make_ext4(
        &p,
        size,
        &[
            ("etc/hostname", b"lab\n".as_slice()),
            ("srv/data", &[7u8; 300_000]),
        ],
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn env_vars_work_as_in_the_original_pod_and_the_image_is_grown() {
    let img = ext4_image(24 << 20);
    let server = FaultServer::start().unwrap();
    server.add("/dozlab-vm.ext4.zst", compress(&img, Compression::Zstd));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kernels/rootfs.ext4");
    let (code, stdout, stderr) = run(dozlab()
        .env("IMAGE_DOWNLOAD_URL", server.url("/dozlab-vm.ext4.zst"))
        .env("IMAGE_PATH", &out)
        .env("IMAGE_SIZE", "64M")
        .env("IMAGE_SHA256", sha256_hex(&img))
        .args(["--retry-delay", "0.05"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("64.0 MiB image") && stdout.contains("(zstd)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("e2fsck") && stdout.contains("resize2fs"),
        "{stdout}"
    );
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(meta.blocks() * 512 < 16 << 20, "sparse after growing");
    assert_eq!(files_in(out.parent().unwrap()), ["rootfs.ext4"]);
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&out)
        .output()
        .unwrap();
    assert!(fsck.status.success());
}

#[test]
fn each_failure_class_has_its_exit_code_and_leaves_nothing() {
    let img = ext4_image(16 << 20);
    let server = FaultServer::start().unwrap();
    server.add("/rootfs.ext4", img.clone());
    server.add("/random.img", vec![5u8; 1 << 20]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs.ext4");
    let url = server.url("/rootfs.ext4");
    let wrong = sha256_hex(b"x");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["--url".into(), server.url("/missing")], 3, "HTTP 404"),
        (
            vec![
                "--url".into(),
                url.clone(),
                "--sha256".into(),
                wrong.clone(),
            ],
            4,
            "sha256 mismatch",
        ),
        (
            vec!["--url".into(), url.clone(), "--size".into(), "4X".into()],
            2,
            "invalid size",
        ),
        (
            vec!["--url".into(), url.clone(), "--size".into(), "8M".into()],
            2,
            "refusing to shrink",
        ),
        (
            vec!["--url".into(), url.clone(), "--sha256".into(), "abc".into()],
            2,
            "64 hex digits",
        ),
        (vec![], 2, "IMAGE_DOWNLOAD_URL"),
        (
            vec![
                "--url".into(),
                server.url("/random.img"),
                "--size".into(),
                "1M".into(),
            ],
            6,
            "not an ext2/3/4",
        ),
    ];
    for (args, want, needle) in cases {
        let (code, _out, stderr) = run(dozlab().arg("--out").arg(&out).args(&args));
        assert_eq!(code, want, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(
            files_in(dir.path()).is_empty(),
            "{args:?} left {:?}",
            files_in(dir.path())
        );
    }
    server.fail_always("/rootfs.ext4", Fault::Status(403));
    let (code, _, stderr) = run(dozlab().arg("--out").arg(&out).args(["--url", &url]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");
}

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        dozlab_testkit::require_root!("mounting a tmpfs needs root");
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "dozlab-test"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -t tmpfs failed");
        Some(Self(dir))
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_too_small_volume_fails_before_the_first_byte_with_needed_and_free() {
    let Some(vol) = Tmpfs::mount("4m") else {
        return;
    };
    let server = FaultServer::start().unwrap();
    server.add("/rootfs.ext4", vec![1u8; 16 << 20]);
    // Dense data compressed: the volume fills up while writing (size unknown up front).
    server.add(
        "/dense.zst",
        compress(&vec![0x41u8; 16 << 20], Compression::Zstd),
    );
    let out = vol.path().join("rootfs.ext4");

    let (code, _, stderr) = run(dozlab().arg("--out").arg(&out).args([
        "--url",
        &server.url("/rootfs.ext4"),
        "--no-resize",
    ]));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("needs 16.0 MiB") && stderr.contains("is free"),
        "{stderr}"
    );
    assert!(files_in(&vol.path()).is_empty());

    let (code, _, stderr) = run(dozlab().arg("--out").arg(&out).args([
        "--url",
        &server.url("/dense.zst"),
        "--no-resize",
    ]));
    assert_eq!(code, 5, "{stderr}");
    assert!(
        files_in(&vol.path()).is_empty(),
        "{:?}",
        files_in(&vol.path())
    );
}

#[test]
fn two_processes_share_one_cache_and_download_once() {
    let img = ext4_image(16 << 20);
    let server = FaultServer::start().unwrap();
    server.add("/rootfs.ext4", img.clone());
    server.fail_always("/rootfs.ext4", Fault::Throttle(Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let spawn = |name: &str| {
        dozlab()
            .arg("--out")
            .arg(dir.path().join(name))
            .args([
                "--url",
                &server.url("/rootfs.ext4"),
                "--sha256",
                &sha256_hex(&img),
                "--no-resize",
            ])
            .arg("--cache")
            .arg(&cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a.ext4"), spawn("b.ext4"));
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        server.requests("/rootfs.ext4").len(),
        1,
        "one download for two sessions"
    );
    for name in ["a.ext4", "b.ext4"] {
        assert!(
            std::fs::read(dir.path().join(name)).unwrap() == img,
            "{name} differs"
        );
    }
    let entry = std::fs::read(cache.join(format!("{}.img", sha256_hex(&img)))).unwrap();
    assert!(entry == img, "the cache holds the image as downloaded");
}

#[test]
fn sigterm_mid_download_removes_the_partial_image() {
    let server = FaultServer::start().unwrap();
    server.add("/rootfs.ext4", vec![3u8; 8 << 20]);
    server.fail_always("/rootfs.ext4", Fault::Throttle(Duration::from_millis(50)));
    let dir = tempfile::tempdir().unwrap();
    let mut child = dozlab()
        .arg("--out")
        .arg(dir.path().join("rootfs.ext4"))
        .args(["--url", &server.url("/rootfs.ext4"), "--no-resize"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while files_in(dir.path()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(files_in(dir.path())[0].starts_with(".rootfs.ext4.part-"));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn without_a_terminal_progress_is_logged_as_lines_and_a_summary_ends_the_run() {
    let server = FaultServer::start().unwrap();
    let img = vec![9u8; 4 << 20];
    server.add("/rootfs.ext4", img.clone());
    server.fail_always("/rootfs.ext4", Fault::Throttle(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs.ext4");
    let (code, stdout, stderr) = run(dozlab()
        .arg("--out")
        .arg(&out)
        .args(["--url", &server.url("/rootfs.ext4"), "--no-resize"])
        .args(["--progress-interval", "0.2"]));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("rootfs.ext4: ") && l.contains(" of 4.0 MiB (") && l.contains("/s, ETA ")
        })
        .collect();
    assert!(!lines.is_empty(), "no progress lines in:\n{stderr}");
    assert!(stdout.trim_end().lines().count() == 1, "{stdout}");
    assert!(
        stdout.contains("4.0 MiB image, 4.0 MiB allocated; downloaded 4.0 MiB"),
        "{stdout}"
    );
    assert!(std::fs::read(&out).unwrap() == img);
}

#[test]
fn empty_env_vars_count_as_unset() {
    let src = tempfile::tempdir().unwrap();
    let img = src.path().join("img");
    std::fs::write(&img, b"hello").unwrap();
    let out = src.path().join("out/x.img");
    let (code, _, stderr) = run(dozlab()
        .env("IMAGE_DOWNLOAD_URL", &img)
        .env("IMAGE_PATH", &out)
        .env("IMAGE_SIZE", "")
        .env("IMAGE_SHA256", "")
        .env("IMAGE_MANIFEST_URL", "")
        .env("IMAGE_CACHE_DIR", "")
        .arg("--no-resize"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"hello");
    let (code, _, stderr) = run(dozlab()
        .env("IMAGE_DOWNLOAD_URL", "")
        .env("IMAGE_PATH", &out));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no image given"), "{stderr}");
}
