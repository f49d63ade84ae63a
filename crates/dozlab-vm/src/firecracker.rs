//! The Firecracker backend: the command line (plain or under the jailer)
//! and the HTTP API over the Unix socket (boot source, root drive, machine
//! config, network interface, then `InstanceStart`; `SendCtrlAltDel` to stop;
//! pause, resume, snapshot create and load).
//!
//! Request bodies follow the public API spec
//! (`src/firecracker/swagger/firecracker.yaml` of firecracker-microvm/firecracker);
//! the tests check them against a server that enforces that spec.

use crate::config::Jailer;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// Socket path inside the jail (the jailer chroots Firecracker).
const JAILED_SOCKET: &str = "run/firecracker.socket";

/// Why talking to Firecracker failed.
#[derive(Debug, thiserror::Error)]
pub enum FcError {
    #[error("Firecracker's API socket {0} did not appear")]
    NoSocket(PathBuf),
    #[error("cannot reach Firecracker's API at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP error talking to Firecracker")]
    Http(#[from] hyper::Error),
    #[error("Firecracker refused {method} {path} ({status}): {fault}")]
    Refused {
        method: &'static str,
        path: String,
        status: u16,
        fault: String,
    },
    #[error("cannot prepare the jail at {path}")]
    Jail {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

fn put(path: &str, body: Value) -> ApiRequest {
    ApiRequest {
        method: "PUT",
        path: path.into(),
        body,
    }
}

/// Everything one Firecracker boot needs (host paths).
#[derive(Debug, Clone)]
pub struct FcPlan {
    pub bin: PathBuf,
    pub jailer: Option<Jailer>,
    pub session_id: String,
    /// Where the API socket is created when not jailed.
    pub api_socket: PathBuf,
    /// Uncompressed ELF kernel.
    pub vmlinux: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub rootfs: PathBuf,
    pub cpus: u32,
    pub memory_mib: u32,
    pub tap: String,
    pub mac: String,
}

impl FcPlan {
    /// The jail's root directory: `<base>/<exec name>/<id>/root`.
    pub fn jail_root(&self) -> Option<PathBuf> {
        let j = self.jailer.as_ref()?;
        let exec = self
            .bin
            .file_name()
            .unwrap_or_else(|| "firecracker".as_ref());
        Some(j.chroot_base.join(exec).join(&self.session_id).join("root"))
    }

    /// The API socket as seen from the host.
    pub fn host_socket(&self) -> PathBuf {
        match self.jail_root() {
            Some(root) => root.join(JAILED_SOCKET),
            None => self.api_socket.clone(),
        }
    }

    /// Program and arguments.
    pub fn command(&self) -> (PathBuf, Vec<OsString>) {
        let Some(j) = &self.jailer else {
            let args = vec!["--api-sock".into(), self.api_socket.clone().into()];
            return (self.bin.clone(), args);
        };
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("--id");
        push(&self.session_id);
        push("--exec-file");
        a.push(self.bin.clone().into());
        let mut push = |s: &str| a.push(s.into());
        push("--uid");
        push(&j.uid.to_string());
        push("--gid");
        push(&j.gid.to_string());
        push("--chroot-base-dir");
        a.push(j.chroot_base.clone().into());
        a.extend(["--", "--api-sock", &format!("/{JAILED_SOCKET}")].map(OsString::from));
        (j.bin.clone(), a)
    }

    /// A file's path as Firecracker sees it (inside the jail: its name at the root).
    fn vm_path(&self, host: &Path) -> String {
        match &self.jailer {
            Some(_) => format!(
                "/{}",
                host.file_name().unwrap_or_default().to_string_lossy()
            ),
            None => host.display().to_string(),
        }
    }

    /// The configuration calls, in order, ending with `InstanceStart`.
    pub fn requests(&self) -> Vec<ApiRequest> {
        let mut boot = json!({
            "kernel_image_path": self.vm_path(&self.vmlinux),
            "boot_args": self.cmdline,
        });
        if let Some(i) = &self.initrd {
            boot["initrd_path"] = json!(self.vm_path(i));
        }
        vec![
            put("/boot-source", boot),
            put(
                "/drives/rootfs",
                json!({
                    "drive_id": "rootfs",
                    "path_on_host": self.vm_path(&self.rootfs),
                    "is_root_device": true,
                    "is_read_only": false,
                }),
            ),
            put(
                "/machine-config",
                json!({"vcpu_count": self.cpus, "mem_size_mib": self.memory_mib}),
            ),
            put(
                "/network-interfaces/eth0",
                json!({"iface_id": "eth0", "host_dev_name": self.tap, "guest_mac": self.mac}),
            ),
            put("/actions", json!({"action_type": "InstanceStart"})),
        ]
    }

    /// Links the kernel, initrd and rootfs into the jail (hard links, so
    /// the rootfs must be on the chroot base's filesystem), owned by the
    /// jail's uid/gid. Run before the jailer starts.
    pub fn prepare_jail(&self) -> Result<(), FcError> {
        let (Some(root), Some(j)) = (self.jail_root(), &self.jailer) else {
            return Ok(());
        };
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FcError::Jail { path, source }
        };
        std::fs::create_dir_all(root.join("run")).map_err(err(&root))?;
        let files = [
            Some(&self.vmlinux),
            self.initrd.as_ref(),
            Some(&self.rootfs),
        ];
        for src in files.into_iter().flatten() {
            let dst = root.join(src.file_name().unwrap_or_default());
            let _ = std::fs::remove_file(&dst);
            std::fs::hard_link(src, &dst).map_err(err(&dst))?;
            std::os::unix::fs::chown(&dst, Some(j.uid), Some(j.gid)).map_err(err(&dst))?;
        }
        Ok(())
    }
}

/// Waits until the API socket accepts connections.
pub async fn wait_socket(socket: &Path, limit: Duration) -> Result<(), FcError> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(FcError::NoSocket(socket.to_path_buf()))
}

/// Sends one request; Firecracker answers 204 on success.
pub async fn send(socket: &Path, req: &ApiRequest) -> Result<(), FcError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| FcError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let body = serde_json::to_vec(&req.body).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(req.method)
        .uri(req.path.as_str())
        .header("host", "localhost")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid request");
    let resp = sender.send_request(request).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let fault = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    Err(FcError::Refused {
        method: req.method,
        path: req.path.clone(),
        status,
        fault,
    })
}

/// Sends the whole configuration, then starts the instance.
pub async fn configure_and_start(socket: &Path, plan: &FcPlan) -> Result<(), FcError> {
    for req in plan.requests() {
        send(socket, &req).await?;
    }
    Ok(())
}

/// `PATCH /vm {"state": "Paused"}`: stops the vCPUs (before a snapshot).
pub fn pause() -> ApiRequest {
    ApiRequest {
        method: "PATCH",
        path: "/vm".into(),
        body: json!({"state": "Paused"}),
    }
}

/// `PATCH /vm {"state": "Resumed"}`.
pub fn resume() -> ApiRequest {
    ApiRequest {
        method: "PATCH",
        path: "/vm".into(),
        body: json!({"state": "Resumed"}),
    }
}

/// `PUT /snapshot/create`: a full snapshot (device state file + guest
/// memory file) of a paused microVM. Paths are Firecracker's (in the jail).
pub fn snapshot_create(snapshot_path: &str, mem_file_path: &str) -> ApiRequest {
    put(
        "/snapshot/create",
        json!({
            "snapshot_type": "Full",
            "snapshot_path": snapshot_path,
            "mem_file_path": mem_file_path,
        }),
    )
}

/// `PUT /snapshot/load`: the first and only configuration call of a fresh
/// Firecracker that restores a snapshot; the memory comes from a file and
/// the VM stays paused (`resume_vm: false`) until [`resume`], so the caller
/// can check the files' digests first, as for QEMU.
pub fn snapshot_load(snapshot_path: &str, mem_file_path: &str) -> ApiRequest {
    put(
        "/snapshot/load",
        json!({
            "snapshot_path": snapshot_path,
            "mem_backend": {"backend_type": "File", "backend_path": mem_file_path},
            "resume_vm": false,
        }),
    )
}

/// Pause, full snapshot, resume (the VM runs on even when the snapshot fails).
pub async fn save_snapshot(
    socket: &Path,
    snapshot_path: &str,
    mem_path: &str,
) -> Result<(), FcError> {
    send(socket, &pause()).await?;
    let made = send(socket, &snapshot_create(snapshot_path, mem_path)).await;
    send(socket, &resume()).await?;
    made
}

/// Loads a snapshot into a fresh (unconfigured) Firecracker, paused.
pub async fn load_snapshot(
    socket: &Path,
    snapshot_path: &str,
    mem_path: &str,
) -> Result<(), FcError> {
    send(socket, &snapshot_load(snapshot_path, mem_path)).await
}

/// Asks the guest to shut down (Ctrl-Alt-Del on the i8042 keyboard controller).
pub async fn ctrl_alt_del(socket: &Path) -> Result<(), FcError> {
    send(
        socket,
        &put("/actions", json!({"action_type": "SendCtrlAltDel"})),
    )
    .await
}

#[cfg(test)]
#[path = "firecracker_tests.rs"]
mod tests;
