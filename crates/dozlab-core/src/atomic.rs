//! Whole-or-nothing file writes: write a temporary file beside the target,
//! fsync it, set its mode, then rename it over the target.
//!
//! Readers (probes, other containers, `dozlab up`) never see a half-written
//! config, key or status file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The temporary path used while writing `target` (same directory, so the
/// final rename stays on one filesystem).
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `data` to `target` atomically with permission bits `mode`.
pub fn write_atomic(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path_for(target);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
        assert!(!temp_path_for(&p).exists());
    }
}
