//! A real browser (Debian's Chromium, headless, via playwright-core) logs into
//! the page served by the real server, types `echo hello` into a shell of a
//! real sshd and sees `hello`. Screenshot: target/test-artifacts/terminal.png.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_runs_echo_hello() {
    if !browser::browser_available() {
        return;
    }
    let Some(sshd) = Sshd::start() else { return };
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let shot = browser::screenshot("terminal.png");
    browser::run_script(
        "browser.mjs",
        &format!("http://{addr}/"),
        PASSWORD,
        &shot,
        "the browser test",
    )
    .await;
}
