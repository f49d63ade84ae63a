//! `dozlab network-setup` for real, as root: each test makes a fresh network
//! namespace playing the pod, with a veth uplink (default route) to a second
//! namespace playing the rest of the cluster, runs the built binary inside it
//! (`ip netns exec`), and inspects the result with `ip`, `nft -j` and the
//! config file. Namespaces are deleted by a guard even when a test fails.
//!
//! The traffic test puts a small fake VM on the tap: a Python script that
//! attaches to the tap device (giving it carrier), answers ARP for the VM IP,
//! reports the TCP segments that reach it and sends one UDP datagram out, so
//! DNAT, forwarding and masquerading are observed on real packets.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;
use common::podnet::{PodNet, sh};

#[path = "network_setup/reach.rs"]
mod reach;

const BIN: &str = env!("CARGO_BIN_EXE_dozlab");
const POD_IP: &str = "10.200.0.2";
const PEER_IP: &str = "10.200.0.1";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether this machine can run these tests; records the skip otherwise
/// (dozlab-testkit: a failure in strict mode), and the caller returns.
fn can_run() -> bool {
    dozlab_testkit::have_root!("network-setup tests need root")
        && dozlab_testkit::have_tool!("ip", "nft")
}

/// A pod namespace with a veth uplink `eth0` to a peer namespace, removed on drop.
struct Lab {
    net: PodNet,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("dzns-{}-{n}", std::process::id());
        let lab = Lab {
            net: PodNet::new(&id, POD_IP, PEER_IP),
            dir: tempfile::tempdir().unwrap(),
        };
        let pod = lab.net.pod.as_str();
        // A new namespace may inherit forwarding from the host; start from off.
        sh(&[
            "ip",
            "netns",
            "exec",
            pod,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ]);
        lab
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("shared/network-config")
    }

    /// Runs `dozlab network-setup ARGS` in the pod namespace.
    fn setup(&self, args: &[&str]) -> Output {
        self.setup_with_env(args, &[])
    }

    /// Runs `dozlab network-setup ARGS` with only the environment variables
    /// `env` of its own set.
    fn setup_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.in_pod_cmd(&[BIN, "network-setup", "--config-out"]);
        cmd.arg(self.config_path()).args(args);
        for var in [
            "TAP_DEVICE_NAME",
            "GATEWAY_IP",
            "VM_IP",
            "PREFIX_LEN",
            "UPLINK",
            "POD_IP",
            "FORWARD_PORTS",
            "VM_MAC",
            "DENY_CIDRS",
            "ALLOW_CIDRS",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        cmd.output().unwrap()
    }

    fn setup_ok(&self, args: &[&str]) -> Output {
        let out = self.setup(args);
        assert!(
            out.status.success(),
            "network-setup {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `ip netns exec POD ARGS`: ARGS run in the pod namespace.
    fn in_pod_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.pod]).args(args);
        cmd
    }

    /// Runs ARGS in the pod namespace to their end.
    fn in_pod(&self, args: &[&str]) -> Output {
        self.in_pod_cmd(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", self.net.pod.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = Command::new("ip").args(&full).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Everything network-setup could change, for before/after comparisons.
    fn state(&self) -> String {
        let links = self.in_pod(&["ip", "-o", "link", "show"]).stdout;
        let addrs = self.in_pod(&["ip", "-4", "-o", "addr", "show"]).stdout;
        let rules = self.in_pod(&["nft", "list", "ruleset"]).stdout;
        let fwd = self
            .in_pod(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .stdout;
        let strip = |b: Vec<u8>| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(|l| l.split("valid_lft").next().unwrap_or(l).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        format!(
            "{}\n{}\n{}\nip_forward={}config={}",
            strip(links),
            strip(addrs),
            strip(rules),
            strip(fwd),
            self.config_path().exists()
        )
    }

    fn ip_forward(&self) -> String {
        let out = self.in_pod(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `nft -j list table ip dozlab`, or `None` when the table is absent.
    fn table(&self) -> Option<Value> {
        let out = self.in_pod(&["nft", "-j", "list", "table", "ip", "dozlab"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn tun_links(&self) -> Vec<Value> {
        self.json(&["-d", "link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "tun")
            .collect()
    }
}

/// The rules of one chain as their `expr` arrays.
fn chain_rules(table: &Value, chain: &str) -> Vec<Value> {
    table["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["chain"] == chain)
        .map(|r| r["expr"].clone())
        .collect()
}

/// `(dport, dnat addr, dnat port)` of each DNAT rule in `chain`.
fn dnats(table: &Value, chain: &str) -> Vec<(u64, String, u64)> {
    let mut v: Vec<_> = chain_rules(table, chain)
        .iter()
        .filter_map(|expr| {
            let stmts = expr.as_array()?;
            let dnat = stmts.iter().find_map(|s| s.get("dnat"))?;
            let dport = stmts.iter().find_map(|s| {
                let m = s.get("match")?;
                (m["left"]["payload"]["field"] == "dport").then(|| m["right"].as_u64())?
            })?;
            Some((
                dport,
                dnat["addr"].as_str()?.to_string(),
                dnat["port"].as_u64()?,
            ))
        })
        .collect();
    v.sort();
    v
}

fn all_numbers(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Number(n) => out.extend(n.as_u64()),
        Value::Array(a) => a.iter().for_each(|x| all_numbers(x, out)),
        Value::Object(o) => o.values().for_each(|x| all_numbers(x, out)),
        _ => {}
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn root_sets_up_tap_forwarding_rules_and_config() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    assert_eq!(lab.ip_forward(), "0");
    let out = lab.setup_ok(&[]);

    let taps = lab.tun_links();
    assert_eq!(taps.len(), 1, "{taps:?}");
    let tap = &taps[0];
    assert_eq!(tap["ifname"], "tap0");
    assert_eq!(tap["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(tap["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(tap["linkinfo"]["info_data"]["persist"], true);
    let user = &tap["linkinfo"]["info_data"]["user"];
    assert!(user == "root" || user == 0, "owned by root: {user}");
    let flags: Vec<&str> = tap["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(flags.contains(&"UP"), "{flags:?}");
    let addrs = lab.json(&["addr", "show", "dev", "tap0"]);
    let info = &addrs[0]["addr_info"];
    assert_eq!(info.as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info[0]["local"], "172.16.0.1");
    assert_eq!(info[0]["prefixlen"], 24);
    assert_eq!(lab.ip_forward(), "1");

    let table = lab.table().expect("table ip dozlab exists");
    let want = vec![(22, "172.16.0.2".to_string(), 22)];
    assert_eq!(dnats(&table, "prerouting"), want);
    assert_eq!(dnats(&table, "output"), want);
    let pre = chain_rules(&table, "prerouting").to_vec();
    let pre_text = serde_json::to_string(&pre).unwrap();
    assert!(
        pre_text.contains(r#""right":"eth0""#),
        "matches the uplink: {pre_text}"
    );
    assert!(pre_text.contains(POD_IP), "matches the pod IP: {pre_text}");
    let post = serde_json::to_string(&chain_rules(&table, "postrouting")).unwrap();
    assert!(post.contains("masquerade"), "{post}");
    assert!(post.contains(r#""addr":"172.16.0.0","len":24"#), "{post}");
    assert!(post.contains(r#""right":"eth0""#), "{post}");
    let fwd = serde_json::to_string(&chain_rules(&table, "forward")).unwrap();
    assert!(fwd.contains(r#""name":"maxseg""#), "MSS clamping: {fwd}");
    let last = chain_rules(&table, "forward").pop().unwrap();
    assert_eq!(
        last[1],
        serde_json::json!({"drop": null}),
        "ends in a drop: {last}"
    );
    let mut numbers = Vec::new();
    all_numbers(&table, &mut numbers);
    for port in [8080, 8081, 2375] {
        assert!(!numbers.contains(&port), "port {port} appears in {table}");
    }

    let text = std::fs::read_to_string(lab.config_path()).unwrap();
    assert_eq!(
        text,
        format!(
            "GATEWAY_IP=172.16.0.1\nVM_IP=172.16.0.2\nPOD_IP={POD_IP}\nTAP_DEVICE=tap0\nPREFIX_LEN=24\nVM_MAC=06:00:ac:10:00:02\nUPLINK=eth0\nFORWARD_PORTS=22:22\n"
        )
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        text,
        "stdout is the config"
    );
}

#[test]
fn root_running_twice_keeps_one_tap_and_replaces_the_table() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.setup_ok(&[]);
    lab.setup_ok(&[]);
    assert_eq!(lab.tun_links().len(), 1);
    let addrs = lab.json(&["addr", "show", "dev", "tap0"]);
    assert_eq!(addrs[0]["addr_info"].as_array().unwrap().len(), 1);
    let tables = lab.in_pod(&["nft", "list", "tables"]);
    let text = String::from_utf8_lossy(&tables.stdout);
    assert_eq!(text.matches("table ip dozlab").count(), 1, "{text}");
    let first = lab.table().unwrap();
    assert_eq!(chain_rules(&first, "prerouting").len(), 1);

    // Different ports and env-var input replace the rules, not add to them.
    let out = lab.setup_with_env(
        &[],
        &[
            ("FORWARD_PORTS", "22,2222:80"),
            ("VM_MAC", "06:AA:BB:CC:DD:EE"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = lab.table().unwrap();
    assert_eq!(
        dnats(&table, "prerouting"),
        vec![
            (22, "172.16.0.2".into(), 22),
            (2222, "172.16.0.2".into(), 80)
        ]
    );
    let cfg = std::fs::read_to_string(lab.config_path()).unwrap();
    assert!(cfg.contains("FORWARD_PORTS=22:22,2222:80\n"), "{cfg}");
    assert!(cfg.contains("VM_MAC=06:aa:bb:cc:dd:ee\n"), "{cfg}");
    assert_eq!(lab.tun_links().len(), 1);
}

#[test]
fn root_teardown_removes_everything_it_made() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let before_links = lab.in_pod(&["ip", "-o", "link", "show"]).stdout;
    lab.setup_ok(&[]);
    let out = lab.setup(&["--teardown"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lab.tun_links().is_empty());
    assert!(lab.table().is_none());
    assert!(!lab.config_path().exists());
    assert_eq!(
        lab.in_pod(&["ip", "-o", "link", "show"]).stdout,
        before_links
    );
    assert_eq!(lab.ip_forward(), "1", "teardown leaves ip_forward alone");
    // Tearing down again finds nothing and succeeds.
    let out = lab.setup(&["--teardown"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn root_bad_input_is_refused_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    sh(&[
        "ip",
        "-n",
        &lab.net.pod,
        "link",
        "add",
        "notatap",
        "type",
        "veth",
        "peer",
        "name",
        "notatap-peer",
    ]);
    let before = lab.state();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--vm-ip", "172.16.1.2"],
            2,
            "outside the gateway's subnet",
        ),
        (
            &["--vm-ip", "172.16.0.1"],
            2,
            "VM IP and gateway IP are both",
        ),
        (&["--vm-ip", "172.16.0.255"], 2, "broadcast address"),
        (&["--vm-ip", "172.16.0.0"], 2, "network address"),
        (&["--prefix-len", "31"], 2, "prefix length 31"),
        (
            &["--uplink", "nosuch0"],
            2,
            "uplink \"nosuch0\" does not exist",
        ),
        (&["--tap", "a-much-too-long-name"], 2, "invalid tap name"),
        (&["--tap", "notatap"], 2, "not a tap device"),
        (&["--forward-port", "8081"], 2, "web terminal"),
        (&["--forward-port", "8080"], 2, "VS Code"),
        (&["--forward-port", "2375"], 2, "Docker API"),
        (
            &["--forward-port", "2222:2375"],
            2,
            "refusing to forward port 2375",
        ),
        (
            &["--forward-port", "22", "--forward-port", "22:23"],
            2,
            "forwarded twice",
        ),
        (&["--forward-port", "x"], 2, "invalid port forward"),
        (
            &["--gateway-ip", "10.200.0.50", "--vm-ip", "10.200.0.51"],
            2,
            "overlaps 10.200.0.2/24 on eth0",
        ),
        (&["--vm-mac", "01:00:5e:00:00:01"], 2, "invalid VM MAC"),
        (&["--tap-owner", "4294967295"], 2, "not a valid user id"),
        (
            &["--deny-cidr", "10.0.0.0/33"],
            2,
            "invalid CIDR \"10.0.0.0/33\"",
        ),
        (&["--allow-cidr", "banana"], 2, "invalid CIDR \"banana\""),
        (&["--deny-cidr", "10.1.2.3/8"], 2, "did you mean 10.0.0.0/8"),
        (&["--deny-cidr", "fd00::/8"], 2, "only IPv4"),
        (
            &["--deny-cidr", "10.0.0.0/8", "--allow-cidr", "10.0.0.0/8"],
            2,
            "10.0.0.0/8 is both allowed and denied",
        ),
    ];
    for (args, code, needle) in cases {
        let out = lab.setup(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert_eq!(lab.state(), before, "{args:?} changed the namespace");
    }
}

#[test]
fn root_without_cap_net_admin_is_refused_and_changes_nothing() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let before = lab.state();
    let out = lab
        .in_pod_cmd(&[
            "setpriv",
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            BIN,
            "network-setup",
            "--config-out",
        ])
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs CAP_NET_ADMIN"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.state(), before);
}

#[test]
fn root_a_late_failure_rolls_back_what_the_run_created() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let before = lab.state();
    // Everything succeeds up to writing the config, which cannot be written under /proc.
    let out = lab.in_pod(&[
        BIN,
        "network-setup",
        "--config-out",
        "/proc/dozlab-no/network-config",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write the network config"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lab.state(), before, "rollback left something behind");
}

/// Attaches to the tap, answers ARP for the VM, prints `tcp SRC DST DPORT`
/// for each TCP segment and, after the first ARP, sends one UDP datagram
/// from the VM to PEER:9999.
const FAKE_VM: &str = r#"
import fcntl, os, select, struct, sys, time
tap, vm_ip, vm_mac, peer = sys.argv[1], bytes(map(int, sys.argv[2].split('.'))), bytes.fromhex(sys.argv[3].replace(':', '')), bytes(map(int, sys.argv[4].split('.')))
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', tap.encode(), 0x0002 | 0x1000))
print('ready', flush=True)
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
sent = False
deadline = time.time() + 60
while time.time() < deadline:
    if not select.select([fd], [], [], 0.5)[0]:
        continue
    f = os.read(fd, 65536)
    if f[12:14] == b'\x08\x06' and f[20:22] == b'\x00\x01' and f[38:42] == vm_ip:
        gw_mac = f[6:12]
        os.write(fd, gw_mac + vm_mac + b'\x08\x06\x00\x01\x08\x00\x06\x04\x00\x02' + vm_mac + vm_ip + f[22:32])
        if not sent:
            sent = True
            payload = b'from-vm'
            udp = struct.pack('!HHHH', 4444, 9999, 8 + len(payload), 0) + payload
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, vm_ip, peer)
            ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
            os.write(fd, gw_mac + vm_mac + b'\x08\x00' + ip + udp)
    elif f[12:14] == b'\x08\x00' and f[23] == 6:
        ihl = (f[14] & 15) * 4
        dport = struct.unpack('!H', f[14 + ihl + 2:14 + ihl + 4])[0]
        print('tcp %s %s %d' % ('.'.join(map(str, f[26:30])), '.'.join(map(str, f[30:34])), dport), flush=True)
"#;

/// A child process whose stdout is read line by line; killed on drop.
struct Proc {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Proc {
    fn python_in(ns: &str, script: &str, args: &[&str]) -> Proc {
        use std::io::BufRead;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-u", "-c", script])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Proc { child, lines }
    }

    /// The next line (empty at end of output).
    fn line(&mut self) -> String {
        self.lines
            .next()
            .map(|l| l.unwrap().trim().to_string())
            .unwrap_or_default()
    }

    /// Ends the process and returns the lines it had not been asked for.
    fn rest(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        rest
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection attempt from namespace `ns`; prints what the server sent.
fn connect_from(ns: &str, ip: &str, port: u16, timeout_s: u32) -> Proc {
    let script = format!(
        "import socket\ntry:\n s = socket.create_connection(('{ip}', {port}), timeout={timeout_s}); print('got', s.recv(100).decode())\nexcept OSError as e:\n print('error', e)"
    );
    Proc::python_in(ns, &script, &[])
}

/// Whether python3 (the fake VM on the tap) is here; records the skip otherwise.
fn python_available() -> bool {
    dozlab_testkit::have_tool!("python3")
}

const UDP_LISTENER: &str = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(60); s.bind(('0.0.0.0', 9999)); print('ready', flush=True); d, a = s.recvfrom(100); print(a[0], d.decode(), flush=True)";

fn terminal_listener() -> String {
    format!(
        "import socket; s = socket.socket(); s.settimeout(60); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{POD_IP}', 8081)); s.listen(); print('ready', flush=True); c, a = s.accept(); c.sendall(b'terminal'); c.close()"
    )
}

#[test]
fn root_traffic_only_listed_ports_reach_the_vm_and_the_vm_is_masqueraded() {
    if !can_run() || !python_available() {
        return;
    }
    let lab = Lab::new();
    lab.setup_ok(&["--forward-port", "22", "--forward-port", "2222:2200"]);
    let mut vm = Proc::python_in(
        &lab.net.pod,
        FAKE_VM,
        &["tap0", "172.16.0.2", "06:00:ac:10:00:02", PEER_IP],
    );
    assert_eq!(vm.line(), "ready");
    let mut udp = Proc::python_in(&lab.net.peer, UDP_LISTENER, &[]);
    assert_eq!(udp.line(), "ready");
    let mut terminal = Proc::python_in(&lab.net.pod, &terminal_listener(), &[]);
    assert_eq!(terminal.line(), "ready");

    // Port 22 on the pod IP arrives at the VM, with the peer's address intact.
    let _c22 = connect_from(&lab.net.peer, POD_IP, 22, 30);
    assert_eq!(vm.line(), format!("tcp {PEER_IP} 172.16.0.2 22"));
    // The VM's own traffic leaves with the pod's address.
    assert_eq!(udp.line(), format!("{POD_IP} from-vm"));
    // 2222 is mapped to the VM's 2200.
    let _c2222 = connect_from(&lab.net.peer, POD_IP, 2222, 30);
    let mut line = vm.line();
    while line.ends_with(" 22") {
        line = vm.line(); // a retransmitted SYN of the first attempt
    }
    assert_eq!(line, format!("tcp {PEER_IP} 172.16.0.2 2200"));
    // The terminal on 8081 is answered by the pod itself, not hijacked.
    let mut c8081 = connect_from(&lab.net.peer, POD_IP, 8081, 30);
    assert_eq!(c8081.line(), "got terminal");
    // 2375 is not forwarded: nothing listens in the pod, so the pod refuses it.
    let mut c2375 = connect_from(&lab.net.peer, POD_IP, 2375, 30);
    let refused = c2375.line();
    assert!(refused.contains("Connection refused"), "{refused}");
    // A process in the pod reaching its own pod IP on 22 gets the VM too.
    let _local = connect_from(&lab.net.pod, POD_IP, 22, 30);
    let mut line = vm.line();
    while line.starts_with(&format!("tcp {PEER_IP} ")) {
        line = vm.line();
    }
    assert_eq!(line, format!("tcp {POD_IP} 172.16.0.2 22"));
    // A neighbour routing the VM subnet via the pod cannot reach other VM ports.
    sh(&[
        "ip",
        "-n",
        &lab.net.peer,
        "route",
        "add",
        "172.16.0.0/24",
        "via",
        POD_IP,
    ]);
    let mut direct = connect_from(&lab.net.peer, "172.16.0.2", 2375, 2);
    let blocked = direct.line();
    assert!(blocked.starts_with("error"), "{blocked}");
    let rest = vm.rest();
    assert!(
        rest.iter()
            .all(|l| l.ends_with(" 22") || l.ends_with(" 2200")),
        "unexpected traffic reached the VM: {rest:?}"
    );
}

#[test]
fn root_without_a_default_route_the_first_addressed_interface_is_the_uplink() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    sh(&["ip", "-n", &lab.net.pod, "route", "del", "default"]);
    let out = lab.setup_ok(&["--forward-port", "none"]);
    assert!(
        stderr(&out).contains("no IPv4 default route; using eth0"),
        "{}",
        stderr(&out)
    );
    let cfg = std::fs::read_to_string(lab.config_path()).unwrap();
    assert!(
        cfg.contains("UPLINK=eth0\n") && cfg.contains("FORWARD_PORTS=\n"),
        "{cfg}"
    );
    let table = lab.table().unwrap();
    assert!(dnats(&table, "prerouting").is_empty());
    assert!(dnats(&table, "output").is_empty());
}

#[test]
fn root_a_namespace_without_any_uplink_is_refused() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    sh(&["ip", "-n", &lab.net.pod, "link", "del", "eth0"]);
    let before = lab.state();
    let out = lab.setup(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no uplink found"), "{}", stderr(&out));
    assert_eq!(lab.state(), before);
}

#[test]
fn root_the_original_environment_variables_are_honoured() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let out = lab.setup_with_env(
        &[],
        &[
            ("TAP_DEVICE_NAME", "vmtap7"),
            ("GATEWAY_IP", "192.168.77.1"),
            ("VM_IP", "192.168.77.9"),
            ("PREFIX_LEN", "28"),
            ("UPLINK", "eth0"),
            ("POD_IP", POD_IP),
            ("FORWARD_PORTS", "2201:22"),
            ("TAP_OWNER", "1234"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = std::fs::read_to_string(lab.config_path()).unwrap();
    assert_eq!(
        cfg,
        format!(
            "GATEWAY_IP=192.168.77.1\nVM_IP=192.168.77.9\nPOD_IP={POD_IP}\nTAP_DEVICE=vmtap7\nPREFIX_LEN=28\nVM_MAC=06:00:c0:a8:4d:09\nUPLINK=eth0\nFORWARD_PORTS=2201:22\n"
        )
    );
    let addrs = lab.json(&["addr", "show", "dev", "vmtap7"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], "192.168.77.1");
    assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 28);
    assert_eq!(lab.tun_links()[0]["linkinfo"]["info_data"]["user"], 1234);
    let table = lab.table().unwrap();
    assert_eq!(
        dnats(&table, "prerouting"),
        vec![(2201, "192.168.77.9".into(), 22)]
    );
}
