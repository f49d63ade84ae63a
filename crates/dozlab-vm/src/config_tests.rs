//! Tests of `config`: every bad input gets its own clear error. The planner
//! takes plain [`RunSettings`], so these tests build them directly and do
//! not depend on the environment of the process that runs them.

use super::*;
use crate::bootfiles::tests::mkfs;
use std::fs;

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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The defaults, with the fixture's image, network config and binaries.
    fn settings(&self) -> RunSettings {
        RunSettings {
            network_config: self.path("network-config"),
            qemu_bin: "/bin/true".into(),
            firecracker_bin: self.path("no-firecracker"),
            ..RunSettings::new(self.path("rootfs.ext4"))
        }
    }

    fn plan(&self, change: impl FnOnce(&mut RunSettings)) -> Result<Plan, ConfigError> {
        let mut s = self.settings();
        change(&mut s);
        plan(&s, &self.host)
    }

    fn err(&self, change: impl FnOnce(&mut RunSettings)) -> String {
        self.plan(change).unwrap_err().to_string()
    }
}

#[test]
fn defaults_give_a_tcg_qemu_plan_with_kernel_from_the_image() {
    let f = Fixture::new();
    let p = f.plan(|_| {}).unwrap();
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
    let p = f.plan(|_| {}).unwrap();
    let accels: Vec<_> = p.attempts.iter().map(|a| a.accel).collect();
    assert_eq!(accels, [Accel::Kvm, Accel::Tcg]);
    let p = f.plan(|s| s.accel = AccelChoice::Tcg).unwrap();
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
    let p = f.plan(|_| {}).unwrap();
    assert_eq!(
        (p.net.vm_ip, p.tap.as_str()),
        (Ipv4Addr::new(10, 9, 0, 5), "tap9")
    );
    assert_eq!(p.tcp_ports, [80], "ssh and docker have their own checks");
    let p = f
        .plan(|s| {
            s.vm_ip = Some(Ipv4Addr::new(10, 9, 0, 7));
            s.forward_ports = vec!["22".parse().unwrap()];
        })
        .unwrap();
    assert_eq!(p.net.vm_ip, Ipv4Addr::new(10, 9, 0, 7));
    assert!(p.tcp_ports.is_empty());
}

#[test]
fn bad_input_is_named() {
    let f = Fixture::new();
    type Change = fn(&mut RunSettings);
    let cases: &[(Change, &str)] = &[
        (|s| s.cpus = 0, "--cpus 0 is out of range"),
        (|s| s.memory = 64, "--memory 64 MiB is out of range"),
        (|s| s.memory = 8192, "128 to 4096 MiB"),
        (
            |s| s.tap = Some("nope0".into()),
            "tap device \"nope0\" does not exist",
        ),
        (
            |s| s.vm_ip = Some(Ipv4Addr::new(172, 16, 0, 1)),
            "must differ",
        ),
        (
            |s| s.vm_ip = Some(Ipv4Addr::new(172, 16, 5, 2)),
            "not in the gateway's network",
        ),
        (|s| s.mac = Some("01:00:00:00:00:01".into()), "unicast MAC"),
        (|s| s.session_id = "a b".into(), "--session-id"),
        (
            |s| s.kernel = Some("/nonexistent/vmlinuz".into()),
            "kernel /nonexistent/vmlinuz does not exist",
        ),
        (
            |s| {
                s.qemu_bin = "/nonexistent/qemu".into();
                s.vmm = VmmChoice::Qemu;
            },
            "QEMU binary",
        ),
        (|s| s.vmm = VmmChoice::Firecracker, "Firecracker binary"),
        (|s| s.accel = AccelChoice::Kvm, "/dev/kvm cannot be opened"),
    ];
    for (change, want) in cases {
        let e = f.err(change);
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn bad_rootfs_is_named() {
    let f = Fixture::new();
    let missing = f.path("missing.ext4");
    assert!(f.err(|s| s.rootfs = missing).contains("No such file"));
    let junk = f.dir.path().join("junk.ext4");
    fs::write(&junk, vec![1u8; 8192]).unwrap();
    let e = f.err(|s| s.rootfs = junk);
    assert!(e.contains("not an ext4 filesystem"), "{e}");
    let empty = f.dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let nok = f.dir.path().join("nokernel.ext4");
    mkfs(&empty, &nok);
    let e = f.err(|s| s.rootfs = nok);
    assert!(e.contains("no kernel in the image"), "{e}");
    fs::write(f.dir.path().join("network-config"), "garbage\n").unwrap();
    assert!(f.err(|_| {}).contains("network config"));
}

/// Set in the child of [`the_callers_environment_does_not_change_the_plan`].
const ENV_PROBE: &str = "DOZLAB_VM_CONFIG_ENV_PROBE";

#[test]
fn the_callers_environment_does_not_change_the_plan() {
    if std::env::var_os(ENV_PROBE).is_some() {
        return;
    }
    // The planner tests again, in a child of this test binary whose
    // environment sets `vm run`'s variables as a pod spec or a shell could.
    // They must still see only the settings they build.
    let exported = [
        ("VM_IP", "10.99.0.2"),
        ("GATEWAY_IP", "10.99.0.1"),
        ("TAP_DEVICE_NAME", "tap9"),
        ("MEMORY", "64"),
        ("CPU_COUNT", "4"),
        ("KERNEL_PATH", "/nonexistent/vmlinuz"),
        ("QEMU_BIN", "/nonexistent/qemu"),
        ("DOZLAB_ACCEL", "kvm"),
        ("FORWARD_PORTS", "8000:80"),
        ("SESSION_ID", "not valid"),
    ];
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["config::tests::", "--test-threads=2"])
        .env(ENV_PROBE, "1")
        .envs(exported)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the planner tests fail with {exported:?} exported:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test config::tests::flags_win_over_the_network_config")
            && stdout.contains("test config::tests::defaults_give_a_tcg_qemu_plan"),
        "the child ran the planner tests:\n{stdout}"
    );
}
