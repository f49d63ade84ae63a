//! Free-space checks before the first byte is written.

use dozlab_core::size::human;
use std::path::{Path, PathBuf};

/// Not enough room, or no way to tell.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error(
        "not enough space in {dir}: {what} needs {} but only {} is free; free some space or enlarge the volume (the pod's vm-kernels sizeLimit)",
        human(*.needed), human(*.free)
    )]
    NotEnough {
        dir: PathBuf,
        what: String,
        needed: u64,
        free: u64,
    },
    #[error("cannot read the free space of {dir}")]
    Statvfs {
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Bytes an unprivileged writer may still use in the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, SpaceError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|source| SpaceError::Statvfs {
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Fails unless `dir` has `needed` bytes free; `what` says what needs them.
pub fn ensure(dir: &Path, needed: u64, what: &str) -> Result<u64, SpaceError> {
    let free = free_bytes(dir)?;
    if free < needed {
        return Err(SpaceError::NotEnough {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            needed,
            free,
        });
    }
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_needed_and_free() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        ensure(dir.path(), 1, "x").unwrap();
        let err = ensure(dir.path(), u64::MAX, "the image (2.0 GiB)").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("needs 16.0 EiB") || msg.contains("needs "),
            "{msg}"
        );
        assert!(msg.contains("is free"), "{msg}");
        assert!(msg.contains("the image (2.0 GiB)"), "{msg}");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(matches!(
            free_bytes(Path::new("/nonexistent/dozlab")),
            Err(SpaceError::Statvfs { .. })
        ));
    }
}
