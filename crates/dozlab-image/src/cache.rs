//! The build cache: `<cache>/images/<key>/` holds one finished build
//! (rootfs.ext4, rootfs.ext4.zst, manifest.json), keyed by [`cache_key`].
//!
//! Concurrent callers are safe: the builder holds an exclusive `flock` on
//! `<cache>/images/<key>.lock`, builds into `<cache>/images/.tmp-<key>-<pid>`
//! and renames that directory to `<key>` when complete. A directory named
//! `<key>` is therefore always a complete build.

use crate::build::{self, BuildError, BuildOptions, cache_key};
use crate::recipe::{Recipe, RecipeError};
use dozlab_core::manifest::MANIFEST_FILE;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a cached image could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cache {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The default cache directory: `$DOZLAB_CACHE`, else `$HOME/.cache/dozlab`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOZLAB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/dozlab")
}

/// The directory of a cached build of `profile` (built-in name or recipe file)
/// with default options, building it first when absent.
pub fn ensure_cached(profile: &str, cache_dir: &Path) -> Result<PathBuf, CacheError> {
    let recipe = Recipe::load(profile)?;
    ensure_cached_with(&recipe, &BuildOptions::default(), cache_dir)
}

/// Where a build of `recipe` with `opts` lives (or would live) in the cache.
pub fn cached_path(recipe: &Recipe, opts: &BuildOptions, cache_dir: &Path) -> PathBuf {
    cache_dir.join("images").join(cache_key(recipe, opts))
}

/// Like [`ensure_cached`] for an already loaded recipe and explicit options.
pub fn ensure_cached_with(
    recipe: &Recipe,
    opts: &BuildOptions,
    cache_dir: &Path,
) -> Result<PathBuf, CacheError> {
    let images = cache_dir.join("images");
    let key = cache_key(recipe, opts);
    let done = images.join(&key);
    if is_complete(&done) {
        return Ok(done);
    }
    crate::host::preflight().map_err(BuildError::from)?;
    fs::create_dir_all(&images).map_err(io_err(&images))?;
    let lock_path = images.join(format!("{key}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    wait_for_lock(&lock, &lock_path)?;
    if is_complete(&done) {
        return Ok(done);
    }
    build::remove_stale_staging(&images, &format!(".tmp-{key}-"));
    let staging = images.join(format!(".tmp-{key}-{}", std::process::id()));
    let guard = build::StagingGuard(staging.clone());
    let mut opts = opts.clone();
    if opts.download_cache.is_none() {
        opts.download_cache = Some(cache_dir.join("downloads"));
    }
    if opts.cache_dir.is_none() {
        opts.cache_dir = Some(cache_dir.to_path_buf());
    }
    build::build_in(recipe, &opts, &staging)?;
    if done.exists() {
        // An incomplete directory left by hand: replace it.
        fs::remove_dir_all(&done).map_err(io_err(&done))?;
    }
    fs::rename(&staging, &done).map_err(io_err(&done))?;
    drop(guard);
    Ok(done)
}

/// Takes the exclusive lock, saying so when another build holds it; gives up
/// when the process is interrupted.
fn wait_for_lock(lock: &fs::File, path: &Path) -> Result<(), CacheError> {
    let mut told = false;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {
                if !told {
                    eprintln!("another build holds {}; waiting for it ...", path.display());
                    told = true;
                }
                crate::host::interrupted().map_err(BuildError::from)?;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(path)(e)),
        }
    }
}

fn is_complete(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file() && dir.join(build::IMAGE_FILE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_entry_is_returned_without_building() {
        let cache = tempfile::tempdir().unwrap();
        let recipe = Recipe::load("minimal").unwrap();
        let dir = cached_path(&recipe, &BuildOptions::default(), cache.path());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(MANIFEST_FILE), "{}").unwrap();
        fs::write(dir.join(build::IMAGE_FILE), "").unwrap();
        assert_eq!(ensure_cached("minimal", cache.path()).unwrap(), dir);
    }

    #[test]
    fn a_waiter_takes_the_build_finished_by_the_lock_holder() {
        // ensure_cached checks for root and the build tools first.
        dozlab_testkit::require_root!("ensure_cached builds as root");
        for (tool, _) in crate::host::BUILD_TOOLS {
            dozlab_testkit::require_tool!(*tool);
        }
        let cache = tempfile::tempdir().unwrap();
        let recipe = Recipe::load("minimal").unwrap();
        let opts = BuildOptions::default();
        let images = cache.path().join("images");
        fs::create_dir_all(&images).unwrap();
        let key = cache_key(&recipe, &opts);
        let lock = fs::File::create(images.join(format!("{key}.lock"))).unwrap();
        lock.lock().unwrap();
        let root = cache.path().to_path_buf();
        let waiter = std::thread::spawn(move || ensure_cached("minimal", &root));
        // While we hold the lock, "finish" the build the way a builder does: rename in place.
        let staging = images.join(format!(".tmp-{key}-{}", std::process::id()));
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join(MANIFEST_FILE), "{}").unwrap();
        fs::write(staging.join(build::IMAGE_FILE), "").unwrap();
        fs::rename(&staging, images.join(&key)).unwrap();
        lock.unlock().unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), images.join(&key));
    }

    #[test]
    fn unknown_profile_is_a_recipe_error() {
        let cache = tempfile::tempdir().unwrap();
        assert!(matches!(
            ensure_cached("nope", cache.path()),
            Err(CacheError::Recipe(_))
        ));
    }
}
