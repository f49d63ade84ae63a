//! A real browser (Debian's Chromium, headless, via playwright-core) logs into
//! the page served by the real server, types `echo hello` into a shell of a
//! real sshd and sees `hello`. Screenshot: target/test-artifacts/terminal.png.

mod common;

use common::*;
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_runs_echo_hello() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    for (path, fix) in [
        (
            web.join("node_modules/playwright-core"),
            "run scripts/setup (npm install in crates/dozlab-terminal/web)",
        ),
        (
            Path::new(&chromium).to_path_buf(),
            "install chromium (scripts/setup)",
        ),
    ] {
        dozlab_testkit::require_path!(path, fix);
    }
    dozlab_testkit::require_tool!("node");
    let Some(sshd) = Sshd::start() else { return };
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let shot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/terminal.png");
    let _ = std::fs::remove_file(&shot);
    let mut child = tokio::process::Command::new("node")
        .arg("tests/browser.mjs")
        .arg(format!("http://{addr}/"))
        .arg(PASSWORD)
        .arg(&shot)
        .current_dir(&web)
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let status = tokio::time::timeout(std::time::Duration::from_secs(180), child.wait())
        .await
        .expect("the browser test finishes")
        .unwrap();
    assert!(
        status.success(),
        "the browser test failed (see its output above)"
    );
    assert!(shot.exists(), "a screenshot was saved");
}
