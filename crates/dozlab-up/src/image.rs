//! The session's disk: what `--image` names, and the session's own copy.
//!
//! `--image` is a local `rootfs.ext4`, a directory holding `manifest.json`
//! (or `rootfs.ext4`), an `http(s)://` URL of an image or of its manifest
//! (fetched with `dozlab_fetch::fetch` through the download cache, keyed by
//! the manifest's digest or `--sha256`), or a profile name (`vm`, the
//! default, built once by `dozlab image build` and cached). A session never
//! boots the image itself: it boots its own copy (`dozlab_fetch::copy_local`
//! for local images: sparse, `e2fsck`'d, grown to `--disk`).

use dozlab_core::manifest::{MANIFEST_FILE, Manifest};
use dozlab_fetch::{FetchOptions, Grow, ProgressMode};
use std::path::{Path, PathBuf};

/// Disk size when `--disk` is not given (the original's `IMAGE_SIZE`).
pub const DEFAULT_DISK: u64 = 4 << 30;

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
}

impl ImageError {
    /// Whether the user must change the command (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_) | Self::NoRootfs(_) | Self::Scheme(_)
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

/// Copies the `manifest.json` beside `base` (if any) beside `copy`, so `vm
/// run` sees the image's features (e.g. whether it has Docker).
pub fn copy_manifest_beside(base: &Path, copy: &Path) {
    let (Some(from), Some(to)) = (base.parent(), copy.parent()) else {
        return;
    };
    let _ = std::fs::copy(from.join(MANIFEST_FILE), to.join(MANIFEST_FILE));
}

/// How far the session's disk grows: to `--disk` exactly (a smaller image is
/// refused), else to [`DEFAULT_DISK`] or the image's own size when larger.
pub fn disk_grow(disk: Option<u64>) -> Grow {
    match disk {
        Some(d) => Grow::To(d),
        None => Grow::AtLeast(DEFAULT_DISK),
    }
}

/// How `--image URL` is fetched into `out`, with the download cache in
/// `cache`. A manifest URL (`*.json`) names the image and its digests; an
/// image URL is checked against `sha256` when given, else against the
/// `manifest.json` beside it, as `dozlab image build` and `image serve` lay
/// them out. Returns the options and whether the manifest is only a guess
/// (when it is missing, the image is fetched alone: unverified, so uncached).
pub fn url_fetch(
    url: &str,
    sha256: Option<&str>,
    out: &Path,
    cache: &Path,
    grow: Grow,
) -> (FetchOptions, bool) {
    let mut o = FetchOptions::new(url, out);
    o.cache = Some(cache.join("downloads"));
    o.grow = grow;
    o.progress = ProgressMode::Off;
    let name = url.rsplit('/').next().unwrap_or("");
    let mut guessed = false;
    if name.ends_with(".json") {
        o.manifest = o.url.take();
    } else if sha256.is_some() {
        o.sha256 = sha256.map(str::to_string);
    } else if let Some(dir) = url
        .rsplit_once('/')
        .map(|(d, _)| d)
        .filter(|_| !url.contains('?'))
    {
        o.manifest = Some(format!("{dir}/{MANIFEST_FILE}"));
        guessed = true;
    }
    (o, guessed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn url_images_are_checked_by_the_manifest_beside_them_or_sha256() {
        let (out, cache) = (Path::new("/d/rootfs.ext4"), Path::new("/c"));
        let grow = Grow::AtLeast(1);
        let (o, guessed) = url_fetch("http://h/i/rootfs.ext4.zst", None, out, cache, grow);
        assert_eq!(o.url.as_deref(), Some("http://h/i/rootfs.ext4.zst"));
        assert_eq!(o.manifest.as_deref(), Some("http://h/i/manifest.json"));
        assert!(guessed);
        assert_eq!(o.cache.as_deref(), Some(Path::new("/c/downloads")));
        assert_eq!(o.grow, grow);
        let (o, guessed) = url_fetch("http://h/i/manifest.json", None, out, cache, grow);
        assert_eq!(
            (o.url, o.manifest.as_deref()),
            (None, Some("http://h/i/manifest.json"))
        );
        assert!(!guessed);
        let (o, guessed) = url_fetch("http://h/i/x.ext4", Some("ab"), out, cache, grow);
        assert_eq!(
            (o.sha256.as_deref(), o.manifest, guessed),
            (Some("ab"), None, false)
        );
        let (o, guessed) = url_fetch("http://h/x.ext4?sig=1", None, out, cache, grow);
        assert_eq!(
            (o.manifest, guessed),
            (None, false),
            "no guess for a signed URL"
        );
    }
}
