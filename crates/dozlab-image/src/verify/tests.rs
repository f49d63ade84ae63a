//! Every verify rule against tiny real ext4 images made with `mkfs.ext4 -d`
//! from small trees: one compliant tree, then one tree per broken rule.

use super::*;
use flate2::{Compression, write::GzEncoder};
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const KVER: &str = "6.1.0-99-cloud-amd64";

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

fn initrd(modules: &[&str]) -> Vec<u8> {
    let names: Vec<String> = modules
        .iter()
        .map(|m| format!("usr/lib/modules/{KVER}/kernel/drivers/{m}.ko"))
        .collect();
    let entries: Vec<(&str, &[u8])> = names
        .iter()
        .map(|n| (n.as_str(), &b"\x7fELF"[..]))
        .collect();
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&initrd::write_newc(&entries)).unwrap();
    gz.finish().unwrap()
}

/// A tree meeting every requirement.
fn compliant_tree(root: &Path) {
    put(root, "etc/fstab", "/dev/vda / ext4 defaults 0 1\n");
    put(root, &format!("boot/vmlinuz-{KVER}"), "kernel");
    put(
        root,
        &format!("boot/config-{KVER}"),
        "CONFIG_MODULES=y\nCONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_BLK=m\n",
    );
    let data = initrd(&["virtio_blk", "virtio_net", "virtio_pci", "virtio_mmio"]);
    fs::write(root.join(format!("boot/initrd.img-{KVER}")), data).unwrap();
    put(
        root,
        &format!("lib/modules/{KVER}/modules.builtin"),
        "kernel/fs/ext4/ext4.ko\n",
    );
    put(root, "usr/sbin/sshd", "elf");
    put(
        root,
        "lib/systemd/system/ssh.service",
        "[Service]\nExecStart=/usr/sbin/sshd -D\n",
    );
    link(
        root,
        "etc/systemd/system/multi-user.target.wants/ssh.service",
        "/lib/systemd/system/ssh.service",
    );
    put(
        root,
        "etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n",
    );
    put(
        root,
        "etc/ssh/sshd_config.d/10-dozlab.conf",
        "PermitRootLogin prohibit-password\n",
    );
    put(
        root,
        "etc/systemd/system/dozlab-ssh-hostkeys.service",
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n",
    );
    link(
        root,
        "etc/systemd/system/multi-user.target.wants/dozlab-ssh-hostkeys.service",
        "/etc/systemd/system/dozlab-ssh-hostkeys.service",
    );
    put(root, "etc/shadow", "root:*:20000:0:99999:7:::\n");
    put(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    put(root, "etc/machine-id", "");
    link(
        root,
        "etc/systemd/system/sysinit.target.wants/systemd-network-generator.service",
        "/lib/systemd/system/systemd-network-generator.service",
    );
    link(
        root,
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/lib/systemd/system/systemd-networkd.service",
    );
    link(
        root,
        "etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
        "/lib/systemd/system/serial-getty@.service",
    );
    put(root, "usr/sbin/dockerd", "elf");
    put(
        root,
        "lib/systemd/system/docker.service",
        "[Unit]\nDescription=Docker\n[Service]\nEnvironmentFile=-/etc/default/docker\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n",
    );
    put(
        root,
        "etc/systemd/system/docker.service.d/10-dozlab-tcp.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS -H tcp://0.0.0.0:2375\n",
    );
    link(
        root,
        "etc/systemd/system/multi-user.target.wants/docker.service",
        "/lib/systemd/system/docker.service",
    );
}

fn mkfs(tree: &Path, image: &Path, kind: &str) {
    let status = Command::new(format!("mkfs.{kind}"))
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(tree)
        .arg(image)
        .arg("8M")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkfs from e2fsprogs is installed (scripts/setup)");
    assert!(status.success());
}

/// Builds an image from the compliant tree after `mutate`.
fn image_with(mutate: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    compliant_tree(&tree);
    mutate(&tree);
    let image = dir.path().join("rootfs.ext4");
    mkfs(&tree, &image, "ext4");
    (dir, image)
}

fn failing(report: &Report) -> Vec<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id)
        .collect()
}

#[test]
fn compliant_image_passes_every_rule() {
    let (_d, image) = image_with(|_| {});
    let report = verify(&image, false).unwrap();
    assert!(report.passed, "{}", render_table(&report));
    assert_eq!(report.checks.len(), 17);
    assert!(report.checks.iter().all(|c| c.status == Status::Pass));
}

#[test]
fn each_broken_rule_is_caught() {
    type Mutation = fn(&Path);
    let cases: Vec<(&str, Mutation)> = vec![
        ("root-filesystem", |t| {
            fs::remove_file(t.join("etc/fstab")).unwrap()
        }),
        ("kernel", |t| {
            fs::remove_file(t.join(format!("boot/initrd.img-{KVER}"))).unwrap()
        }),
        ("kernel", |t| {
            fs::remove_dir_all(t.join("lib/modules")).unwrap()
        }),
        ("initramfs-virtio", |t| {
            fs::write(
                t.join(format!("boot/initrd.img-{KVER}")),
                initrd(&["virtio_blk", "virtio_net", "virtio_pci"]),
            )
            .unwrap()
        }),
        ("virtio-mmio", |t| {
            put(
                t,
                &format!("boot/config-{KVER}"),
                "CONFIG_MODULES=y\n# CONFIG_ACPI is not set\n",
            )
        }),
        ("virtio-mmio", |t| {
            fs::remove_file(t.join(format!("boot/config-{KVER}"))).unwrap()
        }),
        ("sshd-installed", |t| {
            fs::remove_file(t.join("usr/sbin/sshd")).unwrap()
        }),
        ("sshd-enabled", |t| {
            fs::remove_file(t.join("etc/systemd/system/multi-user.target.wants/ssh.service"))
                .unwrap()
        }),
        ("ssh-root-key-login", |t| {
            put(
                t,
                "etc/ssh/sshd_config.d/00-no.conf",
                "PermitRootLogin no\n",
            )
        }),
        ("no-ssh-host-keys", |t| {
            put(
                t,
                "etc/ssh/ssh_host_ed25519_key",
                "-----BEGIN OPENSSH PRIVATE KEY-----\n",
            )
        }),
        ("ssh-hostkey-fallback", |t| {
            fs::remove_file(
                t.join("etc/systemd/system/multi-user.target.wants/dozlab-ssh-hostkeys.service"),
            )
            .unwrap()
        }),
        ("no-authorized-keys", |t| {
            put(t, "root/.ssh/authorized_keys", "ssh-ed25519 AAAA test\n")
        }),
        ("root-password-locked", |t| {
            // The old images' password: `root`, as SHA-512 crypt.
            put(
                t,
                "etc/shadow",
                "root:$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.:20000:0:99999:7:::\n",
            )
        }),
        ("root-password-locked", |t| {
            put(t, "etc/shadow", "root::20000:0:99999:7:::\n")
        }),
        ("machine-id-empty", |t| {
            put(t, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
        }),
        ("static-address", |t| {
            fs::remove_file(
                t.join("etc/systemd/system/sysinit.target.wants/systemd-network-generator.service"),
            )
            .unwrap()
        }),
        ("serial-console", |t| {
            fs::remove_file(
                t.join("etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"),
            )
            .unwrap()
        }),
        ("docker-installed", |t| {
            fs::remove_file(t.join("usr/sbin/dockerd")).unwrap()
        }),
        ("docker-enabled", |t| {
            fs::remove_file(t.join("etc/systemd/system/multi-user.target.wants/docker.service"))
                .unwrap()
        }),
        ("docker-listen", |t| {
            fs::remove_dir_all(t.join("etc/systemd/system/docker.service.d")).unwrap()
        }),
        ("docker-listen", |t| {
            put(
                t,
                "etc/docker/daemon.json",
                r#"{"hosts": ["tcp://0.0.0.0:2375"]}"#,
            )
        }),
        ("docker-listen", |t| {
            put(
                t,
                "etc/systemd/system/docker.service.d/10-dozlab-tcp.conf",
                "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H tcp://127.0.0.1:2375\n",
            )
        }),
    ];
    for (want, mutate) in cases {
        let (_d, image) = image_with(mutate);
        let report = verify(&image, false).unwrap();
        let failed = failing(&report);
        assert!(
            failed.contains(&want),
            "expected {want} to fail:\n{}",
            render_table(&report)
        );
        assert!(
            failed.iter().all(|f| *f == want
                || (want == "kernel" && ["initramfs-virtio", "virtio-mmio"].contains(f))
                || (want == "initramfs-virtio" && *f == "virtio-mmio")),
            "only {want} should fail:\n{}",
            render_table(&report)
        );
        assert!(!report.passed);
        let fix = &report.checks.iter().find(|c| c.id == want).unwrap().fix;
        assert!(!fix.is_empty());
    }
}

/// A kernel built without modules (the Dozlab kernel): no initramfs, no
/// /lib/modules, every virtio driver built in.
#[test]
fn a_kernel_without_modules_needs_no_initramfs() {
    let (_d, image) = image_with(|t| {
        fs::remove_file(t.join(format!("boot/initrd.img-{KVER}"))).unwrap();
        fs::remove_dir_all(t.join("lib/modules")).unwrap();
        put(
            t,
            &format!("boot/config-{KVER}"),
            "# CONFIG_MODULES is not set\nCONFIG_ACPI=y\nCONFIG_VIRTIO_MMIO=y\n\
             CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\n",
        );
    });
    let report = verify(&image, false).unwrap();
    assert!(report.passed, "{}", render_table(&report));
    let mmio = report
        .checks
        .iter()
        .find(|c| c.id == "virtio-mmio")
        .unwrap();
    assert!(
        mmio.found.contains("virtio_mmio: built in"),
        "{}",
        mmio.found
    );
    // The same kernel without virtio-mmio: the rule says what is missing.
    let (_d, image) = image_with(|t| {
        fs::remove_file(t.join(format!("boot/initrd.img-{KVER}"))).unwrap();
        put(
            t,
            &format!("boot/config-{KVER}"),
            "# CONFIG_MODULES is not set\nCONFIG_ACPI=y\nCONFIG_VIRTIO_PCI=y\n\
             CONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\n",
        );
    });
    let report = verify(&image, false).unwrap();
    let mmio = report
        .checks
        .iter()
        .find(|c| c.id == "virtio-mmio")
        .unwrap();
    assert_eq!(mmio.status, Status::Fail);
    assert!(
        mmio.found.contains("virtio_mmio: MISSING"),
        "{}",
        mmio.found
    );
}

#[test]
fn docker_rules_are_skipped_without_docker() {
    let (dir, image) = image_with(|t| {
        fs::remove_file(t.join("usr/sbin/dockerd")).unwrap();
        fs::remove_dir_all(t.join("etc/systemd/system/docker.service.d")).unwrap();
    });
    assert!(!verify(&image, false).unwrap().passed);
    let report = verify(&image, true).unwrap();
    assert!(report.passed, "{}", render_table(&report));
    assert_eq!(
        report
            .checks
            .iter()
            .filter(|c| c.status == Status::Skip)
            .count(),
        3
    );
    // The manifest beside the image can say the same.
    let manifest = r#"{"name":"t","profile":"minimal","created":"x","kernel":{"version":"v"},
        "artifacts":[],"features":{"docker":false}}"#;
    fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    let report = verify(&image, false).unwrap();
    assert!(
        report.passed
            && report
                .docker_skipped_because
                .unwrap()
                .contains("manifest.json")
    );
}

#[test]
fn garbage_is_an_image_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    fs::write(&text, "just some text\n".repeat(300)).unwrap();
    assert!(matches!(verify(&text, false), Err(ImageError::NotExt(_))));
    let empty = dir.path().join("empty");
    fs::write(&empty, "").unwrap();
    assert!(matches!(verify(&empty, false), Err(ImageError::NotExt(_))));
    assert!(matches!(
        verify(&dir.path().join("missing"), false),
        Err(ImageError::Open { .. })
    ));

    let (_d, image) = image_with(|_| {});
    let bytes = fs::read(&image).unwrap();
    let truncated = dir.path().join("truncated.ext4");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        verify(&truncated, false),
        Err(ImageError::Truncated { .. })
    ));

    let tree = dir.path().join("tree");
    compliant_tree(&tree);
    let ext2 = dir.path().join("old.ext2");
    mkfs(&tree, &ext2, "ext2");
    let err = verify(&ext2, false).unwrap_err();
    assert!(matches!(err, ImageError::NotExt4(_)), "{err}");
}
