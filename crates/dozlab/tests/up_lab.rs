//! `dozlab up --lab`, run as root with real parts. A lab archive served by a
//! loopback HTTP server boots with a real session (QEMU/TCG, the cached `vm`
//! image): its assets land in the VM with their modes, the intro's
//! background ran (after the assets were in), and `GET /api/lab` on the
//! published terminal port returns the lab. Broken labs, a wrong sha256 and
//! a missing source are refused with exit 2 before any process, namespace,
//! tap or nftables table exists, and leave nothing.

use dozlab_fetch::testing::{FaultServer, sha256_hex};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

macro_rules! need_root {
    () => {
        dozlab_testkit::require_root!("needs root (network namespaces, tap, nftables)")
    };
}

/// Private state roots for one test; stops whatever a failed test left.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("DOZLAB_RUN_DIR", self.run_root())
            .env("DOZLAB_DATA_DIR", self.data_root())
            .env("DOZLAB_CACHE", self.dir.path().join("cache"))
            .env_remove("DOZLAB_IMAGE")
            .output()
            .expect("dozlab runs")
    }

    /// Nothing of session `name` exists, and no supervisor ever ran for it
    /// when `never_started` (it would have noted its end in `ended.log`).
    fn assert_nothing_left(&self, name: &str, never_started: bool) {
        let data = self.data_root().join("sessions").join(name);
        let run = self.run_root().join("sessions").join(name);
        assert!(!data.exists(), "data dir {} is left", data.display());
        assert!(!run.exists(), "run dir {} is left", run.display());
        let ns = format!("dozlab-{name}");
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "namespace {ns} is left"
        );
        let nft = Command::new("nft")
            .args(["list", "table", "ip", &ns])
            .output()
            .unwrap();
        assert!(!nft.status.success(), "nftables table ip {ns} is left");
        let procs = processes_mentioning(&data.display().to_string());
        assert!(procs.is_empty(), "processes left: {procs:?}");
        if never_started {
            let ended = self.run_root().join("ended.log");
            assert!(
                !ended.exists(),
                "a supervisor ran: {}",
                std::fs::read_to_string(&ended).unwrap_or_default()
            );
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let sessions = self.run_root().join("sessions");
        if std::fs::read_dir(&sessions).is_ok_and(|mut d| d.next().is_some()) {
            let _ = self.run(&["down", "--all"]);
        }
    }
}

fn processes_mentioning(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(text)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn name(tag: &str) -> String {
    format!("l{}-{tag}", std::process::id() % 100_000)
}

fn write(dir: &Path, rel: &str, t: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, t).unwrap();
}

/// A one-step lab with assets (a glob with `+x`, a `**` tree with `0600`)
/// and an intro background that records which asset it saw.
fn write_lab(dir: &Path) {
    write(
        dir,
        "index.json",
        r#"{
  "title": "Up lab",
  "details": {
    "intro": { "text": "intro.md", "background": "intro-bg.sh" },
    "steps": [ { "title": "Touch", "text": "step1.md", "verify": "verify1.sh" } ],
    "assets": { "host01": [
      { "file": "bin/*.sh", "target": "/usr/local/bin", "chmod": "+x" },
      { "file": "conf/**", "target": "~/conf", "chmod": "0600" }
    ] }
  }
}
"#,
    );
    write(dir, "intro.md", "# Up lab\n");
    write(
        dir,
        "intro-bg.sh",
        "#!/bin/sh\necho \"intro ran, saw $(ls /usr/local/bin/hello-lab.sh)\" > /root/intro-ran\n",
    );
    write(dir, "step1.md", "`touch /tmp/up-lab`{{exec}}\n");
    write(dir, "verify1.sh", "test -f /tmp/up-lab\n");
    write(
        dir,
        "assets/bin/hello-lab.sh",
        "#!/bin/sh\necho hello from the lab\n",
    );
    write(dir, "assets/conf/app.ini", "[app]\n");
    write(dir, "assets/conf/deep/more.ini", "[more]\n");
}

/// `tar -czf` of `dir`'s contents.
fn tar_gz(dir: &Path, out: &Path) -> Vec<u8> {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}

/// A 32 MiB ext4 with no kernel: a valid `--image` for tests that must
/// never get as far as booting.
fn tiny_ext4(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "tiny\n").unwrap();
    let img = dir.join("tiny.ext4");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("32M")
        .status()
        .unwrap();
    assert!(st.success());
    img
}

#[test]
fn help_lists_the_lab_flags() {
    let out = Command::new(BIN).args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--lab <DIR|URL>"), "{help}");
    assert!(help.contains("--lab-sha256"), "{help}");
}

#[test]
fn root_bad_labs_are_refused_before_anything_starts() {
    need_root!();
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let img = tiny_ext4(d.path());
    let img = img.to_str().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    std::fs::remove_file(lab.join("step1.md")).unwrap();
    let lab_s = lab.to_str().unwrap();

    // A missing text file, in the foreground and with --detach.
    for detach in [false, true] {
        let n = name(if detach { "bad-d" } else { "bad" });
        let mut args = vec!["up", "--name", &n, "--image", img, "--lab", lab_s];
        if detach {
            args.push("--detach");
        }
        let out = env.run(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("\"step1.md\" does not exist"), "{t}");
        env.assert_nothing_left(&n, true);
    }

    // A lab .tar.gz URL whose sha256 is not the one given.
    write(&lab, "step1.md", "`touch /tmp/x`{{exec}}\n");
    let archive = tar_gz(&lab, &d.path().join("lab.tar.gz"));
    let server = FaultServer::start().unwrap();
    server.add("/lab.tar.gz", archive.clone());
    let url = server.url("/lab.tar.gz");
    let n = name("sha");
    let wrong = sha256_hex(b"not the lab");
    let out = env.run(&[
        "up",
        "--name",
        &n,
        "--image",
        img,
        "--lab",
        &url,
        "--lab-sha256",
        &wrong,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("sha256") && t.contains(&url), "{t}");
    assert!(
        !server.requests("/lab.tar.gz").is_empty(),
        "it was downloaded"
    );
    env.assert_nothing_left(&n, true);

    // A lab that does not exist; a digest for a directory; a malformed digest.
    for (args, want) in [
        (vec!["--lab", "/nonexistent/lab"], "not found"),
        (
            vec!["--lab", lab_s, "--lab-sha256", &wrong],
            "not to the directory",
        ),
        (vec!["--lab", &url, "--lab-sha256", "xyz"], "64 hex digits"),
    ] {
        let n = name("use");
        let mut all = vec!["up", "--name", &n, "--image", img];
        all.extend(args);
        let out = env.run(&all);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains(want), "{want:?} in {t}");
        env.assert_nothing_left(&n, true);
    }
}

/// Directory of the cached `vm` image (built once; minutes the first time).
fn vm_image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join("scripts/test-image"))
        .arg("vm")
        .env("DOZLAB_BIN", BIN)
        .output()
        .expect("scripts/test-image runs");
    assert!(
        out.status.success(),
        "building the vm image: {}",
        text(&out)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
}

/// `ls --json` entry of `name`.
fn record(env: &Env, name: &str) -> serde_json::Value {
    let out = env.run(&["ls", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in ls: {}", text(&out)))
}

/// One HTTP/1.1 exchange on the loopback port (Connection: close).
fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Logs in to the terminal; the session cookie.
fn login(port: u16, password: &str) -> String {
    let body = format!("password={password}");
    let resp = http(
        port,
        &format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    resp.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no cookie from /login: {resp}"))
}

/// Runs `cmd` in the VM with the system ssh client through the published port.
fn ssh(r: &serde_json::Value, cmd: &str) -> Output {
    let shared = Path::new(r["data_dir"].as_str().unwrap()).join("shared");
    let port = r["ports"]["ssh"].as_u64().unwrap().to_string();
    Command::new("ssh")
        .arg("-i")
        .arg(shared.join("vm-ssh-key"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            shared.join("host_known_hosts").display()
        ))
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-p", &port, "root@127.0.0.1", cmd])
        .output()
        .unwrap()
}

#[test]
fn root_up_with_a_lab_url_installs_it_and_the_terminal_serves_it() {
    need_root!();
    dozlab_testkit::require_tool!("ssh");
    let image = vm_image();
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    let archive = tar_gz(&lab, &d.path().join("lab.tar.gz"));
    let server = FaultServer::start().unwrap();
    server.add("/labs/up-lab.tar.gz", archive.clone());
    let url = server.url("/labs/up-lab.tar.gz");
    let sha = sha256_hex(&archive);
    let n = name("up");
    let out = env.run(&[
        "up",
        "--detach",
        "--name",
        &n,
        "--image",
        image.to_str().unwrap(),
        "--accel",
        "tcg",
        "--memory",
        "768",
        "--cpus",
        "1",
        "--no-internet",
        "--ready-timeout",
        "600",
        "--lab",
        &url,
        "--lab-sha256",
        &sha,
    ]);
    let result = std::panic::catch_unwind(|| {
        let t = text(&out);
        assert!(out.status.success(), "up: {t}");
        assert!(t.contains("Lab:       Up lab (1 step)"), "{t}");
        assert!(t.contains("lab ") && t.contains("intro background"), "{t}");
        let r = record(&env, &n);
        assert_eq!(r["lab"]["title"], "Up lab", "{r}");
        assert_eq!(r["lab"]["source"], url.as_str(), "{r}");

        // Assets with their modes; the background ran after they were in.
        let got = ssh(
            &r,
            "stat -c '%a %n' /usr/local/bin/hello-lab.sh conf/app.ini conf/deep/more.ini; \
             hello-lab.sh; cat /root/intro-ran",
        );
        let g = text(&got);
        assert!(got.status.success(), "{g}");
        for want in [
            "755 /usr/local/bin/hello-lab.sh",
            "600 conf/app.ini",
            "600 conf/deep/more.ini",
            "hello from the lab",
            "intro ran, saw /usr/local/bin/hello-lab.sh",
        ] {
            assert!(g.contains(want), "{want:?} in {g}");
        }

        // The terminal serves the lab.
        let port = r["ports"]["terminal"].as_u64().unwrap() as u16;
        let password = std::fs::read_to_string(r["password_file"].as_str().unwrap()).unwrap();
        let cookie = login(port, password.trim());
        let resp = http(
            port,
            &format!(
                "GET /api/lab HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
        assert_eq!(v["lab"]["title"], "Up lab", "{v}");
        let pages = v["lab"]["pages"].as_array().unwrap();
        assert_eq!(pages.len(), 2, "intro and one step: {v}");
        assert!(v["progress"].is_object(), "{v}");
        r["net"]["index"].as_u64()
    });
    let down = env.run(&["down", &n]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(down.status.success(), "{}", text(&down));
    env.assert_nothing_left(&n, false);
}

#[test]
fn root_a_failing_intro_background_fails_the_start_and_leaves_nothing() {
    need_root!();
    let image = vm_image();
    let env = Env::new();
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    write(
        &lab,
        "intro-bg.sh",
        "#!/bin/sh\necho broken-setup-$((40+2)) >&2\nexit 3\n",
    );
    let n = name("bgfail");
    // In the foreground this time, from a lab directory.
    let out = env.run(&[
        "up",
        "--name",
        &n,
        "--image",
        image.to_str().unwrap(),
        "--accel",
        "tcg",
        "--memory",
        "768",
        "--cpus",
        "1",
        "--no-internet",
        "--ready-timeout",
        "600",
        "--lab",
        lab.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("intro background intro-bg.sh failed (exit 3)") && t.contains("broken-setup-42"),
        "{t}"
    );
    env.assert_nothing_left(&n, false);
}
