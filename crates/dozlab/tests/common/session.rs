//! Sessions for the `dozlab up` tests (up.rs, up_lab.rs): private state
//! roots, running the binary, the check that a session left nothing, the
//! cached `vm` image, and reaching a ready session's terminal and SSH.

use super::text;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The `dozlab` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

/// The flags of a booting test session: QEMU/TCG, 768 MiB, one CPU, no
/// internet, ten minutes to become ready (the machine is shared and slow).
pub const BOOT_FLAGS: &[&str] = &[
    "--accel",
    "tcg",
    "--memory",
    "768",
    "--cpus",
    "1",
    "--no-internet",
    "--ready-timeout",
    "600",
];

/// A private pair of state roots (and, when asked, a private image cache)
/// for one test; stops whatever a failed test left running.
pub struct Env {
    dir: tempfile::TempDir,
    private_cache: bool,
}

impl Env {
    /// State roots in a new temporary directory; the image cache is the
    /// caller's (tests that download pass `--cache`).
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            private_cache: false,
        }
    }

    /// As [`Env::new`], with `DOZLAB_CACHE` in the temporary directory too.
    pub fn with_private_cache() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            private_cache: true,
        }
    }

    /// `DOZLAB_RUN_DIR` of this test.
    pub fn run_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// `DOZLAB_DATA_DIR` of this test.
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `dozlab ARGS` with this test's state roots and no `DOZLAB_IMAGE`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("DOZLAB_RUN_DIR", self.run_root())
            .env("DOZLAB_DATA_DIR", self.data_root())
            // Every run boots: a test's outcome must not depend on snapshots
            // earlier runs left in the cache (tests/vm/snapshot.rs tests them).
            .env("DOZLAB_SNAPSHOT", "off")
            .env_remove("DOZLAB_IMAGE");
        if self.private_cache {
            c.env("DOZLAB_CACHE", self.dir.path().join("cache"));
        }
        c
    }

    /// Runs `dozlab ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("dozlab runs")
    }

    /// Runs `dozlab up --name NAME --image IMAGE EXTRA...` to its end.
    pub fn up(&self, name: &str, image: &str, extra: &[&str]) -> Output {
        let mut args = vec!["up", "--name", name, "--image", image];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Asserts that nothing of session `name` is left: no data or run
    /// directory, namespace, nftables table, process naming its data
    /// directory, nor (slot `slot` when known) host veth.
    pub fn assert_nothing_left(&self, name: &str, slot: Option<u8>) {
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
        if let Some(n) = slot {
            assert!(
                !Path::new(&format!("/sys/class/net/dzl{n}h")).exists(),
                "veth dzl{n}h is left"
            );
        }
        let procs = processes_mentioning(&data.display().to_string());
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }

    /// Names of the sessions under these state roots (their run directories).
    pub fn sessions(&self) -> Vec<String> {
        std::fs::read_dir(self.run_root().join("sessions"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asserts that no supervisor ever ran under these state roots (it
    /// would have noted its end in `ended.log`).
    pub fn assert_no_supervisor_ran(&self) {
        let ended = self.run_root().join("ended.log");
        assert!(
            !ended.exists(),
            "a supervisor ran: {}",
            std::fs::read_to_string(&ended).unwrap_or_default()
        );
    }
}

impl Drop for Env {
    /// Whatever a test left running (a failed assertion) is stopped before
    /// its state roots are deleted.
    fn drop(&mut self) {
        let sessions = self.run_root().join("sessions");
        if std::fs::read_dir(&sessions).is_ok_and(|mut d| d.next().is_some()) {
            let _ = self.run(&["down", "--all"]);
        }
    }
}

/// Pids whose command line mentions `text` (the session's data dir is in
/// every component's arguments and in QEMU's drive path).
pub fn processes_mentioning(text: &str) -> Vec<u32> {
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

/// A session name unique to this test process: `PREFIX<pid>-TAG` (each
/// test file its own prefix, so files running side by side never clash).
pub fn session_name(prefix: &str, tag: &str) -> String {
    format!("{prefix}{}-{tag}", std::process::id() % 100_000)
}

/// A 32 MiB ext4 with a file and no kernel: passes the image phase, fails
/// to boot (a valid `--image` for tests that must never boot).
pub fn tiny_ext4(dir: &Path) -> PathBuf {
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

/// Directory of the cached `vm` image (built once; minutes the first time).
pub fn vm_image() -> PathBuf {
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
pub fn record(env: &Env, name: &str) -> serde_json::Value {
    let out = env.run(&["ls", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in ls: {}", text(&out)))
}

/// One HTTP exchange with 127.0.0.1:`port` (the request asks the server to
/// close); the whole response, or None when the connection fails.
pub fn try_http(port: u16, request: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// As [`try_http`]; a failed connection fails the test.
pub fn http(port: u16, request: &str) -> String {
    try_http(port, request).unwrap_or_else(|| panic!("no HTTP answer on port {port}"))
}

/// Logs in to the terminal on 127.0.0.1:`port`; the session cookie.
pub fn login(port: u16, password: &str) -> String {
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

/// The terminal port of session record `r` and a cookie logged in with
/// the session's password.
pub fn terminal_login(r: &serde_json::Value) -> (u16, String) {
    let port = r["ports"]["terminal"].as_u64().unwrap() as u16;
    let password = std::fs::read_to_string(r["password_file"].as_str().unwrap()).unwrap();
    let cookie = login(port, password.trim());
    (port, cookie)
}

/// Runs `cmd` in the VM of session record `r` with the system ssh client
/// through the published port, the session's key and its host key verified.
pub fn ssh(r: &serde_json::Value, cmd: &str) -> Output {
    let shared = Path::new(r["data_dir"].as_str().unwrap()).join("shared");
    let port = r["ports"]["ssh"].as_u64().unwrap().to_string();
    Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .arg("-i")
        .arg(shared.join("vm-ssh-key"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            shared.join("host_known_hosts").display()
        ))
        .args(["-p", &port, "root@127.0.0.1", cmd])
        .output()
        .unwrap()
}
