//! A real `firecracker` accepts this crate's API calls. Firecracker is in no
//! registry reachable from the project's machines, so this test runs only
//! where one exists (`FIRECRACKER_BIN`, or `firecracker` on PATH) and
//! otherwise skips for `firecracker`, the one requirement strict mode allows
//! (docs/testing.md); the request sequence is always checked against the
//! documented API by the unit tests in `src/firecracker_tests.rs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small ext4 for the root drive.
fn small_image(dir: &std::path::Path) -> PathBuf {
    let img = dir.join("rootfs.ext4");
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .arg("8M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    img
}

#[test]
fn a_real_firecracker_accepts_our_configuration() {
    let bin = std::env::var_os("FIRECRACKER_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .or_else(|| dozlab_testkit::which("firecracker"));
    dozlab_testkit::skip_if!(
        bin.is_none(),
        "firecracker",
        "no Firecracker binary (set FIRECRACKER_BIN or put firecracker on PATH); \
         the API sequence is tested against the documented API in dozlab-vm's unit tests"
    );
    let bin = bin.expect("checked above");
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("fc.sock");
    let mut fc = Command::new(&bin)
        .arg("--api-sock")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let kernel = t.path().join("vmlinux");
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    let rootfs = small_image(t.path());
    let plan = dozlab_vm::firecracker::FcPlan {
        bin,
        jailer: None,
        session_id: "t".into(),
        api_socket: sock.clone(),
        vmlinux: kernel,
        initrd: None,
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off".into(),
        rootfs,
        cpus: 1,
        memory_mib: 128,
        tap: "dz-fc-none".into(),
        mac: "06:00:ac:10:00:02".into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        dozlab_vm::firecracker::wait_socket(&sock, Duration::from_secs(5)).await?;
        // Everything but the network (no tap here) and InstanceStart (no real kernel).
        for req in plan.requests().iter().take(3) {
            dozlab_vm::firecracker::send(&sock, req).await?;
        }
        Ok::<_, dozlab_vm::firecracker::FcError>(())
    });
    let _ = fc.kill();
    let _ = fc.wait();
    result.unwrap();
}
