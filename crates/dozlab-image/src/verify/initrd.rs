//! Lists the file names inside an initramfs: a chain of cpio "newc" archives,
//! each either uncompressed (early microcode) or compressed with gzip or zstd.

use flate2::read::MultiGzDecoder;
use std::io::Read;

const NEWC: &[u8] = b"070701";
const NEWC_CRC: &[u8] = b"070702";
const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Why an initramfs could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    #[error("the initramfs uses a compression this check does not read (only gzip, zstd or none)")]
    UnknownFormat,
    #[error("the initramfs is corrupt: {0}")]
    Corrupt(String),
}

/// All member names of the initramfs, in order.
pub fn list_names(mut data: &[u8]) -> Result<Vec<String>, InitrdError> {
    let mut names = Vec::new();
    loop {
        while data.first() == Some(&0) {
            data = &data[1..];
        }
        if data.is_empty() {
            return Ok(names);
        }
        if data.starts_with(NEWC) || data.starts_with(NEWC_CRC) {
            let used = parse_cpio(data, &mut names)?;
            data = &data[used..];
            continue;
        }
        let unpacked = if data.starts_with(GZIP) {
            let mut out = Vec::new();
            MultiGzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| InitrdError::Corrupt(e.to_string()))?;
            out
        } else if data.starts_with(ZSTD) {
            zstd::stream::decode_all(data).map_err(|e| InitrdError::Corrupt(e.to_string()))?
        } else {
            return Err(InitrdError::UnknownFormat);
        };
        // A compressed archive is always the last segment.
        let mut rest: &[u8] = &unpacked;
        while !rest.is_empty() && (rest.starts_with(NEWC) || rest.starts_with(NEWC_CRC)) {
            let used = parse_cpio(rest, &mut names)?;
            rest = &rest[used..];
            while rest.first() == Some(&0) {
                rest = &rest[1..];
            }
        }
        return Ok(names);
    }
}

/// Parses one cpio archive (up to and including its trailer); returns bytes used.
fn parse_cpio(data: &[u8], names: &mut Vec<String>) -> Result<usize, InitrdError> {
    let mut pos = 0usize;
    loop {
        let header = data
            .get(pos..pos + 110)
            .ok_or_else(|| InitrdError::Corrupt("truncated cpio header".into()))?;
        if !(header.starts_with(NEWC) || header.starts_with(NEWC_CRC)) {
            return Err(InitrdError::Corrupt(format!("bad cpio magic at {pos}")));
        }
        let field = |i: usize| -> Result<usize, InitrdError> {
            let hex = std::str::from_utf8(&header[6 + i * 8..14 + i * 8])
                .map_err(|_| InitrdError::Corrupt("bad cpio field".into()))?;
            usize::from_str_radix(hex, 16)
                .map_err(|_| InitrdError::Corrupt("bad cpio field".into()))
        };
        let file_size = field(6)?;
        let name_size = field(11)?;
        let name_start = pos + 110;
        let name = data
            .get(name_start..name_start + name_size.saturating_sub(1))
            .ok_or_else(|| InitrdError::Corrupt("truncated cpio name".into()))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_start = align4(name_start + name_size);
        pos = align4(data_start + file_size);
        if name == "TRAILER!!!" {
            return Ok(pos.min(data.len()));
        }
        names.push(name);
    }
}

fn align4(v: usize) -> usize {
    v.div_ceil(4) * 4
}

/// Writes a cpio "newc" archive of (name, contents) entries (used by tests).
pub fn write_newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let all = entries.iter().copied().chain([("TRAILER!!!", &b""[..])]);
    for (ino, (name, body)) in all.enumerate() {
        let mode = if name == "TRAILER!!!" { 0 } else { 0o100644 };
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            body.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0,
        ];
        out.extend_from_slice(NEWC);
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(align4(out.len()), 0);
        out.extend_from_slice(body);
        out.resize(align4(out.len()), 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    #[test]
    fn lists_plain_then_gzip_segments() {
        let early = write_newc(&[("kernel/x86/microcode/AuthenticAMD.bin", b"ucode")]);
        let main = write_newc(&[
            ("usr/lib/modules/6.1/virtio_blk.ko", b"elf"),
            ("init", b"#!/bin/sh"),
        ]);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&main).unwrap();
        let mut image = early;
        image.extend(gz.finish().unwrap());
        let names = list_names(&image).unwrap();
        assert_eq!(names.len(), 3);
        assert!(names.iter().any(|n| n.ends_with("virtio_blk.ko")));
        let zst = zstd::stream::encode_all(&main[..], 1).unwrap();
        assert_eq!(list_names(&zst).unwrap().len(), 2);
    }

    #[test]
    fn rejects_unknown_and_corrupt_data() {
        assert!(matches!(
            list_names(b"hello world"),
            Err(InitrdError::UnknownFormat)
        ));
        assert!(matches!(
            list_names(b"070701zz"),
            Err(InitrdError::Corrupt(_))
        ));
    }
}
