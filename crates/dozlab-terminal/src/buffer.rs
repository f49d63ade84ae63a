//! The sequence-numbered output buffer of one shell.
//!
//! Every byte a shell ever printed has an offset (0, 1, 2, ...). The buffer
//! keeps the most recent `cap` bytes; a client that re-attaches says which
//! offset it has already seen and gets exactly the bytes after it, so nothing
//! is lost or printed twice as long as the bytes are still in the buffer.

use std::collections::VecDeque;

/// A bounded byte buffer addressed by absolute offsets.
#[derive(Debug)]
pub struct OutputBuffer {
    data: VecDeque<u8>,
    start: u64,
    cap: usize,
}

impl OutputBuffer {
    /// An empty buffer keeping at most `cap` bytes (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            data: VecDeque::new(),
            start: 0,
            cap: cap.max(1),
        }
    }

    /// Offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset one past the newest byte (= total bytes ever pushed).
    pub fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// The capacity in bytes.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Appends bytes, dropping the oldest ones beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend(bytes);
        let excess = self.data.len().saturating_sub(self.cap);
        if excess > 0 {
            self.data.drain(..excess);
            self.start += excess as u64;
        }
    }

    /// Clamps a client's offset into `start..=end`.
    pub fn clamp(&self, offset: u64) -> u64 {
        offset.clamp(self.start, self.end())
    }

    /// Up to `max` bytes from `offset` (which must be within `start..=end`).
    pub fn read_from(&self, offset: u64, max: usize) -> Vec<u8> {
        let offset = self.clamp(offset);
        let skip = (offset - self.start) as usize;
        let take = (self.data.len() - skip).min(max);
        let (a, b) = self.data.as_slices();
        let mut out = Vec::with_capacity(take);
        if skip < a.len() {
            let from_a = (a.len() - skip).min(take);
            out.extend_from_slice(&a[skip..skip + from_a]);
            out.extend_from_slice(&b[..take - from_a]);
        } else {
            let s = skip - a.len();
            out.extend_from_slice(&b[s..s + take]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_wraparound() {
        let mut b = OutputBuffer::new(8);
        b.push(b"hello ");
        b.push(b"world");
        assert_eq!(b.end(), 11);
        assert_eq!(b.start(), 3);
        assert_eq!(b.read_from(0, 100), b"lo world");
        assert_eq!(b.read_from(6, 100), b"world");
        assert_eq!(b.read_from(6, 2), b"wo");
        assert_eq!(b.read_from(11, 100), b"");
        assert_eq!(b.clamp(99), 11);
    }

    #[test]
    fn reads_across_the_ring_seam() {
        let mut b = OutputBuffer::new(4);
        for chunk in [&b"ab"[..], b"cd", b"ef", b"g"] {
            b.push(chunk);
        }
        assert_eq!(b.read_from(3, 10), b"defg");
        assert_eq!(b.read_from(4, 2), b"ef");
    }
}
