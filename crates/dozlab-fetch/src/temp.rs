//! Temporary files beside their final path, removed unless persisted.
//!
//! Names are `.NAME.part-PID-N`; a file left by a process that died (killed,
//! OOM) is removed by the next run ([`remove_stale`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file that is deleted on drop unless [`TempFile::persist`]ed.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl TempFile {
    /// Creates (or truncates) a temporary file in the directory of `target`.
    pub fn beside(target: &Path) -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = target.with_file_name(format!("{}{}-{n}", prefix(target), std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            keep: false,
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to `target` (same directory) and keeps it.
    pub fn persist(mut self, target: &Path) -> io::Result<File> {
        fs::rename(&self.path, target)?;
        self.keep = true;
        self.file.try_clone()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    format!(".{name}.part-")
}

/// The entries of the directory that holds `target` and its temporary files.
fn temp_dir_entries(target: &Path) -> Option<fs::ReadDir> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::read_dir(dir).ok()
}

/// Removes temporary files of `target` left by processes that no longer run.
/// Returns how many were removed.
pub fn remove_stale(target: &Path) -> usize {
    let Some(entries) = temp_dir_entries(target) else {
        return 0;
    };
    let prefix = prefix(target);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !alive(p)) && fs::remove_file(entry.path()).is_ok() {
            tracing::info!("removed {} left by an earlier run", entry.path().display());
            removed += 1;
        }
    }
    removed
}

/// Removes every temporary file of `target`, whoever made it (call only when
/// no one else can be writing one, e.g. under the cache lock). Returns how
/// many were removed.
pub fn remove_all(target: &Path) -> usize {
    let Some(entries) = temp_dir_entries(target) else {
        return 0;
    };
    let prefix = prefix(target);
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

fn alive(pid: i32) -> bool {
    if pid == std::process::id() as i32 {
        return true;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop_kept_on_persist() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs.ext4");
        let t = TempFile::beside(&target).unwrap();
        let p = t.path().to_path_buf();
        assert!(
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".rootfs.ext4.part-")
        );
        drop(t);
        assert!(!p.exists());
        let t = TempFile::beside(&target).unwrap();
        std::io::Write::write_all(&mut t.file(), b"x").unwrap();
        t.persist(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"x");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_files_of_dead_processes_go() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("img");
        // pid_max is at most 2^22, so this pid cannot be running.
        let dead = dir.path().join(".img.part-99999999-0");
        fs::write(&dead, b"old").unwrap();
        let mine = TempFile::beside(&target).unwrap();
        let other = dir.path().join("unrelated");
        fs::write(&other, b"keep").unwrap();
        assert_eq!(remove_stale(&target), 1);
        assert!(!dead.exists());
        assert!(mine.path().exists());
        assert!(other.exists());
        assert_eq!(remove_all(&target), 1);
        assert!(!mine.path().exists());
        assert!(other.exists());
    }
}
