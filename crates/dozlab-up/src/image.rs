//! The session's disk: what `--image` names, and the session's own copy.
//!
//! `--image` is a local `rootfs.ext4`, a directory holding `manifest.json`
//! (or `rootfs.ext4`), an `http(s)://` URL (fetched by `dozlab init-rootfs`
//! with the node cache), or a profile name (`vm`, the default, built once by
//! `dozlab image build` and cached). A session never boots the image itself:
//! it boots a sparse copy, checked and grown to `--disk`.

use dozlab_core::manifest::{MANIFEST_FILE, Manifest};
use nix::unistd::{Whence, lseek};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Profiles shipped with Dozlab.
pub const PROFILES: &[&str] = &["minimal", "vm", "k8s"];

/// What `--image` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    /// A local ext4 file.
    File(PathBuf),
    /// An `http(s)://` URL.
    Url(String),
    /// A profile name or a recipe file (`*.toml`).
    Profile(String),
}

/// Why the image could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {0} not found: give an existing rootfs.ext4, a directory with manifest.json, an http(s) URL or a profile ({profiles})",
        profiles = PROFILES.join(", ")
    )]
    NotFound(String),
    #[error("{0} has no rootfs.ext4 and no uncompressed ext4 artifact in its manifest.json")]
    NoRootfs(String),
    #[error("cannot read the manifest in {path}")]
    Manifest {
        path: String,
        #[source]
        source: dozlab_core::manifest::ManifestError,
    },
    #[error("unsupported image URL {0:?}: use http://, https:// or file://")]
    Scheme(String),
    #[error("cannot copy the image to {path}")]
    Copy {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--disk {disk} is smaller than the image ({image}); give at least the image's size")]
    DiskTooSmall { disk: String, image: String },
    #[error("`{cmd}` failed on the session's disk:\n{output}")]
    Tool { cmd: String, output: String },
}

impl ImageError {
    /// Whether the user must change the command (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_) | Self::NoRootfs(_) | Self::Scheme(_) | Self::DiskTooSmall { .. }
        )
    }
}

/// Parses `--image` (none = the `vm` profile).
pub fn parse_spec(spec: Option<&str>) -> Result<ImageSpec, ImageError> {
    let Some(s) = spec.filter(|s| !s.is_empty()) else {
        return Ok(ImageSpec::Profile("vm".into()));
    };
    if let Some(path) = s.strip_prefix("file://") {
        return local(Path::new(path), s);
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(ImageSpec::Url(s.into()));
    }
    if s.contains("://") {
        return Err(ImageError::Scheme(s.into()));
    }
    if PROFILES.contains(&s) && !Path::new(s).exists() {
        return Ok(ImageSpec::Profile(s.into()));
    }
    if s.ends_with(".toml") && Path::new(s).is_file() {
        return Ok(ImageSpec::Profile(s.into()));
    }
    local(Path::new(s), s)
}

fn local(path: &Path, spec: &str) -> Result<ImageSpec, ImageError> {
    if path.is_file() {
        return Ok(ImageSpec::File(path.to_path_buf()));
    }
    if path.is_dir() {
        return rootfs_in_dir(path).map(ImageSpec::File);
    }
    Err(ImageError::NotFound(spec.into()))
}

/// The ext4 file in a build directory: the manifest's uncompressed artifact,
/// else `rootfs.ext4`.
pub fn rootfs_in_dir(dir: &Path) -> Result<PathBuf, ImageError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.is_file() {
        let m = Manifest::load(&manifest_path).map_err(|source| ImageError::Manifest {
            path: dir.display().to_string(),
            source,
        })?;
        if let Some(a) = m.artifacts.iter().find(|a| a.path.ends_with(".ext4")) {
            let p = dir.join(&a.path);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let p = dir.join("rootfs.ext4");
    if p.is_file() {
        Ok(p)
    } else {
        Err(ImageError::NoRootfs(dir.display().to_string()))
    }
}

/// Copies `src` to `dst` keeping holes (SEEK_DATA/SEEK_HOLE and
/// copy_file_range, which may share blocks on filesystems that can).
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<u64, ImageError> {
    let err = |source| ImageError::Copy {
        path: dst.display().to_string(),
        source,
    };
    let input = File::open(src).map_err(err)?;
    let len = input.metadata().map_err(err)?.len();
    let output = File::create(dst).map_err(err)?;
    output.set_len(len).map_err(err)?;
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        let data = match lseek(&input, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(e) => return Err(err(e.into())),
        };
        let hole = lseek(&input, data, Whence::SeekHole).map_err(|e| err(e.into()))?;
        copy_range(&input, &output, data, hole - data).map_err(err)?;
        pos = hole;
    }
    // No fsync: the copy is the session's scratch disk, gone with the
    // session; e2fsck and QEMU read it through the page cache.
    Ok(len)
}

fn copy_range(input: &File, output: &File, start: i64, len: i64) -> std::io::Result<()> {
    let (mut off_in, mut off_out, mut left) = (start, start, len as usize);
    while left > 0 {
        let n = nix::fcntl::copy_file_range(
            input,
            Some(&mut off_in),
            output,
            Some(&mut off_out),
            left.min(1 << 30),
        )?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "image shrank while copying",
            ));
        }
        left -= n;
    }
    Ok(())
}

/// Copies the `manifest.json` beside `base` (if any) beside `copy`, so `vm
/// run` sees the image's features (e.g. whether it has Docker).
pub fn copy_manifest_beside(base: &Path, copy: &Path) {
    let (Some(from), Some(to)) = (base.parent(), copy.parent()) else {
        return;
    };
    let _ = std::fs::copy(from.join(MANIFEST_FILE), to.join(MANIFEST_FILE));
}

/// Checks the copy (`e2fsck -f -p`) and grows it to `disk` bytes when larger.
pub fn check_and_grow(path: &Path, disk: Option<u64>) -> Result<(), ImageError> {
    let size = std::fs::metadata(path)
        .map_err(|source| ImageError::Copy {
            path: path.display().to_string(),
            source,
        })?
        .len();
    if let Some(d) = disk
        && d < size
    {
        return Err(ImageError::DiskTooSmall {
            disk: dozlab_core::size::human(d),
            image: dozlab_core::size::human(size),
        });
    }
    run_tool(
        Command::new("e2fsck").arg("-f").arg("-p").arg(path),
        &[0, 1],
    )?;
    if let Some(d) = disk.filter(|d| *d > size) {
        run_tool(
            Command::new("resize2fs")
                .arg(path)
                .arg(format!("{}K", d / 1024)),
            &[0],
        )?;
    }
    Ok(())
}

fn run_tool(cmd: &mut Command, ok: &[i32]) -> Result<(), ImageError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        cmd: shown.clone(),
        output: e.to_string(),
    })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(());
    }
    Err(ImageError::Tool {
        cmd: shown,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn specs_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rootfs.ext4");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(parse_spec(None).unwrap(), ImageSpec::Profile("vm".into()));
        assert_eq!(
            parse_spec(Some("minimal")).unwrap(),
            ImageSpec::Profile("minimal".into())
        );
        assert_eq!(
            parse_spec(Some(f.to_str().unwrap())).unwrap(),
            ImageSpec::File(f.clone())
        );
        assert_eq!(
            parse_spec(Some(dir.path().to_str().unwrap())).unwrap(),
            ImageSpec::File(f.clone())
        );
        assert_eq!(
            parse_spec(Some("https://h/x.ext4")).unwrap(),
            ImageSpec::Url("https://h/x.ext4".into())
        );
        let e = parse_spec(Some("/nope/rootfs.ext4")).unwrap_err();
        assert!(
            e.is_usage() && e.to_string().contains("/nope/rootfs.ext4"),
            "{e}"
        );
        assert!(matches!(
            parse_spec(Some("ftp://x")),
            Err(ImageError::Scheme(_))
        ));
    }

    #[test]
    fn copy_keeps_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.write_all(b"head").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        assert_eq!(sparse_copy(&src, &dst).unwrap(), (64 << 20) + 4);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 < 1 << 20);
    }

    #[test]
    fn grows_a_real_ext4_and_refuses_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img.ext4");
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("hello"), b"hi").unwrap();
        dozlab_testkit::require_tool!("mkfs.ext4");
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("16M")
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "mkfs.ext4 failed");
        check_and_grow(&img, Some(32 << 20)).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
        let e = check_and_grow(&img, Some(8 << 20)).unwrap_err();
        assert!(e.is_usage(), "{e}");
    }
}
