//! Reading facts out of a built tree on the host: the kernel in `/boot`, the
//! installed packages (dpkg status) and the space the tree takes.

use dozlab_core::manifest::KernelInfo;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The newest `/boot/vmlinuz-<ver>` with its initramfs and modules directory
/// (neither for a kernel built without module support).
pub fn find_kernel(tree: &Path) -> Result<KernelInfo, String> {
    let boot = tree.join("boot");
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .map_err(|e| format!("cannot list /boot: {e}"))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    versions.sort();
    let version = versions
        .pop()
        .ok_or("no /boot/vmlinuz-* (is linux-image-cloud-amd64 in the recipe?)")?;
    let config = fs::read_to_string(boot.join(format!("config-{version}"))).unwrap_or_default();
    if config.lines().any(|l| l == "# CONFIG_MODULES is not set") {
        // A kernel without module support (the Dozlab kernel): no initramfs, no modules.
        return Ok(KernelInfo {
            path: Some(format!("/boot/vmlinuz-{version}")),
            initrd: None,
            version,
        });
    }
    let initrd = format!("/boot/initrd.img-{version}");
    if !tree.join(&initrd[1..]).is_file() {
        return Err(format!("no {initrd} (is initramfs-tools in the recipe?)"));
    }
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .any(|d| tree.join(d).join(&version).is_dir());
    if !modules {
        return Err(format!("no /lib/modules/{version}"));
    }
    Ok(KernelInfo {
        path: Some(format!("/boot/vmlinuz-{version}")),
        initrd: Some(initrd),
        version,
    })
}

/// Installed packages as `name=version`, sorted, from `var/lib/dpkg/status`.
pub fn installed_packages(tree: &Path) -> io::Result<Vec<String>> {
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status"))?;
    Ok(parse_dpkg_status(&status))
}

/// Parses dpkg's status file into sorted `name=version` entries of installed packages.
pub fn parse_dpkg_status(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
            match (installed, field("Package:"), field("Version:")) {
                (true, Some(p), Some(v)) => Some(format!("{p}={v}")),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

/// Bytes allocated by the tree (hard links counted once).
pub fn allocated_bytes(tree: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    walk(tree, &mut seen)
}

fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += walk(&entry.path(), seen)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_installed_packages_only() {
        let status = "Package: a\nStatus: install ok installed\nVersion: 1.0\n\n\
                      Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\n\
                      Package: c\nVersion: 3:4-5\nStatus: install ok installed\n";
        assert_eq!(parse_dpkg_status(status), vec!["a=1.0", "c=3:4-5"]);
    }

    #[test]
    fn finds_kernel_with_initrd_and_modules() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/vmlinuz-6.1.0-9-cloud-amd64"), "k").unwrap();
        assert!(find_kernel(root).unwrap_err().contains("initrd"));
        fs::write(root.join("boot/initrd.img-6.1.0-9-cloud-amd64"), "i").unwrap();
        assert!(find_kernel(root).unwrap_err().contains("modules"));
        fs::create_dir_all(root.join("lib/modules/6.1.0-9-cloud-amd64")).unwrap();
        let k = find_kernel(root).unwrap();
        assert_eq!(k.version, "6.1.0-9-cloud-amd64");
        assert_eq!(
            k.initrd.as_deref(),
            Some("/boot/initrd.img-6.1.0-9-cloud-amd64")
        );
    }
}
