//! The lab panel's routes against a real sshd standing in for the VM: the
//! view and progress as JSON, "Check" running the page's verify over SSH
//! (fail with the script's last lines, then pass), "Next" locked until the
//! check passes, the per-page counters, only referenced lab files served,
//! cookie and Origin required, and progress surviving a terminal restart.

mod common;

use common::*;
use dozlab_terminal::auth::Auth;
use dozlab_terminal::lab::LabPanel;
use dozlab_terminal::server::{self, ConnLimits};
use dozlab_terminal::shell::Registry;
use dozlab_terminal::web::{self, AppState};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Intro (no check), two steps checking files under `work`, a finish.
pub fn fixture_lab(work: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = work.display();
    write(
        d.path(),
        "index.json",
        r#"{ "title": "Files", "description": "make two files",
  "details": {
    "intro": { "text": "intro.md" },
    "steps": [
      { "title": "First file", "text": "step1.md", "verify": "verify1.sh" },
      { "title": "Second file", "text": "step2.md", "verify": "verify2.sh" }
    ],
    "finish": { "text": "finish.md" } } }"#,
    );
    write(
        d.path(),
        "intro.md",
        "# Welcome\n\n![diagram](img/plan.png)\n",
    );
    write(
        d.path(),
        "step1.md",
        &format!("Create it:\n\n```\nmkdir -p {w} && touch {w}/done\n```{{{{exec}}}}\n"),
    );
    write(
        d.path(),
        "step2.md",
        &format!("`touch {w}/two`{{{{exec}}}}\n"),
    );
    write(d.path(), "finish.md", "Done.\n");
    write(
        d.path(),
        "verify1.sh",
        &format!(
            "#!/bin/bash\necho looking for {w}/done\ntest -f {w}/done || {{ echo 'no done file yet' >&2; exit 3; }}\n"
        ),
    );
    write(
        d.path(),
        "verify2.sh",
        &format!("#!/bin/bash\ntest -f {w}/two\n"),
    );
    write(d.path(), "img/plan.png", "\u{89}PNG fake");
    d
}

pub async fn serve_lab(sshd: &Sshd, panel: LabPanel) -> SocketAddr {
    serve_shared(sshd, Arc::new(panel)).await
}

/// [`serve_lab`] for a panel the test keeps a handle on.
pub async fn serve_shared(sshd: &Sshd, panel: Arc<LabPanel>) -> SocketAddr {
    let state = AppState::new(
        settings(),
        Auth::new(PASSWORD).unwrap(),
        Registry::new(limits()),
        target(sshd),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = web::app_with_lab(state, Some(panel));
    tokio::spawn(server::serve(
        listener,
        app,
        ConnLimits::default(),
        std::future::pending(),
    ));
    addr
}

async fn get(addr: SocketAddr, cookie: &str, path: &str) -> HttpResponse {
    http(addr, "GET", path, &[("Cookie", cookie)], b"").await
}

async fn post(addr: SocketAddr, cookie: &str, path: &str, body: Value) -> (u16, Value) {
    let origin = format!("http://{addr}");
    let res = http(
        addr,
        "POST",
        path,
        &[
            ("Cookie", cookie),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    let v = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    (res.status, v)
}

fn json_of(res: &HttpResponse) -> Value {
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    serde_json::from_slice(&res.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_next_metrics_and_progress_across_a_restart() {
    let Some(sshd) = Sshd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let w = work.path().join("w");
    let lab = fixture_lab(&w);
    let state = tempfile::tempdir().unwrap();
    let panel = LabPanel::open(lab.path(), state.path(), "s1").unwrap();
    let addr = serve_lab(&sshd, panel).await;
    let cookie = login(addr).await;

    let v = json_of(&get(addr, &cookie, "/api/lab").await);
    assert_eq!(v["lab"]["title"], "Files");
    let pages = v["lab"]["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 4);
    assert_eq!(pages[1]["actions"][0]["kind"], "exec");
    assert!(
        pages[1]["html"]
            .as_str()
            .unwrap()
            .contains("data-lab-index=\"0\"")
    );
    assert_eq!(v["progress"]["current"], 0);
    assert_eq!(v["progress"]["unlocked"], 2, "intro and step 1 open: {v}");

    // Step 2 is locked until step 1's check passes.
    let (status, body) = post(addr, &cookie, "/api/lab/goto", json!({"page": 2})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = post(addr, &cookie, "/api/lab/goto", json!({"page": 1})).await;
    assert_eq!(status, 200);

    // Not done yet: fails with the script's last lines.
    let (status, r) = post(addr, &cookie, "/api/lab/check", json!({"page": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["result"]["passed"], false, "{r}");
    assert_eq!(r["result"]["status"], 3);
    let out = r["result"]["output"].as_str().unwrap();
    assert!(out.contains("no done file yet"), "{out}");
    assert_eq!(r["progress"]["unlocked"], 2);

    // Done: passes over SSH, Next unlocks.
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join("done"), "").unwrap();
    let (status, r) = post(addr, &cookie, "/api/lab/check", json!({"page": 1})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["result"]["passed"], true, "{r}");
    assert_eq!(r["progress"]["passed"], json!([1]));
    assert_eq!(r["progress"]["unlocked"], 3);
    let (status, p) = post(addr, &cookie, "/api/lab/goto", json!({"page": 2})).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["current"], 2);

    let m = get(addr, &cookie, "/api/lab/metrics").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains("dozlab_lab_checks_total{page=\"step 1\",result=\"passed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dozlab_lab_checks_total{page=\"step 1\",result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dozlab_lab_checks_total{page=\"step 2\",result=\"passed\"} 0"),
        "{text}"
    );

    // A restarted terminal (new panel, new server, new login) shows the same progress.
    let panel = LabPanel::open(lab.path(), state.path(), "s1").unwrap();
    let addr = serve_lab(&sshd, panel).await;
    let cookie = login(addr).await;
    let v = json_of(&get(addr, &cookie, "/api/lab").await);
    assert_eq!(v["progress"]["current"], 2, "{v}");
    assert_eq!(v["progress"]["passed"], json!([1]));
    assert_eq!(v["progress"]["unlocked"], 3);
    // Another session's progress is its own.
    let other = LabPanel::open(lab.path(), state.path(), "s2").unwrap();
    assert_eq!(other.progress().current, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_origin_and_only_referenced_files() {
    let Some(sshd) = Sshd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let lab = fixture_lab(work.path());
    let state = tempfile::tempdir().unwrap();
    let addr = serve_lab(
        &sshd,
        LabPanel::open(lab.path(), state.path(), "s").unwrap(),
    )
    .await;

    for path in ["/api/lab", "/api/lab/metrics", "/lab/files/img/plan.png"] {
        let res = http(addr, "GET", path, &[], b"").await;
        assert_eq!(res.status, 401, "{path} without the cookie");
    }
    let res = http(
        addr,
        "POST",
        "/api/lab/check",
        &[("Content-Type", "application/json")],
        br#"{"page":1}"#,
    )
    .await;
    assert_eq!(res.status, 401);
    let cookie = login(addr).await;
    let res = http(
        addr,
        "POST",
        "/api/lab/check",
        &[
            ("Cookie", &cookie),
            ("Origin", "https://evil.example.net"),
            ("Content-Type", "application/json"),
        ],
        br#"{"page":1}"#,
    )
    .await;
    assert_eq!(res.status, 403, "a foreign Origin is refused");

    let img = get(addr, &cookie, "/lab/files/img/plan.png").await;
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type").as_deref(), Some("image/png"));
    for path in [
        "/lab/files/verify1.sh",
        "/lab/files/index.json",
        "/lab/files/../Cargo.toml",
        "/lab/files/img/../verify1.sh",
        "/lab/files/img%2F..%2Fverify1.sh",
    ] {
        let res = get(addr, &cookie, path).await;
        assert_eq!(res.status, 404, "{path} is not published");
    }
}

#[test]
fn a_lab_that_does_not_load_is_a_clear_error_and_leaves_nothing() {
    let lab = tempfile::tempdir().unwrap();
    write(lab.path(), "index.json", "{ not json");
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("st");
    let err = LabPanel::open(lab.path(), &dir, "s").unwrap_err();
    let msg = dozlab_terminal::error_chain(&err);
    assert!(msg.contains("does not load"), "{msg}");
    assert!(msg.contains("dozlab lab validate"), "{msg}");
    assert!(!dir.exists(), "no state directory left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_lab_there_are_no_lab_routes() {
    let Some(sshd) = Sshd::start() else { return };
    let (addr, _) = serve(settings(), limits(), target(&sshd)).await;
    let cookie = login(addr).await;
    for path in ["/api/lab", "/api/lab/metrics", "/lab/files/x.png"] {
        assert_eq!(get(addr, &cookie, path).await.status, 404, "{path}");
    }
}

/// A lab with assets, an intro background and a step-2 background, each
/// appending a line to `work/log` (so a second run would show).
fn setup_lab(work: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = work.display();
    write(
        d.path(),
        "index.json",
        &format!(
            r#"{{ "title": "Setup", "details": {{
  "intro": {{ "text": "a.md", "background": "intro-bg.sh" }},
  "steps": [
    {{ "title": "One", "text": "a.md" }},
    {{ "title": "Two", "text": "a.md", "background": "two-bg.sh" }}
  ],
  "assets": {{ "host01": [ {{ "file": "bin/*", "target": "{w}/bin", "chmod": "0750" }} ] }} }} }}"#
        ),
    );
    write(d.path(), "a.md", "Hi.\n");
    write(
        d.path(),
        "intro-bg.sh",
        &format!("#!/bin/bash\necho intro >> {w}/log\n"),
    );
    write(
        d.path(),
        "two-bg.sh",
        &format!("#!/bin/bash\necho two >> {w}/log\n"),
    );
    write(d.path(), "assets/bin/tool", "#!/bin/sh\necho tool\n");
    d
}

async fn wait_until<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_sets_the_lab_up_once_and_pages_start_their_backgrounds_once() {
    use std::os::unix::fs::PermissionsExt;
    let Some(sshd) = Sshd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let lab = setup_lab(work.path());
    let state_dir = tempfile::tempdir().unwrap();

    let panel = Arc::new(LabPanel::open(lab.path(), state_dir.path(), "s").unwrap());
    dozlab_terminal::labsetup::spawn_start(panel.clone(), target(&sshd), true);
    wait_until(
        &format!("the set-up finishes ({:?})", panel.setup()),
        || {
            matches!(
                panel.setup(),
                dozlab_terminal::labsetup::Setup::Done
                    | dozlab_terminal::labsetup::Setup::Failed(_)
            )
        },
    )
    .await;
    assert_eq!(panel.setup(), dozlab_terminal::labsetup::Setup::Done);
    assert_eq!(lines(), "intro\n");
    let tool = work.path().join("bin/tool");
    assert_eq!(
        std::fs::metadata(&tool).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert!(panel.progress().prepared);

    // Step two's background runs when the learner first goes there, once.
    let addr = serve_shared(&sshd, panel.clone()).await;
    let cookie = login(addr).await;
    let v = json_of(&get(addr, &cookie, "/api/lab").await);
    assert_eq!(v["progress"]["setup"]["state"], "done", "{v}");
    for _ in 0..2 {
        let (status, _) = post(addr, &cookie, "/api/lab/goto", json!({ "page": 2 })).await;
        assert_eq!(status, 200);
    }
    wait_until("step two's background ran", || lines().contains("two")).await;
    let counted = "dozlab_lab_backgrounds_total{page=\"step 2\",result=\"ok\"} 1";
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let m = get(addr, &cookie, "/api/lab/metrics").await;
        let m = String::from_utf8_lossy(&m.body).to_string();
        if m.contains(counted) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(lines(), "intro\ntwo\n");

    // A restarted terminal with --lab-prepare runs neither again.
    let again = Arc::new(LabPanel::open(lab.path(), state_dir.path(), "s").unwrap());
    dozlab_terminal::labsetup::spawn_start(again.clone(), target(&sshd), true);
    let (status, _) = {
        let addr = serve_shared(&sshd, again.clone()).await;
        let cookie = login(addr).await;
        post(addr, &cookie, "/api/lab/goto", json!({ "page": 2 })).await
    };
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(lines(), "intro\ntwo\n");
    assert_eq!(again.setup(), dozlab_terminal::labsetup::Setup::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_another_host_key_fails_the_setup_with_the_reason_at_once() {
    let Some(sshd) = Sshd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let lab = setup_lab(work.path());
    let state_dir = tempfile::tempdir().unwrap();
    let panel = Arc::new(LabPanel::open(lab.path(), state_dir.path(), "s").unwrap());
    let other = dozlab_ssh::keys::ed25519("other");
    std::fs::write(
        sshd.path("other_known_hosts"),
        dozlab_ssh::known_hosts::line("127.0.0.1", sshd.port, other.public_key()).unwrap(),
    )
    .unwrap();
    let mut t = target(&sshd);
    t.known_hosts_path = sshd.path("other_known_hosts");
    dozlab_terminal::labsetup::spawn_start(panel.clone(), t, true);
    wait_until("the set-up fails", || {
        matches!(panel.setup(), dozlab_terminal::labsetup::Setup::Failed(_))
    })
    .await;
    let dozlab_terminal::labsetup::Setup::Failed(why) = panel.setup() else {
        unreachable!()
    };
    assert!(why.contains("host key"), "{why}");
    assert!(!panel.progress().prepared);
    assert!(!work.path().join("log").exists(), "nothing ran");
}
