//! CLI tests of `dozlab up|down|ls|logs`, run as root with real parts: real
//! network namespaces, veth pairs, tap devices, nftables tables, QEMU/TCG
//! boots of the cached `vm` image, the real terminal over HTTP + WebSocket,
//! SSH and the VM's Docker through the published loopback ports.
//!
//! Each test uses its own DOZLAB_RUN_DIR / DOZLAB_DATA_DIR and session names
//! with the test's pid, and checks after every failure or `down` that no
//! process, namespace, interface, nftables table or file is left.
//! The cheap failure tests boot nothing; one test boots two sessions side by
//! side and checks everything on both; one boots a VM whose sshd is masked.

mod common;
use common::session::{
    BIN, BOOT_FLAGS, Env, record, ssh, terminal_login, tiny_ext4, try_http, vm_image,
};
use common::{assert_exit, free_port, text};
use dozlab_fetch::Compression;
use dozlab_fetch::testing::{FaultServer, compress, sha256_hex};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Skips (recorded by dozlab-testkit, a failure in strict mode) unless root.
macro_rules! need_root {
    () => {
        dozlab_testkit::require_root!("needs root (network namespaces, tap, nftables)")
    };
}

fn name(tag: &str) -> String {
    common::session::session_name("t", tag)
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(BIN).args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--image",
        "--name",
        "--cpus",
        "--memory",
        "--disk",
        "--port",
        "--vmm",
        "--accel",
        "--vscode",
        "--forward",
        "--detach",
        "--ready-timeout",
        "--wait-docker",
        "--no-internet",
        "--cache",
    ] {
        assert!(help.contains(flag), "up --help mentions {flag}");
    }
    assert!(
        !help.contains("supervise-internal"),
        "internal flag is hidden"
    );
}

#[test]
fn root_missing_image_file_is_a_usage_error_and_leaves_nothing() {
    need_root!();
    let env = Env::new();
    let n = name("missing");
    let out = env.run(&["up", "--name", &n, "--image", "/nonexistent/rootfs.ext4"]);
    assert_exit(&out, 2, "/nonexistent/rootfs.ext4 not found");
    env.assert_nothing_left(&n, None);
    let ls = env.run(&["ls"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("No sessions"));
}

#[test]
fn root_taken_port_is_refused_and_leaves_nothing() {
    need_root!();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = tiny_ext4(dir.path());
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let n = name("port");
    let out = env.up(&n, img.to_str().unwrap(), &["--port", &port]);
    assert_exit(
        &out,
        2,
        &format!("port {port} on 127.0.0.1 is already in use"),
    );
    env.assert_nothing_left(&n, None);
    // The same for a --forward port, with --detach (the launcher path).
    let out = env.up(&n, img.to_str().unwrap(), &["--forward", &port, "--detach"]);
    assert_exit(&out, 2, &format!("--forward {port}"));
    env.assert_nothing_left(&n, None);
}

/// A tiny HTTP server that answers every request with 404.
fn not_found_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

#[test]
fn root_bad_recipe_is_a_usage_error_from_the_image_builder() {
    need_root!();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("broken.toml");
    std::fs::write(&recipe, "this is [not a recipe\n").unwrap();
    let n = name("recipe");
    let cache = dir.path().join("cache");
    let out = env.up(
        &n,
        recipe.to_str().unwrap(),
        &["--cache", cache.to_str().unwrap()],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("cannot use the image recipe") && t.contains("broken.toml"),
        "{t}"
    );
    env.assert_nothing_left(&n, None);
}

#[test]
fn root_bad_url_fails_with_the_http_status_and_leaves_nothing() {
    need_root!();
    let env = Env::new();
    let port = not_found_server();
    let n = name("url");
    let url = format!("http://127.0.0.1:{port}/no-such-image.ext4");
    let cache = tempfile::tempdir().unwrap();
    let out = env.up(&n, &url, &["--cache", cache.path().to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("cannot fetch the image") && t.contains(&url),
        "{t}"
    );
    assert!(t.contains("404"), "the HTTP status is shown: {t}");
    env.assert_nothing_left(&n, None);
}

#[test]
fn root_unbootable_image_fails_after_the_network_phase_and_removes_it() {
    need_root!();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = tiny_ext4(dir.path());
    let n = name("noboot");
    let out = env.up(&n, img.to_str().unwrap(), &["--accel", "tcg", "--detach"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("✓ network"), "the network phase ran: {t}");
    assert!(
        t.contains("no kernel"),
        "the VM runner's cause is shown: {t}"
    );
    let slot = slot_from(&t);
    env.assert_nothing_left(&n, slot);
    let ended = env.run(&["ls", "--ended"]);
    let ended = String::from_utf8_lossy(&ended.stdout).into_owned();
    assert!(
        ended.contains(&format!("{n} failed:")),
        "why it ended is kept: {ended}"
    );
}

#[test]
fn root_disk_smaller_than_the_image_is_a_usage_error_and_leaves_nothing() {
    need_root!();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let img = tiny_ext4(dir.path());
    let n = name("disk");
    let out = env.up(&n, img.to_str().unwrap(), &["--disk", "16M"]);
    assert_exit(
        &out,
        2,
        "--disk 16.0 MiB is smaller than the image (32.0 MiB)",
    );
    env.assert_nothing_left(&n, None);
}

/// A loopback HTTP server with a tiny image as `.zst` and its manifest
/// beside it (as `dozlab image build` lays them out under `/img/`), and the
/// same `.zst` alone under `/bare/`. Returns the server and the `.zst`'s sha256.
fn image_server(dir: &Path) -> (FaultServer, String) {
    let img = std::fs::read(tiny_ext4(dir)).unwrap();
    let zst = compress(&img, Compression::Zstd);
    let manifest = serde_json::json!({
        "name": "tiny",
        "profile": "minimal",
        "created": "2026-01-01T00:00:00Z",
        "kernel": {"version": "none"},
        "artifacts": [{
            "path": "rootfs.ext4.zst",
            "size": zst.len(),
            "sha256": sha256_hex(&zst),
            "uncompressed_size": img.len(),
            "uncompressed_sha256": sha256_hex(&img),
        }],
        "features": {"docker": false},
    });
    let server = FaultServer::start().unwrap();
    server.add("/img/rootfs.ext4.zst", zst.clone());
    server.add("/img/manifest.json", manifest.to_string());
    server.add("/bare/rootfs.ext4.zst", zst.clone());
    (server, sha256_hex(&zst))
}

#[test]
fn root_url_images_are_downloaded_once_then_come_from_the_cache() {
    need_root!();
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let (server, zst_sha256) = image_server(dir.path());
    // Each session passes the image phase (a verified download, or a copy out
    // of the cache) and fails at boot: the tiny image has no kernel.
    let up = |tag: &str, image: &str, cache: &Path, extra: &[&str]| {
        let n = name(tag);
        let mut flags = vec!["--cache", cache.to_str().unwrap(), "--no-internet"];
        flags.extend_from_slice(extra);
        let out = env.up(&n, image, &flags);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{t}");
        assert!(t.contains("✓ image"), "the image phase passed: {t}");
        assert!(t.contains("no kernel"), "{t}");
        env.assert_nothing_left(&n, slot_from(&t));
        t
    };
    let zst = "/img/rootfs.ext4.zst";
    let cache = dir.path().join("cache");
    up("url1", &server.url(zst), &cache, &[]);
    assert_eq!(server.requests(zst).len(), 1);
    let t = up("url2", &server.url(zst), &cache, &[]);
    assert_eq!(
        server.requests(zst).len(),
        1,
        "the second session from the same URL is a cache hit"
    );
    assert!(t.contains("from the cache"), "{t}");
    // The manifest's own URL names the same image (its .zst) and digest.
    up("url3", &server.url("/img/manifest.json"), &cache, &[]);
    assert_eq!(server.requests(zst).len(), 1, "a hit by the manifest's URL");
    // No manifest beside the image: --sha256 keys the cache.
    let bare = "/bare/rootfs.ext4.zst";
    let cache2 = dir.path().join("cache2");
    for tag in ["sha1", "sha2"] {
        up(tag, &server.url(bare), &cache2, &["--sha256", &zst_sha256]);
    }
    assert_eq!(server.requests(bare).len(), 1, "--sha256: one download");
}

/// The slot N from "VM 172.16.N.2" in the output.
fn slot_from(t: &str) -> Option<u8> {
    let i = t.find("VM 172.16.")? + "VM 172.16.".len();
    t[i..].split('.').next()?.parse().ok()
}

#[test]
fn down_ls_and_logs_report_unknown_sessions() {
    let env = Env::new();
    let out = env.run(&["ls", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let out = env.run(&["logs", "no-such-session"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no session named"), "{}", text(&out));
    if is_root() {
        let out = env.run(&["down", "no-such-session"]);
        assert_eq!(out.status.code(), Some(2));
        let out = env.run(&["up", "--name", "Bad Name", "--image", "/x"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out).contains("invalid session name"),
            "{}",
            text(&out)
        );
        // A name in use (its run directory exists) is refused before anything is made.
        std::fs::create_dir_all(env.run_root().join("sessions").join("taken")).unwrap();
        let out = env.run(&["up", "--name", "taken", "--image", BIN]);
        assert_exit(&out, 2, "already exists");
    }
}

#[test]
fn not_root_is_told_to_use_sudo() {
    if !is_root() {
        let out = Command::new(BIN).args(["up"]).output().unwrap();
        assert_exit(&out, 3, "sudo");
        return;
    }
    // As root: drop to nobody with setpriv (util-linux) to see the message,
    // running a copy of the binary that nobody can reach wherever the
    // checkout lives.
    dozlab_testkit::require_tool!("setpriv");
    let copy = dozlab_testkit::world_executable_copy(Path::new(BIN)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(copy.path())
        .arg("up")
        .current_dir("/")
        .output()
        .unwrap();
    assert_exit(&out, 3, "must run as root");
    assert!(text(&out).contains("sudo"), "{}", text(&out));
}

// ---------------------------------------------------------------- boots --

/// A minimal WebSocket client (RFC 6455) over a plain TCP stream.
struct Ws {
    s: TcpStream,
}

impl Ws {
    fn open(port: u16, cookie: &str) -> Self {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "WebSocket upgrade refused: {head}"
        );
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self { s }
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.s.write_all(&Self::frame(opcode, payload)).unwrap();
    }

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Sends a frame far over the terminal's limit and returns the close code
    /// it answers with (None: the connection ended without a close frame,
    /// what a browser reports as 1006). The server closes while this frame is
    /// still being sent, so the write may fail; only what comes back counts.
    fn oversized_frame_close_code(&mut self) -> Option<u16> {
        // A busy machine (VMs under TCG) may take a while to answer.
        self.s
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let _ = self.s.write_all(&Self::frame(2, &vec![b'x'; 2 << 20]));
        while let Some((op, p)) = self.recv() {
            if op == 8 {
                return p.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    }

    /// Next frame (opcode, payload), or None on timeout.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        if self.s.read_exact(&mut h).is_err() {
            return None;
        }
        let mut len = (h[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            self.s.read_exact(&mut b).ok()?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.s.read_exact(&mut b).ok()?;
            len = u64::from_be_bytes(b);
        }
        let mut p = vec![0u8; len as usize];
        self.s.read_exact(&mut p).ok()?;
        Some((h[0] & 0x0f, p))
    }

    /// Types `line` and collects output until `marker` appears.
    fn run_until(&mut self, line: &str, marker: &str, timeout: Duration) -> String {
        self.send(2, line.as_bytes());
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            if let Some((op, p)) = self.recv()
                && op == 2
            {
                out.extend_from_slice(&p);
                if String::from_utf8_lossy(&out).contains(marker) {
                    break; // the command line echoes `END-$((6*7))`, only the shell prints this
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Everything a user gets from a ready session, checked for real.
fn check_session(env: &Env, name: &str) -> u8 {
    let r = record(env, name);
    assert_eq!(r["state"], "ready", "{r}");
    assert_eq!(
        r["docker_ready"], true,
        "--wait-docker waited for the VM's Docker: {r}"
    );
    // The terminal: log in, open a shell over the WebSocket, run commands.
    let (port, cookie) = terminal_login(&r);
    let mut ws = Ws::open(port, &cookie);
    ws.send(1, br#"{"type":"resize","cols":120,"rows":40}"#);
    let out = ws.run_until(
        "uname -a; docker info --format 'docker={{.ServerVersion}}'; echo END-$((6*7))\r",
        "END-42",
        Duration::from_secs(90),
    );
    assert!(
        out.contains("Linux dozlab"),
        "uname output in the shell: {out}"
    );
    assert!(
        out.contains("docker=2"),
        "docker info against the VM's Docker: {out}"
    );
    check_oversized_frame(port, &cookie);
    // SSH straight to the VM through the published port, host key verified.
    let ssh = ssh(&r, "cat /proc/sys/kernel/hostname");
    assert!(ssh.status.success(), "ssh: {}", text(&ssh));
    // DOCKER_HOST=tcp://127.0.0.1:PORT reaches the VM's dockerd.
    let docker = r["ports"]["docker"].as_u64().unwrap() as u16;
    let mut s = TcpStream::connect(("127.0.0.1", docker)).unwrap();
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.") && resp.ends_with("OK"),
        "docker ping: {resp}"
    );
    // The pod: a namespace with the tap, the VM's subnet only inside it.
    let ns = format!("dozlab-{name}");
    let tap = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "link", "show", "tap0"])
        .output()
        .unwrap();
    assert!(tap.status.success(), "tap0 inside {ns}: {}", text(&tap));
    let vm_ip = r["net"]["vm_ip"].as_str().unwrap().to_string();
    let route = Command::new("ip")
        .args(["route", "get", &vm_ip])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&route.stdout).contains("dzl"),
        "the host must have no route into the session: {}",
        text(&route)
    );
    r["net"]["index"].as_u64().unwrap() as u8
}

/// A 2 MiB WebSocket frame through the published port ends as it does
/// straight to the terminal: with the terminal's close frame, code 1009.
fn check_oversized_frame(port: u16, cookie: &str) {
    let mut ws = Ws::open(port, cookie);
    assert_eq!(
        ws.oversized_frame_close_code(),
        Some(1009),
        "the terminal's close frame reaches the client through the proxy"
    );
}

/// The original pod's environment variables (and Dozlab's own), each set to
/// a value the session must not take (most would stop it from coming up).
const HOSTILE_ENV: &[(&str, &str)] = &[
    ("VM_IP", "10.99.99.2"),
    ("GATEWAY_IP", "10.99.99.1"),
    ("PREFIX_LEN", "8"),
    ("TAP_DEVICE_NAME", "wrongtap0"),
    ("TAP_OWNER", "4242"),
    ("VM_MAC", "not-a-mac"),
    ("MEMORY", "64"),
    ("CPU_COUNT", "99"),
    ("IMAGE_SIZE", "1M"),
    ("IMAGE_PATH", "/nonexistent/rootfs.ext4"),
    ("ROOTFS_PATH", "/nonexistent/rootfs.ext4"),
    ("KERNEL_PATH", "/nonexistent/vmlinuz"),
    ("KERNEL_ARGS", "init=/bin/false"),
    ("SSH_KEY_PATH", "/nonexistent/vm-ssh-key"),
    ("KNOWN_HOSTS_PATH", "/nonexistent/known_hosts"),
    ("NETWORK_CONFIG", "/nonexistent/network-config"),
    ("SESSION_ID", "not a session id!"),
    ("FORWARD_PORTS", "99999"),
    ("STATUS_LISTEN", "not-an-address"),
    ("BOOT_TIMEOUT", "1"),
    ("QEMU_BIN", "/bin/false"),
    ("DOZLAB_VMM", "firecracker"),
    ("DOZLAB_ACCEL", "kvm"),
    ("DOZLAB_QEMU_MACHINE", "microvm"),
    ("DOZLAB_DOCKER_CHECK", "on"),
    ("DOZLAB_VM_STATE_DIR", "/nonexistent/vm"),
    ("UPLINK", "nonexistent0"),
    ("POD_IP", "10.99.99.9"),
    ("TERMINAL_LISTEN", "0.0.0.0:1"),
    ("TERMINAL_PASSWORD_FILE", "/nonexistent/password"),
    ("VM_SSH_PORT", "2"),
    ("SSH_USER", "nobody"),
    ("MAX_SHELLS", "0"),
    ("IDLE_TIMEOUT", "1s"),
    ("ALLOWED_ORIGINS", "https://evil.example.com"),
    ("RECORD_DIR", "/nonexistent/records"),
];

#[test]
fn root_callers_environment_does_not_reach_the_components() {
    need_root!();
    let image = vm_image();
    let env = Env::new();
    let n = name("env");
    let mut up = env.cmd(&[
        "up",
        "--detach",
        "--name",
        &n,
        "--image",
        image.to_str().unwrap(),
    ]);
    up.args(BOOT_FLAGS);
    up.envs(HOSTILE_ENV.iter().copied());
    let out = up.output().unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(out.status.success(), "up: {}", text(&out));
        let r = record(&env, &n);
        let slot = r["net"]["index"].as_u64().unwrap();
        assert_eq!(r["net"]["vm_ip"], format!("172.16.{slot}.2"), "{r}");
        // The terminal reaches the VM with the session's key and host key,
        // and opens a shell that stays (MAX_SHELLS, IDLE_TIMEOUT unread).
        let (port, cookie) = terminal_login(&r);
        let mut ws = Ws::open(port, &cookie);
        let out = ws.run_until(
            "cat /proc/meminfo | head -n 1; nproc; echo END-$((6*7))\r",
            "END-42",
            Duration::from_secs(90),
        );
        assert!(out.contains("END-42"), "a shell in the VM: {out}");
        let mem_kib: u64 = out
            .lines()
            .find_map(|l| l.split_once("MemTotal:").map(|(_, v)| v))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("MemTotal in {out}"));
        assert!(
            (500_000..800_000).contains(&mem_kib),
            "--memory 768, not MEMORY=64: {mem_kib} KiB"
        );
        check_oversized_frame(port, &cookie);
        r["net"]["index"].as_u64().map(|i| i as u8)
    });
    let down = env.run(&["down", &n]);
    let slot = match result {
        Ok(slot) => slot,
        Err(e) => std::panic::resume_unwind(e),
    };
    assert!(down.status.success(), "{}", text(&down));
    env.assert_nothing_left(&n, slot);
}

/// The real `code-server` on PATH (scripts/setup installs code-server 4.96.4
/// with a Node 20 as /usr/local/bin/code-server).
fn real_code_server() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("code-server"))
        .find(|p| p.is_file())
        .expect("no code-server on PATH: run scripts/setup (scripts/setup.d/40-code-server.sh)")
}

/// PATH without the directories holding a `code-server`.
fn path_without_code_server() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("code-server").exists())
        .collect();
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

/// The real code-server runs in the pod with the session password and the
/// VM's Docker, published on the host; the forwarded port reaches the VM's sshd.
fn check_vscode_and_forward(r: &serde_json::Value, forward: u16) {
    let port = r["ports"]["vscode"].as_u64().expect("a VS Code port") as u16;
    let password = std::fs::read_to_string(r["password_file"].as_str().unwrap()).unwrap();
    let password = password.trim();
    let deadline = Instant::now() + Duration::from_secs(120);
    let health = loop {
        match try_http(port, "GET /healthz HTTP/1.0\r\n\r\n") {
            Some(h) if h.starts_with("HTTP/1.1 200") => break h,
            h if Instant::now() > deadline => panic!("code-server /healthz: {h:?}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert!(health.contains("\"status\""), "{health}");
    let form = format!("password={password}");
    let login = try_http(
        port,
        &format!(
            "POST /login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
    .unwrap();
    assert!(
        login.starts_with("HTTP/1.1 302") && login.contains("code-server-session="),
        "code-server accepts the session password: {login}"
    );
    let pid = r["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "vscode")
        .and_then(|c| c["pid"].as_u64())
        .expect("a vscode child");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let vm_ip = r["net"]["vm_ip"].as_str().unwrap();
    assert!(
        environ.contains(&format!("DOCKER_HOST=tcp://{vm_ip}:2375\0")),
        "{environ}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--auth\0password\0"),
        "code-server runs with --auth password"
    );
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let its_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        host_ns, its_ns,
        "code-server runs in the session's namespace"
    );
    let mut s = TcpStream::connect(("127.0.0.1", forward)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut banner = [0u8; 4];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(
        &banner, b"SSH-",
        "--forward {forward}:22 reaches the VM's sshd"
    );
}

#[test]
fn root_two_sessions_side_by_side_end_to_end() {
    need_root!();
    let image = vm_image();
    let env = Env::new();
    let (a, b) = (name("a"), name("b"));
    let img = image.to_str().unwrap().to_string();
    // A gets VS Code from the real code-server on PATH (installed by
    // scripts/setup) and a forwarded port; B asks for VS Code with none on PATH.
    real_code_server();
    let forward = free_port();
    let path_without = path_without_code_server();
    let start = |n: &str| {
        let mut c = env.cmd(&[
            "up", "--detach", "--name", n, "--image", &img, "--accel", "tcg", "--vscode",
        ]);
        if n == a {
            c.args(["--forward", &format!("{forward}:22")]);
        } else {
            c.env("PATH", &path_without);
        }
        c.args([
            "--memory",
            "768",
            "--cpus",
            "1",
            "--ready-timeout",
            "600",
            "--wait-docker",
        ]);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (ca, cb) = (start(&a), start(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let cleanup = |env: &Env| {
        let _ = env.run(&["down", "--all"]);
    };
    if !oa.status.success() || !ob.status.success() {
        cleanup(&env);
        panic!("up failed:\n{}\n{}", text(&oa), text(&ob));
    }
    for o in [&oa, &ob] {
        let t = text(o);
        for want in [
            "Terminal:  http://127.0.0.1:",
            "Password:",
            "SSH:       ssh -i",
            "DOCKER_HOST=tcp://127.0.0.1:",
        ] {
            assert!(t.contains(want), "ready block has {want:?}: {t}");
        }
    }
    assert!(
        text(&ob).contains("VS Code not started") && text(&ob).contains("code-server"),
        "B is told why VS Code is missing: {}",
        text(&ob)
    );
    let result = std::panic::catch_unwind(|| {
        let (sa, sb) = (check_session(&env, &a), check_session(&env, &b));
        check_vscode_and_forward(&record(&env, &a), forward);
        assert!(record(&env, &b)["ports"]["vscode"].is_null());
        assert_ne!(sa, sb, "distinct subnets");
        let (ra, rb) = (record(&env, &a), record(&env, &b));
        assert_ne!(
            ra["ports"]["terminal"], rb["ports"]["terminal"],
            "distinct ports"
        );
        let ls = String::from_utf8_lossy(&env.run(&["ls"]).stdout).into_owned();
        assert!(
            ls.contains(&a) && ls.contains(&b) && ls.contains("ready"),
            "{ls}"
        );
        let logs = env.run(&["logs", &a, "--component", "console", "-n", "5"]);
        assert!(
            logs.status.success() && !logs.stdout.is_empty(),
            "{}",
            text(&logs)
        );
        (sa, sb, rb)
    });
    let Ok((sa, sb, rb)) = result else {
        cleanup(&env);
        std::panic::resume_unwind(result.unwrap_err());
    };
    // Kill B's supervisor outright: `down` must still remove everything.
    let sup = rb["supervisor"]["pid"].as_u64().unwrap() as i32;
    Command::new("kill")
        .args(["-KILL", &sup.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(String::from_utf8_lossy(&env.run(&["ls"]).stdout).contains("dead"));
    let down_b = env.run(&["down", &b]);
    assert!(down_b.status.success(), "{}", text(&down_b));
    env.assert_nothing_left(&b, Some(sb));
    // A is untouched by B's end, then stops cleanly.
    assert_eq!(record(&env, &a)["state"], "ready");
    let down_a = env.run(&["down", &a]);
    assert!(down_a.status.success(), "{}", text(&down_a));
    assert!(
        text(&down_a).contains("stopped and removed"),
        "{}",
        text(&down_a)
    );
    env.assert_nothing_left(&a, Some(sa));
    assert_eq!(
        String::from_utf8_lossy(&env.run(&["ls", "--json"]).stdout).trim(),
        "[]"
    );
}

#[test]
fn root_vm_that_never_becomes_ready_times_out_and_leaves_nothing() {
    need_root!();
    let image = vm_image();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the image whose sshd is masked: it boots, but SSH never answers.
    let img = dir.path().join("rootfs.ext4");
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(image.join("rootfs.ext4"))
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let mask = Command::new("debugfs")
        .args([
            "-w",
            "-R",
            "symlink /etc/systemd/system/ssh.service /dev/null",
        ])
        .arg(&img)
        .output()
        .unwrap();
    assert!(mask.status.success(), "{}", text(&mask));
    let env = Env::new();
    let n = name("never");
    let out = env.up(
        &n,
        img.to_str().unwrap(),
        &["--accel", "tcg", "--ready-timeout", "20", "--no-internet"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("not ready within 20 s") || t.contains("ready"),
        "{t}"
    );
    assert!(
        t.contains("--- console.log ---"),
        "the console tail is shown: {t}"
    );
    env.assert_nothing_left(&n, slot_from(&t));
}

#[test]
fn root_ctrl_c_during_boot_stops_the_vm_and_leaves_nothing() {
    need_root!();
    let image = vm_image();
    let env = Env::new();
    let n = name("ctrlc");
    let mut up = env
        .cmd(&[
            "up",
            "--name",
            &n,
            "--image",
            image.to_str().unwrap(),
            "--accel",
            "tcg",
            "--no-internet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the VM is booting (its runner is a child in the namespace).
    let record_path = env
        .run_root()
        .join("sessions")
        .join(&n)
        .join("session.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    let slot = loop {
        let rec: Option<serde_json::Value> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(r) = rec
            && r["current_phase"] == "boot"
            && r["children"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["component"] == "vm"))
        {
            break r["net"]["index"].as_u64().map(|i| i as u8);
        }
        assert!(Instant::now() < deadline, "the boot phase never began");
        assert!(up.try_wait().unwrap().is_none(), "up ended early");
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(2));
    // What the terminal sends on Ctrl-C: SIGINT to the foreground process.
    Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    let out = up.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("interrupted") && t.contains("stopped and removed"),
        "{t}"
    );
    env.assert_nothing_left(&n, slot);
}
