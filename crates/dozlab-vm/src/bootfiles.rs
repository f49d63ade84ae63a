//! The guest kernel and initramfs, read OFFLINE from the rootfs image.
//!
//! `image build` ships the Debian kernel in the image's `/boot`; when no
//! `--kernel` is given we find `vmlinuz-<ver>` and `initrd.img-<ver>` there
//! with the read-only `ext4-view` crate (no mount, no loop device) and stream
//! them into the state directory.

use dozlab_core::manifest::{MANIFEST_FILE, Manifest};
use ext4_view::{Ext4, Ext4Error};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why the boot files could not be found or extracted.
#[derive(Debug, thiserror::Error)]
pub enum BootFilesError {
    #[error("cannot read rootfs {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not an ext4 filesystem image (no ext4 superblock); pass the rootfs.ext4 built by `dozlab image build`"
    )]
    NotExt4 { path: PathBuf },
    #[error("cannot read the ext4 filesystem in {path}")]
    Ext4 {
        path: PathBuf,
        #[source]
        source: Ext4Error,
    },
    #[error(
        "no kernel in the image: {path} has no /boot/vmlinuz-*; pass --kernel (and --initrd) or rebuild the image with a kernel"
    )]
    NoKernel { path: PathBuf },
    #[error("cannot copy {inner} out of the image to {to}")]
    Extract {
        inner: String,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Kernel and initrd locations inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBoot {
    /// Kernel version, e.g. `6.1.0-40-cloud-amd64`.
    pub version: String,
    /// `/boot/vmlinuz-<ver>`.
    pub kernel: String,
    /// `/boot/initrd.img-<ver>`, when present.
    pub initrd: Option<String>,
    /// `/boot/vmlinux-<ver>`, the ELF kernel for Firecracker, when the image
    /// ships one (the Dozlab kernel does; Debian's is extracted from the bzImage).
    pub vmlinux: Option<String>,
    /// `/boot/config-<ver>`, the kernel's build configuration, when present.
    pub config: Option<String>,
}

/// Kernel options a virtio-mmio machine (QEMU `microvm`, Firecracker) needs:
/// the transport, the root disk and the NIC drivers.
pub const MMIO_DRIVERS: &[&str] = &[
    "CONFIG_VIRTIO_MMIO",
    "CONFIG_VIRTIO_BLK",
    "CONFIG_VIRTIO_NET",
];

/// Whether a kernel can boot on a virtio-mmio machine, from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MmioSupport {
    /// Every driver built in, or a module with an initramfs to load it from; ACPI on.
    Yes,
    /// What is missing, e.g. `CONFIG_VIRTIO_MMIO is not set`.
    No(Vec<String>),
    /// No config to read (a kernel given with `--kernel` and no `config` beside it).
    Unknown,
}

impl MmioSupport {
    /// Reads a kernel config (`/boot/config-<ver>` text); modules count only
    /// when the boot has an initramfs.
    pub fn from_config(config: &str, initramfs: bool) -> Self {
        let value = |name: &str| {
            config.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::to_string)
            })
        };
        let mut missing = Vec::new();
        for name in MMIO_DRIVERS {
            match value(name).as_deref() {
                Some("y") => {}
                Some("m") if initramfs => {}
                Some("m") => missing.push(format!("{name}=m but no initramfs loads it")),
                _ => missing.push(format!("{name} is not set")),
            }
        }
        if value("CONFIG_ACPI").as_deref() != Some("y") {
            missing.push("CONFIG_ACPI is not set (the devices are described by ACPI)".into());
        }
        if missing.is_empty() {
            MmioSupport::Yes
        } else {
            MmioSupport::No(missing)
        }
    }
}

/// Reads a small text file out of the image (`None` when absent or unreadable).
pub fn read_text(fs: &Ext4, inner: &str) -> Option<String> {
    fs.read_to_string(inner).ok()
}

/// Checks the ext4 superblock magic (0xEF53 at byte 1080) without trusting
/// the file name.
pub fn check_ext4(path: &Path) -> Result<(), BootFilesError> {
    let open_err = |source| BootFilesError::Open {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 2];
    match f.read_exact_at(&mut magic, 1024 + 0x38) {
        Ok(()) if magic == [0x53, 0xEF] => Ok(()),
        Ok(()) => Err(BootFilesError::NotExt4 {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(BootFilesError::NotExt4 {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(open_err(e)),
    }
}

/// Opens the image read-only.
pub fn open_image(path: &Path) -> Result<Ext4, BootFilesError> {
    check_ext4(path)?;
    Ext4::load_from_path(path).map_err(|source| BootFilesError::Ext4 {
        path: path.to_path_buf(),
        source,
    })
}

/// Finds the newest `/boot/vmlinuz-*` and its initrd in the image.
pub fn find_boot(fs: &Ext4, image: &Path) -> Result<ImageBoot, BootFilesError> {
    let ext4 = |source| BootFilesError::Ext4 {
        path: image.to_path_buf(),
        source,
    };
    let no_kernel = || BootFilesError::NoKernel {
        path: image.to_path_buf(),
    };
    if !fs.exists("/boot").map_err(ext4)? {
        return Err(no_kernel());
    }
    let mut versions = Vec::new();
    for entry in fs.read_dir("/boot").map_err(ext4)? {
        let entry = entry.map_err(ext4)?;
        let name = entry.file_name();
        if let Some(v) = name.as_str().ok().and_then(|n| n.strip_prefix("vmlinuz-")) {
            versions.push(v.to_string());
        }
    }
    versions.sort_by_key(|v| version_key(v));
    let version = versions.pop().ok_or_else(no_kernel)?;
    let present = |path: String| -> Result<Option<String>, BootFilesError> {
        Ok(fs.exists(path.as_str()).map_err(ext4)?.then_some(path))
    };
    Ok(ImageBoot {
        kernel: format!("/boot/vmlinuz-{version}"),
        initrd: present(format!("/boot/initrd.img-{version}"))?,
        vmlinux: present(format!("/boot/vmlinux-{version}"))?,
        config: present(format!("/boot/config-{version}"))?,
        version,
    })
}

/// Sort key comparing the numeric runs of a version numerically.
fn version_key(v: &str) -> Vec<(u64, String)> {
    v.split(|c: char| !c.is_ascii_digit())
        .zip(v.split(|c: char| c.is_ascii_digit()))
        .map(|(n, s)| (n.parse().unwrap_or(0), s.to_string()))
        .collect()
}

/// Streams `inner` out of the image to `to` (temp file + rename).
pub fn extract(fs: &Ext4, inner: &str, to: &Path) -> Result<(), BootFilesError> {
    let err = |source| BootFilesError::Extract {
        inner: inner.to_string(),
        to: to.to_path_buf(),
        source,
    };
    let mut src = fs.open(inner).map_err(|e| err(io::Error::other(e)))?;
    dozlab_core::atomic::write_atomic_with(to, 0o644, |f| {
        let mut out = io::BufWriter::new(f);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        out.flush()
    })
    .map_err(err)
}

/// Whether the image runs Docker: `features.docker` of the `manifest.json`
/// beside the image, else whether the image has a `dockerd` binary.
pub fn image_has_docker(fs: &Ext4, image: &Path) -> bool {
    let manifest = image.with_file_name(MANIFEST_FILE);
    if let Ok(m) = Manifest::load(&manifest) {
        return m.features.docker;
    }
    ["/usr/bin/dockerd", "/usr/sbin/dockerd"]
        .iter()
        .any(|p| fs.exists(*p).unwrap_or(false))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// Makes a small ext4 image from a directory tree with `mkfs.ext4 -d`.
    pub(crate) fn mkfs(dir: &Path, img: &Path) {
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(dir)
            .arg(img)
            .arg("8M")
            .status()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(st.success());
    }

    #[test]
    fn finds_and_extracts_the_newest_kernel() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"old").unwrap();
        fs::write(tree.join("boot/vmlinuz-6.1.0-40-cloud-amd64"), b"kernel").unwrap();
        fs::write(tree.join("boot/initrd.img-6.1.0-40-cloud-amd64"), b"initrd").unwrap();
        let img = t.path().join("rootfs.ext4");
        mkfs(&tree, &img);

        let fs4 = open_image(&img).unwrap();
        let boot = find_boot(&fs4, &img).unwrap();
        assert_eq!(boot.version, "6.1.0-40-cloud-amd64");
        assert_eq!(boot.vmlinux, None);
        assert_eq!(boot.config, None);
        assert_eq!(
            boot.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-40-cloud-amd64")
        );
        let out = t.path().join("vmlinuz");
        extract(&fs4, &boot.kernel, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"kernel");
        assert!(!image_has_docker(&fs4, &img));
    }

    #[test]
    fn mmio_support_from_the_kernel_config() {
        let dozlab =
            "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\nCONFIG_ACPI=y\n";
        assert_eq!(MmioSupport::from_config(dozlab, false), MmioSupport::Yes);
        let debian =
            "CONFIG_VIRTIO_MMIO=m\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_NET=m\nCONFIG_ACPI=y\n";
        assert_eq!(MmioSupport::from_config(debian, true), MmioSupport::Yes);
        let MmioSupport::No(why) = MmioSupport::from_config(debian, false) else {
            panic!("modules without an initramfs cannot load")
        };
        assert_eq!(why.len(), 3, "{why:?}");
        let pci_only =
            "# CONFIG_VIRTIO_MMIO is not set\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\n";
        assert_eq!(
            MmioSupport::from_config(pci_only, true),
            MmioSupport::No(vec![
                "CONFIG_VIRTIO_MMIO is not set".into(),
                "CONFIG_ACPI is not set (the devices are described by ACPI)".into()
            ])
        );
    }

    #[test]
    fn refuses_non_ext4_and_kernelless_images() {
        let t = tempfile::tempdir().unwrap();
        let junk = t.path().join("junk.ext4");
        fs::write(&junk, vec![0u8; 4096]).unwrap();
        assert!(matches!(
            open_image(&junk),
            Err(BootFilesError::NotExt4 { .. })
        ));
        let short = t.path().join("short");
        fs::write(&short, b"x").unwrap();
        assert!(matches!(
            check_ext4(&short),
            Err(BootFilesError::NotExt4 { .. })
        ));

        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        fs::write(tree.join("usr/bin/dockerd"), b"").unwrap();
        let img = t.path().join("nokernel.ext4");
        mkfs(&tree, &img);
        let fs4 = open_image(&img).unwrap();
        let e = find_boot(&fs4, &img).unwrap_err();
        assert!(e.to_string().contains("--kernel"), "{e}");
        assert!(image_has_docker(&fs4, &img));
    }
}
