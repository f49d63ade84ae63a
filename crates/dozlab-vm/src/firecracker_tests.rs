//! Tests of the Firecracker backend against a stand-in API server on a Unix
//! socket. Firecracker itself cannot run here (no registry ships it and KVM
//! only boots paravirtual guests), so the server enforces the documented API
//! instead: the schemas below are transcribed from
//! `src/firecracker/swagger/firecracker.yaml` (BootSource, Drive,
//! MachineConfiguration, NetworkInterface, InstanceActionInfo), including
//! Firecracker's refusal of unknown fields and of `InstanceStart` before a
//! kernel and a root drive are configured, and the snapshot rules
//! (SnapshotCreateParams, SnapshotLoadParams, Vm): a snapshot only of a
//! paused VM, a load only into a Firecracker with nothing configured.

use super::*;
use http_body_util::BodyExt;
use std::sync::{Arc, Mutex};
use tokio::net::UnixListener;

/// (property, type) pairs; type is "string", "boolean", "integer", or an
/// enum as "enum:A|B|C"; `object` properties are accepted as objects.
struct Schema {
    required: &'static [&'static str],
    props: &'static [(&'static str, &'static str)],
}

const BOOT_SOURCE: Schema = Schema {
    required: &["kernel_image_path"],
    props: &[
        ("boot_args", "string"),
        ("initrd_path", "string"),
        ("kernel_image_path", "string"),
    ],
};
const DRIVE: Schema = Schema {
    required: &["drive_id", "is_root_device"],
    props: &[
        ("drive_id", "string"),
        ("partuuid", "string"),
        ("is_root_device", "boolean"),
        ("cache_type", "enum:Unsafe|Writeback"),
        ("is_read_only", "boolean"),
        ("path_on_host", "string"),
        ("rate_limiter", "object"),
        ("io_engine", "enum:Sync|Async"),
        ("socket", "string"),
    ],
};
const MACHINE_CONFIG: Schema = Schema {
    required: &["mem_size_mib", "vcpu_count"],
    props: &[
        ("cpu_template", "string"),
        ("smt", "boolean"),
        ("mem_size_mib", "integer"),
        ("track_dirty_pages", "boolean"),
        ("vcpu_count", "integer"),
        ("huge_pages", "enum:None|Transparent|2M"),
    ],
};
const NETWORK_INTERFACE: Schema = Schema {
    required: &["host_dev_name", "iface_id"],
    props: &[
        ("guest_mac", "string"),
        ("host_dev_name", "string"),
        ("iface_id", "string"),
        ("mtu", "integer"),
        ("rx_rate_limiter", "object"),
        ("tx_rate_limiter", "object"),
    ],
};
const ACTION: Schema = Schema {
    required: &["action_type"],
    props: &[(
        "action_type",
        "enum:FlushMetrics|InstanceStart|SendCtrlAltDel",
    )],
};

const VM_STATE: Schema = Schema {
    required: &["state"],
    props: &[("state", "enum:Paused|Resumed")],
};
const SNAPSHOT_CREATE: Schema = Schema {
    required: &["mem_file_path", "snapshot_path"],
    props: &[
        ("mem_file_path", "string"),
        ("snapshot_path", "string"),
        ("snapshot_type", "enum:Full|Diff"),
    ],
};
const SNAPSHOT_LOAD: Schema = Schema {
    required: &["snapshot_path"],
    props: &[
        ("enable_diff_snapshots", "boolean"),
        ("track_dirty_pages", "boolean"),
        ("mem_file_path", "string"),
        ("mem_backend", "object"),
        ("snapshot_path", "string"),
        ("resume_vm", "boolean"),
        ("network_overrides", "array"),
    ],
};
const MEM_BACKEND: Schema = Schema {
    required: &["backend_type", "backend_path"],
    props: &[
        ("backend_type", "enum:File|Uffd"),
        ("backend_path", "string"),
    ],
};

fn check(schema: &Schema, body: &Value) -> Result<(), String> {
    let obj = body.as_object().ok_or("body is not a JSON object")?;
    for r in schema.required {
        if !obj.contains_key(*r) {
            return Err(format!("missing required field `{r}`"));
        }
    }
    for (k, v) in obj {
        let (_, ty) = schema
            .props
            .iter()
            .find(|(p, _)| p == k)
            .ok_or_else(|| format!("unknown field `{k}`"))?;
        let ok = match *ty {
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => v.is_u64(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            e => v
                .as_str()
                .is_some_and(|s| e.trim_start_matches("enum:").split('|').any(|x| x == s)),
        };
        if !ok {
            return Err(format!("field `{k}` has the wrong type or value: {v}"));
        }
    }
    Ok(())
}

/// What the stand-in server remembers.
#[derive(Default)]
struct FakeVmm {
    log: Vec<(String, String, Value)>,
    kernel: bool,
    root: bool,
    started: bool,
    paused: bool,
    /// Anything configured (a snapshot load must come first).
    configured: bool,
    /// Refuse this path with 400.
    fail_on: Option<String>,
}

impl FakeVmm {
    fn handle(&mut self, method: &str, path: &str, body: Value) -> Result<(), String> {
        self.log.push((method.into(), path.into(), body.clone()));
        if self.fail_on.as_deref() == Some(path) {
            return Err("injected fault".into());
        }
        if method == "PATCH" && path == "/vm" {
            check(&VM_STATE, &body)?;
            if !self.started {
                return Err("The microVM is not running.".into());
            }
            self.paused = body["state"] == "Paused";
            return Ok(());
        }
        if method != "PUT" {
            return Err(format!("{method} is not used by this client"));
        }
        if path == "/snapshot/create" {
            check(&SNAPSHOT_CREATE, &body)?;
            if !(self.started && self.paused) {
                return Err("Cannot create a snapshot of a microVM that is not paused.".into());
            }
            return Ok(());
        }
        if path == "/snapshot/load" {
            check(&SNAPSHOT_LOAD, &body)?;
            match (&body.get("mem_backend"), &body.get("mem_file_path")) {
                (Some(b), None) => check(&MEM_BACKEND, b)?,
                (None, Some(_)) => {}
                _ => return Err("give exactly one of mem_backend and mem_file_path".into()),
            }
            if self.configured || self.started {
                return Err("Loading a microVM snapshot not allowed after configuring boot-specific resources.".into());
            }
            self.started = true;
            self.kernel = true;
            self.root = true;
            self.paused = body["resume_vm"] != true;
            return Ok(());
        }
        self.configured = true;
        let pre_boot = |s: &Self| -> Result<(), String> {
            if s.started {
                Err("The requested operation is not supported after starting the microVM.".into())
            } else {
                Ok(())
            }
        };
        match path.split('/').collect::<Vec<_>>()[1..] {
            ["boot-source"] => {
                pre_boot(self)?;
                check(&BOOT_SOURCE, &body)?;
                self.kernel = true;
            }
            ["drives", id] => {
                pre_boot(self)?;
                check(&DRIVE, &body)?;
                if body["drive_id"] != id {
                    return Err("drive_id differs from the path".into());
                }
                self.root |= body["is_root_device"] == true;
            }
            ["machine-config"] => {
                pre_boot(self)?;
                check(&MACHINE_CONFIG, &body)?;
                let n = body["vcpu_count"].as_u64().unwrap_or(0);
                if !(1..=32).contains(&n) {
                    return Err("vcpu_count must be 1-32".into());
                }
            }
            ["network-interfaces", id] => {
                pre_boot(self)?;
                check(&NETWORK_INTERFACE, &body)?;
                if body["iface_id"] != id {
                    return Err("iface_id differs from the path".into());
                }
            }
            ["actions"] => {
                check(&ACTION, &body)?;
                match body["action_type"].as_str() {
                    Some("InstanceStart") if !(self.kernel && self.root) => {
                        return Err("Cannot start microvm without kernel configuration.".into());
                    }
                    Some("InstanceStart") => self.started = true,
                    Some("SendCtrlAltDel") if !self.started => {
                        return Err("not started".into());
                    }
                    _ => {}
                }
            }
            _ => return Err(format!("no such resource {path}")),
        }
        Ok(())
    }
}

/// Serves the fake API on `sock` until the test ends.
fn serve(sock: &Path, vmm: Arc<Mutex<FakeVmm>>) {
    let listener = UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let vmm = vmm.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let vmm = vmm.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let json = req.headers().get("content-type").map(|v| v.as_bytes())
                                == Some(b"application/json");
                            let bytes = req.into_body().collect().await?.to_bytes();
                            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let result = if json {
                                vmm.lock().unwrap().handle(&method, &path, body)
                            } else {
                                Err("content-type must be application/json".into())
                            };
                            let resp = match result {
                                Ok(()) => hyper::Response::builder()
                                    .status(204)
                                    .body(Full::new(Bytes::new())),
                                Err(fault) => {
                                    hyper::Response::builder().status(400).body(Full::new(
                                        Bytes::from(json!({ "fault_message": fault }).to_string()),
                                    ))
                                }
                            };
                            Ok::<_, hyper::Error>(resp.unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

fn plan(dir: &Path) -> FcPlan {
    FcPlan {
        bin: "/usr/bin/firecracker".into(),
        jailer: None,
        session_id: "s1".into(),
        api_socket: dir.join("fc.sock"),
        vmlinux: "/state/vmlinux".into(),
        initrd: Some("/state/initrd.img".into()),
        cmdline: "console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw".into(),
        rootfs: "/srv/vm/kernels/rootfs.ext4".into(),
        cpus: 2,
        memory_mib: 2048,
        tap: "tap0".into(),
        mac: "06:00:ac:10:00:02".into(),
    }
}

#[tokio::test]
async fn the_request_sequence_satisfies_the_documented_api() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(t.path());
    let vmm = Arc::new(Mutex::new(FakeVmm::default()));
    serve(&p.api_socket, vmm.clone());
    wait_socket(&p.api_socket, Duration::from_secs(5))
        .await
        .unwrap();
    configure_and_start(&p.api_socket, &p).await.unwrap();
    ctrl_alt_del(&p.api_socket).await.unwrap();

    let v = vmm.lock().unwrap();
    let paths: Vec<_> = v.log.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(
        paths,
        [
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /machine-config",
            "PUT /network-interfaces/eth0",
            "PUT /actions",
            "PUT /actions"
        ]
    );
    assert!(v.started);
    assert_eq!(v.log[0].2["initrd_path"], "/state/initrd.img");
    assert_eq!(v.log[1].2["path_on_host"], "/srv/vm/kernels/rootfs.ext4");
    assert_eq!(v.log[3].2["host_dev_name"], "tap0");
    assert_eq!(v.log[5].2["action_type"], "SendCtrlAltDel");
}

#[tokio::test]
async fn a_refusal_carries_firecrackers_fault_message() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(t.path());
    let vmm = Arc::new(Mutex::new(FakeVmm {
        fail_on: Some("/machine-config".into()),
        ..Default::default()
    }));
    serve(&p.api_socket, vmm.clone());
    let e = configure_and_start(&p.api_socket, &p).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("PUT /machine-config (400): injected fault"),
        "{e}"
    );
    assert!(!vmm.lock().unwrap().started, "stopped at the first refusal");
}

#[test]
fn the_fake_server_rejects_what_firecracker_rejects() {
    let mut v = FakeVmm::default();
    let bad_drive = json!({"drive_id": "rootfs", "is_root_device": "yes"});
    assert!(v.handle("PUT", "/drives/rootfs", bad_drive).is_err());
    assert!(
        v.handle("PUT", "/boot-source", json!({"kernel": "x"}))
            .is_err()
    );
    let start = json!({"action_type": "InstanceStart"});
    assert!(v.handle("PUT", "/actions", start).is_err(), "no kernel yet");
    let mc = json!({"vcpu_count": 64, "mem_size_mib": 128});
    assert!(v.handle("PUT", "/machine-config", mc).is_err());
}

#[test]
fn jailed_command_and_paths() {
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path());
    p.jailer = Some(Jailer {
        bin: "/usr/bin/jailer".into(),
        uid: 123,
        gid: 456,
        chroot_base: "/srv/jailer".into(),
    });
    let (prog, args) = p.command();
    let args: Vec<_> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(prog, Path::new("/usr/bin/jailer"));
    assert_eq!(
        args.join(" "),
        "--id s1 --exec-file /usr/bin/firecracker --uid 123 --gid 456 \
         --chroot-base-dir /srv/jailer -- --api-sock /run/firecracker.socket"
    );
    assert_eq!(
        p.host_socket(),
        Path::new("/srv/jailer/firecracker/s1/root/run/firecracker.socket")
    );
    let reqs = p.requests();
    assert_eq!(reqs[0].body["kernel_image_path"], "/vmlinux");
    assert_eq!(reqs[1].body["path_on_host"], "/rootfs.ext4");
}

#[test]
fn prepare_jail_links_files_with_the_jail_owner() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let mut p = plan(t.path());
    for name in ["vmlinux", "rootfs.ext4"] {
        std::fs::write(t.path().join(name), name).unwrap();
    }
    p.vmlinux = t.path().join("vmlinux");
    p.rootfs = t.path().join("rootfs.ext4");
    p.initrd = None;
    p.jailer = Some(Jailer {
        bin: "/usr/bin/jailer".into(),
        uid: 4242,
        gid: 4343,
        chroot_base: t.path().join("jail"),
    });
    p.prepare_jail().unwrap();
    let root = p.jail_root().unwrap();
    let m = std::fs::metadata(root.join("rootfs.ext4")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.nlink()), (4242, 4343, 2));
    assert!(root.join("run").is_dir());
}

#[tokio::test]
async fn snapshot_create_of_a_paused_vm_and_load_into_a_fresh_one() {
    let t = tempfile::tempdir().unwrap();
    let p = plan(t.path());
    let vmm = Arc::new(Mutex::new(FakeVmm::default()));
    serve(&p.api_socket, vmm.clone());
    configure_and_start(&p.api_socket, &p).await.unwrap();
    save_snapshot(&p.api_socket, "/snap/vm.state", "/snap/mem")
        .await
        .unwrap();
    {
        let v = vmm.lock().unwrap();
        let tail: Vec<_> = v.log[5..]
            .iter()
            .map(|(m, p, b)| format!("{m} {p} {b}"))
            .collect();
        assert_eq!(
            tail,
            [
                r#"PATCH /vm {"state":"Paused"}"#,
                r#"PUT /snapshot/create {"mem_file_path":"/snap/mem","snapshot_path":"/snap/vm.state","snapshot_type":"Full"}"#,
                r#"PATCH /vm {"state":"Resumed"}"#,
            ]
        );
        assert!(!v.paused, "running again");
    }
    // A fresh Firecracker: load first, paused; resume after the checks.
    let sock2 = t.path().join("fc2.sock");
    let fresh = Arc::new(Mutex::new(FakeVmm::default()));
    serve(&sock2, fresh.clone());
    load_snapshot(&sock2, "/snap/vm.state", "/snap/mem")
        .await
        .unwrap();
    assert!(fresh.lock().unwrap().paused);
    send(&sock2, &resume()).await.unwrap();
    assert!(!fresh.lock().unwrap().paused);
    // Loading into a configured Firecracker is refused, with its message.
    let sock3 = t.path().join("fc3.sock");
    serve(&sock3, Arc::new(Mutex::new(FakeVmm::default())));
    send(&sock3, &p.requests()[0]).await.unwrap();
    let e = load_snapshot(&sock3, "/snap/vm.state", "/snap/mem")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("not allowed after configuring"),
        "{e}"
    );
}

#[test]
fn the_fake_server_enforces_the_snapshot_rules() {
    let mut v = FakeVmm::default();
    let create = snapshot_create("/s", "/m").body;
    assert!(
        v.handle("PUT", "/snapshot/create", create.clone()).is_err(),
        "not started"
    );
    v.started = true;
    assert!(
        v.handle("PUT", "/snapshot/create", create).is_err(),
        "not paused"
    );
    let mut load = snapshot_load("/s", "/m").body;
    load["mem_file_path"] = json!("/m");
    assert!(
        FakeVmm::default()
            .handle("PUT", "/snapshot/load", load)
            .is_err(),
        "two memory sources"
    );
    assert!(
        v.handle("PATCH", "/vm", json!({"state": "Stopped"}))
            .is_err(),
        "no such state"
    );
}
