//! Snapshots for real (QEMU/TCG, the `vm` test image, one network namespace
//! playing the pod, sessions one after another as in one pod):
//!
//! 1. session A boots cold with `--snapshot auto` and saves a snapshot when
//!    ready (the entry is in the cache);
//! 2. sessions B and C are restored from it: each is ready with its own
//!    host key (A's key is refused), machine-id and `/dev/urandom` output,
//!    the guest clock within a second of the host's, and TCP to the VM
//!    (SSH, Docker on 2375) works at once;
//! 3. a damaged memory file (same size) and a truncated disk are never
//!    restored: the session boots cold, says why, and the entry is removed;
//! 4. a cache without room for a snapshot: the session still starts and
//!    nothing half-written is left.
//!
//! Every process is killed by process group and the namespaces deleted by
//! the `Pod` guard, even on failure.

use super::e2e::{Pod, VM_IP, status_of};
use super::{BIN, sh, test_image, text};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// One session's paths inside the pod's directory.
struct Session {
    name: String,
    state: PathBuf,
    key: PathBuf,
    known_hosts: PathBuf,
    sup: u32,
    child: usize,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Copies the image (and its manifest) for session `name` and starts
/// `vm run --snapshot auto` on it; waits until ready.
fn start(pod: &mut Pod, image: &Path, cache: &Path, name: &str) -> Session {
    let dir = pod.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    let rootfs = dir.join("rootfs.ext4");
    sh(&[
        "cp",
        "--sparse=always",
        image.join("rootfs.ext4").to_str().unwrap(),
        rootfs.to_str().unwrap(),
    ]);
    std::fs::copy(image.join("manifest.json"), dir.join("manifest.json")).unwrap();
    let s = Session {
        name: name.into(),
        state: dir.join("state"),
        key: dir.join("key"),
        known_hosts: dir.join("known_hosts"),
        sup: 0,
        child: pod.children.len(),
    };
    let cfg = pod.path("shared/network-config");
    let mut args: Vec<String> = [
        BIN,
        "vm",
        "run",
        "--vmm",
        "qemu",
        "--accel",
        "tcg",
        "--cpus",
        "2",
        "--memory",
        "1024",
        "--snapshot",
        "auto",
        "--session-id",
        name,
    ]
    .map(String::from)
    .into();
    for (flag, path) in [
        ("--rootfs", &rootfs),
        ("--network-config", &cfg),
        ("--state-dir", &s.state),
        ("--ssh-key-out", &s.key),
        ("--known-hosts-out", &s.known_hosts),
        ("--console-log", &dir.join("console.log")),
        ("--snapshot-cache", &cache.to_path_buf()),
    ] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let ns = pod.net.pod.clone();
    let sup = pod.spawn(&ns, &argv, &format!("{name}.log"));
    wait_ready_named(pod, &s.state, name);
    Session { sup, ..s }
}

fn wait_ready_named(pod: &mut Pod, state: &Path, name: &str) {
    // wait_ready reads "vm-run.log" on failure; keep our log name in the message.
    let log = pod.path(&format!("{name}.log"));
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        if status_of(state).status.success() {
            return;
        }
        let exited = pod.children.last_mut().unwrap().try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < limit,
            "session {name} did not get ready ({exited:?}):\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `ssh` as the session (its key, the given known_hosts).
fn ssh(pod: &Pod, s: &Session, known_hosts: &Path, cmd: &str) -> std::process::Output {
    let kh = format!("UserKnownHostsFile={}", known_hosts.display());
    pod.exec(
        &pod.net.pod,
        &[
            "ssh",
            "-i",
            s.key.to_str().unwrap(),
            "-o",
            &kh,
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            &format!("root@{VM_IP}"),
            cmd,
        ],
    )
}

/// What a running session shows: machine-id, 32 random bytes, clock offset.
struct Seen {
    machine_id: String,
    random: String,
    clock_ok: bool,
    clock: String,
}

fn look(pod: &Pod, s: &Session) -> Seen {
    let before = now();
    let out = ssh(
        pod,
        s,
        &s.known_hosts,
        "cat /etc/machine-id; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s.%N",
    );
    let after = now();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let l: Vec<&str> = stdout.lines().collect();
    assert_eq!(l.len(), 3, "session {}: {}", s.name, text(&out));
    let guest: f64 = l[2].parse().unwrap();
    Seen {
        machine_id: l[0].into(),
        random: l[1].into(),
        clock_ok: guest > before - 1.0 && guest < after + 1.0,
        clock: format!("guest {guest:.3}, host {before:.3}..{after:.3}"),
    }
}

/// TCP to the VM right after ready: SSH and Docker's API.
fn reach(pod: &Pod, s: &Session) {
    let out = ssh(pod, s, &s.known_hosts, "echo up");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "up",
        "{}",
        text(&out)
    );
    let out = pod.exec(
        &pod.net.pod,
        &[
            "curl",
            "-s",
            "--max-time",
            "10",
            &format!("http://{VM_IP}:2375/_ping"),
        ],
    );
    assert_eq!(text(&out), "OK", "docker ping in session {}", s.name);
}

fn stop(pod: &mut Pod, s: &Session) {
    let code = pod.terminate(s.child, s.sup);
    assert_eq!(code, Some(0), "{}", log(pod, s));
}

fn log(pod: &Pod, s: &Session) -> String {
    pod.log(&format!("{}.log", s.name))
}

/// The cache's entries (directories not starting with a dot) and leftovers.
fn entries(cache: &Path) -> (Vec<String>, Vec<String>) {
    let mut good = Vec::new();
    let mut hidden = Vec::new();
    for e in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') {
            hidden.push(n);
        } else {
            good.push(n);
        }
    }
    (good, hidden)
}

#[test]
fn e2e_snapshot_save_restore_rekey_and_damaged_entries_root() {
    dozlab_testkit::require_root!("the snapshot test boots VMs in a network namespace");
    for tool in ["ip", "nft", "qemu-system-x86_64", "ssh", "curl", "mount"] {
        dozlab_testkit::require_tool!(tool);
    }
    let Some(image) = test_image("vm") else {
        return;
    };
    let mut pod = Pod::new();
    pod.network_setup();
    let cache = pod.path("cache");

    // 1. Cold boot, snapshot saved.
    let a = start(&mut pod, &image, &cache, "a");
    let la = log(&pod, &a);
    assert!(la.contains("no snapshot of this VM yet"), "{la}");
    assert!(la.contains("saved snapshot"), "{la}");
    let (keys, hidden) = entries(&cache);
    assert_eq!((keys.len(), hidden.len()), (1, 0), "{keys:?} {hidden:?}");
    let key = keys[0].clone();
    reach(&pod, &a);
    let seen_a = look(&pod, &a);
    assert!(
        seen_a.clock_ok,
        "session a (after the pause): {}",
        seen_a.clock
    );
    stop(&mut pod, &a);

    // `dozlab snapshot ls` shows it.
    let out = Command::new(BIN)
        .args(["snapshot", "ls", "--cache", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out).contains(&key) && text(&out).contains(" ok"),
        "{}",
        text(&out)
    );

    // 2. Two sessions restored from it.
    let mut seen = Vec::new();
    let mut hosts = Vec::new();
    for name in ["b", "c"] {
        let s = start(&mut pod, &image, &cache, name);
        reach(&pod, &s);
        let l = log(&pod, &s);
        assert!(
            l.contains(&format!("restored from snapshot {key}")),
            "session {name} was not restored:\n{l}"
        );
        // The snapshot's host key (session a's) is refused.
        let out = ssh(&pod, &s, &a.known_hosts, "true");
        assert!(
            !out.status.success() && text(&out).contains("Host key verification failed"),
            "session {name} still has a's host key: {}",
            text(&out)
        );
        let v = look(&pod, &s);
        assert!(v.clock_ok, "session {name}: {}", v.clock);
        assert!(
            text(&status_of(&s.state)).contains("restored from snapshot"),
            "status"
        );
        hosts.push(std::fs::read_to_string(&s.known_hosts).unwrap());
        seen.push(v);
        stop(&mut pod, &s);
    }
    assert_ne!(hosts[0], hosts[1], "host keys");
    for v in &seen {
        assert_ne!(v.machine_id, seen_a.machine_id);
        assert_ne!(v.random, seen_a.random);
    }
    assert_ne!(seen[0].machine_id, seen[1].machine_id, "machine-ids");
    assert_ne!(seen[0].random, seen[1].random, "/dev/urandom");
    assert_eq!(seen[0].machine_id.len(), 32);

    // 3a. A damaged memory file (same size): cold boot, reason, entry removed
    // (and a new one saved by that cold boot).
    let mem = cache.join(&key).join("memory.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&mem).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"DAMAGED!", 1 << 20).unwrap();
    drop(f);
    let d = start(&mut pod, &image, &cache, "d");
    let l = log(&pod, &d);
    assert!(
        l.contains(&format!("snapshot {key} cannot be used"))
            && l.contains("memory.bin does not match its digest"),
        "{l}"
    );
    assert!(l.contains("saved snapshot"), "{l}");
    assert!(!l.contains("restored from snapshot"), "{l}");
    reach(&pod, &d);
    stop(&mut pod, &d);

    // 3b. A truncated disk: refused before anything starts, entry removed.
    let disk = cache.join(&key).join("disk.raw");
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    drop(f);
    let e = start(&mut pod, &image, &cache, "e");
    let l = log(&pod, &e);
    assert!(
        l.contains(&format!("snapshot {key} cannot be used")) && l.contains("truncated"),
        "{l}"
    );
    reach(&pod, &e);
    stop(&mut pod, &e);

    // 4. A cache with no room: the session starts, nothing is left half-written.
    let small = pod.path("small-cache");
    std::fs::create_dir_all(&small).unwrap();
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=32m",
        "tmpfs",
        small.to_str().unwrap(),
    ]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).output();
        }
    }
    let _unmount = Unmount(small.clone());
    let f = start(&mut pod, &image, &small, "f");
    let l = log(&pod, &f);
    assert!(l.contains("could not save a snapshot"), "{l}");
    reach(&pod, &f);
    let (keys, hidden) = entries(&small);
    assert!(keys.is_empty() && hidden.is_empty(), "{keys:?} {hidden:?}");
    stop(&mut pod, &f);
}
