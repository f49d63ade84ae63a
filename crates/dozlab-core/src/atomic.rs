//! Whole-or-nothing file writes: write a temporary file beside the target,
//! fsync it, set its mode, then rename it over the target.
//!
//! Readers (probes, other containers, `dozlab up`) never see a half-written
//! config, key or status file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The temporary path used while writing `target` (same directory, so the
/// final rename stays on one filesystem), unique within this process.
pub fn temp_path_for(target: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// A temporary path beside a target that becomes the target on
/// [`Staged::commit`] and is removed (file or whole directory) when dropped
/// uncommitted, so a failed or interrupted write leaves nothing behind.
/// The caller writes (and syncs) whatever it likes at [`Staged::path`].
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Staged {
    /// Stages `target`, creating its parent directory.
    pub fn new(target: &Path) -> io::Result<Self> {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        Ok(Self {
            tmp: temp_path_for(target),
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames what was written over the target.
    pub fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.target)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.tmp.is_dir() {
            let _ = fs::remove_dir_all(&self.tmp);
        } else {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `target` atomically with permission bits `mode`: `write` fills a
/// temporary file beside it, which is synced and renamed over `target`.
pub fn write_atomic_with<T>(
    target: &Path,
    mode: u32,
    write: impl FnOnce(&mut fs::File) -> io::Result<T>,
) -> io::Result<T> {
    let staged = Staged::new(target)?;
    let mut f = fs::File::create(staged.path())?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    let out = write(&mut f)?;
    f.sync_all()?;
    staged.commit()?;
    Ok(out)
}

/// Writes `data` to `target` atomically with permission bits `mode`.
pub fn write_atomic(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_atomic_with(target, mode, |f| f.write_all(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failure_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // A directory at the target makes the rename fail.
        let p = dir.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inner"), b"x").unwrap();
        assert!(write_atomic(&p, b"data", 0o644).is_err());
        assert!(p.is_dir());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn a_failed_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        let e = write_atomic_with(&p, 0o644, |f| {
            f.write_all(b"half")?;
            Err::<(), _>(io::Error::other("decompression failed"))
        });
        assert!(e.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn staged_directories_are_committed_or_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staged::new(&out).unwrap();
        fs::create_dir_all(s.path().join("sub")).unwrap();
        fs::write(s.path().join("sub/f"), "x").unwrap();
        drop(s);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "dropped: gone"
        );
        let s = Staged::new(&out).unwrap();
        assert_ne!(s.path(), Staged::new(&out).unwrap().path(), "unique");
        fs::create_dir(s.path()).unwrap();
        fs::write(s.path().join("f"), "y").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read_to_string(out.join("f")).unwrap(), "y");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
