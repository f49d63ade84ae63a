//! `dozlab vm run` / `dozlab vm status` for real.
//!
//! - Bad input is refused before anything is created (no root needed).
//! - `vm status` exit codes follow the phase.
//! - The vmlinux extractor runs on the real Debian kernel of a built image.
//! - End to end, as root: a network namespace plays the pod (veth uplink to a
//!   peer namespace), `dozlab network-setup` wires it, `vm run --vmm qemu
//!   --accel tcg` boots a copy of the `vm` test image, and the test SSHes in
//!   with the written key (host key verified), writes a file, asks the
//!   guest's Docker for its version, reaches port 22 through the pod IP from
//!   outside, checks the pod's 8081 listener is not hijacked, sends SIGTERM
//!   and checks a clean exit, a clean fsck and the file on the image.
//!   Everything the test starts is killed by process group and the
//!   namespaces are deleted by a guard, even on failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::podnet::sh;

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A small ext4 with a fake kernel and /etc/ssh, made with `mkfs.ext4 -d`.
fn small_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("boot")).unwrap();
    std::fs::create_dir_all(tree.join("etc/ssh")).unwrap();
    std::fs::write(tree.join("boot/vmlinuz-6.1.0-1-amd64"), b"k").unwrap();
    let img = dir.join("rootfs.ext4");
    sh(&[
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        tree.to_str().unwrap(),
        img.to_str().unwrap(),
        "8M",
    ]);
    img
}

/// `dozlab vm run` with outputs inside `dir` and no network config.
fn vm_run(dir: &Path, extra: &[&str]) -> Output {
    let p = |n: &str| dir.join(n).display().to_string();
    Command::new(BIN)
        .args(["vm", "run", "--network-config", &p("no-network-config")])
        .args([
            "--state-dir",
            &p("state"),
            "--ssh-key-out",
            &p("shared/key"),
        ])
        .args(["--known-hosts-out", &p("shared/known_hosts")])
        .args(extra)
        .env_remove("ROOTFS_PATH")
        .env_remove("TAP_DEVICE_NAME")
        .output()
        .unwrap()
}

#[test]
fn vm_run_refuses_bad_input_before_starting_anything() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path());
    let img = img.to_str().unwrap();
    let junk = t.path().join("junk.ext4");
    std::fs::write(&junk, vec![0u8; 4096]).unwrap();
    let junk = junk.to_str().unwrap();
    let missing = "/nonexistent/rootfs.ext4";
    let cases: &[(&[&str], &str)] = &[
        (&["--rootfs", missing], "No such file"),
        (&["--rootfs", junk], "not an ext4 filesystem"),
        (
            &["--rootfs", img, "--cpus", "0"],
            "--cpus 0 is out of range",
        ),
        (
            &["--rootfs", img, "--memory", "100"],
            "--memory 100 MiB is out of range",
        ),
        (
            &["--rootfs", img, "--tap", "dz-no-such-tap"],
            "run `dozlab network-setup` first",
        ),
        (
            &["--rootfs", img, "--kernel", "/nonexistent"],
            "does not exist",
        ),
        (
            &[
                "--rootfs",
                img,
                "--tap",
                "lo",
                "--vmm",
                "qemu",
                "--qemu-bin",
                "/nonexistent/q",
            ],
            "QEMU binary /nonexistent/q not found",
        ),
        (
            &["--rootfs", img, "--snapshot", "auto"],
            "--snapshot auto needs --snapshot-cache DIR",
        ),
        (
            &[
                "--rootfs",
                img,
                "--snapshot",
                "refresh",
                "--snapshot-cache",
                img,
            ],
            "is not a directory",
        ),
        (
            &[
                "--rootfs",
                img,
                "--snapshot",
                "auto",
                "--snapshot-cache",
                "/tmp",
                "--image-sha256",
                "xyz",
            ],
            "--image-sha256 \"xyz\" is not 64 hex digits",
        ),
    ];
    for (args, want) in cases {
        let out = vm_run(t.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
        assert!(!t.path().join("shared").exists(), "{args:?} wrote keys");
        assert!(
            !t.path().join("state").exists(),
            "{args:?} made the state dir"
        );
    }
}

/// `dozlab snapshot`: an empty cache lists nothing, an unknown key and a
/// cache that is a file are usage errors (exit 2) naming the problem.
#[test]
fn snapshot_cli_on_an_empty_cache_and_bad_input() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("snapshot")
            .args(args)
            .env_remove("SNAPSHOT_CACHE")
            .output()
            .unwrap()
    };
    let c = cache.to_str().unwrap();
    let out = run(&["ls", "--cache", c]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "header only"
    );
    let out = run(&["prune", "--cache", c]);
    assert!(text(&out).contains("0 removed"), "{}", text(&out));
    let out = run(&["rm", "abc", "--cache", c]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no snapshot abc"), "{}", text(&out));
    let file = t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&["ls", "--cache", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not a directory"), "{}", text(&out));
    assert!(!cache.exists(), "ls/prune/rm created the cache");
}

/// `--machine microvm` with a kernel whose config lacks virtio-mmio fails at
/// once with the reason (not a guest that never finds its disk, then a boot
/// timeout); `--machine auto` takes q35 for it and goes on to the next check.
#[test]
fn vm_run_refuses_microvm_for_a_kernel_without_virtio_mmio() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path());
    let tree = t.path().join("tree");
    std::fs::write(
        tree.join("boot/config-6.1.0-1-amd64"),
        "CONFIG_ACPI=y\n# CONFIG_VIRTIO_MMIO is not set\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\n",
    )
    .unwrap();
    std::fs::remove_file(&img).unwrap();
    sh(&[
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        tree.to_str().unwrap(),
        img.to_str().unwrap(),
        "8M",
    ]);
    let img = img.to_str().unwrap();
    // Refused while planning (no state dir, no key, no VMM), not after a boot timeout.
    let out = vm_run(
        t.path(),
        &[
            "--rootfs",
            img,
            "--machine",
            "microvm",
            "--vmm",
            "qemu",
            "--accel",
            "tcg",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--machine microvm: the guest kernel cannot boot on virtio-mmio (CONFIG_VIRTIO_MMIO is not set)"),
        "{}",
        text(&out)
    );
    assert!(!t.path().join("state").exists() && !t.path().join("shared").exists());
    let out = vm_run(
        t.path(),
        &[
            "--rootfs",
            img,
            "--machine",
            "auto",
            "--vmm",
            "qemu",
            "--accel",
            "tcg",
            "--tap",
            "dz-no-such-tap",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("run `dozlab network-setup` first"),
        "{}",
        text(&out)
    );
}

#[test]
fn vm_status_exits_zero_only_when_ready() {
    let t = tempfile::tempdir().unwrap();
    let status = |phase: &str, pid: u32| {
        let json = format!(
            r#"{{"phase":"{phase}","vmm":"qemu","accel":"tcg","pid":{pid},"started_at":0,"boot_ms":15000,"vm_ip":"172.16.0.2"}}"#
        );
        std::fs::write(t.path().join("status.json"), json).unwrap();
        Command::new(BIN)
            .args(["vm", "status", "--state-dir"])
            .arg(t.path())
            .output()
            .unwrap()
    };
    let me = std::process::id();
    let out = status("ready", me);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("accelerator: tcg") && text(&out).contains("15.0 s"));
    assert_eq!(status("booting", me).status.code(), Some(1));
    let stale = status("ready", 999_999_999);
    assert_eq!(stale.status.code(), Some(1));
    assert!(text(&stale).contains("stale"), "{}", text(&stale));
    std::fs::remove_file(t.path().join("status.json")).unwrap();
    let none = Command::new(BIN)
        .args(["vm", "status", "--json", "--state-dir"])
        .arg(t.path())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none).contains("no VM status"), "{}", text(&none));
}

/// The cached image directory of PROFILE, or None after a recorded skip.
fn test_image(profile: &str) -> Option<PathBuf> {
    dozlab_testkit::require_root!("building the test image needs root");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/test-image"))
        .arg(profile)
        .env("DOZLAB_BIN", BIN)
        .output()
        .unwrap();
    let dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(PathBuf::from);
    match dir {
        Some(d) if out.status.success() && d.join("rootfs.ext4").exists() => Some(d),
        _ => panic!("scripts/test-image {profile} failed: {}", text(&out)),
    }
}

#[test]
fn vmlinux_from_the_real_debian_kernel_is_an_x86_64_elf() {
    let Some(dir) = test_image("minimal") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let fs4 = dozlab_vm::bootfiles::open_image(&dir.join("rootfs.ext4")).unwrap();
    let boot = dozlab_vm::bootfiles::find_boot(&fs4, &dir.join("rootfs.ext4")).unwrap();
    let bz = t.path().join("vmlinuz");
    dozlab_vm::bootfiles::extract(&fs4, &boot.kernel, &bz).unwrap();
    let elf = t.path().join("vmlinux");
    let r = dozlab_vm::vmlinux::extract_vmlinux(&bz, &elf).unwrap();
    let head = std::fs::read(&elf).unwrap();
    assert!(matches!(r, dozlab_vm::vmlinux::Extracted::Decompressed(n) if n == head.len() as u64));
    assert_eq!(&head[..4], b"\x7fELF");
    assert_eq!(head[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([head[18], head[19]]), 62, "EM_X86_64");
    assert!(head.len() > std::fs::metadata(&bz).unwrap().len() as usize);
}

mod common;
#[path = "vm/e2e.rs"]
mod e2e;
#[path = "vm/microvm.rs"]
mod microvm;
#[path = "vm/snapshot.rs"]
mod snapshot;

/// A stand-in `qemu-system-x86_64`: under KVM it "resets" at once like a
/// stock kernel on these machines; under TCG it prints a kernel banner and a
/// panic and exits, as QEMU does with `-no-reboot` after `panic=1`.
const FAKE_QEMU: &str = r#"#!/bin/sh
case "$*" in
  *"-accel kvm"*) echo "Probing EDD (edd=off to disable)... ok"; exit 0 ;;
esac
echo "[    0.000000] Linux version 6.1.0-fake"
echo "[    1.000000] Kernel panic - not syncing: VFS: Unable to mount root fs"
exit 0
"#;

#[test]
fn vm_run_falls_back_to_tcg_and_reports_the_console_when_the_vm_dies_root() {
    dozlab_testkit::require_root!("a tap device in a network namespace needs root");
    dozlab_testkit::require_tool!("ip");
    let t = tempfile::tempdir().unwrap();
    small_image(t.path());
    let fake = t.path().join("fake-qemu");
    std::fs::write(&fake, FAKE_QEMU).unwrap();
    sh(&["chmod", "+x", fake.to_str().unwrap()]);
    let ns = format!("dzvmfb-{}", std::process::id());
    sh(&["ip", "netns", "add", &ns]);
    let out = (|| {
        let tap = Command::new("ip")
            .args(["-n", &ns, "tuntap", "add", "tap0", "mode", "tap"])
            .output()?;
        assert!(tap.status.success(), "{}", text(&tap));
        let p = |n: &str| t.path().join(n).display().to_string();
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                BIN,
                "vm",
                "run",
                "--rootfs",
                &p("rootfs.ext4"),
            ])
            .args(["--kernel", &p("tree/boot/vmlinuz-6.1.0-1-amd64")])
            .args([
                "--qemu-bin",
                &p("fake-qemu"),
                "--vmm",
                "qemu",
                "--accel",
                "auto",
            ])
            .args(["--network-config", &p("none"), "--state-dir", &p("state")])
            .args(["--ssh-key-out", &p("shared/key")])
            .args(["--known-hosts-out", &p("shared/known_hosts")])
            .output()
    })();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    let out = out.unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    if std::path::Path::new("/dev/kvm").exists() {
        assert!(all.contains("qemu (KVM) did not boot"), "{all}");
        assert!(all.contains("retrying with QEMU with TCG"), "{all}");
    }
    assert!(all.contains("last console lines:"), "{all}");
    assert!(all.contains("Kernel panic - not syncing"), "{all}");
    let status = std::fs::read_to_string(t.path().join("state/status.json")).unwrap();
    assert!(status.contains("\"phase\": \"failed\"") && status.contains("\"accel\": \"tcg\""));
    let key = std::fs::metadata(t.path().join("shared/key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}
