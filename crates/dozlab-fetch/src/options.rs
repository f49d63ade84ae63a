//! The inputs and the outcome of a fetch ([`FetchOptions`], [`FetchReport`]).

use crate::decode::Compression;
use crate::ext::{Checked, Grow};
use crate::progress::ProgressMode;
use dozlab_core::manifest::Manifest;
use dozlab_core::size::human;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default `--out` in the session pod.
pub const DEFAULT_OUT: &str = "/srv/vm/kernels/rootfs.ext4";
/// Default `--size` in the session pod (the original's `IMAGE_SIZE` default).
pub const DEFAULT_SIZE: &str = "4G";

/// What to fetch, where to, and how.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The image: `http(s)://`, `file://` or a path. With `manifest`, selects
    /// the artifact of the same file name.
    pub url: Option<String>,
    /// A `manifest.json` giving artifacts, sizes and digests.
    pub manifest: Option<String>,
    /// Final image path.
    pub out: PathBuf,
    /// How far to grow the filesystem (with `prepare_fs`).
    pub grow: Grow,
    /// Expected sha256 (of the file as stored, or of the decompressed image).
    pub sha256: Option<String>,
    /// Node-level cache directory.
    pub cache: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for `https://`, besides the system's.
    pub ca_cert: Option<PathBuf>,
    /// Retries after transient failures (consecutive, without progress).
    pub retries: u32,
    /// Delay before the first retry (doubles, up to 30 s, with jitter).
    pub retry_delay: Duration,
    /// Longest wait for a connection, headers or more bytes.
    pub timeout: Duration,
    /// Run `e2fsck` and `resize2fs` (the image must be ext2/3/4).
    pub prepare_fs: bool,
    /// How to show progress.
    pub progress: ProgressMode,
}

impl FetchOptions {
    /// Options with the defaults of the CLI (no resize, no cache).
    pub fn new(url: impl Into<String>, out: impl Into<PathBuf>) -> Self {
        Self {
            url: Some(url.into()),
            manifest: None,
            out: out.into(),
            grow: Grow::Keep,
            sha256: None,
            cache: None,
            ca_cert: None,
            retries: 5,
            retry_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            prepare_fs: true,
            progress: ProgressMode::Auto,
        }
    }
}

/// Whether and how the cache served the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache (none given, or no digest to key it by).
    Off,
    /// Copied from a verified entry; nothing downloaded.
    Hit,
    /// Downloaded into the cache, then copied.
    Miss,
    /// The entry was corrupt: evicted, downloaded again, copied.
    Refetched,
}

/// Time spent in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Download + hash + decompress + sparse write.
    pub download: Duration,
    /// Copy out of the cache (with verification on a hit).
    pub copy: Duration,
    /// `e2fsck`.
    pub fsck: Duration,
    /// `resize2fs`.
    pub resize: Duration,
    /// Everything.
    pub total: Duration,
}

/// What a successful fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The image path.
    pub out: PathBuf,
    /// Where it came from.
    pub source: String,
    /// Compression of the download (`None` on a cache hit).
    pub compression: Option<Compression>,
    /// Bytes downloaded, including bytes thrown away by restarts.
    pub downloaded: u64,
    /// Final apparent size.
    pub image_size: u64,
    /// Bytes the final image allocates on disk.
    pub allocated: u64,
    /// sha256 of the download as stored.
    pub stored_sha256: Option<String>,
    /// sha256 of the image before any resize.
    pub image_sha256: Option<String>,
    /// Cache use.
    pub cache: CacheUse,
    /// Connections resumed with `Range`.
    pub resumes: u32,
    /// Restarts from byte 0.
    pub restarts: u32,
    /// What `e2fsck` said, when it ran.
    pub fsck: Option<Checked>,
    /// Whether `resize2fs` grew the filesystem.
    pub grown: bool,
    /// The manifest the image was planned from (`--manifest`).
    pub manifest: Option<Manifest>,
    /// Timings.
    pub phases: Phases,
}

impl fmt::Display for FetchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.phases;
        write!(
            f,
            "{}: {} image, {} allocated; ",
            self.out.display(),
            human(self.image_size),
            human(self.allocated)
        )?;
        match self.cache {
            CacheUse::Hit => write!(f, "from the cache")?,
            _ => write!(
                f,
                "downloaded {}{} from {}",
                human(self.downloaded),
                self.compression
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                self.source
            )?,
        }
        match self.cache {
            CacheUse::Miss => write!(f, " into the cache")?,
            CacheUse::Refetched => write!(f, " into the cache (corrupt entry replaced)")?,
            _ => {}
        }
        if self.resumes + self.restarts > 0 {
            write!(f, ", {} resumes, {} restarts", self.resumes, self.restarts)?;
        }
        let rate = self.downloaded as f64 / p.download.as_secs_f64().max(1e-3);
        if self.cache == CacheUse::Hit {
            write!(f, "; verified copy {:.2?}", p.copy)?;
        } else {
            write!(
                f,
                "; download {:.2?} ({}/s)",
                p.download,
                human(rate as u64)
            )?;
        }
        if matches!(self.cache, CacheUse::Miss | CacheUse::Refetched) {
            write!(f, ", copy {:.2?}", p.copy)?;
        }
        if self.fsck.is_some() {
            write!(f, ", e2fsck {:.2?}", p.fsck)?;
        }
        if self.grown {
            write!(f, ", resize2fs {:.2?}", p.resize)?;
        }
        write!(f, ", total {:.2?}", p.total)?;
        if let Some(s) = &self.image_sha256 {
            write!(f, "; sha256 {s}")?;
        }
        Ok(())
    }
}
