//! `dozlab image`: real builds (the minimal profile, cached under
//! `${DOZLAB_CACHE:-$HOME/.cache/dozlab}` by recipe content), offline
//! verification, serving with Range requests, and bad input.
//!
//! Builds need root and mmdebstrap (CI runs as root); without them the build
//! tests skip through dozlab-testkit (a failure in strict mode, docs/testing.md).

mod common;
use common::sigterm;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

/// `dozlab ARGS` without `DOZLAB_CACHE` (scripts/test exports it), so a
/// build uses a cache only when the test passes `--cache`.
fn dozlab_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("DOZLAB_CACHE").args(args);
    cmd
}

/// Runs [`dozlab_cmd`] to its end.
fn dozlab(args: &[&str]) -> Output {
    dozlab_cmd(args).output().expect("run dozlab")
}

/// The arguments of `dozlab image build` of `profile` (a name or a recipe
/// file) into `out`.
fn build_args<'a>(profile: &'a str, out: &'a Path) -> [&'a str; 6] {
    let out = out.to_str().unwrap();
    ["image", "build", "--profile", profile, "--out", out]
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Skips the test unless this host can build images: root and the tools.
macro_rules! require_build_host {
    () => {
        dozlab_testkit::require_root!("image builds need root");
        dozlab_testkit::require_tool!("mmdebstrap", "mkfs.ext4", "zstd");
    };
}

fn cache_dir() -> PathBuf {
    std::env::var_os("DOZLAB_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/dozlab")
        })
}

/// Builds (or reuses the cached) minimal profile into a fresh directory.
fn build_minimal(out: &Path) {
    let cache = cache_dir();
    let o = dozlab_cmd(&build_args("minimal", out))
        .args(["--cache", cache.to_str().unwrap()])
        .output()
        .expect("run dozlab");
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().last().unwrap(), out.to_str().unwrap());
}

fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn build_minimal_then_verify_without_docker() {
    require_build_host!();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("minimal");
    build_minimal(&out);
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["manifest.json", "rootfs.ext4", "rootfs.ext4.zst"],
        "nothing else, no staging left"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["profile"], "minimal");
    assert_eq!(manifest["features"]["docker"], false);
    assert!(
        manifest["kernel"]["version"]
            .as_str()
            .unwrap()
            .contains("cloud-amd64")
    );
    assert!(
        manifest["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("openssh-server="))
    );
    let zst = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "rootfs.ext4.zst")
        .unwrap();
    assert_eq!(
        zst["size"].as_u64().unwrap(),
        fs::metadata(out.join("rootfs.ext4.zst")).unwrap().len()
    );
    assert_eq!(
        zst["sha256"].as_str().unwrap(),
        sha256sum(&out.join("rootfs.ext4.zst"))
    );
    assert_eq!(
        zst["uncompressed_size"].as_u64().unwrap(),
        fs::metadata(out.join("rootfs.ext4")).unwrap().len()
    );

    let image = out.join("rootfs.ext4");
    let o = dozlab(&["image", "verify", image.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{table}{}", stderr(&o));
    assert!(
        table.contains("all requirements met")
            && table.contains("manifest.json says features.docker = false")
    );

    let o = dozlab(&[
        "image",
        "verify",
        "--json",
        "--without",
        "docker",
        image.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["passed"], true);
    assert_eq!(report["docker_skipped_because"], "--without docker");

    // Without the manifest and without --without, Docker is required: exit 1.
    fs::rename(out.join("manifest.json"), dir.path().join("manifest.json")).unwrap();
    let o = dozlab(&["image", "verify", image.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{table}");
    assert!(table.contains("Docker daemon installed") && table.contains("FAIL"));
}

/// A spawned `image serve`, killed (by pid) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args([
            "image",
            "serve",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("address line")
        .to_string();
    (Server(child), addr)
}

/// A raw HTTP/1.1 GET: (status code, body).
fn http_get(addr: &str, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, raw[split + 4..].to_vec())
}

#[test]
fn serve_the_build_with_ranges_and_an_index() {
    require_build_host!();
    let dir = tempfile::tempdir().unwrap();
    build_minimal(&dir.path().join("minimal"));
    let (mut server, addr) = start_server(dir.path());

    let image = fs::read(dir.path().join("minimal/rootfs.ext4")).unwrap();
    let (code, body) = http_get(&addr, "/minimal/rootfs.ext4", Some("bytes=1024-1119"));
    assert_eq!(code, 206);
    assert_eq!(body, image[1024..1120], "the superblock bytes, exactly");

    let (code, body) = http_get(&addr, "/index.json", None);
    assert_eq!(code, 200);
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entry = &index["images"][0];
    assert_eq!(entry["dir"], "minimal");
    assert_eq!(entry["manifest"]["profile"], "minimal");
    assert!(
        entry["manifest"]["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["path"] == "minimal/rootfs.ext4.zst")
    );

    let (code, _) = http_get(&addr, "/minimal/nope", None);
    assert_eq!(code, 404);

    // SIGTERM: a graceful stop with exit 0.
    sigterm(server.0.id());
    assert!(server.0.wait().unwrap().success());
}

#[test]
fn verify_refuses_garbage_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    fs::write(&text, "not an image\n".repeat(500)).unwrap();

    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), "x\n").unwrap();
    let mkfs = |kind: &str, image: &Path| {
        let ok = Command::new(format!("mkfs.{kind}"))
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(image)
            .arg("4M")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let ext4 = dir.path().join("good.ext4");
    mkfs("ext4", &ext4);
    let truncated = dir.path().join("truncated.ext4");
    fs::write(&truncated, &fs::read(&ext4).unwrap()[..1 << 20]).unwrap();
    let ext2 = dir.path().join("old.ext2");
    mkfs("ext2", &ext2);

    let cases = [
        (text, "not an ext4 image"),
        (truncated, "truncated"),
        (ext2, "not ext4"),
        (dir.path().join("missing.ext4"), "cannot open"),
    ];
    for (path, want) in cases {
        let o = dozlab(&["image", "verify", path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {err}", path.display());
        assert!(err.contains(want), "{}: {err}", path.display());
        assert!(!err.contains("panicked"));
    }
    // A well-formed but empty ext4 is readable: it fails the rules (exit 1), not 2.
    let o = dozlab(&["image", "verify", ext4.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn bad_build_input_is_refused_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    let o = dozlab(&build_args("nope", &out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown profile `nope`"));

    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "extends = \"minimal\"\npackages = [\"rm -rf\"]\n").unwrap();
    let o = dozlab(&build_args(bad.to_str().unwrap(), &out));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a Debian package name"),
        "{}",
        stderr(&o)
    );

    let o = dozlab(&[
        "image",
        "serve",
        dir.path().join("absent").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a directory"));
    assert!(!out.exists(), "refused before creating anything");
}

#[test]
fn pinned_file_with_a_wrong_sha256_fails_the_build_cleanly() {
    require_build_host!();
    // A loopback HTTP server answering every request with other bytes than pinned.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let _ = s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntampered",
        );
    });
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("mine.toml");
    let pin = "0".repeat(64);
    fs::write(
        &recipe,
        format!("extends = \"minimal\"\n[[files]]\nurl = \"http://{addr}/kubectl\"\nsha256 = \"{pin}\"\ndest = \"/usr/local/bin/kubectl\"\nmode = \"0755\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = dozlab(&build_args(recipe.to_str().unwrap(), &out));
    server.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not match its pin"),
        "{}",
        stderr(&o)
    );
    let left: Vec<_> = fs::read_dir(&out).unwrap().collect();
    assert!(
        left.is_empty(),
        "nothing at the final paths and no staging left: {left:?}"
    );
}

#[test]
fn missing_tools_and_non_root_are_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = dozlab_cmd(&build_args("minimal", &out))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("`mmdebstrap` is not installed") && err.contains("apt-get install mmdebstrap"),
        "{err}"
    );
    assert!(!out.exists());

    let setpriv = Path::new("/usr/bin/setpriv");
    // The non-root check: drop to nobody with setpriv (util-linux).
    require_build_host!();
    dozlab_testkit::require_path!(setpriv, "install util-linux (scripts/setup)");
    // A copy nobody can run wherever the checkout lives.
    let copy = dozlab_testkit::world_executable_copy(Path::new(BIN)).unwrap();
    let o = Command::new(setpriv)
        .env_remove("DOZLAB_CACHE")
        .current_dir("/")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(copy.path())
        .args(build_args("minimal", &out))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("must run as root"), "{err}");
    assert!(!out.exists());
}

#[test]
fn interrupted_build_stops_mmdebstrap_and_leaves_nothing() {
    require_build_host!();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = dozlab_cmd(&build_args("minimal", &out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Interrupt once mmdebstrap is really at work inside the staging directory.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started =
            line.contains("I: running apt-get update") || line.contains("I: downloading packages");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("bootstrap")), "{seen:?}");
    let pid = child.id();
    sigterm(pid);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    let left: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "staging removed, nothing at final paths: {left:?}"
    );
    // The tree may have been assembled in /dev/shm: nothing of it may remain.
    let pid_suffix = format!("-{pid}");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftover_mount = mounts.lines().any(|l| {
        l.contains(dir.path().to_str().unwrap())
            || (l.contains("dozlab-image-work-") && l.contains(&pid_suffix))
    });
    assert!(!leftover_mount, "no chroot mount left behind");
    let shm_left = fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .any(|n| n.starts_with("dozlab-image-work-") && n.ends_with(&pid_suffix))
        })
        .unwrap_or(false);
    assert!(!shm_left, "work tree in /dev/shm removed");
}

#[test]
fn a_build_waiting_for_the_cache_lock_can_be_interrupted() {
    require_build_host!();
    let cache = tempfile::tempdir().unwrap();
    let o = dozlab(&["image", "recipe", "--profile", "minimal"]);
    let key = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["cache_key"]
        .as_str()
        .unwrap()
        .to_string();
    let images = cache.path().join("images");
    fs::create_dir_all(&images).unwrap();
    // Another "build" holds the lock for this key.
    let lock = fs::File::create(images.join(format!("{key}.lock"))).unwrap();
    lock.lock().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "image",
            "cached",
            "--profile",
            "minimal",
            "--cache",
            cache.path().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let waiting = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("another build holds"));
    assert!(waiting.is_some(), "the waiter says what it waits for");
    sigterm(child.id());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.is_empty(), "no path printed: {out}");
    assert!(!images.join(&key).exists());
}

/// The Dozlab kernel's own check: a config fragment asking for an option
/// whose dependency it turns off (an LZ4 initramfs without initramfs
/// support) fails `image kernel` after `make olddefconfig`, naming the
/// option, before anything is compiled or cached. The shipped fragment
/// passes the same check.
#[test]
fn kernel_fragment_that_loses_a_required_option_fails_the_check() {
    dozlab_testkit::require_tool!("make", "gcc", "bison", "flex", "bc");
    dozlab_testkit::require_path!(
        "/usr/src/linux-source-6.1.tar.xz",
        "install linux-source-6.1 (scripts/setup)"
    );
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.config");
    let shipped = include_str!("../../dozlab-image/kernel/microvm.config");
    fs::write(
        &bad,
        format!("{shipped}\n# broken on purpose\nCONFIG_RD_LZ4=y\n"),
    )
    .unwrap();
    let cache = t.path().join("cache");
    let out = dozlab(&[
        "image",
        "kernel",
        "--check-config",
        "--fragment",
        bad.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("lost 1 required option") && err.contains("CONFIG_RD_LZ4=y (became not set)"),
        "{err}"
    );
    assert!(!cache.exists(), "a failed check caches nothing");

    let good = dozlab(&["image", "kernel", "--check-config"]);
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(stderr(&good).contains("every option of the fragment survived"));
}
