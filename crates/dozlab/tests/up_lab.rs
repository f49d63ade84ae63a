//! `dozlab up --lab`, run as root with real parts. A lab archive served by a
//! loopback HTTP server boots with a real session (QEMU/TCG, the cached `vm`
//! image): its assets land in the VM with their modes, the intro's
//! background ran (after the assets were in), and `GET /api/lab` on the
//! published terminal port returns the lab. Broken labs, a wrong sha256 and
//! a missing source are refused with exit 2 before any process, namespace,
//! tap or nftables table exists, and leave nothing.

mod common;
use common::labfiles::{tar_gz, write_file};
use common::session::{
    BIN, BOOT_FLAGS, Env, http, record, ssh, terminal_login, tiny_ext4, vm_image,
};
use common::{assert_exit, text};
use dozlab_fetch::testing::{FaultServer, sha256_hex};
use std::path::Path;
use std::process::Command;

macro_rules! need_root {
    () => {
        dozlab_testkit::require_root!("needs root (network namespaces, tap, nftables)")
    };
}

fn name(tag: &str) -> String {
    common::session::session_name("l", tag)
}

/// A one-step lab with assets (a glob with `+x`, a `**` tree with `0600`)
/// and an intro background that records which asset it saw.
fn write_lab(dir: &Path) {
    let index = r#"{
  "title": "Up lab",
  "details": {
    "intro": { "text": "intro.md", "background": "intro-bg.sh" },
    "steps": [ { "title": "Touch", "text": "step1.md", "verify": "verify1.sh" } ],
    "assets": { "host01": [
      { "file": "bin/*.sh", "target": "/usr/local/bin", "chmod": "+x" },
      { "file": "conf/**", "target": "~/conf", "chmod": "0600" }
    ] }
  }
}
"#;
    let intro_bg =
        "#!/bin/sh\necho \"intro ran, saw $(ls /usr/local/bin/hello-lab.sh)\" > /root/intro-ran\n";
    for (rel, text) in [
        ("index.json", index),
        ("intro.md", "# Up lab\n"),
        ("intro-bg.sh", intro_bg),
        ("step1.md", "`touch /tmp/up-lab`{{exec}}\n"),
        ("verify1.sh", "test -f /tmp/up-lab\n"),
        (
            "assets/bin/hello-lab.sh",
            "#!/bin/sh\necho hello from the lab\n",
        ),
        ("assets/conf/app.ini", "[app]\n"),
        ("assets/conf/deep/more.ini", "[more]\n"),
    ] {
        write_file(dir, rel, text);
    }
}

#[test]
fn help_lists_the_lab_flags() {
    let out = Command::new(BIN).args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--lab <DIR|URL>"), "{help}");
    assert!(help.contains("--lab-sha256"), "{help}");
}

#[test]
fn root_bad_labs_are_refused_before_anything_starts() {
    need_root!();
    let env = Env::with_private_cache();
    let d = tempfile::tempdir().unwrap();
    let img = tiny_ext4(d.path());
    let img = img.to_str().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    std::fs::remove_file(lab.join("step1.md")).unwrap();
    let lab_s = lab.to_str().unwrap();

    // A missing text file, in the foreground and with --detach.
    for detach in [false, true] {
        let n = name(if detach { "bad-d" } else { "bad" });
        let flags: &[&str] = if detach {
            &["--lab", lab_s, "--detach"]
        } else {
            &["--lab", lab_s]
        };
        let out = env.up(&n, img, flags);
        assert_exit(&out, 2, "\"step1.md\" does not exist");
        env.assert_nothing_left(&n, None);
        env.assert_no_supervisor_ran();
    }

    // A lab .tar.gz URL whose sha256 is not the one given.
    write_file(&lab, "step1.md", "`touch /tmp/x`{{exec}}\n");
    let archive = tar_gz(&d.path().join("lab.tar.gz"), &lab, &["."]);
    let server = FaultServer::start().unwrap();
    server.add("/lab.tar.gz", archive.clone());
    let url = server.url("/lab.tar.gz");
    let n = name("sha");
    let wrong = sha256_hex(b"not the lab");
    let out = env.up(&n, img, &["--lab", &url, "--lab-sha256", &wrong]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("sha256") && t.contains(&url), "{t}");
    assert!(
        !server.requests("/lab.tar.gz").is_empty(),
        "it was downloaded"
    );
    env.assert_nothing_left(&n, None);
    env.assert_no_supervisor_ran();

    // A lab that does not exist; a digest for a directory; a malformed digest.
    for (args, want) in [
        (vec!["--lab", "/nonexistent/lab"], "not found"),
        (
            vec!["--lab", lab_s, "--lab-sha256", &wrong],
            "not to the directory",
        ),
        (vec!["--lab", &url, "--lab-sha256", "xyz"], "64 hex digits"),
    ] {
        let n = name("use");
        let out = env.up(&n, img, &args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains(want), "{want:?} in {t}");
        env.assert_nothing_left(&n, None);
        env.assert_no_supervisor_ran();
    }
}

#[test]
fn root_up_with_a_lab_url_installs_it_and_the_terminal_serves_it() {
    need_root!();
    dozlab_testkit::require_tool!("ssh");
    let image = vm_image();
    let env = Env::with_private_cache();
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    let archive = tar_gz(&d.path().join("lab.tar.gz"), &lab, &["."]);
    let server = FaultServer::start().unwrap();
    server.add("/labs/up-lab.tar.gz", archive.clone());
    let url = server.url("/labs/up-lab.tar.gz");
    let sha = sha256_hex(&archive);
    let n = name("up");
    let mut flags = vec!["--detach", "--lab", &url, "--lab-sha256", &sha];
    flags.extend_from_slice(BOOT_FLAGS);
    let out = env.up(&n, image.to_str().unwrap(), &flags);
    let result = std::panic::catch_unwind(|| {
        let t = text(&out);
        assert!(out.status.success(), "up: {t}");
        assert!(t.contains("Lab:       Up lab (1 step)"), "{t}");
        assert!(t.contains("lab ") && t.contains("intro background"), "{t}");
        let r = record(&env, &n);
        assert_eq!(r["lab"]["title"], "Up lab", "{r}");
        assert_eq!(r["lab"]["source"], url.as_str(), "{r}");

        // Assets with their modes; the background ran after they were in.
        let got = ssh(
            &r,
            "stat -c '%a %n' /usr/local/bin/hello-lab.sh conf/app.ini conf/deep/more.ini; \
             hello-lab.sh; cat /root/intro-ran",
        );
        let g = text(&got);
        assert!(got.status.success(), "{g}");
        for want in [
            "755 /usr/local/bin/hello-lab.sh",
            "600 conf/app.ini",
            "600 conf/deep/more.ini",
            "hello from the lab",
            "intro ran, saw /usr/local/bin/hello-lab.sh",
        ] {
            assert!(g.contains(want), "{want:?} in {g}");
        }

        // The terminal serves the lab.
        let (port, cookie) = terminal_login(&r);
        let resp = http(
            port,
            &format!(
                "GET /api/lab HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
        assert_eq!(v["lab"]["title"], "Up lab", "{v}");
        let pages = v["lab"]["pages"].as_array().unwrap();
        assert_eq!(pages.len(), 2, "intro and one step: {v}");
        assert!(v["progress"].is_object(), "{v}");
        r["net"]["index"].as_u64()
    });
    let down = env.run(&["down", &n]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(down.status.success(), "{}", text(&down));
    env.assert_nothing_left(&n, None);
}

#[test]
fn root_a_failing_intro_background_fails_the_start_and_leaves_nothing() {
    need_root!();
    let image = vm_image();
    let env = Env::with_private_cache();
    let d = tempfile::tempdir().unwrap();
    let lab = d.path().join("lab");
    write_lab(&lab);
    write_file(
        &lab,
        "intro-bg.sh",
        "#!/bin/sh\necho broken-setup-$((40+2)) >&2\nexit 3\n",
    );
    let n = name("bgfail");
    // In the foreground this time, from a lab directory.
    let mut flags = vec!["--lab", lab.to_str().unwrap()];
    flags.extend_from_slice(BOOT_FLAGS);
    let out = env.up(&n, image.to_str().unwrap(), &flags);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("intro background intro-bg.sh failed (exit 3)") && t.contains("broken-setup-42"),
        "{t}"
    );
    env.assert_nothing_left(&n, None);
}
