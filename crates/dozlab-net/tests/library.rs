//! The library API (`setup`, `teardown`, `NetError::is_usage`) called from a
//! thread that entered a fresh network namespace, as root. The namespace is
//! made with `ip netns add` and deleted by a guard even when the test fails.

use dozlab_net::{NetError, NetPlan};
use std::process::Command;

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        dozlab_testkit::require_root!("creating a network namespace needs root");
        dozlab_testkit::require_tool!("ip");
        let name = format!("dznl-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed");
        let ns = Netns(name);
        for args in [
            vec![
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
            ],
            vec!["addr", "add", "10.77.0.2/24", "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["link", "set", "eth1", "up"],
            vec!["route", "add", "default", "via", "10.77.0.1"],
        ] {
            let st = Command::new("ip")
                .args(["-n", &ns.0])
                .args(&args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        Some(ns)
    }

    /// Runs `f` on a thread that has entered this namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn plan(dir: &std::path::Path) -> NetPlan {
    NetPlan {
        tap: "vmtap".into(),
        tap_owner: 0,
        gateway_ip: "172.16.9.1".parse().unwrap(),
        vm_ip: "172.16.9.2".parse().unwrap(),
        prefix_len: 24,
        uplink: None,
        pod_ip: None,
        forward_ports: vec!["22".parse().unwrap()],
        vm_mac: None,
        deny_cidrs: Vec::new(),
        allow_cidrs: Vec::new(),
        config_out: dir.join("network-config"),
    }
}

#[test]
fn root_library_setup_and_teardown_in_a_namespace() {
    let Some(ns) = Netns::new("lib") else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = plan(dir.path());
    let p2 = p.clone();
    let cfg = ns.run(move || dozlab_net::setup(&p2)).unwrap();
    assert_eq!(cfg.tap_device, "vmtap");
    assert_eq!(cfg.pod_ip, Some("10.77.0.2".parse().unwrap()));
    assert_eq!(cfg.uplink.as_deref(), Some("eth0"));
    assert_eq!(cfg.vm_mac.as_deref(), Some("06:00:ac:10:09:02"));
    let on_disk = dozlab_core::netconfig::NetworkConfig::load(&p.config_out).unwrap();
    assert_eq!(on_disk, cfg);

    let p3 = p.clone();
    ns.run(move || dozlab_net::teardown(&p3)).unwrap();
    assert!(!p.config_out.exists());
    let links = Command::new("ip")
        .args(["-n", &ns.0, "-o", "link", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("vmtap"));
}

#[test]
fn root_library_errors_say_whether_the_input_is_at_fault() {
    let Some(ns) = Netns::new("err") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut bad = plan(dir.path());
    bad.uplink = Some("nosuch".into());
    let err = ns.run(move || dozlab_net::setup(&bad)).unwrap_err();
    assert!(matches!(err, NetError::UnknownUplink { .. }), "{err}");
    assert!(err.is_usage());
    assert!(
        err.to_string().contains("eth0"),
        "lists the interfaces: {err}"
    );

    let mut unwritable = plan(dir.path());
    unwritable.config_out = "/proc/dozlab-no/network-config".into();
    let err = ns.run(move || dozlab_net::setup(&unwritable)).unwrap_err();
    assert!(matches!(err, NetError::WriteConfig { .. }), "{err}");
    assert!(!err.is_usage());
}
