//! Profile images (`--image vm`, the default): built once by
//! `dozlab image build` and cached under `$DOZLAB_CACHE/images`.

use std::path::{Path, PathBuf};

/// Why a profile image is not available.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot build the {profile} image: {message}")]
    Build { profile: String, message: String },
}

/// The directory (with `rootfs.ext4` and `manifest.json`) of the cached
/// build of `profile`, building it first when needed.
pub fn ensure_profile(profile: &str, cache: &Path) -> Result<PathBuf, ProfileError> {
    let _ = cache;
    Err(ProfileError::Build {
        profile: profile.into(),
        message: "`dozlab image build` is not available in this build yet; pass --image PATH to a rootfs.ext4".into(),
    })
}
