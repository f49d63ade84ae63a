//! Driving the real browser: the checks that Chromium, node and
//! playwright-core are there (a visible skip when not), and running one of
//! `web/tests/*.mjs` against a served page.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `crates/dozlab-terminal/web`, where node runs the browser scripts.
pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// True when Chromium, node and playwright-core are installed; otherwise the
/// test is recorded as skipped (dozlab-testkit) and the caller returns.
pub fn browser_available() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    dozlab_testkit::have_path!(
        web_dir().join("node_modules/playwright-core"),
        "run scripts/setup (npm install in crates/dozlab-terminal/web)"
    ) && dozlab_testkit::have_path!(Path::new(&chromium), "install chromium (scripts/setup)")
        && dozlab_testkit::have_tool!("node")
}

/// Where a test's screenshot goes: `target/test-artifacts/NAME` (removed first).
pub fn screenshot(name: &str) -> PathBuf {
    let shot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-artifacts")
        .join(name);
    let _ = std::fs::remove_file(&shot);
    shot
}

/// Runs `node web/tests/SCRIPT URL PASSWORD SHOT` and panics with `what`
/// when it fails (its own output, above, says why).
pub async fn run_script(script: &str, url: &str, password: &str, shot: &Path, what: &str) {
    let mut child = tokio::process::Command::new("node")
        .arg(Path::new("tests").join(script))
        .arg(url)
        .arg(password)
        .arg(shot)
        .current_dir(web_dir())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .expect("the browser test finishes")
        .unwrap();
    assert!(status.success(), "{what} failed (see its output above)");
    assert!(shot.exists(), "{what}: a screenshot was saved");
}
