//! Strict mode for real: each test runs this test binary again for itself
//! (role in `DOZLAB_TESTKIT_CHILD`), where it skips through the macros, and
//! checks the child's exit status, its visible `SKIPPED` line and the log.

use dozlab_testkit::{LOG_ENV, STRICT_ENV};
use std::path::Path;
use std::process::{Command, Output};

const CHILD: &str = "DOZLAB_TESTKIT_CHILD";

/// In a child run: skip for the requirement `role` names, as a test would.
fn skipping_body(role: &str) {
    match role {
        "tool" => dozlab_testkit::require_tool!("sh", "dozlab-no-such-tool"),
        "firecracker" => dozlab_testkit::skip_if!(true, "firecracker", "no Firecracker binary"),
        _ => unreachable!("unknown role {role}"),
    }
    panic!("the skip did not return from the test");
}

/// Runs the test `name` alone in a child with `role`, strict or not, logging to `log`.
fn rerun(name: &str, role: &str, strict: bool, log: &Path) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1"])
        .env(CHILD, role)
        .env(STRICT_ENV, if strict { "1" } else { "0" })
        .env(LOG_ENV, log)
        .output()
        .unwrap()
}

/// Runs the child side when this process is one; true if it was.
fn as_child() -> bool {
    match std::env::var(CHILD) {
        Ok(role) => {
            skipping_body(&role);
            true
        }
        Err(_) => false,
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn strict_mode_fails_a_test_that_skips_for_a_tool_setup_should_install() {
    if as_child() {
        return;
    }
    let name = "strict_mode_fails_a_test_that_skips_for_a_tool_setup_should_install";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let out = rerun(name, "tool", true, &log);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 failed"), "{}", text(&out));
    assert!(text(&out).contains("strict mode"), "{}", text(&out));
    let line = format!(
        "SKIPPED dozlab-testkit/strict::{name}: `dozlab-no-such-tool` is not on PATH \
         (scripts/setup installs it) [needs tool:dozlab-no-such-tool]"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{line}\n"));
}

#[test]
fn strict_mode_lets_a_test_skip_for_what_cannot_exist_here() {
    if as_child() {
        return;
    }
    let name = "strict_mode_lets_a_test_skip_for_what_cannot_exist_here";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let out = rerun(name, "firecracker", true, &log);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 passed"), "{}", text(&out));
    let line = format!(
        "SKIPPED dozlab-testkit/strict::{name}: no Firecracker binary [needs firecracker; allowed]"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("{line}\n"));
}

#[test]
fn without_strict_mode_a_skip_passes_but_is_printed_past_the_capture_and_logged() {
    if as_child() {
        return;
    }
    let name = "without_strict_mode_a_skip_passes_but_is_printed_past_the_capture_and_logged";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.log");
    let out = rerun(name, "tool", false, &log);
    assert!(out.status.success(), "{}", text(&out));
    // libtest hides a passing test's eprintln!; the SKIPPED line must still show.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("SKIPPED dozlab-testkit/strict::{name}: ")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}
