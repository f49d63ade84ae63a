//! Turns a compressed x86 `bzImage` into the uncompressed ELF `vmlinux`
//! Firecracker wants.
//!
//! The Debian kernel's payload is LZ4 in the *legacy* frame format: the magic
//! `02 21 4C 18`, then blocks of `u32` compressed length + raw LZ4 block (each
//! at most 8 MiB uncompressed), then the kernel build's appended `u32`
//! uncompressed size. The payload's place comes from the boot protocol header
//! (`payload_offset`/`payload_length`). Blocks are decompressed one at a time
//! and streamed to disk, so memory stays at one block.

use std::fs;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The LZ4 legacy frame magic, little-endian `0x184C2102`.
pub const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4C, 0x18];
const ELF_MAGIC: [u8; 4] = [0x7F, b'E', b'L', b'F'];
const BLOCK_MAX: usize = 8 << 20;

/// Why no `vmlinux` could be made.
#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("cannot read kernel image")]
    Io(#[from] io::Error),
    #[error("not a bzImage (no \"HdrS\" boot header) and not an ELF vmlinux")]
    NotBzImage,
    #[error(
        "the kernel payload is {0}-compressed; only LZ4 is supported (Debian's default): pass an ELF vmlinux with --kernel"
    )]
    Unsupported(&'static str),
    #[error("corrupt LZ4 block at payload offset {offset}")]
    Lz4 {
        offset: u64,
        #[source]
        source: lz4_flex::block::DecompressError,
    },
    #[error("the decompressed payload is not an ELF file")]
    NotElf,
}

/// What `extract_vmlinux` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extracted {
    /// The input was already an ELF and was copied.
    Copied,
    /// The LZ4 payload was decompressed to this many bytes.
    Decompressed(u64),
}

/// Writes the ELF `vmlinux` for `kernel` (a bzImage or already an ELF) to `out`.
pub fn extract_vmlinux(kernel: &Path, out: &Path) -> Result<Extracted, VmlinuxError> {
    let staged = dozlab_core::atomic::Staged::new(out)?;
    let r = extract_to(kernel, staged.path())?;
    staged.commit()?;
    Ok(r)
}

fn extract_to(kernel: &Path, out: &Path) -> Result<Extracted, VmlinuxError> {
    let mut f = fs::File::open(kernel)?;
    let mut head = vec![0u8; 0x250];
    let n = read_up_to(&mut f, &mut head)?;
    if n >= 4 && head[..4] == ELF_MAGIC {
        fs::copy(kernel, out)?;
        return Ok(Extracted::Copied);
    }
    if n < 0x250 || &head[0x202..0x206] != b"HdrS" {
        return Err(VmlinuxError::NotBzImage);
    }
    let setup_sects = match head[0x1F1] {
        0 => 4,
        s => u64::from(s),
    };
    let le32 = |at: usize| u64::from(u32::from_le_bytes(head[at..at + 4].try_into().unwrap()));
    let start = (setup_sects + 1) * 512 + le32(0x248);
    let len = le32(0x24C);
    f.seek(SeekFrom::Start(start))?;
    let mut payload = f.take(len);
    let mut w = BufWriter::new(fs::File::create(out)?);
    let total = decompress_legacy(&mut payload, len, &mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Extracted::Decompressed(total))
}

/// Decompresses one LZ4 legacy stream of `len` bytes from `r` into `w`.
pub fn decompress_legacy(
    r: &mut impl Read,
    len: u64,
    w: &mut impl Write,
) -> Result<u64, VmlinuxError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if magic != LZ4_LEGACY_MAGIC {
        return Err(VmlinuxError::Unsupported(compression_name(&magic)));
    }
    let (mut pos, mut total) = (4u64, 0u64);
    let mut input = Vec::new();
    let mut output = vec![0u8; BLOCK_MAX];
    while pos + 4 <= len {
        let mut size = [0u8; 4];
        r.read_exact(&mut size)?;
        pos += 4;
        if size == LZ4_LEGACY_MAGIC {
            continue; // concatenated streams
        }
        let csize = u64::from(u32::from_le_bytes(size));
        if csize == 0 || pos + csize > len {
            break; // the appended uncompressed size, or the end
        }
        input.resize(csize as usize, 0);
        r.read_exact(&mut input)?;
        let n = lz4_flex::block::decompress_into(&input, &mut output).map_err(|source| {
            VmlinuxError::Lz4 {
                offset: pos,
                source,
            }
        })?;
        if total == 0 && (n < 4 || output[..4] != ELF_MAGIC) {
            return Err(VmlinuxError::NotElf);
        }
        w.write_all(&output[..n])?;
        total += n as u64;
        pos += csize;
    }
    if total == 0 {
        return Err(VmlinuxError::NotElf);
    }
    Ok(total)
}

fn compression_name(magic: &[u8; 4]) -> &'static str {
    match magic {
        [0x1F, 0x8B, ..] => "gzip",
        [0x28, 0xB5, 0x2F, 0xFD] => "zstd",
        [0xFD, b'7', b'z', b'X'] => "xz",
        [b'B', b'Z', b'h', _] => "bzip2",
        [0x5D, 0x00, ..] => "lzma",
        [0x89, b'L', b'Z', b'O'] => "lzo",
        _ => "an unknown format",
    }
}

fn read_up_to(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ELF-looking body large enough to span several blocks.
    pub(crate) fn fake_elf(len: usize) -> Vec<u8> {
        let mut v = ELF_MAGIC.to_vec();
        v.extend((0..len - 4).map(|i| (i % 251) as u8 ^ (i / 4096) as u8));
        v
    }

    /// An LZ4 legacy stream of `data` split into `block`-byte blocks, with
    /// the appended size, as the kernel build writes it.
    pub(crate) fn legacy_stream(data: &[u8], block: usize) -> Vec<u8> {
        let mut s = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            s.extend((c.len() as u32).to_le_bytes());
            s.extend(c);
        }
        s.extend((data.len() as u32).to_le_bytes());
        s
    }

    /// A minimal bzImage: boot header + the payload after the setup sectors.
    pub(crate) fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 2 * 512 + 0x40];
        img[0x1F1] = 1; // one setup sector: protected-mode code at 1024
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24C].copy_from_slice(&0x40u32.to_le_bytes());
        img[0x24C..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(&[0xAA; 16]); // trailing junk is ignored
        img
    }

    #[test]
    fn extracts_a_multi_block_lz4_payload() {
        let t = tempfile::tempdir().unwrap();
        let elf = fake_elf(300_000);
        let k = t.path().join("vmlinuz");
        fs::write(&k, fake_bzimage(&legacy_stream(&elf, 100_000))).unwrap();
        let out = t.path().join("vmlinux");
        assert_eq!(
            extract_vmlinux(&k, &out).unwrap(),
            Extracted::Decompressed(elf.len() as u64)
        );
        assert_eq!(fs::read(&out).unwrap(), elf);
    }

    #[test]
    fn reads_what_the_lz4_tool_writes_in_legacy_mode() {
        let t = tempfile::tempdir().unwrap();
        let elf = fake_elf(50_000);
        let raw = t.path().join("raw");
        fs::write(&raw, &elf).unwrap();
        let lz = t.path().join("raw.lz4");
        let st = std::process::Command::new("lz4")
            .args(["-q", "-l", "-f"])
            .arg(&raw)
            .arg(&lz)
            .status()
            .expect("the lz4 tool (Debian package lz4) must be installed");
        assert!(st.success());
        let k = t.path().join("vmlinuz");
        fs::write(&k, fake_bzimage(&fs::read(&lz).unwrap())).unwrap();
        let out = t.path().join("vmlinux");
        extract_vmlinux(&k, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), elf);
    }

    #[test]
    fn copies_an_elf_and_names_other_compressions() {
        let t = tempfile::tempdir().unwrap();
        let elf = t.path().join("vmlinux.in");
        fs::write(&elf, fake_elf(100)).unwrap();
        let out = t.path().join("vmlinux");
        assert_eq!(extract_vmlinux(&elf, &out).unwrap(), Extracted::Copied);

        let gz = t.path().join("gz");
        fs::write(&gz, fake_bzimage(&[0x1F, 0x8B, 8, 0, 0, 0, 0, 0])).unwrap();
        let e = extract_vmlinux(&gz, &out).unwrap_err();
        assert!(e.to_string().contains("gzip"), "{e}");

        let junk = t.path().join("junk");
        fs::write(&junk, b"hello").unwrap();
        assert!(matches!(
            extract_vmlinux(&junk, &t.path().join("o2")),
            Err(VmlinuxError::NotBzImage)
        ));
        assert!(!t.path().join("o2").exists(), "no half-written output");
    }

    #[test]
    fn refuses_a_payload_that_is_not_elf() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("k");
        fs::write(&k, fake_bzimage(&legacy_stream(&[7u8; 1000], 1000))).unwrap();
        assert!(matches!(
            extract_vmlinux(&k, &t.path().join("o")),
            Err(VmlinuxError::NotElf)
        ));
    }
}
