//! What the VM can reach, on real traffic (issue 15, item 9). A stand-in VM
//! (a network namespace with a real Linux network stack whose `eth0` is
//! relayed frame by frame to the pod's tap) sits behind the tap, and
//! listeners in the peer namespace stand in for a cloud metadata server
//! (169.254.169.254, 100.100.100.200), a node-local DNS cache
//! (169.254.20.10), a cluster Service range (10.96.0.0/12) and the internet
//! (203.0.113.7 and 198.51.100.9, documentation ranges). Every address lives
//! in namespaces the test creates and deletes.

use super::{Lab, POD_IP, Proc, stderr};
use crate::common::podnet::sh;
use std::process::Command;

const VM_IP: &str = "172.16.0.2";
const GATEWAY: &str = "172.16.0.1";
const INTERNET: &str = "203.0.113.7";

/// Relays Ethernet frames between the pod's tap (attached in the pod
/// namespace) and a new tap `eth0` in the VM namespace.
const RELAY: &str = r#"
import ctypes, fcntl, os, select, struct, sys
pod_ns, vm_ns, tap = sys.argv[1:4]
libc = ctypes.CDLL(None, use_errno=True)
def enter(name):
    fd = os.open('/run/netns/' + name, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), 'setns ' + name)
    os.close(fd)
def tap_fd(name):
    fd = os.open('/dev/net/tun', os.O_RDWR)
    fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', name.encode(), 0x0002 | 0x1000))
    return fd
enter(pod_ns); pod = tap_fd(tap)
enter(vm_ns); vm = tap_fd('eth0')
print('ready', flush=True)
while True:
    for fd in select.select([pod, vm], [], [])[0]:
        frame = os.read(fd, 65536)
        try:
            os.write(vm if fd == pod else pod, frame)
        except OSError:
            pass  # the other side is not up yet
"#;

/// A TCP server on ADDR PORT answering every connection with `hello PEER`.
const TCP_SERVER: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(16)
print('ready', flush=True)
while True:
    c, a = s.accept()
    c.sendall(('hello ' + a[0]).encode()); c.close()
"#;

/// Prints `PEER PAYLOAD` for each UDP datagram on ADDR PORT.
const UDP_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    d, a = s.recvfrom(100)
    print(a[0], d.decode(), flush=True)
"#;

/// `got TEXT` or `error ...` for one connection from SOURCE (or any) to HOST PORT.
const CONNECT: &str = r#"
import socket, sys
host, port, timeout, source = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
try:
    s = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    print('got', s.recv(100).decode())
except OSError as e:
    print('error', e)
"#;

/// One ICMP echo request to HOST: prints `pong` on a reply, else `silence`.
const PING: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(10)
body = struct.pack('!BBHHH', 8, 0, 0, 0x4444, 1) + b'dozlab'
c = sum(struct.unpack('!%dH' % (len(body) // 2), body)); c = (c >> 16) + (c & 0xffff); c = ~(c + (c >> 16)) & 0xffff
s.sendto(body[:2] + struct.pack('!H', c) + body[4:], (sys.argv[1], 0))
try:
    while True:
        d, a = s.recvfrom(200)
        if a[0] == sys.argv[1] and d[(d[0] & 15) * 4] == 0:
            print('pong'); break
except OSError:
    print('silence')
"#;

/// Sends one UDP datagram with PAYLOAD from SOURCE to HOST PORT.
const SEND_UDP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
"#;

fn ip_in(ns: &str, args: &[&str]) {
    let mut full = vec!["ip", "-n", ns];
    full.extend_from_slice(args);
    sh(&full);
}

fn sysctl_in(ns: &str, kv: &str) {
    sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]);
}

/// Starts a Python server in `ns` and waits for its `ready`.
fn server(ns: &str, script: &str, args: &[&str]) -> Proc {
    let mut p = Proc::python_in(ns, script, args);
    assert_eq!(p.line(), "ready", "server {args:?} in {ns}");
    p
}

/// One TCP connection attempt from `ns` (optionally from `source`): `got
/// hello PEER` or `error ...`. Attempts that must fail get 3 s.
fn connect(ns: &str, host: &str, port: u16, source: Option<&str>, expect_ok: bool) -> String {
    let timeout = if expect_ok { "30" } else { "3" };
    let port = port.to_string();
    let args = [host, port.as_str(), timeout, source.unwrap_or("")];
    Proc::python_in(ns, CONNECT, &args).line()
}

fn send_udp(ns: &str, source: &str, host: &str, port: u16, payload: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", SEND_UDP])
        .args([source, host, &port.to_string(), payload])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A stand-in VM behind the pod's tap: namespace `<lab>-vm` with `eth0` =
/// 172.16.0.2/24 (the VM's MAC), default route via the gateway. The relay
/// is killed and the namespace deleted on drop.
struct StandInVm {
    ns: String,
    relay: Option<Proc>,
}

impl StandInVm {
    fn attach(lab: &Lab) -> StandInVm {
        let ns = format!("{}-vm", lab.net.pod.trim_end_matches("-pod"));
        sh(&["ip", "netns", "add", &ns]);
        let mut vm = StandInVm { ns, relay: None };
        // Link-local IPv6 addresses are usable at once (no duplicate detection).
        sysctl_in(&vm.ns, "net.ipv6.conf.default.accept_dad=0");
        let relay = server(&lab.net.pod, RELAY, &[&lab.net.pod, &vm.ns, "tap0"]);
        vm.relay = Some(relay);
        let ns = vm.ns.as_str();
        ip_in(ns, &["link", "set", "lo", "up"]);
        ip_in(ns, &["link", "set", "eth0", "address", "06:00:ac:10:00:02"]);
        ip_in(ns, &["addr", "add", &format!("{VM_IP}/24"), "dev", "eth0"]);
        ip_in(ns, &["link", "set", "eth0", "up"]);
        ip_in(ns, &["route", "add", "default", "via", GATEWAY]);
        vm
    }
}

impl Drop for StandInVm {
    fn drop(&mut self) {
        drop(self.relay.take());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// A pod namespace whose peer also holds `extra` addresses (on its `lo`),
/// reached through the pod's default route.
fn lab_with_outside(extra: &[&str]) -> Lab {
    let lab = Lab::new();
    sysctl_in(&lab.net.pod, "net.ipv6.conf.default.accept_dad=0");
    for addr in extra {
        ip_in(
            &lab.net.peer,
            &["addr", "add", &format!("{addr}/32"), "dev", "lo"],
        );
    }
    lab
}

fn assert_blocked(line: &str, what: &str) {
    assert!(
        line.starts_with("error"),
        "{what} must be unreachable: {line}"
    );
}

#[test]
fn root_reach_the_vm_gets_no_metadata_server_or_link_local_address() {
    if !super::can_run() || !super::python_available() {
        return;
    }
    let lab = lab_with_outside(&["169.254.169.254", "100.100.100.200", INTERNET]);
    let peer = lab.net.peer.clone();
    let _servers: Vec<Proc> = ["169.254.169.254", "100.100.100.200", INTERNET]
        .iter()
        .map(|a| server(&peer, TCP_SERVER, &[a, "80"]))
        .collect();
    lab.setup_ok(&[]);
    let vm = StandInVm::attach(&lab);

    // The internet stand-in answers, and sees the pod's address.
    let line = connect(&vm.ns, INTERNET, 80, None, true);
    assert_eq!(line, format!("got hello {POD_IP}"));
    // The pod itself reaches the metadata stand-ins: they do listen.
    for md in ["169.254.169.254", "100.100.100.200"] {
        assert_eq!(
            connect(&lab.net.pod, md, 80, None, true),
            format!("got hello {POD_IP}")
        );
    }
    // The VM does not.
    for md in ["169.254.169.254", "100.100.100.200"] {
        assert_blocked(&connect(&vm.ns, md, 80, None, false), md);
    }
}

#[test]
fn root_reach_deny_and_allow_cidrs_from_env_and_flags() {
    if !super::can_run() || !super::python_available() {
        return;
    }
    let outside = [
        "10.96.0.1",
        "10.96.0.10",
        "198.51.100.9",
        "169.254.20.10",
        "169.254.169.254",
        INTERNET,
    ];
    let lab = lab_with_outside(&outside);
    let peer = lab.net.peer.clone();
    let _servers: Vec<Proc> = outside
        .iter()
        .map(|a| server(&peer, TCP_SERVER, &[a, "80"]))
        .collect();
    let out = lab.setup_with_env(
        &[],
        &[
            ("DENY_CIDRS", "10.96.0.0/12,198.51.100.0/24"),
            ("ALLOW_CIDRS", "10.96.0.10/32,169.254.20.10/32"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let vm = StandInVm::attach(&lab);
    let ok = format!("got hello {POD_IP}");
    assert_eq!(connect(&vm.ns, INTERNET, 80, None, true), ok);
    // The more specific allow wins over the deny and the built-in block...
    assert_eq!(connect(&vm.ns, "10.96.0.10", 80, None, true), ok);
    assert_eq!(connect(&vm.ns, "169.254.20.10", 80, None, true), ok);
    // ... and nothing else of the denied ranges or link-local opens up.
    for closed in ["10.96.0.1", "198.51.100.9", "169.254.169.254"] {
        assert_blocked(&connect(&vm.ns, closed, 80, None, false), closed);
    }

    // Flags win over the environment, and a re-run replaces the lists.
    let out = lab.setup_with_env(
        &["--deny-cidr", "203.0.113.0/24"],
        &[("DENY_CIDRS", "10.96.0.0/12")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(connect(&vm.ns, "10.96.0.1", 80, None, true), ok);
    assert_blocked(&connect(&vm.ns, INTERNET, 80, None, false), INTERNET);
    assert_blocked(
        &connect(&vm.ns, "169.254.20.10", 80, None, false),
        "169.254.20.10 without the allow",
    );
}

#[test]
fn root_reach_the_pods_own_ports_are_closed_to_the_vm_but_the_pod_reaches_the_vm() {
    if !super::can_run() || !super::python_available() {
        return;
    }
    let lab = lab_with_outside(&[INTERNET]);
    let _internet = server(&lab.net.peer, TCP_SERVER, &[INTERNET, "80"]);
    // What `dozlab up` runs: nothing is forwarded from the pod IP.
    lab.setup_ok(&["--forward-port", "none"]);
    let pod = lab.net.pod.clone();
    // The pod's services, on every address, IPv4 and IPv6.
    let _pod_servers: Vec<Proc> = [8080, 8081, 8082]
        .iter()
        .map(|p| server(&pod, TCP_SERVER, &["::", &p.to_string()]))
        .collect();
    let vm = StandInVm::attach(&lab);
    let _sshd = server(&vm.ns, TCP_SERVER, &[VM_IP, "22"]);

    // The pod reaches the VM (the terminal's SSH, Docker, `dozlab up`'s
    // proxies), and the VM reaches the internet through the masquerade.
    assert_eq!(
        connect(&pod, VM_IP, 22, None, true),
        format!("got hello {GATEWAY}")
    );
    assert_eq!(
        connect(&vm.ns, INTERNET, 80, None, true),
        format!("got hello {POD_IP}")
    );
    // The VM may ping its gateway.
    assert_eq!(Proc::python_in(&vm.ns, PING, &[GATEWAY]).line(), "pong");
    // The pod's own ports are closed to the VM, by the gateway and the pod IP...
    for host in [GATEWAY, POD_IP] {
        for port in [8080, 8081, 8082] {
            let line = connect(&vm.ns, host, port, None, false);
            assert_blocked(&line, &format!("{host}:{port}"));
        }
    }
    // ... and over IPv6 (the tap's link-local address).
    let tap_ll = link_local(&pod, "tap0");
    let target = format!("{tap_ll}%eth0");
    assert_blocked(&connect(&vm.ns, &target, 8082, None, false), &target);
    // The listeners do answer from inside the pod.
    assert_eq!(
        connect(&pod, POD_IP, 8082, None, true),
        format!("got hello ::ffff:{POD_IP}")
    );
}

/// The IPv6 link-local address of `dev` in `ns`.
fn link_local(ns: &str, dev: &str) -> String {
    let out = sh(&["ip", "-n", ns, "-6", "-j", "addr", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["scope"] == "link")
        .and_then(|a| a["local"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no link-local address on {dev}: {v}"))
}

#[test]
fn root_reach_spoofed_sources_from_the_tap_are_dropped() {
    if !super::can_run() || !super::python_available() {
        return;
    }
    let lab = lab_with_outside(&[INTERNET]);
    let mut udp = server(&lab.net.peer, UDP_SERVER, &[INTERNET, "9999"]);
    let _tcp = server(&lab.net.peer, TCP_SERVER, &[INTERNET, "80"]);
    lab.setup_ok(&[]);
    let vm = StandInVm::attach(&lab);
    // The VM claims another address of its subnet and one of the pod network.
    ip_in(&vm.ns, &["addr", "add", "172.16.0.99/24", "dev", "eth0"]);
    ip_in(&vm.ns, &["addr", "add", "10.200.0.77/32", "dev", "eth0"]);

    for spoof in ["172.16.0.99", "10.200.0.77"] {
        send_udp(&vm.ns, spoof, INTERNET, 9999, &format!("spoofed-{spoof}"));
        // Sent after the spoofed one on the same path: it must arrive first.
        send_udp(&vm.ns, VM_IP, INTERNET, 9999, "genuine");
        assert_eq!(udp.line(), format!("{POD_IP} genuine"), "from {spoof}");
        let line = connect(&vm.ns, INTERNET, 80, Some(spoof), false);
        assert_blocked(&line, &format!("TCP from {spoof}"));
    }
    assert_eq!(
        connect(&vm.ns, INTERNET, 80, Some(VM_IP), true),
        format!("got hello {POD_IP}")
    );
}
