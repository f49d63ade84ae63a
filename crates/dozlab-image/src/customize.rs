//! The base configuration every Dozlab image gets, whatever its recipe.
//!
//! It has three parts: an overlay directory copied over the tree
//! (configuration files), a shell script run inside the tree by an mmdebstrap
//! customize hook (enabling units, regenerating the initramfs, locking root,
//! deleting host keys), and [`finalize_tree`], run on the finished tree from
//! the host (machine-id, hostname, resolv.conf, stray symlinks).

use crate::recipe::{KernelChoice, Recipe};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// Modules the initramfs must carry to find the root disk and NIC over virtio.
pub const INITRAMFS_MODULES: &[&str] = &["virtio_blk", "virtio_net", "virtio_pci", "virtio_mmio"];

/// Units a lab VM never needs, masked in every image to shorten the boot
/// (measured with `systemd-analyze blame`, see docs/image.md):
/// - `systemd-networkd-wait-online.service`: the address comes from the
///   kernel's `ip=`; nothing in a lab waits for "online", but docker.service
///   is ordered after network-online.target and waited for it;
/// - `e2scrub_reap.service`, `e2scrub_all.timer`: LVM snapshots of ext4, no LVM here;
/// - `apt-daily*.timer`, `man-db.timer`, `dpkg-db-backup.timer`,
///   `fstrim.timer`: background jobs that would take the VM's CPU minutes
///   into a lab;
/// - `modprobe@drm.service`, `modprobe@efi_pstore.service`: no display, no EFI;
/// - `getty@tty1.service`: no virtual console on a microVM (the serial getty stays).
pub const MASKED_UNITS: &[&str] = &[
    "systemd-networkd-wait-online.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "getty@tty1.service",
];

/// Modules udev would load from CPU and platform aliases that a lab VM never
/// uses (TCG's `-cpu max` advertises SVM/VMX; no frequency scaling in a VM).
const MODPROBE_BLACKLIST: &str = "# Dozlab: nothing in a lab VM uses these; udev loaded them from CPU aliases.\n\
blacklist kvm\n\
blacklist kvm_amd\n\
blacklist kvm_intel\n\
blacklist powernow_k8\n\
blacklist acpi_cpufreq\n";

/// The TCP address Docker listens on in images with `features.docker`.
pub const DOCKER_TCP: &str = "tcp://0.0.0.0:2375";

/// Name of the fallback unit that generates SSH host keys when none were injected.
pub const HOSTKEY_UNIT: &str = "dozlab-ssh-hostkeys.service";

const FSTAB: &str = "# Dozlab guest: the root disk is the first virtio block device.\n\
/dev/vda / ext4 defaults,errors=remount-ro 0 1\n";

const SSHD_CONF: &str = "# Dozlab: root logs in with the per-session key the runtime injects.\n\
PermitRootLogin prohibit-password\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n\
UseDNS no\n";

const HOSTKEY_SERVICE: &str = "[Unit]\n\
Description=Generate SSH host keys when the runtime injected none (Dozlab fallback)\n\
Before=ssh.service\n\
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/usr/bin/ssh-keygen -A\n\
RemainAfterExit=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

const WAIT_ONLINE_DROPIN: &str = "# Dozlab: one configured link is enough, and never hold boot for long.\n\
[Service]\n\
ExecStart=\n\
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=20\n";

const HOSTS: &str =
    "127.0.0.1\tlocalhost\n127.0.1.1\tdozlab\n::1\tlocalhost ip6-localhost ip6-loopback\n";

const INITRAMFS_MODULES_HEADER: &str = "# Dozlab: the root disk and the NIC are virtio (pci under q35, mmio under\n\
# Firecracker); these must be in the initramfs. Run update-initramfs -u after a change.\n";

/// gzip: the tree has no zstd binary, and every kernel reads gzip.
const INITRAMFS_CONF: &str = "# Dozlab\nCOMPRESS=gzip\n";

/// Writes the early overlay, copied in before the kernel and initramfs-tools
/// are installed so that the first initramfs is already the right one.
pub fn write_early_overlay(dir: &Path) -> io::Result<()> {
    let mut modules = INITRAMFS_MODULES_HEADER.to_string();
    for m in INITRAMFS_MODULES {
        modules.push_str(m);
        modules.push('\n');
    }
    put(dir, "etc/initramfs-tools/modules", &modules, 0o644)?;
    put(
        dir,
        "etc/initramfs-tools/conf.d/dozlab.conf",
        INITRAMFS_CONF,
        0o644,
    )
}

/// Writes the overlay (configuration files) into `dir`.
pub fn write_overlay(dir: &Path) -> io::Result<()> {
    put(dir, "etc/fstab", FSTAB, 0o644)?;
    put(
        dir,
        "etc/ssh/sshd_config.d/10-dozlab.conf",
        SSHD_CONF,
        0o644,
    )?;
    put(
        dir,
        &format!("etc/systemd/system/{HOSTKEY_UNIT}"),
        HOSTKEY_SERVICE,
        0o644,
    )?;
    put(
        dir,
        "etc/systemd/system/systemd-networkd-wait-online.service.d/10-dozlab.conf",
        WAIT_ONLINE_DROPIN,
        0o644,
    )?;
    put(dir, "etc/modprobe.d/dozlab.conf", MODPROBE_BLACKLIST, 0o644)?;
    Ok(())
}

fn put(root: &Path, rel: &str, text: &str, mode: u32) -> io::Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, text)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
}

/// The script run inside the tree (via chroot, with mmdebstrap's mounts).
pub fn chroot_script(recipe: &Recipe) -> String {
    let mut s = String::from("set -e\nexport DEBIAN_FRONTEND=noninteractive\n");
    s.push_str(
        "systemctl enable systemd-networkd.service systemd-network-generator.service \
         ssh.service serial-getty@ttyS0.service ",
    );
    s.push_str(HOSTKEY_UNIT);
    s.push('\n');
    s.push_str(
        "if [ -e /lib/systemd/system/systemd-resolved.service ]; then systemctl enable systemd-resolved.service; fi\n",
    );
    s.push_str(&format!("systemctl mask {}\n", MASKED_UNITS.join(" ")));
    if recipe.docker {
        s.push_str(&docker_snippet());
    }
    for unit in &recipe.enable {
        s.push_str(&format!("systemctl enable {unit}\n"));
    }
    for cmd in &recipe.commands {
        s.push_str(cmd);
        s.push('\n');
    }
    if recipe.kernel == KernelChoice::Debian {
        s.push_str(&initramfs_snippet(recipe));
    }
    s.push_str("sed -i 's/^root:[^:]*:/root:*:/' /etc/shadow\n");
    s.push_str("rm -f /etc/ssh/ssh_host_* /root/.ssh/authorized_keys\n");
    s
}

/// The early overlay put the modules in place before the Debian kernel was
/// installed, so its initramfs already has them; regenerate only when
/// something changed since (a module line missing, or recipe commands ran).
fn initramfs_snippet(recipe: &Recipe) -> String {
    let mut s = format!("regen={}\n", u8::from(!recipe.commands.is_empty()));
    for m in INITRAMFS_MODULES {
        s.push_str(&format!(
            "grep -qx {m} /etc/initramfs-tools/modules || {{ echo {m} >> /etc/initramfs-tools/modules; regen=1; }}\n"
        ));
    }
    s.push_str("if [ \"$regen\" = 1 ]; then update-initramfs -u -k all; fi\n");
    s
}

/// Makes dockerd listen on tcp 2375 besides the socket-activated unix socket:
/// a drop-in that keeps Debian's own ExecStart and appends `-H tcp://...`.
fn docker_snippet() -> String {
    format!(
        r#"orig=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/docker.service | head -n 1)
[ -n "$orig" ] || {{ echo "docker.service has no ExecStart" >&2; exit 1; }}
mkdir -p /etc/systemd/system/docker.service.d
printf '%s\n' '# Dozlab: the IDE sidecar talks to dockerd over TCP 2375; the unix socket stays.' '[Service]' 'ExecStart=' "ExecStart=$orig -H {DOCKER_TCP}" > /etc/systemd/system/docker.service.d/10-dozlab-tcp.conf
systemctl enable docker.service
if [ -e /lib/systemd/system/docker.socket ]; then systemctl enable docker.socket; fi
"#
    )
}

/// Host-side fix-ups on the finished tree.
pub fn finalize_tree(tree: &Path) -> io::Result<()> {
    fs::write(tree.join("etc/machine-id"), "")?;
    let dbus_id = tree.join("var/lib/dbus/machine-id");
    if dbus_id
        .symlink_metadata()
        .map(|m| m.is_file())
        .unwrap_or(false)
    {
        fs::remove_file(&dbus_id)?;
    }
    fs::write(tree.join("etc/hostname"), "dozlab\n")?;
    fs::write(tree.join("etc/hosts"), HOSTS)?;
    let resolv = tree.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv);
    if tree
        .join("lib/systemd/system/systemd-resolved.service")
        .exists()
    {
        symlink("../run/systemd/resolve/stub-resolv.conf", &resolv)?;
    } else {
        fs::write(&resolv, "# Dozlab: set by the runtime\n")?;
    }
    for stale in ["vmlinuz.old", "initrd.img.old"] {
        let p = tree.join(stale);
        if p.symlink_metadata().is_ok() {
            fs::remove_file(p)?;
        }
    }
    remove_host_keys(tree)
}

fn remove_host_keys(tree: &Path) -> io::Result<()> {
    let ssh = tree.join("etc/ssh");
    let Ok(entries) = fs::read_dir(&ssh) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_enables_what_the_runtime_relies_on() {
        let minimal = Recipe::load("minimal").unwrap();
        let s = chroot_script(&minimal);
        for needle in [
            "systemd-network-generator.service",
            "serial-getty@ttyS0.service",
            HOSTKEY_UNIT,
            "update-initramfs -u -k all",
            "regen=0",
            "virtio_mmio",
            "rm -f /etc/ssh/ssh_host_*",
        ] {
            assert!(s.contains(needle), "missing {needle}");
        }
        assert!(!s.contains("docker"));
        assert!(
            s.contains("systemctl mask systemd-networkd-wait-online.service e2scrub_reap.service")
        );
        let dozlab = Recipe::parse("d", "extends = \"minimal\"\nkernel = \"dozlab\"\n").unwrap();
        let s = chroot_script(&dozlab);
        assert!(
            !s.contains("update-initramfs"),
            "no initramfs-tools with the Dozlab kernel"
        );
        assert!(chroot_script(&Recipe::load("vm").unwrap()).contains(DOCKER_TCP));
    }

    #[test]
    fn finalize_empties_machine_id_and_drops_host_keys() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["etc/ssh", "var/lib/dbus", "lib/systemd/system"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/machine-id"), "abc\n").unwrap();
        fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "k").unwrap();
        fs::write(root.join("etc/resolv.conf"), "nameserver 10.9.9.9\n").unwrap();
        symlink("boot/x", root.join("vmlinuz.old")).unwrap();
        finalize_tree(root).unwrap();
        assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
        assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
        assert!(root.join("vmlinuz.old").symlink_metadata().is_err());
        let resolv = fs::read_to_string(root.join("etc/resolv.conf")).unwrap();
        assert!(!resolv.contains("10.9.9.9"));
    }
}
