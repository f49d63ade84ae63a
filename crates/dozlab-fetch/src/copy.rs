//! Sparse-aware copy of an image file, hashing it on the way when asked.
//!
//! Data ranges are found with `SEEK_DATA`/`SEEK_HOLE`, so holes are never
//! read; they are hashed as zeros and stay holes in the copy. Without a hash
//! the data ranges move with `copy_file_range` (in the kernel, sharing
//! blocks where the filesystem can).

use crate::sparse::{SparseOutput, SparseWriter};
use nix::errno::Errno;
use nix::fcntl::copy_file_range;
use nix::unistd::{Whence, lseek};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const PIECE: usize = 1 << 20;

/// The copy and, when asked, the source's sha256.
#[derive(Debug)]
pub struct Copied {
    /// What was written.
    pub out: SparseOutput,
    /// sha256 of the source's first `len` bytes.
    pub sha256: Option<String>,
}

/// Copies the first `len` bytes of `src` into the empty file `dst`.
pub fn copy_sparse(src: &File, len: u64, dst: File, hash: bool) -> io::Result<Copied> {
    if !hash {
        return copy_ranges(src, len, dst).map(|out| Copied { out, sha256: None });
    }
    let mut hasher = hash.then(Sha256::new);
    let mut w = SparseWriter::new(dst);
    let zeros = vec![0u8; PIECE];
    let mut buf = vec![0u8; PIECE];
    let mut pos = 0u64;
    while pos < len {
        let (data_start, data_end) = next_data(src, pos, len)?;
        hash_zeros(&mut hasher, &zeros, data_start - pos);
        w.skip(data_start - pos)?;
        let mut at = data_start;
        while at < data_end {
            let n = ((data_end - at) as usize).min(PIECE);
            src.read_exact_at(&mut buf[..n], at)?;
            if let Some(h) = &mut hasher {
                h.update(&buf[..n]);
            }
            w.write(&buf[..n])?;
            at += n as u64;
        }
        pos = data_end;
    }
    Ok(Copied {
        out: w.finish()?,
        sha256: hasher.map(|h| hex::encode(h.finalize())),
    })
}

/// The data ranges of `src` into `dst` with `copy_file_range`; holes are skipped.
fn copy_ranges(src: &File, len: u64, dst: File) -> io::Result<SparseOutput> {
    dst.set_len(len)?;
    let (mut pos, mut data_bytes) = (0u64, 0u64);
    while pos < len {
        let (start, end) = next_data(src, pos, len)?;
        let (mut off_in, mut off_out) = (start as i64, start as i64);
        while (off_in as u64) < end {
            let left = (end - off_in as u64).min(1 << 30) as usize;
            let n = copy_file_range(src, Some(&mut off_in), &dst, Some(&mut off_out), left)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image shrank while it was copied",
                ));
            }
        }
        data_bytes += end - start;
        pos = end;
    }
    Ok(SparseOutput {
        file: dst,
        len,
        data_bytes,
    })
}

/// The next data range at or after `pos`, clipped to `len`; `(len, len)` when none.
fn next_data(src: &File, pos: u64, len: u64) -> io::Result<(u64, u64)> {
    let start = match lseek(src, pos as i64, Whence::SeekData) {
        Ok(s) => (s as u64).min(len),
        Err(Errno::ENXIO) => return Ok((len, len)),
        Err(e) => return Err(e.into()),
    };
    if start >= len {
        return Ok((len, len));
    }
    let end = lseek(src, start as i64, Whence::SeekHole).map_err(io::Error::from)?;
    Ok((start, (end as u64).min(len)))
}

fn hash_zeros(hasher: &mut Option<Sha256>, zeros: &[u8], mut n: u64) {
    let Some(h) = hasher else { return };
    while n > 0 {
        let k = (n as usize).min(zeros.len());
        h.update(&zeros[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sha256_hex;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_holes_as_holes_and_hashes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let mut data = vec![0u8; 3 << 20];
        data[1 << 20..(1 << 20) + 5000].fill(3);
        data.extend(vec![9u8; 100]);
        data.extend(vec![0u8; 2 << 20]);
        let mut w = SparseWriter::new(File::create(&src_path).unwrap());
        w.write(&data).unwrap();
        w.finish().unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let c = copy_sparse(
            &src,
            data.len() as u64,
            File::create(&dst_path).unwrap(),
            true,
        )
        .unwrap();
        assert_eq!(c.sha256, Some(sha256_hex(&data)));
        assert_eq!(std::fs::read(&dst_path).unwrap(), data);
        assert!(std::fs::metadata(&dst_path).unwrap().blocks() * 512 <= 64 << 10);
        assert!(c.out.data_bytes <= 3 * 4096);
        // Without a hash: the same bytes and holes, by copy_file_range.
        let plain_path = dir.path().join("plain");
        let c = copy_sparse(
            &src,
            data.len() as u64,
            File::create(&plain_path).unwrap(),
            false,
        )
        .unwrap();
        assert_eq!(c.sha256, None);
        assert_eq!(c.out.len, data.len() as u64);
        assert_eq!(std::fs::read(&plain_path).unwrap(), data);
        assert!(std::fs::metadata(&plain_path).unwrap().blocks() * 512 <= 64 << 10);
    }
}
