//! The end-to-end boot (see the top of `vm.rs`). One TCG boot of the `vm`
//! test image; about a minute on the project's machines.

use super::common::podnet::PodNet;
use super::{BIN, sh, test_image, text};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(super) const POD_IP: &str = "10.203.0.2";
pub(super) const PEER_IP: &str = "10.203.0.1";
pub(super) const VM_IP: &str = "172.16.0.2";

/// Pod and peer namespaces, plus processes started in them; all removed on drop.
pub(super) struct Pod {
    pub(super) net: PodNet,
    dir: tempfile::TempDir,
    pub(super) children: Vec<Child>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for c in &mut self.children {
            // Each child leads its own process group (process_group(0)).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .output();
            let _ = c.wait();
        }
        // `net` drops after this, deleting the namespaces.
    }
}

impl Pod {
    pub(super) fn new() -> Pod {
        // One name per pod, not per process: the e2e and microvm tests of
        // this binary run side by side (--test-threads=2).
        static PODS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PODS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("dzvm-{}-{n}", std::process::id());
        Pod {
            net: PodNet::new(&id, POD_IP, PEER_IP),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ip netns exec NS ARGS`.
    pub(super) fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `dozlab network-setup` in the pod's namespace, as the chart's
    /// init container does; returns the network config it wrote.
    pub(super) fn network_setup(&self) -> PathBuf {
        let cfg = self.path("shared/network-config");
        let out = self.exec(
            &self.net.pod,
            &[BIN, "network-setup", "--config-out", cfg.to_str().unwrap()],
        );
        assert!(out.status.success(), "network-setup: {}", text(&out));
        cfg
    }

    /// Starts a long-running process in NS in its own process group.
    pub(super) fn spawn(&mut self, ns: &str, args: &[&str], log: &str) -> u32 {
        let out = std::fs::File::create(self.path(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub(super) fn ssh(&self, ns: &str, target: &str, known_hosts: &Path, cmd: &str) -> Output {
        let key = self.path("shared/vm-ssh-key");
        let kh = format!("UserKnownHostsFile={}", known_hosts.display());
        self.exec(
            ns,
            &[
                "ssh",
                "-i",
                key.to_str().unwrap(),
                "-o",
                &kh,
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                &format!("HostKeyAlias={VM_IP}"),
                "-o",
                "ConnectTimeout=10",
                &format!("root@{target}"),
                cmd,
            ],
        )
    }

    /// Sends SIGTERM to `vm run` (pid `sup`, the pod's child number `child`)
    /// and waits up to two minutes for its exit code.
    pub(super) fn terminate(&mut self, child: usize, sup: u32) -> Option<i32> {
        sh(&["kill", "-TERM", &sup.to_string()]);
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(st) = self.children[child].try_wait().unwrap() {
                return st.code();
            }
            assert!(
                Instant::now() < limit,
                "vm run ignored SIGTERM:\n{}",
                self.log("vm-run.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(super) fn log(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

pub(super) fn status_of(state: &Path) -> Output {
    Command::new(BIN)
        .args(["vm", "status", "--state-dir"])
        .arg(state)
        .output()
        .unwrap()
}

/// Waits (bounded) until the supervisor (the last child) reports ready or exits.
pub(super) fn wait_ready(pod: &mut Pod, state: &Path) {
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        if status_of(state).status.success() {
            return;
        }
        // The supervisor is the last process the test started.
        let exited = pod.children.last_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < limit,
            "vm run did not get ready ({exited:?}):\n{}",
            pod.log("vm-run.log")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn e2e_boot_ssh_docker_forward_and_clean_stop_root() {
    let tools = [
        "ip",
        "nft",
        "qemu-system-x86_64",
        "ssh",
        "curl",
        "debugfs",
        "e2fsck",
        "python3",
    ];
    dozlab_testkit::require_root!("the end-to-end VM test needs root");
    for tool in tools {
        dozlab_testkit::require_tool!(tool);
    }
    let Some(image) = test_image("vm") else {
        return;
    };
    let mut pod = Pod::new();
    let (p, q) = (pod.net.pod.clone(), pod.net.peer.clone());
    let cfg = pod.network_setup();

    let rootfs = pod.path("rootfs.ext4");
    sh(&[
        "cp",
        "--sparse=always",
        image.join("rootfs.ext4").to_str().unwrap(),
        rootfs.to_str().unwrap(),
    ]);

    // A listener on the pod's 8081 (the terminal's port) must stay the pod's.
    let server = "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('0.0.0.0',8081));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(b'pod-8081\\n');c.close()";
    pod.spawn(&p, &["python3", "-c", server], "pod-8081.log");

    let state = pod.path("state");
    let sup = pod.spawn(
        &p,
        &[
            BIN,
            "vm",
            "run",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--vmm",
            "qemu",
            "--accel",
            "tcg",
            "--cpus",
            "2",
            "--memory",
            "1024",
            "--session-id",
            "e2e",
            "--network-config",
            cfg.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--ssh-key-out",
            pod.path("shared/vm-ssh-key").to_str().unwrap(),
            "--known-hosts-out",
            pod.path("shared/known_hosts").to_str().unwrap(),
            "--console-log",
            pod.path("console.log").to_str().unwrap(),
            "--status-listen",
            "127.0.0.1:8082",
        ],
        "vm-run.log",
    );
    wait_ready(&mut pod, &state);
    let run_log = pod.log("vm-run.log");
    assert!(
        run_log.contains("QEMU with TCG"),
        "accelerator not announced:\n{run_log}"
    );
    let readyz = pod.exec(
        &p,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:8082/readyz",
        ],
    );
    assert_eq!(text(&readyz), "200");

    // SSH with the written key, host key verified against the written known_hosts.
    let kh = pod.path("shared/known_hosts");
    let kh_text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        kh_text.starts_with(&format!("{VM_IP} ssh-ed25519 AAAA")),
        "{kh_text}"
    );
    let out = pod.ssh(
        &p,
        VM_IP,
        &kh,
        "echo written-by-e2e > /root/e2e-file && sync && cat /root/e2e-file",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written-by-e2e",
        "{}",
        text(&out)
    );

    // A known_hosts with another key is refused: the host key really is checked.
    let other = pod.path("other_known_hosts");
    sh(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        pod.path("otherkey").to_str().unwrap(),
    ]);
    let other_pub = std::fs::read_to_string(pod.path("otherkey.pub")).unwrap();
    std::fs::write(&other, format!("{VM_IP} {other_pub}")).unwrap();
    let out = pod.ssh(&p, VM_IP, &other, "true");
    assert!(
        !out.status.success() && text(&out).contains("Host key verification failed"),
        "{}",
        text(&out)
    );

    // The guest's Docker API answers from inside the pod.
    let out = pod.exec(
        &p,
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            &format!("http://{VM_IP}:2375/version"),
        ],
    );
    assert!(
        text(&out).contains("\"ApiVersion\""),
        "docker version: {}",
        text(&out)
    );

    // From outside the pod: 22 on the pod IP is the VM, 8081 is still the pod's.
    let out = pod.ssh(&q, POD_IP, &kh, "cat /root/e2e-file");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "written-by-e2e",
        "{}",
        text(&out)
    );
    let out = pod.exec(
        &q,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "--http0.9",
            &format!("http://{POD_IP}:8081/"),
        ],
    );
    assert_eq!(text(&out).trim(), "pod-8081");

    // SIGTERM: clean guest shutdown, exit 0, status stopped.
    let code = pod.terminate(1, sup);
    assert_eq!(code, Some(0), "{}", pod.log("vm-run.log"));
    assert!(pod.log("vm-run.log").contains("the VM shut down cleanly"));
    let st = status_of(&state);
    assert_eq!(st.status.code(), Some(1));
    assert!(text(&st).contains("phase:       stopped"), "{}", text(&st));

    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "fsck: {}", text(&fsck));
    let cat = sh(&[
        "debugfs",
        "-R",
        "cat /root/e2e-file",
        rootfs.to_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim(),
        "written-by-e2e"
    );
    assert!(pod.log("console.log").contains("reboot: Power down"));
}
