//! Lab files for the lab tests (lab.rs, lab_fetch.rs, up_lab.rs): the
//! example labs, files written on the fly and `.tar.gz` archives of them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example labs' directory, `labs/examples` of the checkout.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/examples")
}

/// Writes `text` to `dir/rel`, creating the directories on the way.
pub fn write_file(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `tar -czf OUT -C DIR ARGS...`; the archive's bytes.
pub fn tar_gz(out: &Path, dir: &Path, args: &[&str]) -> Vec<u8> {
    let st = Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}
