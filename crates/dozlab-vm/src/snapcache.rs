//! The node-local snapshot cache: entry keys (image sha256 + VM shape +
//! Dozlab version), the entry layout and its metadata, lookups that say why
//! an entry cannot be used, whole-or-nothing writes, listing, removal and
//! pruning.
//!
//! ```text
//! CACHE/<key>/meta.json     what the snapshot is of, file sizes and digests (written last)
//! CACHE/<key>/memory.bin    QEMU's migration stream (RAM + device state)
//! CACHE/<key>/disk.raw      sparse copy of the root disk, taken while the VM was stopped
//! CACHE/.<key>.tmp-<pid>-N/ an entry being written; renamed to <key> when complete
//! ```
//! A directory named `<key>` is always complete; what a reader still has
//! to check (content digests) it checks while restoring (see
//! [`crate::snapshot`]).

use crate::snapdisk;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// This build's version, part of every key.
pub const DOZLAB_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Layout version of an entry.
pub const FORMAT: u32 = 1;
/// The memory (migration stream) file of an entry.
pub const MEMORY: &str = "memory.bin";
/// The disk file of an entry.
pub const DISK: &str = "disk.raw";
/// The metadata file of an entry.
pub const META: &str = "meta.json";

/// Everything a snapshot must match to be restored; the key is its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// sha256 of the image the session's rootfs is a fresh copy of.
    pub image_sha256: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// `q35` or `microvm`.
    pub machine: String,
    /// `tcg` or `kvm`.
    pub accel: String,
    pub kernel_sha256: String,
    pub initrd_sha256: Option<String>,
    /// The kernel command line (it carries the guest's address).
    pub cmdline: String,
    /// The root disk's length in bytes.
    pub disk_size: u64,
    /// The VMM binary (size and mtime: a new QEMU may not read an old stream).
    pub vmm: String,
    pub dozlab_version: String,
}

impl KeyInputs {
    /// The entry name: 32 hex digits of the inputs' sha256.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain data serialises");
        hex::encode(Sha256::digest(&json))[..32].to_string()
    }

    /// Human names of the fields in which this VM (`self`) differs from a
    /// snapshot's (`other`), with both values.
    pub fn differences(&self, other: &KeyInputs) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (k, va) in a {
                let vb = b.get(k).cloned().unwrap_or_default();
                if *va != vb {
                    out.push(format!("{k} {} (snapshot) vs {va} (this VM)", short(&vb)));
                }
            }
        }
        out
    }
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..40])
    } else {
        s
    }
}

/// Size and digest of one file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub size: u64,
    /// [`snapdisk::digest`] of the file.
    pub digest: String,
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub key: String,
    pub inputs: KeyInputs,
    /// Unix seconds.
    pub created: u64,
    pub memory: FileSum,
    pub disk: FileSum,
    /// Milliseconds the source VM was stopped to take it.
    pub pause_ms: u64,
}

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("snapshot cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no snapshot {0} in the cache")]
    NoEntry(String),
    #[error("{0:?} names more than one snapshot; give more of the key")]
    Ambiguous(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
}

/// A usable entry (sizes checked; digests are checked while restoring).
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub meta: Meta,
}

impl Entry {
    pub fn memory(&self) -> PathBuf {
        self.dir.join(MEMORY)
    }
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<Entry>),
    /// No entry under this key; the string says why when the cache holds
    /// snapshots of the same image for another shape or version.
    Missing(Option<String>),
    /// An entry that must not be restored, and why.
    Bad(String),
}

/// One entry as listed by `dozlab snapshot ls`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub meta: Option<Meta>,
    /// Bytes allocated on disk.
    pub allocated: u64,
    /// Why it is unusable (`None`: fine as far as sizes go).
    pub problem: Option<String>,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Finds the entry for `inputs` and checks its metadata and file sizes.
    pub fn lookup(&self, inputs: &KeyInputs) -> Lookup {
        let key = inputs.key();
        let dir = self.entry_dir(&key);
        if !dir.exists() {
            return Lookup::Missing(self.explain_miss(inputs));
        }
        match check_entry(&dir, &key) {
            Ok(meta) if meta.inputs != *inputs => Lookup::Bad(format!(
                "its metadata is for another VM: {}",
                inputs.differences(&meta.inputs).join("; ")
            )),
            Ok(meta) => Lookup::Found(Box::new(Entry { dir, meta })),
            Err(why) => Lookup::Bad(why),
        }
    }

    /// Why there is no entry, when entries of the same image exist.
    fn explain_miss(&self, inputs: &KeyInputs) -> Option<String> {
        let others: Vec<String> = self
            .list()
            .ok()?
            .into_iter()
            .filter_map(|l| l.meta)
            .filter(|m| m.inputs.image_sha256 == inputs.image_sha256)
            .map(|m| inputs.differences(&m.inputs).join("; "))
            .collect();
        (!others.is_empty()).then(|| {
            format!(
                "the cache's snapshots of this image do not match: {}",
                others.join(" | ")
            )
        })
    }

    /// Stages a new entry for `key`: write [`MEMORY`] and [`DISK`] into
    /// [`Staging::path`], then [`Staging::commit`]. Dropped uncommitted, it
    /// leaves nothing behind.
    pub fn stage(&self, key: &str) -> Result<Staging, CacheError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let staged =
            dozlab_core::atomic::Staged::new(&self.entry_dir(key)).map_err(io_err(&self.dir))?;
        fs::create_dir(staged.path()).map_err(io_err(staged.path()))?;
        Ok(Staging {
            staged,
            target: self.entry_dir(key),
        })
    }

    /// Removes the entry `key` (exact name). Renamed away first, so no
    /// reader ever sees a half-removed entry.
    pub fn remove(&self, key: &str) -> Result<(), CacheError> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Err(CacheError::NoEntry(key.into()));
        }
        let trash = dozlab_core::atomic::temp_path_for(&dir);
        fs::rename(&dir, &trash).map_err(io_err(&dir))?;
        fs::remove_dir_all(&trash).map_err(io_err(&trash))
    }

    /// The unique entry whose key starts with `prefix`.
    pub fn resolve(&self, prefix: &str) -> Result<String, CacheError> {
        let keys: Vec<String> = self
            .list()?
            .into_iter()
            .map(|l| l.key)
            .filter(|k| k.starts_with(prefix))
            .collect();
        match keys.as_slice() {
            [] => Err(CacheError::NoEntry(prefix.into())),
            [k] => Ok(k.clone()),
            _ => Err(CacheError::Ambiguous(prefix.into())),
        }
    }

    /// Every entry (not the staging directories), sorted by key.
    pub fn list(&self) -> Result<Vec<Listed>, CacheError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err(&self.dir))?;
            let key = e.file_name().to_string_lossy().into_owned();
            if key.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            let (meta, problem) = match check_entry(&e.path(), &key) {
                Ok(m) => {
                    let stale = (m.inputs.dozlab_version != DOZLAB_VERSION).then(|| {
                        format!(
                            "made by Dozlab {} (this is {DOZLAB_VERSION})",
                            m.inputs.dozlab_version
                        )
                    });
                    (Some(m), stale)
                }
                Err(why) => (read_meta(&e.path()).ok(), Some(why)),
            };
            out.push(Listed {
                allocated: allocated_in(&e.path()),
                key,
                meta,
                problem,
            });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes what can never be restored: leftovers of interrupted writes
    /// (staging directories of processes that are gone), unreadable or
    /// truncated entries, entries of other Dozlab versions, and with
    /// `older_than` (seconds) entries created longer ago. Returns the names
    /// removed, each with why.
    pub fn prune(&self, older_than: Option<u64>, now: u64) -> Result<Vec<String>, CacheError> {
        let mut removed = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = staging_pid(&name)
                    && !pid_alive(pid)
                {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    removed.push(format!("{name}: left by an interrupted write"));
                }
            }
        }
        for l in self.list()? {
            let old = match (&l.meta, older_than) {
                (Some(m), Some(age)) if now.saturating_sub(m.created) > age => {
                    Some(format!("older than {age} s"))
                }
                _ => None,
            };
            if let Some(why) = l.problem.or(old) {
                self.remove(&l.key)?;
                removed.push(format!("{}: {why}", l.key));
            }
        }
        Ok(removed)
    }
}

/// An entry being written.
pub struct Staging {
    staged: dozlab_core::atomic::Staged,
    target: PathBuf,
}

impl Staging {
    /// The directory to write [`MEMORY`] and [`DISK`] into.
    pub fn path(&self) -> &Path {
        self.staged.path()
    }

    /// Writes `meta.json` (synced), then renames the directory into place,
    /// replacing an older entry of the same key (`--snapshot refresh`).
    pub fn commit(self, meta: &Meta) -> Result<(), CacheError> {
        let dir = self.staged.path().to_path_buf();
        let json = serde_json::to_vec_pretty(meta).expect("plain data serialises");
        for name in [MEMORY, DISK] {
            let p = dir.join(name);
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&p))?;
        }
        dozlab_core::atomic::write_atomic(&dir.join(META), &json, 0o644).map_err(io_err(&dir))?;
        if self.target.exists() {
            let trash = dozlab_core::atomic::temp_path_for(&self.target);
            fs::rename(&self.target, &trash).map_err(io_err(&self.target))?;
            let _ = fs::remove_dir_all(&trash);
        }
        self.staged.commit().map_err(io_err(&self.target))
    }
}

fn read_meta(dir: &Path) -> Result<Meta, String> {
    let p = dir.join(META);
    let bytes = fs::read(&p).map_err(|e| format!("{META} unreadable: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{META} is not valid: {e}"))
}

/// Metadata parse, key and format check, file sizes (a truncated or
/// grown file is caught here without reading it).
fn check_entry(dir: &Path, key: &str) -> Result<Meta, String> {
    let meta = read_meta(dir)?;
    if meta.format != FORMAT {
        return Err(format!(
            "entry format {} (this build reads {FORMAT})",
            meta.format
        ));
    }
    if meta.key != key || meta.inputs.key() != key {
        return Err("its metadata does not match its name".into());
    }
    for (name, sum) in [(MEMORY, &meta.memory), (DISK, &meta.disk)] {
        let size = fs::metadata(dir.join(name))
            .map_err(|e| format!("{name}: {e}"))?
            .len();
        if size != sum.size {
            return Err(format!(
                "{name} is {size} bytes, its metadata says {} (truncated or damaged)",
                sum.size
            ));
        }
    }
    Ok(meta)
}

fn allocated_in(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| snapdisk::allocated(&m))
                .sum()
        })
        .unwrap_or(0)
}

/// The pid in a staging name `.KEY.tmp-PID-N` (see `dozlab_core::atomic`).
fn staging_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    tail.split('-').next()?.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> KeyInputs {
        KeyInputs {
            image_sha256: "aa".repeat(32),
            cpus: 2,
            memory_mib: 1024,
            machine: "q35".into(),
            accel: "tcg".into(),
            kernel_sha256: "bb".repeat(32),
            initrd_sha256: None,
            cmdline: "console=ttyS0".into(),
            disk_size: 1 << 30,
            vmm: "qemu 1 2".into(),
            dozlab_version: DOZLAB_VERSION.into(),
        }
    }

    /// Writes a complete entry with the given memory and disk bytes.
    fn put(cache: &Cache, i: &KeyInputs, memory: &[u8], disk: &[u8]) -> String {
        let s = cache.stage(&i.key()).unwrap();
        fs::write(s.path().join(MEMORY), memory).unwrap();
        fs::write(s.path().join(DISK), disk).unwrap();
        let sum = |p: &Path| FileSum {
            size: fs::metadata(p).unwrap().len(),
            digest: snapdisk::digest(&fs::File::open(p).unwrap()).unwrap(),
        };
        let meta = Meta {
            format: FORMAT,
            key: i.key(),
            inputs: i.clone(),
            created: 1000,
            memory: sum(&s.path().join(MEMORY)),
            disk: sum(&s.path().join(DISK)),
            pause_ms: 1,
        };
        s.commit(&meta).unwrap();
        i.key()
    }

    #[test]
    fn key_depends_on_every_input() {
        let a = inputs();
        assert_eq!(a.key(), inputs().key());
        assert_eq!(a.key().len(), 32);
        type Change = Box<dyn Fn(&mut KeyInputs)>;
        let changes: Vec<Change> = vec![
            Box::new(|i| i.image_sha256 = "cc".repeat(32)),
            Box::new(|i| i.cpus = 1),
            Box::new(|i| i.memory_mib = 2048),
            Box::new(|i| i.machine = "microvm".into()),
            Box::new(|i| i.accel = "kvm".into()),
            Box::new(|i| i.kernel_sha256 = "dd".repeat(32)),
            Box::new(|i| i.initrd_sha256 = Some("ee".into())),
            Box::new(|i| i.cmdline.push_str(" quiet")),
            Box::new(|i| i.disk_size += 1),
            Box::new(|i| i.vmm = "qemu 1 3".into()),
            Box::new(|i| i.dozlab_version = "0.0.0".into()),
        ];
        for change in changes {
            let mut b = inputs();
            change(&mut b);
            assert_ne!(a.key(), b.key(), "{b:?}");
            assert_eq!(a.differences(&b).len(), 1);
        }
    }

    #[test]
    fn write_lookup_and_why_not() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::new(t.path().join("cache"));
        let i = inputs();
        assert!(matches!(c.lookup(&i), Lookup::Missing(None)));
        put(&c, &i, b"memory", b"disk");
        match c.lookup(&i) {
            Lookup::Found(e) => {
                assert_eq!(fs::read(e.memory()).unwrap(), b"memory");
                assert_eq!(e.meta.disk.size, 4);
            }
            other => panic!("{other:?}"),
        }
        // Another shape of the same image: missing, and the reason names cpus.
        let mut other = i.clone();
        other.cpus = 4;
        match c.lookup(&other) {
            Lookup::Missing(Some(why)) => assert!(why.contains("cpus 2 (snapshot) vs 4"), "{why}"),
            o => panic!("{o:?}"),
        }
        // Only the entry is in the cache dir: no staging left.
        let names: Vec<_> = fs::read_dir(&c.dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn truncated_or_unreadable_entries_are_bad() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::new(t.path());
        let i = inputs();
        let k = put(&c, &i, b"memory-bytes", b"disk");
        fs::OpenOptions::new()
            .write(true)
            .open(t.path().join(&k).join(MEMORY))
            .unwrap()
            .set_len(3)
            .unwrap();
        match c.lookup(&i) {
            Lookup::Bad(why) => assert!(why.contains("truncated"), "{why}"),
            o => panic!("{o:?}"),
        }
        fs::write(t.path().join(&k).join(META), b"{").unwrap();
        assert!(matches!(c.lookup(&i), Lookup::Bad(w) if w.contains("not valid")));
    }

    #[test]
    fn an_uncommitted_write_leaves_nothing_and_refresh_replaces() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::new(t.path());
        let i = inputs();
        {
            let s = c.stage(&i.key()).unwrap();
            fs::write(s.path().join(MEMORY), b"half").unwrap();
            // dropped: e.g. the disk filled up
        }
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
        put(&c, &i, b"one", b"d");
        put(&c, &i, b"two!", b"d");
        match c.lookup(&i) {
            Lookup::Found(e) => assert_eq!(fs::read(e.memory()).unwrap(), b"two!"),
            o => panic!("{o:?}"),
        }
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn list_resolve_remove_prune() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::new(t.path());
        let a = put(&c, &inputs(), b"m", b"d");
        let mut old = inputs();
        old.dozlab_version = "0.0.1".into();
        let b = put(&c, &old, b"m", b"d");
        let mut big = inputs();
        big.cpus = 8;
        let d = put(&c, &big, b"m", b"d");
        // A leftover of a process that is gone (pid 2^22 + 1 does not exist).
        fs::create_dir(t.path().join(format!(".{a}.tmp-4194305-0"))).unwrap();
        let l = c.list().unwrap();
        assert_eq!(l.len(), 3);
        let stale = l.iter().find(|x| x.key == b).unwrap();
        assert!(stale.problem.as_deref().unwrap().contains("0.0.1"));
        assert_eq!(c.resolve(&a[..6]).unwrap(), a);
        assert!(matches!(c.resolve(""), Err(CacheError::Ambiguous(_))));
        c.remove(&d).unwrap();
        assert!(matches!(c.remove(&d), Err(CacheError::NoEntry(_))));
        let removed = c.prune(None, 2000).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(c.list().unwrap().len(), 1);
        // --older-than: created at 1000, now 5000.
        let removed = c.prune(Some(3000), 5000).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(c.list().unwrap().is_empty());
    }
}
