//! `manifest.json`: what `dozlab image build` writes beside an image and what
//! `init-rootfs`, `image verify`, `image serve` and `dozlab up` read.
//!
//! Unknown fields are ignored on read so newer builders stay readable.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the manifest inside a build's output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest of one built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image name, e.g. `dozlab-vm`.
    pub name: String,
    /// Profile (recipe) it was built from, e.g. `vm`.
    pub profile: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The guest kernel shipped in the image's `/boot`.
    pub kernel: KernelInfo,
    /// Installed packages as `name=version`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Files of the build (the raw ext4 and its compressed form).
    pub artifacts: Vec<Artifact>,
    /// Capabilities of the image that checks and runtimes rely on.
    #[serde(default)]
    pub features: Features,
    /// Content hash of the recipe and build options (the build cache key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_sha256: Option<String>,
}

/// The guest kernel in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r` of the kernel, e.g. `6.1.0-40-cloud-amd64`.
    pub version: String,
    /// Path of the kernel inside the image, e.g. `/boot/vmlinuz-6.1.0-40-cloud-amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path of the initramfs inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
}

/// One file of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to the manifest's directory, e.g. `rootfs.ext4.zst`.
    pub path: String,
    /// Size in bytes of the file as stored.
    pub size: u64,
    /// Lower-case hex sha256 of the file as stored.
    pub sha256: String,
    /// For a compressed artifact: the size of the decompressed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    /// For a compressed artifact: the sha256 of the decompressed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_sha256: Option<String>,
}

/// What the image provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// Docker daemon enabled and listening on TCP 2375.
    pub docker: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self { docker: true }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest is not valid JSON for a Dozlab image manifest")]
    Parse(#[source] serde_json::Error),
}

impl Manifest {
    /// Parses a manifest from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        serde_json::from_str(text).map_err(ManifestError::Parse)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Pretty JSON for writing.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifest serialises")
    }

    /// The artifact with this path, if any.
    pub fn artifact(&self, path: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let text = r#"{"name":"dozlab-vm","profile":"vm","created":"2026-01-01T00:00:00Z",
            "kernel":{"version":"6.1.0-40-cloud-amd64"},"packages":["openssh-server=1:9.2"],
            "artifacts":[{"path":"rootfs.ext4","size":10,"sha256":"ab"}],"future":1}"#;
        let m = Manifest::from_json(text).unwrap();
        assert_eq!(m.artifact("rootfs.ext4").unwrap().size, 10);
        assert!(m.features.docker, "docker is assumed when not stated");
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn rejects_a_manifest_without_artifacts() {
        let err = Manifest::from_json(r#"{"name":"x"}"#).unwrap_err();
        assert!(matches!(err, ManifestError::Parse(_)));
    }
}
