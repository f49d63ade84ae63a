//! Where an image comes from: `http://`, `https://`, `file://` or a plain path,
//! and how a manifest's relative artifact paths resolve against it.

use reqwest::Url;
use std::path::{Component, Path, PathBuf};

/// Why a location was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("unsupported URL scheme in {0:?}; use http://, https://, file:// or a plain path")]
    Scheme(String),
    #[error("{0:?} is not a local file path")]
    NotAPath(String),
    #[error(
        "manifest artifact path {0:?} must be relative to the manifest, without '..' or a leading '/'"
    )]
    ArtifactPath(String),
}

/// A place to read an image or manifest from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Over HTTP(S).
    Http(Url),
    /// A local file.
    File(PathBuf),
}

impl Source {
    /// Parses a URL or a plain path.
    pub fn parse(s: &str) -> Result<Self, SourceError> {
        let lower = s.to_ascii_lowercase();
        let url = || {
            Url::parse(s).map_err(|e| SourceError::BadUrl {
                url: s.to_string(),
                why: e.to_string(),
            })
        };
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Ok(Self::Http(url()?))
        } else if lower.starts_with("file:") {
            let u = url()?;
            u.to_file_path()
                .map(Self::File)
                .map_err(|()| SourceError::NotAPath(s.to_string()))
        } else if s.contains("://") {
            Err(SourceError::Scheme(s.to_string()))
        } else {
            Ok(Self::File(PathBuf::from(s)))
        }
    }

    /// `rel` resolved against this location's directory (for manifest artifacts).
    pub fn join(&self, rel: &str) -> Result<Self, SourceError> {
        let p = Path::new(rel);
        let safe = !rel.is_empty()
            && p.components().all(|c| matches!(c, Component::Normal(_)))
            && !rel.contains('\\');
        if !safe {
            return Err(SourceError::ArtifactPath(rel.to_string()));
        }
        match self {
            Self::Http(u) => u
                .join(rel)
                .map(Self::Http)
                .map_err(|e| SourceError::BadUrl {
                    url: rel.to_string(),
                    why: e.to_string(),
                }),
            Self::File(f) => Ok(Self::File(
                f.parent().unwrap_or_else(|| Path::new(".")).join(p),
            )),
        }
    }

    /// The last path segment (for labels and artifact matching).
    pub fn file_name(&self) -> String {
        match self {
            Self::Http(u) => u
                .path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| u.host_str().unwrap_or("download").to_string()),
            Self::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(u) => write!(f, "{u}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert!(matches!(
            Source::parse("https://h/x.ext4").unwrap(),
            Source::Http(_)
        ));
        assert!(matches!(
            Source::parse("HTTP://h/x").unwrap(),
            Source::Http(_)
        ));
        assert_eq!(
            Source::parse("file:///srv/a.ext4").unwrap(),
            Source::File("/srv/a.ext4".into())
        );
        assert_eq!(
            Source::parse("rel/a").unwrap(),
            Source::File("rel/a".into())
        );
        assert!(matches!(
            Source::parse("ftp://h/x"),
            Err(SourceError::Scheme(_))
        ));
        assert!(matches!(
            Source::parse("http://"),
            Err(SourceError::BadUrl { .. })
        ));
    }

    #[test]
    fn joins_artifacts_relative_to_the_manifest() {
        let m = Source::parse("http://h:1/imgs/v1/manifest.json").unwrap();
        assert_eq!(
            m.join("rootfs.ext4.zst").unwrap().to_string(),
            "http://h:1/imgs/v1/rootfs.ext4.zst"
        );
        let f = Source::parse("/srv/out/manifest.json").unwrap();
        assert_eq!(
            f.join("rootfs.ext4").unwrap(),
            Source::File("/srv/out/rootfs.ext4".into())
        );
        for bad in ["../x", "/etc/passwd", "", "a/../../b"] {
            assert!(m.join(bad).is_err(), "{bad}");
        }
        assert_eq!(m.join("rootfs.ext4").unwrap().file_name(), "rootfs.ext4");
    }
}
