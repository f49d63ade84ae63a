//! The runner against a real OpenSSH sshd on loopback (standing in for the
//! VM): verify pass/fail, a verify that hangs (timed out, clear message, no
//! process left), a verify that always passes (caught), `{{exec}}` blocks
//! run in one shell (state kept, Ctrl-C for `{{exec interrupt}}`), a
//! solution script, and asset upload with modes.

use dozlab_lab::labtest;
use dozlab_lab::remote::Vm;
use dozlab_lab::runner::{check, table};
use dozlab_ssh::keys::ed25519;
use dozlab_ssh::testing::Sshd;
use dozlab_ssh::{Login, Session};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    _sshd: Sshd,
    session: Session,
    /// Where the lab's scripts write (a private temp dir).
    work: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with("").await
}

/// A fixture whose sshd gets `extra` config lines.
async fn fixture_with(extra: &str) -> Fixture {
    let host = ed25519("host");
    let client = ed25519("client");
    let sshd = Sshd::start_with(&host, client.public_key(), extra);
    let login = Login {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: Sshd::user(),
        key: Arc::new(client),
        host_keys: vec![host.public_key().clone()],
        timeout: Duration::from_secs(30),
    };
    let session = login.connect().await.unwrap();
    Fixture {
        _sshd: sshd,
        session,
        work: tempfile::tempdir().unwrap(),
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A one-step lab whose files are templated with the work dir `W`.
fn lab(
    work: &Path,
    step_md: &str,
    verify: &str,
    extra: &[(&str, &str)],
    dozlab: &str,
) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = work.display().to_string();
    let index = format!(
        r#"{{ "title": "t", "details": {{ "intro": {{ "text": "intro.md", "background": "bg.sh" }},
            "steps": [ {{ "title": "one", "text": "step1.md", "verify": "verify.sh" }} ],
            "assets": {{ "host01": [ {{ "file": "bin/*", "target": "{w}/bin", "chmod": "0750" }} ] }} }},
            "dozlab": {{ {dozlab} }} }}"#
    );
    write(d.path(), "index.json", &index);
    write(d.path(), "intro.md", "hi\n");
    write(d.path(), "bg.sh", &format!("#!/bin/bash\nrm -f {w}/done\n"));
    write(d.path(), "step1.md", &step_md.replace('W', &w));
    write(d.path(), "verify.sh", &verify.replace('W', &w));
    write(d.path(), "assets/bin/tool", "#!/bin/sh\necho tool\n");
    for (rel, text) in extra {
        write(d.path(), rel, &text.replace('W', &w));
    }
    d
}

/// A login shell that takes a while to start (a loaded VM, a long
/// `.bashrc`): the terminal echoes what is typed until `stty -echo` runs, and
/// that echo must not pass for a finished command (it did: the first
/// command "finished" at once with status -1, and a later Ctrl-C reached the
/// still-starting shell and ended it).
#[tokio::test]
async fn a_shell_that_starts_slowly_is_waited_for() {
    let f = fixture_with("ForceCommand sleep 2; exec bash").await;
    let vm = Vm::from_session(f.session);
    let mut sh = vm.shell().await.unwrap();
    let r = sh
        .run("false", false, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.status, Some(1), "{r:?}");
    let r = sh
        .run("sleep 300", false, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(r.status, None, "{r:?}");
    let r = sh
        .run("echo after-$((6*7))", true, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.status, Some(0), "{r:?}");
    assert!(r.output.contains("after-42"), "{r:?}");
}

#[tokio::test]
async fn a_good_step_fails_before_and_passes_after_with_shell_state_and_interrupt() {
    let f = fixture().await;
    let step = "```\ncd W\n```{{exec}}\n\n```\nsleep 300\n```{{exec}}\n\n```\necho made > ./done\n```{{exec interrupt}}\n";
    let d = lab(
        f.work.path(),
        step,
        "#!/bin/bash\ngrep -qx made W/done\n",
        &[],
        "",
    );
    let l = dozlab_lab::load(d.path()).unwrap();
    let vm = Vm::from_session(f.session);
    let report = labtest::run(&vm, &l).await.unwrap();
    let t = table(&report.rows);
    assert!(report.passed(), "{t}");
    assert_eq!(report.rows.len(), 2, "{t}");
    assert_eq!(
        (
            report.rows[1].before.as_str(),
            report.rows[1].after.as_str()
        ),
        ("fails", "passes"),
        "{t}"
    );
    // The asset went in with its mode.
    let tool = f.work.path().join("bin/tool");
    assert_eq!(
        std::fs::metadata(&tool).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // The interrupted sleep is gone.
    let ps = std::process::Command::new("pgrep")
        .args(["-fx", "sleep 300"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "sleep 300 still runs");
}

#[tokio::test]
async fn a_verify_that_always_passes_is_caught() {
    let f = fixture().await;
    let d = lab(
        f.work.path(),
        "`true`{{exec}}\n",
        "#!/bin/bash\nexit 0\n",
        &[],
        "",
    );
    let l = dozlab_lab::load(d.path()).unwrap();
    let vm = Vm::from_session(f.session);
    let report = labtest::run(&vm, &l).await.unwrap();
    assert!(!report.passed());
    let row = &report.rows[1];
    assert_eq!(row.before, "PASSES");
    assert!(
        row.failure.as_deref().unwrap().contains("always passes"),
        "{}",
        table(&report.rows)
    );
}

#[tokio::test]
async fn a_verify_that_hangs_times_out_with_a_clear_message_and_is_killed() {
    let f = fixture().await;
    let marker = format!("hang-{}", std::process::id());
    let verify = format!("#!/bin/bash\nexec -a {marker} sleep 1000\n");
    let d = lab(
        f.work.path(),
        "`true`{{exec}}\n",
        &verify,
        &[],
        "\"verifyTimeout\": 1",
    );
    let l = dozlab_lab::load(d.path()).unwrap();
    let vm = Vm::from_session(f.session);
    let r = check(&vm, &l, &l.steps[0]).await.unwrap().unwrap();
    assert!(r.timed_out && !r.passed, "{r:?}");
    assert!(
        r.message.contains("did not finish within 1s (timed out)"),
        "{}",
        r.message
    );
    assert!(r.message.contains("verify.sh"), "{}", r.message);
    let report = labtest::run(&vm, &l).await.unwrap();
    assert_eq!(report.rows[1].before, "TIMEOUT");
    assert!(
        report.rows[1]
            .failure
            .as_deref()
            .unwrap()
            .contains("timed out")
    );
    // The hung script's process group was killed in the "VM".
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the hung verify still runs");
}

#[tokio::test]
async fn a_step_that_does_not_satisfy_verify_fails_with_its_output() {
    let f = fixture().await;
    let verify = "#!/bin/bash\necho \"W/done is missing\"\ntest -f W/done\n";
    let d = lab(f.work.path(), "`echo wrong`{{exec}}\n", verify, &[], "");
    let l = dozlab_lab::load(d.path()).unwrap();
    let vm = Vm::from_session(f.session);
    let report = labtest::run(&vm, &l).await.unwrap();
    assert!(!report.passed());
    assert_eq!(report.rows[1].after, "FAILS");
    assert!(
        report.rows[1]
            .failure
            .as_deref()
            .unwrap()
            .contains("done is missing"),
        "{}",
        table(&report.rows)
    );
}

#[tokio::test]
async fn a_solution_script_replaces_the_exec_blocks() {
    let f = fixture().await;
    let d = lab(
        f.work.path(),
        "Nothing to click here.\n",
        "#!/bin/bash\ntest -f W/done\n",
        &[("solve.sh", "#!/usr/bin/env bash\ntouch W/done\n")],
        "\"steps\": [ { \"solution\": \"solve.sh\" } ]",
    );
    let l = dozlab_lab::load(d.path()).unwrap();
    let vm = Vm::from_session(f.session);
    let report = labtest::run(&vm, &l).await.unwrap();
    assert!(report.passed(), "{}", table(&report.rows));
}
