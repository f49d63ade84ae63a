//! Shared helpers of the library integration tests.
#![allow(dead_code)]

use dozlab_fetch::{FetchOptions, ProgressMode};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// A mostly-zero image of `size` bytes with a non-zero 4 KiB block every
/// 64 KiB and a short non-zero tail, deterministic.
pub fn sparse_image(size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for block in (0..size).step_by(64 << 10) {
        for b in v[block..(block + 4096).min(size)].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8 | 1;
        }
    }
    let n = v.len();
    v[n - 3..].copy_from_slice(b"end");
    v
}

/// Bytes of `size` that are data (non-zero 4 KiB blocks).
pub fn data_bytes(img: &[u8]) -> u64 {
    img.chunks(4096)
        .filter(|c| c.iter().any(|&b| b != 0))
        .map(|c| c.len() as u64)
        .sum()
}

/// Options for a quick test: no e2fsck/resize, short delays, no progress output.
pub fn opts(url: &str, out: &Path) -> FetchOptions {
    let mut o = FetchOptions::new(url, out);
    o.prepare_fs = false;
    o.retries = 3;
    o.retry_delay = Duration::from_millis(20);
    o.timeout = Duration::from_secs(5);
    o.progress = ProgressMode::Off;
    o
}

/// Allocated bytes of a file.
pub fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

/// Asserts `p` holds exactly `want` and allocates little more than its data.
pub fn assert_image(p: &Path, want: &[u8]) {
    let got = std::fs::read(p).unwrap();
    assert!(
        got == want,
        "image differs from the source ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    let alloc = allocated(p);
    let data = data_bytes(want);
    assert!(
        alloc <= data + (64 << 10),
        "not sparse: {alloc} allocated for {data} data bytes"
    );
}

/// Names of the files in `dir`.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
