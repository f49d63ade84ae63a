//! The ext4 side: read the superblock, `e2fsck -f -p`, `resize2fs` to grow.
//!
//! `e2fsck` runs in preen mode: it repairs only what is safe without a human
//! and exits 0 (clean) or 1 (repaired); anything else means real corruption
//! and is reported with its output. Growing never shrinks.

use dozlab_core::size::human;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;
use tokio::process::Command;

const EXT_MAGIC: u16 = 0xef53;
const FEATURE_INCOMPAT_64BIT: u32 = 0x80;

/// Why the filesystem could not be checked or grown.
#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    #[error(
        "the image is not an ext2/3/4 filesystem (no superblock magic); pass --no-resize to keep it as it is"
    )]
    NotExt,
    #[error("cannot read the image's superblock")]
    Read(#[source] std::io::Error),
    #[error("cannot run {tool} (install e2fsprogs)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("e2fsck found errors it could not repair safely (exit {code}):\n{output}")]
    Fsck { code: i32, output: String },
    #[error("resize2fs failed (exit {code}):\n{output}")]
    Resize { code: i32, output: String },
    #[error(
        "refusing to shrink the image: its filesystem is {} but the requested size is {}; set --size (IMAGE_SIZE) to at least {}",
        human(*.current), human(*.requested), human(*.current)
    )]
    Shrink { current: u64, requested: u64 },
}

/// Size of the ext filesystem in `image`, from its superblock.
pub fn fs_size(image: &Path) -> Result<u64, ExtError> {
    let f = File::open(image).map_err(ExtError::Read)?;
    let mut head = [0u8; HEAD_LEN];
    f.read_exact_at(&mut head, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ExtError::NotExt,
        _ => ExtError::Read(e),
    })?;
    fs_size_from_head(&head)
}

/// Bytes at the start of an image that hold the primary superblock.
pub const HEAD_LEN: usize = 2048;

/// Size of the ext filesystem whose first [`HEAD_LEN`] bytes are `head`.
pub fn fs_size_from_head(head: &[u8]) -> Result<u64, ExtError> {
    let sb = head.get(1024..HEAD_LEN).ok_or(ExtError::NotExt)?;
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != EXT_MAGIC {
        return Err(ExtError::NotExt);
    }
    let mut blocks = u64::from(u32_at(0x4));
    if u32_at(0x60) & FEATURE_INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32_at(0x150)) << 32;
    }
    let log = u32_at(0x18);
    if log > 6 {
        return Err(ExtError::NotExt);
    }
    Ok(blocks * (1024u64 << log))
}

/// How far to grow the filesystem once it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grow {
    /// Keep the image's own size.
    #[default]
    Keep,
    /// To exactly this many bytes; a larger image is refused (`--size`).
    To(u64),
    /// To this many bytes, or the image's own size when that is larger
    /// (`dozlab up`'s default disk).
    AtLeast(u64),
}

impl Grow {
    /// The size to grow an image of `current` bytes to (`None`: keep it), or
    /// the refusal to shrink it.
    pub fn target(self, current: u64) -> Result<Option<u64>, ExtError> {
        match self {
            Self::Keep => Ok(None),
            Self::To(size) => refuse_shrink(current, size).map(|()| Some(size)),
            Self::AtLeast(size) => Ok(Some(size.max(current))),
        }
    }

    /// The size asked for, if any (for free-space checks before the image is known).
    pub fn bytes(self) -> Option<u64> {
        match self {
            Self::Keep => None,
            Self::To(size) | Self::AtLeast(size) => Some(size),
        }
    }
}

/// The early check run on the first bytes of the image while it streams in:
/// it must be ext2/3/4, and [`Grow::target`] must accept its size. Saves
/// downloading gigabytes only to refuse them.
pub fn early_check(grow: Grow) -> impl FnMut(&[u8]) -> Result<(), ExtError> + Send {
    move |head| grow.target(fs_size_from_head(head)?).map(drop)
}

/// What `e2fsck` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Nothing to fix.
    Clean,
    /// Fixed safe problems; the output says what.
    Repaired(String),
}

/// Runs `e2fsck -f -p` on `image`.
pub async fn check(image: &Path) -> Result<Checked, ExtError> {
    let out = run(
        "e2fsck",
        Command::new("e2fsck").arg("-f").arg("-p").arg(image),
    )
    .await?;
    let text = text_of(&out);
    match out.status.code() {
        Some(0) => Ok(Checked::Clean),
        Some(1) => Ok(Checked::Repaired(text)),
        code => Err(ExtError::Fsck {
            code: code.unwrap_or(-1),
            output: text,
        }),
    }
}

/// Grows the filesystem (and the file) to `size` bytes; `Ok(false)` when it
/// already has that size. A smaller size is refused.
pub async fn grow(image: &Path, size: u64) -> Result<bool, ExtError> {
    let current = fs_size(image)?;
    refuse_shrink(current, size)?;
    if round_down(size, image)? <= current {
        return Ok(false);
    }
    let out = run(
        "resize2fs",
        Command::new("resize2fs")
            .arg(image)
            .arg(format!("{}K", size / 1024)),
    )
    .await?;
    if !out.status.success() {
        return Err(ExtError::Resize {
            code: out.status.code().unwrap_or(-1),
            output: text_of(&out),
        });
    }
    Ok(true)
}

/// Fails when `requested` is smaller than `current`.
pub fn refuse_shrink(current: u64, requested: u64) -> Result<(), ExtError> {
    if requested < current {
        return Err(ExtError::Shrink { current, requested });
    }
    Ok(())
}

fn round_down(size: u64, image: &Path) -> Result<u64, ExtError> {
    let f = File::open(image).map_err(ExtError::Read)?;
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, 1024 + 0x18)
        .map_err(ExtError::Read)?;
    let block = 1024u64 << u32::from_le_bytes(b).min(6);
    Ok(size / block * block)
}

async fn run(tool: &'static str, cmd: &mut Command) -> Result<Output, ExtError> {
    cmd.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| ExtError::Spawn { tool, source })
}

fn text_of(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(err.trim());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::make_ext4;

    #[tokio::test]
    async fn reads_checks_and_grows_a_real_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.ext4");
        make_ext4(&img, 16 << 20, &[("hello.txt", b"hi".as_slice())]).unwrap();
        assert_eq!(fs_size(&img).unwrap(), 16 << 20);
        assert_eq!(check(&img).await.unwrap(), Checked::Clean);
        assert!(grow(&img, 32 << 20).await.unwrap());
        assert_eq!(fs_size(&img).unwrap(), 32 << 20);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 32 << 20);
        assert!(
            !grow(&img, 32 << 20).await.unwrap(),
            "same size: nothing to do"
        );
        let err = grow(&img, 8 << 20).await.unwrap_err();
        assert!(err.to_string().contains("refusing to shrink"), "{err}");
        assert!(err.to_string().contains("32.0 MiB"), "{err}");
    }

    #[tokio::test]
    async fn real_corruption_fails_with_e2fsck_output() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.ext4");
        make_ext4(&img, 8 << 20, &[("a", b"a".as_slice())]).unwrap();
        // Wipe the block group descriptors and inode table area after the superblock.
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&vec![0xa5u8; 256 << 10], 4096).unwrap();
        let err = check(&img).await.unwrap_err();
        assert!(matches!(err, ExtError::Fsck { .. }), "{err}");
        assert!(err.to_string().contains("e2fsck"), "{err}");
    }

    #[test]
    fn grow_targets_never_shrink() {
        assert_eq!(Grow::Keep.target(10).unwrap(), None);
        assert_eq!(Grow::To(20).target(10).unwrap(), Some(20));
        assert!(matches!(
            Grow::To(5).target(10),
            Err(ExtError::Shrink { .. })
        ));
        assert_eq!(Grow::AtLeast(20).target(10).unwrap(), Some(20));
        assert_eq!(Grow::AtLeast(5).target(10).unwrap(), Some(10));
        assert_eq!(Grow::AtLeast(5).bytes(), Some(5));
    }

    #[test]
    fn random_bytes_are_not_ext4() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x");
        std::fs::write(&img, vec![7u8; 8192]).unwrap();
        assert!(matches!(fs_size(&img), Err(ExtError::NotExt)));
        std::fs::write(&img, b"short").unwrap();
        assert!(matches!(fs_size(&img), Err(ExtError::NotExt)));
    }
}
