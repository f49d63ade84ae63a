//! Sparse image writing: runs of all-zero 4 KiB blocks become holes.
//!
//! [`SparseWriter`] takes the image as a byte stream, buffers it in 1 MiB
//! pieces, writes the non-zero block runs with positioned writes and skips the
//! zero blocks, so the file only allocates the blocks that hold data. The
//! length is fixed with `set_len` at the end, so trailing holes count too.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Granularity of hole detection (the usual filesystem block size).
pub const BLOCK: usize = 4096;
const BUFFER: usize = 1 << 20;

/// Writes a stream of bytes to a file, leaving holes where blocks are zero.
#[derive(Debug)]
pub struct SparseWriter {
    file: File,
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    pos: u64,
    /// Bytes written as data (not holes).
    data_bytes: u64,
}

/// What a finished [`SparseWriter`] produced.
#[derive(Debug)]
pub struct SparseOutput {
    /// The file, positioned nowhere in particular.
    pub file: File,
    /// Apparent length of the image.
    pub len: u64,
    /// Bytes written as data; the rest are holes.
    pub data_bytes: u64,
}

impl SparseWriter {
    /// A writer that starts at offset 0 of `file` (which should be empty).
    pub fn new(file: File) -> Self {
        Self {
            file,
            pending: Vec::with_capacity(BUFFER),
            pos: 0,
            data_bytes: 0,
        }
    }

    /// Appends `data` to the image.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= BLOCK {
                let whole = data.len() - data.len() % BLOCK;
                self.write_blocks_at(&data[..whole], self.pos)?;
                self.pos += whole as u64;
                data = &data[whole..];
                continue;
            }
            let n = (BUFFER - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == BUFFER {
                self.flush_pending()?;
            }
        }
        Ok(())
    }

    /// Appends `n` zero bytes without writing anything (a hole).
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        self.flush_pending()?;
        self.pos += n;
        Ok(())
    }

    /// Throws away everything written so far and starts again at offset 0.
    pub fn reset(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.pos = 0;
        self.data_bytes = 0;
        self.file.set_len(0)
    }

    /// Bytes of image so far (written, skipped or pending).
    pub fn len(&self) -> u64 {
        self.pos + self.pending.len() as u64
    }

    /// Whether nothing has been appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes what is pending and sets the file's length.
    pub fn finish(mut self) -> io::Result<SparseOutput> {
        self.flush_pending()?;
        self.file.set_len(self.pos)?;
        Ok(SparseOutput {
            file: self.file,
            len: self.pos,
            data_bytes: self.data_bytes,
        })
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let result = self.write_blocks_at(&pending, self.pos);
        self.pos += pending.len() as u64;
        self.pending = pending;
        self.pending.clear();
        result
    }

    /// Writes the non-zero block runs of `buf` at `offset`; the last block may be short.
    fn write_blocks_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut run_start: Option<usize> = None;
        for (i, block) in buf.chunks(BLOCK).enumerate() {
            let at = i * BLOCK;
            match (is_zero(block), run_start) {
                (false, None) => run_start = Some(at),
                (true, Some(start)) => {
                    self.write_run(&buf[start..at], offset + start as u64)?;
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            self.write_run(&buf[start..], offset + start as u64)?;
        }
        Ok(())
    }

    fn write_run(&mut self, run: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(run, offset)?;
        self.data_bytes += run.len() as u64;
        Ok(())
    }
}

/// Whether every byte of `block` is zero (vectorises well in release builds).
pub fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn image(pattern: &[(usize, u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(len, byte) in pattern {
            v.extend(std::iter::repeat_n(byte, len));
        }
        v
    }

    fn write_in_pieces(data: &[u8], piece: usize) -> (Vec<u8>, SparseOutput) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut w = SparseWriter::new(File::create(&path).unwrap());
        for p in data.chunks(piece) {
            w.write(p).unwrap();
        }
        let out = w.finish().unwrap();
        (std::fs::read(&path).unwrap(), out)
    }

    #[test]
    fn round_trips_any_piece_size_and_leaves_holes() {
        let data = image(&[
            (3 << 20, 0),
            (8192, 7),
            (5 << 20, 0),
            (100, 9),
            (2 << 20, 0),
        ]);
        for piece in [1000, 4096, 16 * 1024 + 3, 4 << 20] {
            let (back, out) = write_in_pieces(&data, piece);
            assert_eq!(back, data, "piece {piece}");
            assert_eq!(out.len, data.len() as u64);
            assert!(out.data_bytes <= 3 * BLOCK as u64, "{}", out.data_bytes);
            assert!(out.file.metadata().unwrap().blocks() * 512 <= 64 * 1024);
        }
    }

    #[test]
    fn keeps_a_short_non_zero_tail_and_a_trailing_hole() {
        let data = image(&[(10, 1)]);
        assert_eq!(write_in_pieces(&data, 3).0, data);
        let data = image(&[(BLOCK, 1), (BLOCK * 3 + 5, 0)]);
        let (back, out) = write_in_pieces(&data, 777);
        assert_eq!(back, data);
        assert_eq!(out.data_bytes, BLOCK as u64);
    }

    #[test]
    fn skip_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut w = SparseWriter::new(File::create(&path).unwrap());
        w.write(b"junk").unwrap();
        w.reset().unwrap();
        w.write(b"ab").unwrap();
        w.skip(10).unwrap();
        w.write(b"c").unwrap();
        assert_eq!(w.len(), 13);
        w.finish().unwrap();
        let mut want = b"ab".to_vec();
        want.extend([0; 10]);
        want.push(b'c');
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0; 4096]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[]));
    }
}
