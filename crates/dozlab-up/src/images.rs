//! Profile images (`--image vm`, the default): built once by `dozlab image
//! build` (through `dozlab_image::ensure_cached`) and cached under
//! `$DOZLAB_CACHE/images/<key of the recipe>`.

use std::path::{Path, PathBuf};

/// Why a profile image is not available.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot use the image recipe {profile:?}")]
    Recipe {
        profile: String,
        #[source]
        source: Box<dozlab_image::CacheError>,
    },
    #[error("cannot build the {profile} image (see `dozlab logs NAME -c supervisor`)")]
    Build {
        profile: String,
        #[source]
        source: Box<dozlab_image::CacheError>,
    },
}

impl ProfileError {
    /// Whether the user must change the command.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Recipe { .. })
    }
}

/// The directory (with `rootfs.ext4` and `manifest.json`) of the cached
/// build of `profile`, building it first when needed (minutes, once).
pub fn ensure_profile(profile: &str, cache: &Path) -> Result<PathBuf, ProfileError> {
    dozlab_image::ensure_cached(profile, cache).map_err(|source| match source {
        dozlab_image::CacheError::Recipe(_) => ProfileError::Recipe {
            profile: profile.into(),
            source: Box::new(source),
        },
        source => ProfileError::Build {
            profile: profile.into(),
            source: Box::new(source),
        },
    })
}
