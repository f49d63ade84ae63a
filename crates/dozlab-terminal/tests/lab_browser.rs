//! A real browser (Debian's Chromium, headless, via playwright-core) opens a
//! lab session served by the real server against a real sshd: a hostile
//! intro runs nothing and cannot read the cookie, `{{copy}}` and plain inline
//! code copy (`{{}}` does not), an `{{exec}}` click runs in
//! the shell, Check passes, and the progress is still there after a reload.
//! Screenshot: target/test-artifacts/lab.png.

mod common;

use common::*;
use dozlab_terminal::auth::Auth;
use dozlab_terminal::lab::LabPanel;
use dozlab_terminal::server::{self, ConnLimits};
use dozlab_terminal::shell::Registry;
use dozlab_terminal::web::{self, AppState};
use std::path::Path;
use std::sync::Arc;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const HOSTILE: &str = r#"# Hostile intro

<script>window.pwned = 1; fetch('/api/lab/check', {method: 'POST'})</script>
<img src="x" onerror="window.pwned = 2">
<a href="javascript:window.pwned = 3">click me</a>
[md link](javascript:window.pwned=4)
<iframe src="javascript:parent.pwned=5"></iframe>
<pre data-lab-action="exec" data-lab-index="0">rm -rf ~</pre>
<form action="/logout" method="post"><button>go</button></form>
<svg><script>window.pwned = 6</script></svg>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_a_lab_step_and_keeps_progress_over_a_reload() {
    if !browser::browser_available() {
        return;
    }
    let Some(sshd) = Sshd::start() else { return };

    let work = tempfile::tempdir().unwrap();
    let w = work.path().join("w");
    let lab = tempfile::tempdir().unwrap();
    write(
        lab.path(),
        "index.json",
        r#"{ "title": "Browser lab", "details": {
  "intro": { "text": "intro.md" },
  "steps": [ { "title": "Make it", "text": "step1.md", "verify": "verify.sh" } ],
  "finish": { "text": "finish.md" } } }"#,
    );
    write(lab.path(), "intro.md", HOSTILE);
    write(
        lab.path(),
        "step1.md",
        &format!(
            "Run:\n\n```\nmkdir -p {w} && touch {w}/done\n```{{{{exec}}}}\n\n\
             Copy `echo block-copy`{{{{copy}}}}, or `plain-inline`, but not `no-copy`{{{{}}}}.\n",
            w = w.display()
        ),
    );
    write(lab.path(), "finish.md", "Well done.\n");
    write(
        lab.path(),
        "verify.sh",
        &format!("#!/bin/bash\ntest -f {}/done\n", w.display()),
    );
    let state_dir = tempfile::tempdir().unwrap();
    let panel = LabPanel::open(lab.path(), state_dir.path(), "browser").unwrap();
    let state = AppState::new(
        settings(),
        Auth::new(PASSWORD).unwrap(),
        Registry::new(limits()),
        target(&sshd),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        web::app_with_lab(state, Some(Arc::new(panel))),
        ConnLimits::default(),
        std::future::pending(),
    ));

    let shot = browser::screenshot("lab.png");
    browser::run_script(
        "lab.mjs",
        &format!("http://{addr}/"),
        PASSWORD,
        &shot,
        "the lab browser test",
    )
    .await;
    assert!(
        w.join("done").exists(),
        "the {{exec}} click ran in the shell"
    );
    let saved =
        std::fs::read_to_string(state_dir.path().join("lab-progress-browser.json")).unwrap();
    assert!(saved.contains("\"passed\""), "{saved}");
}
