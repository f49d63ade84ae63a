//! Finding executables the way `Command` does: a name with a `/` is checked
//! as a path, a bare name is looked up in the directories of `PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where root's tools live, searched by [`which_or_sbin`] after `PATH`
/// (a user's `PATH` often lacks them, `sudo` keeps it).
pub const SBIN: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The executable `program` resolves to: itself when it contains a `/`,
/// otherwise the first executable file of that name on `PATH`.
pub fn which(program: impl AsRef<Path>) -> Option<PathBuf> {
    which_in(program.as_ref(), &[])
}

/// As [`which`], then in the [`SBIN`] directories.
pub fn which_or_sbin(program: impl AsRef<Path>) -> Option<PathBuf> {
    which_in(program.as_ref(), &SBIN)
}

fn which_in(program: &Path, extra: &[&str]) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return is_executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Whether `p` is a regular file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn paths_are_checked_and_names_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(which(&exe), None, "not executable");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(which(&exe), Some(exe.clone()));
        assert_eq!(which(dir.path()), None, "a directory is no program");
        let sh = which("sh").expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(which("dozlab-no-such-program"), None);
        assert_eq!(which_or_sbin("dozlab-no-such-program"), None);
    }
}
