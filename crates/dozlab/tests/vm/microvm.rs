//! Firecracker's device model under QEMU: `vm run --vmm qemu --machine
//! microvm` (virtio-mmio, no PCI) boots the `vm` test image to ready with
//! each kernel, Debian's (modules from the initramfs) and the Dozlab kernel
//! (`dozlab image kernel`, everything built in), under TCG, in a network
//! namespace playing the pod. Each boot: SSH with the written key, the
//! clocksource is the TSC, Docker answers on 2375, and a container runs
//! from an image `docker load`ed from a tarball this test builds offline
//! from the host's busybox (on the Debian kernel this needs the image's
//! apparmor_parser: AppArmor is on); SIGTERM stops it cleanly.

use super::e2e::{Pod, VM_IP, status_of, wait_ready};
use super::{BIN, sh, test_image, text};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Dozlab kernel's cache directory (bzImage, vmlinux, config), built once per machine.
fn dozlab_kernel() -> PathBuf {
    let out = Command::new(BIN)
        .args(["image", "kernel"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dozlab image kernel: {}", text(&out));
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(dir.join("bzImage").is_file(), "{}", dir.display());
    dir
}

/// A `docker load` tarball holding one image, `dozlab/busybox:test`: a single
/// layer with the host's static busybox as /bin/busybox and /bin/sh.
fn busybox_image_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let img = dir.join("img");
    std::fs::create_dir_all(img.join("layer")).unwrap();
    let layer = img.join("layer/layer.tar");
    sh(&[
        "tar",
        "--owner=0",
        "--group=0",
        "-cf",
        layer.to_str().unwrap(),
        "-C",
        root.to_str().unwrap(),
        ".",
    ]);
    let sum = sh(&["sha256sum", layer.to_str().unwrap()]);
    let digest = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{digest}"]}}}}"#
    );
    std::fs::write(img.join("config.json"), config).unwrap();
    let manifest = r#"[{"Config":"config.json","RepoTags":["dozlab/busybox:test"],"Layers":["layer/layer.tar"]}]"#;
    std::fs::write(img.join("manifest.json"), manifest).unwrap();
    let tar = dir.join("busybox-image.tar");
    sh(&[
        "tar",
        "-cf",
        tar.to_str().unwrap(),
        "-C",
        img.to_str().unwrap(),
        "manifest.json",
        "config.json",
        "layer/layer.tar",
    ]);
    tar
}

/// Boots the `vm` image on microvm (with `kernel` from the host when given),
/// checks SSH, the clock, Docker, and a clean stop; returns `uname -r`.
fn boot_on_microvm(kernel: Option<&Path>, docker_run: bool) -> String {
    let Some(image) = test_image("vm") else {
        return String::new();
    };
    let mut pod = Pod::new();
    let p = pod.net.pod.clone();
    let cfg = pod.network_setup();
    let rootfs = pod.path("rootfs.ext4");
    sh(&[
        "cp",
        "--sparse=always",
        image.join("rootfs.ext4").to_str().unwrap(),
        rootfs.to_str().unwrap(),
    ]);
    let state = pod.path("state");
    let (key, kh) = (
        pod.path("shared/vm-ssh-key"),
        pod.path("shared/known_hosts"),
    );
    let mut args: Vec<String> = [
        BIN,
        "vm",
        "run",
        "--vmm",
        "qemu",
        "--accel",
        "tcg",
        "--machine",
        "microvm",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--session-id",
        "microvm",
    ]
    .map(String::from)
    .into();
    for (flag, path) in [
        ("--rootfs", &rootfs),
        ("--network-config", &cfg),
        ("--state-dir", &state),
        ("--ssh-key-out", &key),
        ("--known-hosts-out", &kh),
        ("--console-log", &pod.path("console.log")),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    if let Some(k) = kernel {
        args.push("--kernel".into());
        args.push(k.display().to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let sup = pod.spawn(&p, &argv, "vm-run.log");
    wait_ready(&mut pod, &state);
    let run_log = pod.log("vm-run.log");
    assert!(
        run_log.contains("microvm"),
        "machine not announced:\n{run_log}"
    );

    // SSH with the injected key; the guest runs on the TSC, not jiffies.
    let out = pod.ssh(
        &p,
        VM_IP,
        &kh,
        "uname -r; cat /sys/devices/system/clocksource/clocksource0/current_clocksource",
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    assert_eq!(lines[1], "tsc", "{}", pod.log("console.log"));
    let release = lines[0].to_string();

    // Docker over TCP 2375 from the pod.
    let out = pod.exec(
        &p,
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            &format!("http://{VM_IP}:2375/info"),
        ],
    );
    assert!(
        text(&out).contains("\"KernelVersion\""),
        "docker info: {}",
        text(&out)
    );

    if docker_run && kernel.is_some() {
        // `docker info` has no warning but the one about TCP 2375 without TLS
        // (which is the design: the IDE sidecar talks to it).
        let out = pod.ssh(&p, VM_IP, &kh, "docker info 2>&1 | grep WARNING || true");
        let warnings = String::from_utf8_lossy(&out.stdout).into_owned();
        for w in warnings.lines() {
            assert!(
                w.contains("API is accessible on http://0.0.0.0:2375"),
                "docker info: {w}"
            );
        }
    }
    if docker_run {
        // A container from an image loaded from an offline tarball (on the
        // Debian kernel AppArmor is on: the image has apparmor_parser).
        let tar = busybox_image_tar(&pod.path("busybox"));
        let target = format!("root@{VM_IP}");
        let cmd = format!(
            "ssh -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes {target} docker load < {}",
            key.display(),
            kh.display(),
            tar.display()
        );
        let out = pod.exec(&p, &["sh", "-c", &cmd]);
        assert!(
            text(&out).contains("Loaded image: dozlab/busybox:test"),
            "docker load: {}",
            text(&out)
        );
        let out = pod.ssh(
            &p,
            VM_IP,
            &kh,
            "docker run --rm dozlab/busybox:test /bin/sh -c 'echo from-container; ip -o -4 addr show eth0 | grep -c inet'",
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "from-container\n1",
            "docker run: {}",
            text(&out)
        );
    }

    // SIGTERM: the ACPI power button (GED on microvm) shuts the guest down cleanly.
    let code = pod.terminate(0, sup);
    assert_eq!(code, Some(0), "{}", pod.log("vm-run.log"));
    assert!(pod.log("vm-run.log").contains("the VM shut down cleanly"));
    assert!(status_of(&state).status.code() == Some(1));
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "fsck: {}", text(&fsck));
    release
}

fn require_tools() -> bool {
    dozlab_testkit::require_root!("the microvm boot tests need root");
    for tool in [
        "ip",
        "nft",
        "qemu-system-x86_64",
        "ssh",
        "curl",
        "e2fsck",
        "tar",
    ] {
        dozlab_testkit::require_tool!(tool);
    }
    true
}

#[test]
fn e2e_microvm_debian_kernel_ready_ssh_docker_run_stop_root() {
    if !require_tools() {
        return;
    }
    let release = boot_on_microvm(None, true);
    assert!(release.ends_with("-cloud-amd64"), "{release}");
}

#[test]
fn e2e_microvm_dozlab_kernel_ready_ssh_docker_load_run_stop_root() {
    if !require_tools() {
        return;
    }
    let kernel = dozlab_kernel();
    let release = boot_on_microvm(Some(&kernel.join("bzImage")), true);
    assert!(release.ends_with("-dozlab"), "{release}");
}
