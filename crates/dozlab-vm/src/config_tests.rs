//! Tests of `config`: every bad input gets its own clear error.

use super::*;
use crate::bootfiles::tests::mkfs;
use clap::Parser;
use std::fs;

#[derive(Parser)]
#[command(args_override_self = true)]
struct Wrap {
    #[command(flatten)]
    a: RunArgs,
}

struct Fixture {
    dir: tempfile::TempDir,
    host: Host,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.1.0-1-amd64"), b"k").unwrap();
        fs::write(tree.join("boot/initrd.img-6.1.0-1-amd64"), b"i").unwrap();
        mkfs(&tree, &dir.path().join("rootfs.ext4"));
        fs::create_dir_all(dir.path().join("net/tap0")).unwrap();
        fs::write(dir.path().join("net/tap0/tun_flags"), b"0x1002").unwrap();
        let host = Host {
            memory_mib: 4096,
            kvm: false,
            sys_net: dir.path().join("net"),
        };
        Self { dir, host }
    }

    fn args(&self, extra: &[&str]) -> RunArgs {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        let mut argv = vec![
            "x".to_string(),
            "--rootfs".into(),
            p("rootfs.ext4"),
            "--network-config".into(),
            p("network-config"),
            "--qemu-bin".into(),
            "/bin/true".into(),
            "--firecracker-bin".into(),
            p("no-firecracker"),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Wrap::try_parse_from(argv).unwrap().a
    }

    fn err(&self, extra: &[&str]) -> String {
        plan(&self.args(extra), &self.host).unwrap_err().to_string()
    }
}

#[test]
fn defaults_give_a_tcg_qemu_plan_with_kernel_from_the_image() {
    let f = Fixture::new();
    let p = plan(&f.args(&[]), &f.host).unwrap();
    assert_eq!(
        p.kernel,
        BootFile::Image("/boot/vmlinuz-6.1.0-1-amd64".into())
    );
    assert_eq!(
        p.initrd,
        Some(BootFile::Image("/boot/initrd.img-6.1.0-1-amd64".into()))
    );
    assert_eq!(p.tap, "tap0");
    assert_eq!(p.net.vm_ip, Ipv4Addr::new(172, 16, 0, 2));
    assert_eq!(p.net.mac, "06:00:ac:10:00:02");
    assert_eq!(
        p.attempts,
        [Attempt {
            vmm: Vmm::Qemu,
            accel: Accel::Tcg
        }]
    );
    assert!(!p.docker, "no dockerd in the image, no manifest");
}

#[test]
fn auto_tries_kvm_then_tcg_when_dev_kvm_opens() {
    let mut f = Fixture::new();
    f.host.kvm = true;
    let p = plan(&f.args(&[]), &f.host).unwrap();
    let accels: Vec<_> = p.attempts.iter().map(|a| a.accel).collect();
    assert_eq!(accels, [Accel::Kvm, Accel::Tcg]);
    let p = plan(&f.args(&["--accel", "tcg"]), &f.host).unwrap();
    assert_eq!(p.attempts.len(), 1);
}

#[test]
fn flags_win_over_the_network_config_which_wins_over_defaults() {
    let f = Fixture::new();
    fs::create_dir_all(f.dir.path().join("net/tap9")).unwrap();
    fs::write(f.dir.path().join("net/tap9/tun_flags"), b"").unwrap();
    fs::write(
        f.dir.path().join("network-config"),
        "GATEWAY_IP=10.9.0.1\nVM_IP=10.9.0.5\nPOD_IP=\nTAP_DEVICE=tap9\nFORWARD_PORTS=22:22,8000:80,2375\n",
    )
    .unwrap();
    let p = plan(&f.args(&[]), &f.host).unwrap();
    assert_eq!(
        (p.net.vm_ip, p.tap.as_str()),
        (Ipv4Addr::new(10, 9, 0, 5), "tap9")
    );
    assert_eq!(p.tcp_ports, [80], "ssh and docker have their own checks");
    let p = plan(
        &f.args(&["--vm-ip", "10.9.0.7", "--forward-port", "22"]),
        &f.host,
    )
    .unwrap();
    assert_eq!(p.net.vm_ip, Ipv4Addr::new(10, 9, 0, 7));
    assert!(p.tcp_ports.is_empty());
}

#[test]
fn bad_input_is_named() {
    let f = Fixture::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--cpus", "0"], "--cpus 0 is out of range"),
        (&["--memory", "64"], "--memory 64 MiB is out of range"),
        (&["--memory", "8192"], "128 to 4096 MiB"),
        (&["--tap", "nope0"], "tap device \"nope0\" does not exist"),
        (&["--vm-ip", "172.16.0.1"], "must differ"),
        (&["--vm-ip", "172.16.5.2"], "not in the gateway's network"),
        (&["--mac", "01:00:00:00:00:01"], "unicast MAC"),
        (&["--session-id", "a b"], "--session-id"),
        (
            &["--kernel", "/nonexistent/vmlinuz"],
            "kernel /nonexistent/vmlinuz does not exist",
        ),
        (
            &["--qemu-bin", "/nonexistent/qemu", "--vmm", "qemu"],
            "QEMU binary",
        ),
        (&["--vmm", "firecracker"], "Firecracker binary"),
        (&["--accel", "kvm"], "/dev/kvm cannot be opened"),
    ];
    for (extra, want) in cases {
        let e = f.err(extra);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
}

#[test]
fn bad_rootfs_is_named() {
    let f = Fixture::new();
    let missing = f.dir.path().join("missing.ext4").display().to_string();
    assert!(f.err(&["--rootfs", &missing]).contains("No such file"));
    let junk = f.dir.path().join("junk.ext4");
    fs::write(&junk, vec![1u8; 8192]).unwrap();
    let e = f.err(&["--rootfs", &junk.display().to_string()]);
    assert!(e.contains("not an ext4 filesystem"), "{e}");
    let empty = f.dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let nok = f.dir.path().join("nokernel.ext4");
    mkfs(&empty, &nok);
    let e = f.err(&["--rootfs", &nok.display().to_string()]);
    assert!(e.contains("no kernel in the image"), "{e}");
    fs::write(f.dir.path().join("network-config"), "garbage\n").unwrap();
    assert!(f.err(&[]).contains("network config"));
}
