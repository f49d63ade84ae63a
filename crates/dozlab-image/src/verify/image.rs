//! Read-only access to an ext4 image file without mounting it (ext4-view),
//! with a superblock pre-check that turns garbage, truncated and ext2/ext3
//! images into a clear error instead of a confusing one.

use ext4_view::{Ext4, Ext4Error};
use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const EXT_MAGIC: u16 = 0xEF53;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;

/// Why the file is not a readable ext4 image (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is not an ext4 image (no ext2/3/4 superblock); pass the rootfs.ext4 file, not the .zst or the manifest"
    )]
    NotExt(String),
    #[error(
        "{0} is an ext2/ext3 filesystem, not ext4 (no extents feature); rebuild it with mkfs.ext4 or `dozlab image build`"
    )]
    NotExt4(String),
    #[error(
        "{path} is truncated: its superblock describes {expected} bytes but the file has {actual}; download it again"
    )]
    Truncated {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("{path} cannot be read as ext4")]
    Ext4 {
        path: String,
        #[source]
        source: Ext4Error,
    },
    #[error("{path} is damaged: reading {what} failed: {detail}")]
    Damaged {
        path: String,
        what: String,
        detail: String,
    },
}

/// An opened image. Lookups that hit damage (as opposed to "not found")
/// are remembered and reported by [`Image::damage`].
pub struct Image {
    fs: Ext4,
    path: String,
    damage: RefCell<Option<(String, String)>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("path", &self.path).finish()
    }
}

impl Image {
    /// Opens and validates `path`.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let shown = path.display().to_string();
        precheck(path, &shown)?;
        let fs = Ext4::load_from_path(path).map_err(|source| ImageError::Ext4 {
            path: shown.clone(),
            source,
        })?;
        Ok(Self {
            fs,
            path: shown,
            damage: RefCell::new(None),
        })
    }

    /// The filesystem label.
    pub fn label(&self) -> String {
        self.fs.label().to_str().unwrap_or("").to_string()
    }

    /// The first damage met while reading, as an error.
    pub fn damage(&self) -> Option<ImageError> {
        self.damage
            .borrow()
            .clone()
            .map(|(what, detail)| ImageError::Damaged {
                path: self.path.clone(),
                what,
                detail,
            })
    }

    fn note(&self, what: &str, e: &Ext4Error) {
        let benign = matches!(
            e,
            Ext4Error::NotFound
                | Ext4Error::NotADirectory
                | Ext4Error::IsADirectory
                | Ext4Error::IsASpecialFile
                | Ext4Error::NotASymlink
                | Ext4Error::TooManySymlinks
                | Ext4Error::MalformedPath
                | Ext4Error::NotUtf8
        );
        if !benign && self.damage.borrow().is_none() {
            *self.damage.borrow_mut() = Some((what.to_string(), e.to_string()));
        }
    }

    /// File contents (symlinks followed), `None` when absent or not a file.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.fs.read(path).map_err(|e| self.note(path, &e)).ok()
    }

    /// File contents as text (lossy UTF-8).
    pub fn text(&self, path: &str) -> Option<String> {
        self.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// True when `path` exists itself (a dangling symlink counts).
    pub fn lexists(&self, path: &str) -> bool {
        self.fs
            .symlink_metadata(path)
            .map_err(|e| self.note(path, &e))
            .is_ok()
    }

    /// True when `path` resolves to an existing file or directory.
    pub fn exists(&self, path: &str) -> bool {
        self.fs
            .metadata(path)
            .map_err(|e| self.note(path, &e))
            .is_ok()
    }

    /// True when `path` resolves to a directory.
    pub fn is_dir(&self, path: &str) -> bool {
        self.fs.metadata(path).map(|m| m.is_dir()).unwrap_or(false)
    }

    /// Names in directory `path` (without `.` and `..`), sorted; empty when absent.
    pub fn list(&self, path: &str) -> Vec<String> {
        let Ok(entries) = self.fs.read_dir(path).map_err(|e| self.note(path, &e)) else {
            return vec![];
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.map_err(|err| self.note(path, &err)).ok())
            .map(|e| e.file_name().display().to_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    }
}

/// Reads the superblock by hand: magic, ext4-ness and size before ext4-view runs.
fn precheck(path: &Path, shown: &str) -> Result<(), ImageError> {
    let open_err = |source| ImageError::Open {
        path: shown.to_string(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    let actual = f.metadata().map_err(open_err)?.len();
    let mut sb = [0u8; 1024];
    if actual < 2048 || f.seek(SeekFrom::Start(1024)).is_err() || f.read_exact(&mut sb).is_err() {
        return Err(ImageError::NotExt(shown.to_string()));
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT_MAGIC {
        return Err(ImageError::NotExt(shown.to_string()));
    }
    if u32_at(0x60) & INCOMPAT_EXTENTS == 0 {
        return Err(ImageError::NotExt4(shown.to_string()));
    }
    let log_block = u32_at(0x18);
    if log_block > 6 {
        return Err(ImageError::NotExt(shown.to_string()));
    }
    let block_size = 1024u64 << log_block;
    let hi = if u32_at(0x60) & INCOMPAT_64BIT != 0 {
        u64::from(u32_at(0x150)) << 32
    } else {
        0
    };
    let blocks = u64::from(u32_at(0x04)) | hi;
    let expected = blocks.saturating_mul(block_size);
    if actual < expected {
        return Err(ImageError::Truncated {
            path: shown.to_string(),
            expected,
            actual,
        });
    }
    Ok(())
}
