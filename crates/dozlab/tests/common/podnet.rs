//! A test "pod": a network namespace with a veth uplink `eth0` (default route)
//! to a peer namespace playing the rest of the cluster, as the pod network of
//! a Kubernetes node would be. Both namespaces are deleted on drop, even when
//! a test fails. Shared by the network-setup and VM end-to-end tests (the
//! tests may use `ip`; the product may not).

use std::process::{Command, Output};

/// Runs a command and fails the test with its stderr when it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The pod and peer namespaces; removed on drop.
pub struct PodNet {
    pub pod: String,
    pub peer: String,
}

impl PodNet {
    /// Makes `<id>-pod` with `eth0` = `pod_ip`/24 and a default route via
    /// `peer_ip`, and `<id>-peer` with `peer0` = `peer_ip`/24.
    pub fn new(id: &str, pod_ip: &str, peer_ip: &str) -> PodNet {
        let net = PodNet {
            pod: format!("{id}-pod"),
            peer: format!("{id}-peer"),
        };
        let (pod, peer) = (net.pod.as_str(), net.peer.as_str());
        sh(&["ip", "netns", "add", pod]);
        sh(&["ip", "netns", "add", peer]);
        sh(&[
            "ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            "netns", peer,
        ]);
        let pod_cidr = format!("{pod_ip}/24");
        let peer_cidr = format!("{peer_ip}/24");
        sh(&["ip", "-n", pod, "addr", "add", &pod_cidr, "dev", "eth0"]);
        sh(&["ip", "-n", peer, "addr", "add", &peer_cidr, "dev", "peer0"]);
        for (ns, dev) in [(pod, "eth0"), (pod, "lo"), (peer, "peer0"), (peer, "lo")] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&["ip", "-n", pod, "route", "add", "default", "via", peer_ip]);
        net
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
