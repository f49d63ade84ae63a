//! What the host has: whether the test runs as root and where a tool is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Whether the process runs with effective uid 0 (read from /proc, no unsafe).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_uid)
        == Some(0)
}

/// The effective uid from the `Uid:` line of /proc/PID/status.
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The executable `tool` resolves to: itself when it contains a `/`,
/// otherwise the first executable file of that name on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return is_executable(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

/// A copy of the executable `bin` that every user may run, in a fresh 0755
/// directory under `/tmp` (removed when the guard drops): a test can run it
/// as `nobody` wherever the checkout lives (a clone under a private `/root`
/// is not reachable by other users).
pub fn world_executable_copy(bin: &Path) -> std::io::Result<WorldCopy> {
    let dir = std::env::temp_dir().join(format!(
        "dozlab-exec-{}-{}",
        std::process::id(),
        COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir)?;
    let name = bin.file_name().unwrap_or(std::ffi::OsStr::new("bin"));
    let guard = WorldCopy {
        bin: dir.join(name),
        dir,
    };
    std::fs::set_permissions(&guard.dir, std::fs::Permissions::from_mode(0o755))?;
    std::fs::copy(bin, &guard.bin)?;
    std::fs::set_permissions(&guard.bin, std::fs::Permissions::from_mode(0o755))?;
    Ok(guard)
}

static COPIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The directory of a [`world_executable_copy`], removed on drop.
#[derive(Debug)]
pub struct WorldCopy {
    dir: PathBuf,
    bin: PathBuf,
}

impl WorldCopy {
    /// The copied executable.
    pub fn path(&self) -> &Path {
        &self.bin
    }
}

impl Drop for WorldCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number() {
        let s = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(s), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn a_world_executable_copy_is_runnable_and_removed() {
        let copy = world_executable_copy(Path::new("/bin/true")).unwrap();
        let bin = copy.path().to_path_buf();
        assert_eq!(bin.file_name().unwrap(), "true");
        let mode = std::fs::metadata(bin.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(std::process::Command::new(&bin).status().unwrap().success());
        drop(copy);
        assert!(!bin.exists());
    }

    #[test]
    fn which_finds_sh_and_not_a_made_up_name() {
        assert!(which("sh").is_some());
        assert!(which("dozlab-no-such-tool").is_none());
        assert_eq!(which("/bin/sh"), Some(PathBuf::from("/bin/sh")));
        assert!(which("/etc/passwd").is_none(), "not executable");
    }
}
