//! The node-level image cache: `DIR/<sha256>.img` plus `DIR/<sha256>.img.sha256`.
//!
//! Entries are keyed by the expected digest of the download (`--sha256` or
//! the manifest's) and hold the verified, decompressed, sparse image, never
//! grown. The sidecar records the image's own sha256 and length, so every hit
//! is re-hashed while it is copied out: a corrupt entry is detected, evicted
//! and fetched again. Populating an entry happens under an exclusive `flock`
//! on `DIR/<sha256>.lock`: write a temporary file, verify, write the sidecar,
//! rename. Entries are never changed in place, so readers need no lock.

use crate::temp::TempFile;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot use the cache directory {dir}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot store the cache entry {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A complete entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The image file.
    pub path: PathBuf,
    /// sha256 of the image, from the sidecar.
    pub image_sha256: String,
    /// Length of the image, from the sidecar.
    pub len: u64,
    /// Inode of the image file (to evict exactly the entry found corrupt).
    pub ino: u64,
}

impl Cache {
    /// Opens (creating) the cache directory.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        fs::create_dir_all(dir).map_err(|source| CacheError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn image(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.img"))
    }

    fn sidecar(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.img.sha256"))
    }

    /// The entry for `key`, if complete.
    pub fn lookup(&self, key: &str) -> Option<Entry> {
        let path = self.image(key);
        let ino = fs::metadata(&path).ok()?.ino();
        let text = fs::read_to_string(self.sidecar(key)).ok()?;
        let mut words = text.split_whitespace();
        let image_sha256 = words.next()?.to_string();
        let len = words.next()?.parse().ok()?;
        Some(Entry {
            path,
            image_sha256,
            len,
            ino,
        })
    }

    /// Takes the exclusive lock for `key`, waiting as long as it is held.
    pub async fn lock(&self, key: &str) -> Result<File, CacheError> {
        let path = self.dir.join(format!("{key}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| CacheError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) => {
                tracing::info!("another fetch is filling the cache entry {key}; waiting for it")
            }
            Err(fs::TryLockError::Error(source)) => return Err(CacheError::Lock { path, source }),
        }
        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| CacheError::Lock { path, source })
    }

    /// A temporary file in the cache for filling `key` (call with the lock
    /// held: temporary files of `key` left by dead fetches are removed first;
    /// PIDs mean nothing across the pods that share a cache).
    pub fn temp(&self, key: &str) -> Result<TempFile, CacheError> {
        let path = self.image(key);
        let stale = crate::temp::remove_all(&path);
        if stale > 0 {
            tracing::info!("removed {stale} unfinished cache file(s) of {key}");
        }
        TempFile::beside(&path).map_err(|source| CacheError::Store { path, source })
    }

    /// Publishes a verified image (call with the lock held).
    pub fn commit(
        &self,
        key: &str,
        temp: TempFile,
        image_sha256: &str,
        len: u64,
    ) -> Result<(), CacheError> {
        let path = self.image(key);
        let store = |source| CacheError::Store {
            path: path.clone(),
            source,
        };
        dozlab_core::atomic::write_atomic(
            &self.sidecar(key),
            format!("{image_sha256} {len}\n").as_bytes(),
            0o644,
        )
        .map_err(store)?;
        temp.persist(&path).map_err(store)?;
        Ok(())
    }

    /// Removes the entry for `key` if it is still the file with inode `ino`
    /// (call with the lock held).
    pub fn evict(&self, key: &str, ino: u64) {
        let path = self.image(key);
        if fs::metadata(&path).is_ok_and(|m| m.ino() == ino) {
            tracing::warn!("removing corrupt cache entry {}", path.display());
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(self.sidecar(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_lookup_evict() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let key = "ab".repeat(32);
        assert!(cache.lookup(&key).is_none());
        let _lock = cache.lock(&key).await.unwrap();
        let t = cache.temp(&key).unwrap();
        std::io::Write::write_all(&mut t.file(), b"img").unwrap();
        cache.commit(&key, t, "cd", 3).unwrap();
        let e = cache.lookup(&key).unwrap();
        assert_eq!((e.image_sha256.as_str(), e.len), ("cd", 3));
        cache.evict(&key, e.ino + 1);
        assert!(cache.lookup(&key).is_some(), "another inode is left alone");
        cache.evict(&key, e.ino);
        assert!(cache.lookup(&key).is_none());
    }

    #[tokio::test]
    async fn the_lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let first = cache.lock("k").await.unwrap();
        let c2 = cache.clone();
        let waiter = tokio::spawn(async move { c2.lock("k").await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let probe = File::open(dir.path().join("k.lock")).unwrap();
        assert!(matches!(
            probe.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(first);
        waiter.await.unwrap().unwrap();
    }
}
