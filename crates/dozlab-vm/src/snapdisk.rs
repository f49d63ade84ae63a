//! Sparse copies and digests of snapshot files: only the data of a disk
//! image is read, written and hashed, holes stay holes.
//!
//! The digest is a sha256 over every non-zero 1 MiB chunk with its offset,
//! so it names the file's content whatever its extent layout: a copy made
//! on another filesystem (or a chunk of zeros written instead of a hole)
//! has the same digest. One pass serves both uses: hashing a file while it
//! is copied (saving a snapshot, restoring its disk) and hashing it alone
//! (checking a memory file while QEMU reads it). Restoring a disk onto a
//! fresh copy of its image compares instead of copying ([`diff_and_digest`],
//! [`apply`]): only the chunks the first boot changed are written.

use nix::fcntl::{FallocateFlags, fallocate};
use nix::unistd::{Whence, lseek};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const CHUNK: usize = 1 << 20;
/// A chunk of zeros: slice equality is a memcmp, fast even unoptimised.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Hashes `src`'s content; when `dst` is given, makes `dst` a sparse copy of
/// it (same length; data written, everything else a hole, whatever `dst`
/// held before). Returns the hex digest.
pub fn copy_and_digest(src: &File, dst: Option<&File>) -> io::Result<String> {
    let len = src.metadata()?.len();
    if let Some(d) = dst {
        d.set_len(len)?;
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let Some((data, end)) = next_data(src, pos, len)? else {
            punch(dst, pos, len - pos)?;
            break;
        };
        punch(dst, pos, data - pos)?;
        let mut at = data;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            src.read_exact_at(&mut buf[..n], at)?;
            let chunk = &buf[..n];
            if chunk == &ZEROS[..n] {
                punch(dst, at, n as u64)?;
            } else {
                h.update(at.to_le_bytes());
                h.update((n as u64).to_le_bytes());
                h.update(chunk);
                if let Some(d) = dst {
                    d.write_all_at(chunk, at)?;
                }
            }
            at += n as u64;
        }
        pos = end;
    }
    if let Some(d) = dst {
        d.sync_data()?;
    }
    Ok(hex::encode(h.finalize()))
}

/// The digest of a file (no copy).
pub fn digest(src: &File) -> io::Result<String> {
    copy_and_digest(src, None)
}

/// One change that makes a file equal to another, chunk by chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Copy `[at, at+len)` from the source.
    Write { at: u64, len: u64 },
    /// The source has zeros there: deallocate.
    Zero { at: u64, len: u64 },
}

/// Hashes `src` (the digest of [`digest`]) and lists what must change in
/// `dst` (same length) to make it equal to `src`, without writing: only
/// the chunks where either file has data are read. Restoring a snapshot's
/// disk onto a fresh copy of its image then writes only what the boot changed.
pub fn diff_and_digest(src: &File, dst: &File) -> io::Result<(String, Vec<Change>)> {
    let len = src.metadata()?.len();
    if dst.metadata()?.len() != len {
        return Err(io::Error::other("the files differ in length"));
    }
    let mut ranges = data_ranges(src, len)?;
    ranges.extend(data_ranges(dst, len)?);
    ranges.sort_unstable();
    let mut h = Sha256::new();
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut changes: Vec<Change> = Vec::new();
    let mut pos = 0u64;
    for (start, end) in ranges {
        let mut at = start.max(pos);
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            src.read_exact_at(&mut a[..n], at)?;
            dst.read_exact_at(&mut b[..n], at)?;
            let zero = a[..n] == ZEROS[..n];
            if !zero {
                h.update(at.to_le_bytes());
                h.update((n as u64).to_le_bytes());
                h.update(&a[..n]);
            }
            if a[..n] != b[..n] {
                let len = n as u64;
                match (changes.last_mut(), zero) {
                    (Some(Change::Write { at: s, len: l }), false) if *s + *l == at => *l += len,
                    (Some(Change::Zero { at: s, len: l }), true) if *s + *l == at => *l += len,
                    (_, false) => changes.push(Change::Write { at, len }),
                    (_, true) => changes.push(Change::Zero { at, len }),
                }
            }
            at += n as u64;
        }
        pos = pos.max(end);
    }
    Ok((hex::encode(h.finalize()), changes))
}

/// Applies `changes` (from [`diff_and_digest`]) to `dst`, the first chunk
/// (which holds an ext4 superblock) last: an interrupted apply leaves the
/// file system's header as it was.
pub fn apply(src: &File, dst: &File, changes: &[Change]) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let (first, rest): (Vec<&Change>, Vec<&Change>) = changes
        .iter()
        .partition(|c| matches!(c, Change::Write { at: 0, .. } | Change::Zero { at: 0, .. }));
    for c in rest.into_iter().chain(first) {
        match *c {
            Change::Zero { at, len } => punch(Some(dst), at, len)?,
            Change::Write { at, len } => {
                let mut off = at;
                while off < at + len {
                    let n = ((at + len - off) as usize).min(CHUNK);
                    src.read_exact_at(&mut buf[..n], off)?;
                    dst.write_all_at(&buf[..n], off)?;
                    off += n as u64;
                }
            }
        }
    }
    Ok(())
}

/// Every data range of `f`, widened to whole chunks.
fn data_ranges(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let Some((start, end)) = next_data(f, pos, len)? else {
            break;
        };
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// The next data range `[start, end)` at or after `pos`, in whole chunks
/// from `pos` (so chunk boundaries, and the digest, do not depend on where
/// the filesystem's extents start); `None` when only a hole is left.
fn next_data(f: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let start = match lseek(f, pos as i64, Whence::SeekData) {
        Ok(s) => s as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None),
        // No SEEK_DATA support: everything is data.
        Err(nix::errno::Errno::EINVAL) => return Ok(Some((pos, len))),
        Err(e) => return Err(e.into()),
    };
    let hole = match lseek(f, start as i64, Whence::SeekHole) {
        Ok(h) => h as u64,
        Err(_) => len,
    };
    let c = CHUNK as u64;
    let start = pos + (start - pos) / c * c;
    let end = (pos + (hole - pos).div_ceil(c) * c).min(len);
    Ok(Some((start, end)))
}

/// Deallocates `[at, at+n)` in `dst` (keeping its size).
fn punch(dst: Option<&File>, at: u64, n: u64) -> io::Result<()> {
    let Some(d) = dst else { return Ok(()) };
    if n == 0 {
        return Ok(());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(d, flags, at as i64, n as i64) {
        Ok(()) => Ok(()),
        // A filesystem without hole punching: write zeros.
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let mut off = at;
            while off < at + n {
                let k = ((at + n - off) as usize).min(CHUNK);
                d.write_all_at(&ZEROS[..k], off)?;
                off += k as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes allocated on disk for `path` (what a sparse file really costs).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn file(dir: &std::path::Path, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(name))
            .unwrap()
    }

    #[test]
    fn diff_then_apply_makes_the_files_equal_writing_only_what_differs() {
        let t = tempfile::tempdir().unwrap();
        let image = file(t.path(), "image");
        image.set_len(64 << 20).unwrap();
        image.write_all_at(&[1u8; 3 << 20], 0).unwrap();
        image.write_all_at(&[2u8; 4096], 20 << 20).unwrap();
        image.write_all_at(&[3u8; 4096], 30 << 20).unwrap();
        // The snapshot's disk: the image after a boot.
        let snap = file(t.path(), "snap");
        copy_and_digest(&image, Some(&snap)).unwrap();
        snap.write_all_at(b"superblock", 1024).unwrap();
        snap.write_all_at(&[0u8; 4096], 20 << 20).unwrap(); // zeroed chunk
        snap.write_all_at(&[9u8; 5000], 50 << 20).unwrap(); // new data
        let want = digest(&snap).unwrap();
        // A fresh copy of the image (with its own key file, say).
        let rootfs = file(t.path(), "rootfs");
        copy_and_digest(&image, Some(&rootfs)).unwrap();
        rootfs
            .write_all_at(b"session key", (30 << 20) + 100)
            .unwrap();
        let (d, changes) = diff_and_digest(&snap, &rootfs).unwrap();
        assert_eq!(d, want);
        assert_eq!(
            changes,
            [
                Change::Write {
                    at: 0,
                    len: 1 << 20
                },
                Change::Zero {
                    at: 20 << 20,
                    len: 1 << 20
                },
                Change::Write {
                    at: 30 << 20,
                    len: 1 << 20
                },
                Change::Write {
                    at: 50 << 20,
                    len: 1 << 20
                },
            ]
        );
        apply(&snap, &rootfs, &changes).unwrap();
        let a = std::fs::read(t.path().join("snap")).unwrap();
        let b = std::fs::read(t.path().join("rootfs")).unwrap();
        assert!(a == b, "content differs");
        assert!(diff_and_digest(&snap, &rootfs).unwrap().1.is_empty());
        // Another length is refused.
        rootfs.set_len(1 << 20).unwrap();
        assert!(diff_and_digest(&snap, &rootfs).is_err());
    }

    #[test]
    fn copy_is_sparse_exact_and_overwrites_old_data() {
        let t = tempfile::tempdir().unwrap();
        let src = file(t.path(), "src");
        src.set_len(64 << 20).unwrap();
        src.write_all_at(b"hello", 3 << 20).unwrap();
        src.write_all_at(&[7u8; 5000], (40 << 20) + 17).unwrap();
        // dst held other data where src has holes.
        let dst = file(t.path(), "dst");
        dst.set_len(80 << 20).unwrap();
        dst.write_all_at(&[9u8; 4096], 10 << 20).unwrap();
        let d1 = copy_and_digest(&src, Some(&dst)).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), 64 << 20);
        let a = std::fs::read(t.path().join("src")).unwrap();
        let b = std::fs::read(t.path().join("dst")).unwrap();
        assert!(a == b, "content differs");
        assert!(allocated(&dst.metadata().unwrap()) < 8 << 20, "not sparse");
        assert_eq!(digest(&dst).unwrap(), d1);
        assert_eq!(digest(&src).unwrap(), d1);
        // Explicit zeros instead of a hole: same content, same digest.
        let z = file(t.path(), "zeros");
        z.write_all_at(&vec![0u8; 64 << 20], 0).unwrap();
        z.write_all_at(b"hello", 3 << 20).unwrap();
        z.write_all_at(&[7u8; 5000], (40 << 20) + 17).unwrap();
        assert_eq!(digest(&z).unwrap(), d1);
        // One flipped byte: another digest.
        z.write_all_at(b"j", 3 << 20).unwrap();
        assert_ne!(digest(&z).unwrap(), d1);
    }
}
