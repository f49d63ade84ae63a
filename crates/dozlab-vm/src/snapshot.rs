//! Snapshots of a booted QEMU VM: whether this `vm run` restores one, saves
//! one or neither (and why), saving one from a ready VM, and restoring one
//! with the session's own identity.
//!
//! Saving (the first session of an image and VM shape): QMP `stop`,
//! `migrate` to `exec:cat > FILE`, a sparse copy of the root disk taken
//! while the VM is stopped, `cont`; then digests and metadata, and the
//! entry is renamed into the cache (see [`crate::snapcache`]). Any failure
//! (a full disk included) only costs the snapshot: the VM goes on.
//!
//! Restoring: while a new QEMU loads the memory stream paused (`-S
//! -incoming`), the snapshot's disk is hashed and compared with the
//! session's rootfs (a fresh copy of the same image) and the memory file is
//! hashed; only when both digests match are the chunks that differ written
//! into the rootfs and the VM continued. Then the
//! guest agent re-keys it ([`crate::qga`]). A damaged entry is removed and
//! the session boots cold.

use crate::config::{Attempt, SnapshotPlan, Vmm};
use crate::console::Tail;
use crate::qemu::QemuPlan;
use crate::qga::{self, Agent, Rekey};
use crate::qmp::{self, QmpError, Session};
use crate::snapcache::{self, Cache, Entry, FileSum, KeyInputs, Lookup, Meta};
use crate::snapdisk;
use crate::vmm::{self, Launch, Running};
use serde_json::{Value, json};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long loading a memory stream or writing one may take.
const MIGRATION_LIMIT: Duration = Duration::from_secs(600);
/// How long the guest agent of a restored VM gets to answer.
const AGENT_LIMIT: Duration = Duration::from_secs(60);

/// Why a snapshot could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Damaged(String),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Agent(#[from] qga::QgaError),
    #[error(transparent)]
    Cache(#[from] snapcache::CacheError),
    #[error(transparent)]
    Vmm(#[from] vmm::VmmError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited while {0}")]
    VmmExited(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let what = what.into();
    move |source| SnapshotError::Io { what, source }
}

/// What snapshots know about this VM before it boots.
#[derive(Debug)]
pub struct Snapper {
    pub cache: Cache,
    refresh: bool,
    /// Why this VM can neither be restored nor saved (`None`: it can).
    pub unusable: Option<String>,
    image_sha256: String,
    kernel_sha256: String,
    initrd_sha256: Option<String>,
    disk_size: u64,
}

impl Snapper {
    /// Looks at the rootfs (manifest beside it, never booted) and hashes
    /// the kernel and initrd.
    pub fn new(sp: &SnapshotPlan, rootfs: &Path, kernel: &Path, initrd: Option<&Path>) -> Self {
        let mut s = Self {
            cache: Cache::new(&sp.cache),
            refresh: sp.refresh,
            unusable: None,
            image_sha256: String::new(),
            kernel_sha256: String::new(),
            initrd_sha256: None,
            disk_size: 0,
        };
        let mut facts = || -> Result<(), String> {
            s.image_sha256 = match (image_sha256(rootfs), &sp.image_sha256) {
                (Ok(h), _) => h,
                (Err(_), Some(h)) => h.clone(),
                (Err(why), None) => return Err(format!("{why}, or give --image-sha256")),
            };
            pristine(rootfs)?;
            s.disk_size = fs::metadata(rootfs).map_err(|e| e.to_string())?.len();
            let hash = |p: &Path| {
                File::open(p)
                    .and_then(|f| snapdisk::digest(&f))
                    .map_err(|e| format!("cannot hash {}: {e}", p.display()))
            };
            s.kernel_sha256 = hash(kernel)?;
            s.initrd_sha256 = initrd.map(hash).transpose()?;
            Ok(())
        };
        if let Err(why) = facts() {
            s.unusable = Some(why);
        }
        s
    }

    /// The key inputs of a QEMU launch (`None` when snapshots are unusable).
    pub fn inputs(&self, q: &QemuPlan) -> Option<KeyInputs> {
        if self.unusable.is_some() {
            return None;
        }
        // The TCG clock parameters hold a measured frequency: not part of the VM.
        let cmdline: Vec<&str> = q
            .cmdline
            .split_whitespace()
            .filter(|w| !w.starts_with("tsc_early_khz="))
            .collect();
        Some(KeyInputs {
            image_sha256: self.image_sha256.clone(),
            cpus: q.cpus,
            memory_mib: q.memory_mib,
            machine: q.machine.as_str().into(),
            accel: q.accel.as_str().into(),
            kernel_sha256: self.kernel_sha256.clone(),
            initrd_sha256: self.initrd_sha256.clone(),
            cmdline: cmdline.join(" "),
            disk_size: self.disk_size,
            vmm: vmm_identity(&q.bin),
            dozlab_version: snapcache::DOZLAB_VERSION.into(),
        })
    }

    /// The first QEMU launch with a usable entry. Says on stderr why no
    /// snapshot is used, and removes entries that must not be restored.
    pub fn find(&self, launches: &[(Attempt, Launch)]) -> Option<(usize, Entry)> {
        if let Some(why) = &self.unusable {
            loud(&format!("snapshots off for this VM: {why}"));
            return None;
        }
        if self.refresh {
            loud("--snapshot refresh: booting, and replacing the snapshot when the VM is ready");
            return None;
        }
        for (i, (a, l)) in launches.iter().enumerate() {
            let (Vmm::Qemu, Launch::Qemu(q)) = (a.vmm, l) else {
                continue;
            };
            let Some(inputs) = self.inputs(q) else {
                continue;
            };
            match self.cache.lookup(&inputs) {
                Lookup::Found(e) => return Some((i, *e)),
                Lookup::Bad(why) => {
                    self.discard(&inputs.key(), &why);
                }
                Lookup::Missing(Some(why)) => loud(&format!("no snapshot to restore: {why}")),
                Lookup::Missing(None) => {}
            }
        }
        loud("no snapshot of this VM yet: booting; one is saved when the VM is ready");
        None
    }

    /// Removes entry `key`, saying why.
    pub fn discard(&self, key: &str, why: &str) {
        loud(&format!(
            "snapshot {key} cannot be used ({why}): removing it; cold boot"
        ));
        if let Err(e) = self.cache.remove(key) {
            tracing::warn!("cannot remove snapshot {key}: {e}");
        }
    }

    /// Whether a ready VM booted by `attempt` should be saved, and under which key.
    pub fn to_save(&self, attempt: Attempt, launch: &Launch) -> Option<KeyInputs> {
        let (Vmm::Qemu, Launch::Qemu(q)) = (attempt.vmm, launch) else {
            return None;
        };
        let inputs = self.inputs(q)?;
        if !self.refresh && matches!(self.cache.lookup(&inputs), Lookup::Found(_)) {
            return None;
        }
        Some(inputs)
    }
}

/// The sha256 of the image, from `manifest.json` beside the rootfs.
fn image_sha256(rootfs: &Path) -> Result<String, String> {
    let manifest = rootfs.with_file_name("manifest.json");
    let text = fs::read_to_string(&manifest).map_err(|e| {
        format!(
            "no {} ({e}): the image's sha256 keys its snapshots",
            manifest.display()
        )
    })?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let name = rootfs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    v.get("artifacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| {
            let p = a.get("path").and_then(Value::as_str);
            p == Some("rootfs.ext4") || p == Some(name.as_str())
        })
        .and_then(|a| a.get("sha256").and_then(Value::as_str))
        .map(str::to_string)
        .ok_or_else(|| format!("{} names no rootfs.ext4 sha256", manifest.display()))
}

/// A rootfs that was never mounted (a fresh copy of the image): restoring
/// a snapshot replaces its content, which must not hold a learner's work.
fn pristine(rootfs: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 64];
    File::open(rootfs)
        .and_then(|f| f.read_exact_at(&mut sb, 1024))
        .map_err(|e| format!("cannot read the rootfs superblock: {e}"))?;
    let mtime = u32::from_le_bytes(sb[44..48].try_into().expect("4 bytes"));
    let count = u16::from_le_bytes(sb[52..54].try_into().expect("2 bytes"));
    if mtime != 0 || count != 0 {
        return Err(
            "the rootfs has been booted before (a snapshot would replace what is on it)".into(),
        );
    }
    Ok(())
}

/// The QEMU binary as a key part: path, size and mtime.
fn vmm_identity(bin: &Path) -> String {
    let path = dozlab_core::exe::which(bin).unwrap_or_else(|| bin.to_path_buf());
    match fs::metadata(&path) {
        Ok(m) => format!("{} {} {}", path.display(), m.len(), m.mtime()),
        Err(_) => path.display().to_string(),
    }
}

/// Saves the ready VM behind `qmp_socket` as the entry `inputs`. The VM is
/// stopped for the migration and the disk copy and always continued.
pub async fn save(
    cache: &Cache,
    inputs: KeyInputs,
    qmp_socket: &Path,
    agent_socket: Option<&Path>,
    rootfs: &Path,
) -> Result<Meta, SnapshotError> {
    let key = inputs.key();
    let staging = cache.stage(&key)?;
    let dir = staging.path().to_path_buf();
    let memory = dir.join(snapcache::MEMORY);
    let mut s = Session::qmp(qmp_socket).await?;
    let t = Instant::now();
    s.execute("stop", Value::Null).await?;
    let stopped = async {
        let uri = format!("exec:cat > {}", shell_quote(&memory));
        s.execute("migrate", json!({ "uri": uri })).await?;
        qmp::wait_migration(&mut s, MIGRATION_LIMIT).await?;
        let (src, dst) = (rootfs.to_path_buf(), dir.join(snapcache::DISK));
        blocking(move || {
            let src = File::open(&src).map_err(io(format!("open {}", src.display())))?;
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&dst)
                .map_err(io(format!("create {}", dst.display())))?;
            let digest = snapdisk::copy_and_digest(&src, Some(&out))
                .map_err(io("copying the disk into the cache"))?;
            Ok(FileSum {
                size: src.metadata().map_err(io("stat the rootfs"))?.len(),
                digest,
            })
        })
        .await
    }
    .await;
    let cont = s.execute("cont", Value::Null).await;
    let pause_ms = t.elapsed().as_millis() as u64;
    let disk = stopped?;
    cont?;
    if let Some(agent) = agent_socket {
        // The guest's clock stood still while it was stopped.
        match Agent::connect(agent, Duration::from_secs(10)).await {
            Ok(mut a) => {
                if let Err(e) = a.set_clock().await {
                    tracing::warn!("cannot set the guest clock after the snapshot: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot set the guest clock after the snapshot: {e}"),
        }
    }
    let mem = memory.clone();
    let memory_sum = blocking(move || {
        let f = File::open(&mem).map_err(io("open the memory file"))?;
        Ok(FileSum {
            size: f.metadata().map_err(io("stat the memory file"))?.len(),
            digest: snapdisk::digest(&f).map_err(io("hashing the memory file"))?,
        })
    })
    .await?;
    let meta = Meta {
        format: snapcache::FORMAT,
        key,
        inputs,
        created: snapcache::unix_now(),
        memory: memory_sum,
        disk,
        pause_ms,
    };
    staging.commit(&meta)?;
    Ok(meta)
}

/// A VM restored from a snapshot and re-keyed.
pub struct Restored {
    pub vm: Running,
}

/// Restores `entry` with `launch` (a QEMU launch) onto `rootfs` and re-keys
/// the guest with `rekey`. The rootfs is a fresh copy of the snapshot's
/// image: only the chunks that differ from the snapshot's disk are written,
/// after both digests matched. On error nothing of it is left running, and
/// the rootfs is untouched unless the error came after it was rewritten (it
/// is then the snapshot's disk: a consistent file system).
pub async fn restore(
    entry: &Entry,
    attempt: Attempt,
    launch: &QemuPlan,
    rootfs: &Path,
    rekey: &Rekey,
    console: Option<&Path>,
    tail: &Tail,
) -> Result<Restored, SnapshotError> {
    let (src, dst) = (entry.disk(), rootfs.to_path_buf());
    let t0 = Instant::now();
    let disk = tokio::task::spawn_blocking(move || {
        let d = snapdisk::diff_and_digest(&File::open(&src)?, &File::open(&dst)?);
        tracing::info!(
            "snapshot disk compared and hashed in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        d
    });
    let mem_path = entry.memory();
    let memory = tokio::task::spawn_blocking(move || snapdisk::digest(&File::open(&mem_path)?));
    let mut q = launch.clone();
    q.incoming = Some(entry.memory());
    let agent_socket = q
        .agent_socket
        .clone()
        .expect("snapshot launches have an agent");
    let mut vm = vmm::start(attempt, &Launch::Qemu(q.clone()), console, tail).await?;
    let result = async {
        let loaded = async {
            let mut s = connect_qmp(&q.qmp_socket).await?;
            qmp::wait_status(&mut s, "paused", MIGRATION_LIMIT).await?;
            Ok::<_, SnapshotError>(s)
        };
        let mut s = tokio::select! {
            r = loaded => r?,
            _ = vm.child.wait() => {
                return Err(SnapshotError::VmmExited("loading the snapshot".into()));
            }
        };
        let loaded = t0.elapsed().as_secs_f64();
        let (disk_digest, changes) = match disk.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(SnapshotError::Damaged(format!("reading disk.raw: {e}"))),
            Err(e) => return Err(SnapshotError::Damaged(format!("hashing disk.raw: {e}"))),
        };
        check_digest("disk.raw", Ok(Ok(disk_digest)), &entry.meta.disk)?;
        check_digest("memory.bin", memory.await, &entry.meta.memory)?;
        let verified = t0.elapsed().as_secs_f64();
        let (src, dst) = (entry.disk(), rootfs.to_path_buf());
        let written: u64 = changes
            .iter()
            .map(|c| match c {
                snapdisk::Change::Write { len, .. } => *len,
                snapdisk::Change::Zero { .. } => 0,
            })
            .sum();
        blocking(move || {
            let out = OpenOptions::new()
                .write(true)
                .open(&dst)
                .map_err(io(format!("open {}", dst.display())))?;
            let src = File::open(&src).map_err(io("open disk.raw"))?;
            snapdisk::apply(&src, &out, &changes).map_err(io("writing the snapshot's disk"))
        })
        .await?;
        let applied = t0.elapsed().as_secs_f64();
        s.execute("cont", Value::Null).await?;
        let mut agent = Agent::connect(&agent_socket, AGENT_LIMIT).await?;
        let agent_at = t0.elapsed().as_secs_f64();
        qga::rekey(&mut agent, rekey).await?;
        tracing::info!(
            "restore: memory loaded at {loaded:.1} s, files verified at {verified:.1} s, \
             {} MiB of the disk written at {applied:.1} s, agent answered at {agent_at:.1} s, \
             re-keyed at {:.1} s",
            written >> 20,
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(Restored { vm }),
        Err(e) => {
            vm.kill().await;
            Err(e)
        }
    }
}

fn check_digest(
    name: &str,
    got: Result<std::io::Result<String>, tokio::task::JoinError>,
    want: &FileSum,
) -> Result<(), SnapshotError> {
    let got = got
        .map_err(|e| SnapshotError::Damaged(format!("hashing {name}: {e}")))?
        .map_err(|e| SnapshotError::Damaged(format!("reading {name}: {e}")))?;
    if got != want.digest {
        return Err(SnapshotError::Damaged(format!(
            "{name} does not match its digest (damaged)"
        )));
    }
    Ok(())
}

async fn connect_qmp(socket: &Path) -> Result<Session, SnapshotError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Session::qmp(socket).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io("a worker thread")(std::io::Error::other(e.to_string())))?
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"))
}

fn loud(msg: &str) {
    eprintln!("==> dozlab vm: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sha_comes_from_the_manifest_and_pristine_means_never_mounted() {
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs.ext4");
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&rootfs)
            .arg("8M")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(image_sha256(&rootfs).unwrap_err().contains("manifest.json"));
        fs::write(
            t.path().join("manifest.json"),
            r#"{"artifacts":[{"path":"rootfs.ext4","sha256":"abc"}]}"#,
        )
        .unwrap();
        assert_eq!(image_sha256(&rootfs).unwrap(), "abc");
        pristine(&rootfs).unwrap();
        // A mount count, as a boot leaves it.
        let f = OpenOptions::new().write(true).open(&rootfs).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &1u16.to_le_bytes(), 1024 + 52).unwrap();
        assert!(pristine(&rootfs).unwrap_err().contains("booted before"));
    }
}
