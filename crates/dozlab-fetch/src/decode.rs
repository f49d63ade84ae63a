//! Compression formats, detected by their magic bytes, and streaming decoders.
//!
//! An image may be served raw or as `.zst`, `.gz` or `.xz`; the name is only a
//! hint, the first bytes decide. Decoders are push-style (`io::Write`), so
//! the downloaded bytes are decompressed as they arrive.

use std::fmt;
use std::io::{self, Write};

/// Bytes needed to recognise every supported format.
pub const MAGIC_LEN: usize = 6;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// How the downloaded bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed: the bytes are the image.
    None,
    /// Zstandard (`.zst`).
    Zstd,
    /// gzip (`.gz`), possibly several members.
    Gzip,
    /// xz (`.xz`), possibly several streams.
    Xz,
}

impl Compression {
    /// Recognises the format from the first bytes of the stream.
    ///
    /// `head` should hold [`MAGIC_LEN`] bytes, or the whole stream when shorter.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&ZSTD_MAGIC) {
            Self::Zstd
        } else if head.starts_with(&XZ_MAGIC) {
            Self::Xz
        } else if head.starts_with(&GZIP_MAGIC) {
            Self::Gzip
        } else {
            Self::None
        }
    }

    /// The usual file-name suffix (empty for `None`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Zstd => ".zst",
            Self::Gzip => ".gz",
            Self::Xz => ".xz",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "uncompressed",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
        })
    }
}

/// A push decoder writing the decompressed bytes into `W`.
pub enum Decoder<W: Write> {
    /// Pass-through.
    None(W),
    /// Zstandard, all frames.
    Zstd(zstd::stream::write::Decoder<'static, W>),
    /// gzip, all members.
    Gzip(flate2::write::MultiGzDecoder<W>),
    /// xz, all streams.
    Xz(liblzma::write::XzDecoder<W>),
}

impl<W: Write> fmt::Debug for Decoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Decoder")
    }
}

impl<W: Write> Decoder<W> {
    /// A decoder for `compression` writing into `inner`.
    pub fn new(compression: Compression, inner: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(inner),
            Compression::Zstd => Self::Zstd(zstd::stream::write::Decoder::new(inner)?),
            Compression::Gzip => Self::Gzip(flate2::write::MultiGzDecoder::new(inner)),
            Compression::Xz => Self::Xz(liblzma::write::XzDecoder::new_multi_decoder(inner)),
        })
    }

    /// Feeds compressed bytes.
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::None(w) => w.write_all(data),
            Self::Zstd(d) => d.write_all(data),
            Self::Gzip(d) => d.write_all(data),
            Self::Xz(d) => d.write_all(data),
        }
    }

    /// Ends the stream (an incomplete compressed stream is an error) and
    /// returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Zstd(d) => d.finish(),
            Self::Gzip(d) => d.finish(),
            Self::Xz(d) => d.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::compress;

    #[test]
    fn detects_and_decodes_every_format() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let packed = compress(&data, c);
            assert_eq!(Compression::detect(&packed[..MAGIC_LEN]), c);
            let mut d = Decoder::new(c, Vec::new()).unwrap();
            for piece in packed.chunks(999) {
                d.write_all(piece).unwrap();
            }
            assert_eq!(d.finish().unwrap(), data, "{c}");
        }
        assert_eq!(Compression::detect(b"\x53\xef"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let data = vec![42u8; 100_000];
        for c in [Compression::Zstd, Compression::Gzip, Compression::Xz] {
            let packed = compress(&data, c);
            let mut d = Decoder::new(c, Vec::new()).unwrap();
            d.write_all(&packed[..packed.len() / 2]).unwrap();
            assert!(d.finish().is_err(), "{c}");
        }
    }
}
