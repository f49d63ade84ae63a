//! CLI tests of `dozlab terminal`: flags, errors, `replay`, and the served
//! binary's probes, login and refusal of an unauthenticated WebSocket, with
//! secrets kept out of its logs. The WebSocket/SSH behaviour is tested against
//! a real sshd in crates/dozlab-terminal/tests.

mod common;
use common::{free_port, sigterm};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

fn dozlab(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TERMINAL_PASSWORD")
        .output()
        .expect("dozlab runs")
}

#[test]
fn help_lists_every_flag() {
    let out = dozlab(&["terminal", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--vm-ip",
        "--vm-ssh-port",
        "--ssh-user",
        "--ssh-key",
        "--known-hosts",
        "--password-file",
        "--session-id",
        "--record-dir",
        "--idle-timeout",
        "--grace-period",
        "--allowed-origin",
        "--max-shells",
        "--max-frame-bytes",
        "--secure-cookie",
        "--trusted-proxy",
        "--header-timeout",
        "--idle-connection-timeout",
        "--max-connections",
        "replay",
    ] {
        assert!(help.contains(flag), "help mentions {flag}");
    }
}

#[test]
fn no_password_is_a_usage_error() {
    let out = dozlab(&["terminal", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no session password"));
    let out = dozlab(&["terminal", "--password-file", "/nonexistent/pw"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pw"));
    let out = dozlab(&["terminal", "--idle-timeout", "5 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    let out = dozlab(&["terminal", "--trusted-proxy", "10.0.0.0/33"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.0/33"));
    let out = Command::new(BIN)
        .args(["terminal", "--trust-forwarded-for"])
        .env("TERMINAL_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trusted-proxy CIDR"));
}

#[test]
fn replay_prints_the_output_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let cast = dir.path().join("s.cast");
    std::fs::write(
        &cast,
        "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"i\",\"ls\\r\"]\n[0.2,\"o\",\"hello \"]\n[0.3,\"r\",\"100x30\"]\n[0.4,\"o\",\"world\\r\\n\"]\n",
    )
    .unwrap();
    let out = dozlab(&["terminal", "replay", "--instant", cast.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello world\r\n");
    std::fs::write(
        &cast,
        "{\"version\":2,\"width\":80,\"height\":24}\nnot json\n",
    )
    .unwrap();
    let out = dozlab(&["terminal", "replay", cast.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s.cast:2"));
    let out = dozlab(&["terminal", "replay", "/nonexistent.cast"]);
    assert_eq!(out.status.code(), Some(1));
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    // Read the head, then Content-Length bytes (a refused upgrade may keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if n == 0 || raw.len() >= end + 4 + len {
                return text;
            }
        } else if n == 0 {
            return text;
        }
    }
}

#[test]
fn the_binary_serves_probes_and_login_and_keeps_secrets_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "s3cret-Pa55word\n").unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "terminal",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--vm-ip",
            "127.0.0.1",
            "--vm-ssh-port",
            "1",
        ])
        .arg("--password-file")
        .arg(&pw_file)
        .arg("--ssh-key")
        .arg(dir.path().join("missing-key"))
        .arg("--known-hosts")
        .arg(dir.path().join("missing-known-hosts"))
        .env("DOZLAB_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the terminal did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let get = |path: &str| {
        http(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
    };
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    let ready = get("/ready");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("not written yet"));
    assert!(get("/").contains("name=\"password\""), "the login page");
    let login = |pw: &str| {
        let body = format!("password={pw}");
        http(
            port,
            &format!(
                "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    assert!(login("wrong-guess-1").starts_with("HTTP/1.1 401"));
    let ok = login("s3cret-Pa55word");
    assert!(ok.starts_with("HTTP/1.1 303"), "{ok}");
    let cookie = ok
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(ok.contains("HttpOnly; SameSite=Strict"));
    let page = http(
        port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"),
    );
    assert!(page.contains("/assets/terminal.js"), "the terminal page");
    let ws = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert!(http(port, &format!("{ws}\r\n")).starts_with("HTTP/1.1 401"));
    let evil = http(
        port,
        &format!("{ws}Cookie: {cookie}\r\nOrigin: http://evil.example\r\n\r\n"),
    );
    assert!(evil.starts_with("HTTP/1.1 403"));
    // A client-chosen path with a newline and an escape sequence reaches the log.
    let forged = "/download?path=x%0A2026-01-01T00:00:00Z%20%20INFO%20login%20client=6.6.6.6%1B[2J";
    let down = http(
        port,
        &format!(
            "GET {forged} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    sigterm(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM stops it cleanly: {status}");
    let logs = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let token = cookie.split_once('=').unwrap().1;
    for secret in ["s3cret-Pa55word", "wrong-guess-1", token] {
        assert!(!logs.contains(secret), "logs never show secrets");
    }
    assert!(
        logs.contains("wrong password"),
        "failed logins are logged (without the password)"
    );
    assert!(logs.contains("download failed"), "{logs}");
    assert!(!logs.contains('\x1b'), "no raw escape sequence in the log");
    for line in logs.lines() {
        assert!(
            line.starts_with("20") && !line.starts_with("2026-01-01"),
            "every log line is one of ours: {line:?}"
        );
    }
}
