//! Fixtures shared by the CLI test files (each includes this with `mod common;`).
// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code)]

pub mod labfiles;
pub mod podnet;
pub mod session;

use std::process::{Command, Output};

/// Exit status, stdout and stderr of `o`, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that `o` exited with `code` and that its output (stdout or
/// stderr) mentions `needle`.
pub fn assert_exit(o: &Output, code: i32, needle: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    assert!(t.contains(needle), "{needle:?} in {t}");
}

/// Sends SIGTERM to `pid` (what the kubelet, or `kill`, sends) and asserts
/// it was delivered.
pub fn sigterm(pid: u32) {
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success(), "kill -TERM {pid}");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
