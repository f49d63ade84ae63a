//! The requirements an image must meet, one function per rule.
//!
//! Each rule reads the image and returns a [`Check`]: pass or fail, what was
//! found, and how to fix it. Docker rules are skipped for images meant to run
//! without Docker.

use super::image::Image;
use super::initrd;
use super::systemd::{
    all_enabled, enabled_in, service_values, sshd_setting, unit_file, unit_with_dropins,
};
use crate::customize::{DOCKER_TCP, INITRAMFS_MODULES};
use serde::Serialize;

/// Result of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One checked requirement.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `sshd-enabled`.
    pub id: &'static str,
    /// What is required.
    pub requirement: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found in the image.
    pub found: String,
    /// How to fix a failure (empty when passing).
    pub fix: String,
}

fn check(id: &'static str, requirement: &'static str, ok: bool, found: String, fix: &str) -> Check {
    Check {
        id,
        requirement,
        status: if ok { Status::Pass } else { Status::Fail },
        found,
        fix: if ok { String::new() } else { fix.to_string() },
    }
}

/// Runs every rule; Docker rules only when `docker` is true.
pub fn run_all(img: &Image, docker: bool) -> Vec<Check> {
    let mut checks = vec![
        root_filesystem(img),
        kernel_and_initramfs(img),
        initramfs_virtio(img),
        virtio_mmio(img),
        sshd_installed(img),
        sshd_enabled(img),
        sshd_root_keys(img),
        no_host_keys(img),
        hostkey_fallback(img),
        no_authorized_keys(img),
        root_password(img),
        machine_id(img),
        static_network(img),
        serial_console(img),
    ];
    let docker_checks: [fn(&Image) -> Check; 3] = [docker_installed, docker_enabled, docker_listen];
    for rule in docker_checks {
        let mut c = rule(img);
        if !docker {
            c.status = Status::Skip;
            c.found = "not checked: image is meant to run without Docker".into();
            c.fix.clear();
        }
        checks.push(c);
    }
    checks
}

fn root_filesystem(img: &Image) -> Check {
    let label = img.label();
    let fstab = img.text("/etc/fstab").unwrap_or_default();
    let entry = fstab
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && !f[0].starts_with('#') && f[1] == "/");
    let (ok, found) = match entry {
        Some(f) => {
            let dev_ok = f[0] == "/dev/vda"
                || (f[0].strip_prefix("LABEL=") == Some(label.as_str()) && !label.is_empty());
            (
                dev_ok && f[2] == "ext4",
                format!("fstab: {} / {}; label `{label}`", f[0], f[2]),
            )
        }
        None => (
            false,
            format!("no `/` entry in /etc/fstab; label `{label}`"),
        ),
    };
    check(
        "root-filesystem",
        "root filesystem on /dev/vda (ext4) in /etc/fstab",
        ok,
        found,
        "add `/dev/vda / ext4 defaults,errors=remount-ro 0 1` to /etc/fstab",
    )
}

/// The newest kernel version with an initramfs and a modules directory, or
/// built without module support (the Dozlab kernel: neither is needed).
fn usable_kernel(img: &Image) -> (Option<String>, Vec<String>) {
    let mut versions: Vec<String> = img
        .list("/boot")
        .into_iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    versions.sort();
    let usable = versions.iter().rev().find(|v| {
        without_modules(img, v)
            || img.exists(&format!("/boot/initrd.img-{v}"))
                && img.is_dir(&format!("/lib/modules/{v}"))
    });
    (usable.cloned(), versions)
}

/// `/boot/config-<v>`, the kernel's build configuration.
fn kernel_config(img: &Image, v: &str) -> Option<String> {
    img.text(&format!("/boot/config-{v}"))
}

/// Whether kernel `v` was built without loadable modules.
fn without_modules(img: &Image, v: &str) -> bool {
    kernel_config(img, v).is_some_and(|c| c.lines().any(|l| l == "# CONFIG_MODULES is not set"))
}

/// The value of `name` (`CONFIG_X`) in a kernel config.
fn config_value<'a>(config: &'a str, name: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

/// Where a driver of kernel `v` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    BuiltIn,
    Initramfs,
    Missing,
}

/// Finds `module` (e.g. `virtio_mmio`) built into kernel `v` (its config or
/// modules.builtin) or in the initramfs file names `initrd`.
fn driver(img: &Image, v: &str, module: &str, initrd: &[String]) -> Driver {
    let option = format!("CONFIG_{}", module.to_ascii_uppercase());
    let config = kernel_config(img, v).unwrap_or_default();
    let builtin = img
        .text(&format!("/lib/modules/{v}/modules.builtin"))
        .unwrap_or_default();
    if config_value(&config, &option) == Some("y")
        || builtin
            .lines()
            .any(|l| l.ends_with(&format!("/{module}.ko")))
    {
        return Driver::BuiltIn;
    }
    let in_initrd = initrd.iter().any(|n| {
        n.rsplit('/')
            .next()
            .is_some_and(|b| b.starts_with(&format!("{module}.ko")))
    });
    if in_initrd {
        Driver::Initramfs
    } else {
        Driver::Missing
    }
}

/// The file names in kernel `v`'s initramfs (empty without one), or why it cannot be read.
fn initrd_names(img: &Image, v: &str) -> Result<Vec<String>, String> {
    let path = format!("/boot/initrd.img-{v}");
    if !img.exists(&path) {
        return Ok(vec![]);
    }
    let data = img.read(&path).ok_or("initramfs unreadable")?;
    initrd::list_names(&data).map_err(|e| e.to_string())
}

fn kernel_and_initramfs(img: &Image) -> Check {
    let (usable, versions) = usable_kernel(img);
    let found = match (&usable, versions.is_empty()) {
        (Some(v), _) if without_modules(img, v) => {
            format!("/boot/vmlinuz-{v}, built without modules (no initramfs needed)")
        }
        (Some(v), _) => format!("/boot/vmlinuz-{v}, /boot/initrd.img-{v}, /lib/modules/{v}"),
        (None, true) => "no /boot/vmlinuz-*".into(),
        (None, false) => format!(
            "kernel(s) {} without a matching initrd.img or /lib/modules",
            versions.join(", ")
        ),
    };
    check(
        "kernel",
        "a kernel with its initramfs and matching /lib/modules (or built without modules)",
        usable.is_some(),
        found,
        "install linux-image-cloud-amd64 and initramfs-tools in the image (update-initramfs -u -k all)",
    )
}

fn initramfs_virtio(img: &Image) -> Check {
    const REQ: &str =
        "virtio_blk, virtio_net, virtio_pci, virtio_mmio built in or in the initramfs";
    const FIX: &str = "list the modules in /etc/initramfs-tools/modules and run update-initramfs -u -k all in the tree";
    let fail = |found: String| check("initramfs-virtio", REQ, false, found, FIX);
    let (Some(v), _) = usable_kernel(img) else {
        return fail("no usable kernel/initramfs".into());
    };
    let names = match initrd_names(img, &v) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let states: Vec<(&str, Driver)> = INITRAMFS_MODULES
        .iter()
        .map(|m| (*m, driver(img, &v, m, &names)))
        .collect();
    let missing: Vec<&str> = states
        .iter()
        .filter(|(_, d)| *d == Driver::Missing)
        .map(|(m, _)| *m)
        .collect();
    let found = if !missing.is_empty() {
        format!(
            "missing from kernel {v} and its initramfs: {}",
            missing.join(", ")
        )
    } else if states.iter().all(|(_, d)| *d == Driver::BuiltIn) {
        format!("all four built into kernel {v}")
    } else {
        format!(
            "all four in initrd.img-{v} or built in ({} files)",
            names.len()
        )
    };
    check("initramfs-virtio", REQ, missing.is_empty(), found, FIX)
}

/// The drivers a virtio-mmio boot needs (QEMU `microvm`, Firecracker).
const MMIO_DRIVERS: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net"];

fn virtio_mmio(img: &Image) -> Check {
    const REQ: &str = "boots on virtio-mmio (QEMU microvm, Firecracker): virtio_mmio, virtio_blk, virtio_net built in or in the initramfs; ACPI built in";
    const FIX: &str = "use kernel = \"dozlab\" in the recipe, or a kernel with CONFIG_ACPI=y and the virtio-mmio drivers built in or in its initramfs (with /boot/config-<version> in the image)";
    let fail = |found: String| check("virtio-mmio", REQ, false, found, FIX);
    let (Some(v), _) = usable_kernel(img) else {
        return fail("no usable kernel".into());
    };
    let Some(config) = kernel_config(img, &v) else {
        return fail(format!(
            "no /boot/config-{v} to read the kernel's options from"
        ));
    };
    let names = match initrd_names(img, &v) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let mut parts = Vec::new();
    let mut ok = true;
    for m in MMIO_DRIVERS {
        let d = driver(img, &v, m, &names);
        ok &= d != Driver::Missing;
        let where_ = match d {
            Driver::BuiltIn => "built in",
            Driver::Initramfs => "initramfs",
            Driver::Missing => "MISSING",
        };
        parts.push(format!("{m}: {where_}"));
    }
    let acpi = config_value(&config, "CONFIG_ACPI") == Some("y");
    ok &= acpi;
    parts.push(format!(
        "ACPI: {}",
        if acpi { "built in" } else { "MISSING" }
    ));
    check(
        "virtio-mmio",
        REQ,
        ok,
        format!("kernel {v}: {}", parts.join(", ")),
        FIX,
    )
}

fn sshd_installed(img: &Image) -> Check {
    let ok = img.exists("/usr/sbin/sshd");
    check(
        "sshd-installed",
        "OpenSSH server installed",
        ok,
        if ok {
            "/usr/sbin/sshd".into()
        } else {
            "no /usr/sbin/sshd".into()
        },
        "add openssh-server to the recipe's packages",
    )
}

fn sshd_enabled(img: &Image) -> Check {
    let found = ["ssh.service", "sshd.service", "ssh.socket"]
        .iter()
        .find_map(|u| enabled_in(img, u).map(|d| format!("{u} in {d}")));
    check(
        "sshd-enabled",
        "sshd enabled at boot",
        found.is_some(),
        found
            .clone()
            .unwrap_or_else(|| "ssh.service is not enabled".into()),
        "run `systemctl enable ssh.service` inside the tree",
    )
}

fn sshd_root_keys(img: &Image) -> Check {
    let permit = sshd_setting(img, "PermitRootLogin")
        .unwrap_or_else(|| "prohibit-password (default)".into());
    let pubkey = sshd_setting(img, "PubkeyAuthentication").unwrap_or_else(|| "yes".into());
    let first = permit
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let ok = matches!(
        first.as_str(),
        "prohibit-password" | "without-password" | "yes"
    ) && !pubkey.eq_ignore_ascii_case("no");
    check(
        "ssh-root-key-login",
        "root can log in over SSH with a key",
        ok,
        format!("PermitRootLogin {permit}; PubkeyAuthentication {pubkey}"),
        "set `PermitRootLogin prohibit-password` in /etc/ssh/sshd_config.d/10-dozlab.conf",
    )
}

fn no_host_keys(img: &Image) -> Check {
    let keys: Vec<String> = img
        .list("/etc/ssh")
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    check(
        "no-ssh-host-keys",
        "no SSH host keys baked in (the runtime injects one per session)",
        keys.is_empty(),
        if keys.is_empty() {
            "none".into()
        } else {
            format!("/etc/ssh: {}", keys.join(", "))
        },
        "delete /etc/ssh/ssh_host_* from the tree before mkfs",
    )
}

fn hostkey_fallback(img: &Image) -> Check {
    let via_unit = all_enabled(img)
        .into_iter()
        .find(|u| unit_file(img, u).is_some_and(|t| t.contains("ssh-keygen -A")));
    let via_ssh = unit_with_dropins(img, "ssh.service")
        .map(|t| {
            service_values(&t, "ExecStartPre")
                .iter()
                .any(|v| v.contains("ssh-keygen"))
        })
        .unwrap_or(false);
    let found = match (&via_unit, via_ssh) {
        (Some(u), _) => format!("{u} runs ssh-keygen -A"),
        (None, true) => "ssh.service runs ssh-keygen".into(),
        (None, false) => "nothing generates host keys when none is injected".into(),
    };
    check(
        "ssh-hostkey-fallback",
        "host keys are generated at boot when none was injected",
        via_unit.is_some() || via_ssh,
        found,
        "enable a oneshot unit with ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key running `ssh-keygen -A` before ssh.service",
    )
}

fn no_authorized_keys(img: &Image) -> Check {
    let baked = img.lexists("/root/.ssh/authorized_keys");
    check(
        "no-authorized-keys",
        "no root authorized_keys baked in (the runtime injects the session's key)",
        !baked,
        if baked {
            "/root/.ssh/authorized_keys exists".into()
        } else {
            "none".into()
        },
        "delete /root/.ssh/authorized_keys from the tree",
    )
}

fn root_password(img: &Image) -> Check {
    let field = |file: &str| {
        img.text(file).and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("root:"))
                .map(|l| l.split(':').nth(1).unwrap_or("").to_string())
        })
    };
    let shadow = field("/etc/shadow");
    let passwd = field("/etc/passwd");
    let usable = |h: &str| {
        h.is_empty() || h.starts_with('$') || (h.len() == 13 && !h.starts_with(['!', '*']))
    };
    let found = match (&shadow, &passwd) {
        (_, Some(p)) if p != "x" && usable(p) => {
            format!("/etc/passwd holds a root password ({})", describe(p))
        }
        (Some(h), _) if usable(h) => format!(
            "root has a usable password in /etc/shadow ({})",
            describe(h)
        ),
        (Some(h), _) => format!("locked (`{}`)", h.chars().take(2).collect::<String>()),
        (None, _) => "no root entry in /etc/shadow".into(),
    };
    let ok = found.starts_with("locked");
    check(
        "root-password-locked",
        "no usable root password",
        ok,
        found,
        "lock it: set root's password field in /etc/shadow to `*` (usermod -p '*' root)",
    )
}

fn describe(hash: &str) -> String {
    if hash.is_empty() {
        "empty: anyone can log in".into()
    } else {
        format!(
            "a password hash `{}...`",
            hash.chars().take(4).collect::<String>()
        )
    }
}

fn machine_id(img: &Image) -> Check {
    let id = img.text("/etc/machine-id");
    let value = id.as_deref().map(str::trim).unwrap_or("");
    let ok = value.is_empty() || value == "uninitialized";
    check(
        "machine-id-empty",
        "empty /etc/machine-id (each VM gets its own)",
        ok,
        match &id {
            None => "absent".into(),
            Some(_) if ok => "empty".into(),
            Some(_) => format!("baked in: {value}"),
        },
        "truncate /etc/machine-id to zero bytes in the tree",
    )
}

fn static_network(img: &Image) -> Check {
    let generator = enabled_in(img, "systemd-network-generator.service");
    let networkd = enabled_in(img, "systemd-networkd.service");
    let ifupdown = img.exists("/sbin/ifup")
        && img.text("/etc/network/interfaces").is_some_and(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with("iface") && !l.contains(" lo "))
        });
    let ok = generator.is_some() && networkd.is_some() && !ifupdown;
    let found = format!(
        "systemd-network-generator {}, systemd-networkd {}{}",
        if generator.is_some() {
            "enabled"
        } else {
            "NOT enabled"
        },
        if networkd.is_some() {
            "enabled"
        } else {
            "NOT enabled"
        },
        if ifupdown {
            "; ifupdown also configures a NIC (conflict)"
        } else {
            ""
        }
    );
    check(
        "static-address",
        "static address taken from the kernel command line (ip=)",
        ok,
        found,
        "systemctl enable systemd-networkd systemd-network-generator; remove NIC stanzas from /etc/network/interfaces",
    )
}

fn serial_console(img: &Image) -> Check {
    let found = enabled_in(img, "serial-getty@ttyS0.service");
    check(
        "serial-console",
        "login console on ttyS0",
        found.is_some(),
        found
            .map(|d| format!("serial-getty@ttyS0.service in {d}"))
            .unwrap_or_else(|| "serial-getty@ttyS0.service not enabled".into()),
        "systemctl enable serial-getty@ttyS0.service inside the tree",
    )
}

fn docker_installed(img: &Image) -> Check {
    let path = ["/usr/bin/dockerd", "/usr/sbin/dockerd"]
        .into_iter()
        .find(|p| img.exists(p));
    check(
        "docker-installed",
        "Docker daemon installed",
        path.is_some(),
        path.map(str::to_owned)
            .unwrap_or_else(|| "no dockerd".into()),
        "add docker.io to the recipe's packages (or verify with --without docker)",
    )
}

fn docker_enabled(img: &Image) -> Check {
    let found = ["docker.service", "docker.socket"]
        .iter()
        .find_map(|u| enabled_in(img, u).map(|d| format!("{u} in {d}")));
    check(
        "docker-enabled",
        "Docker daemon enabled at boot",
        found.is_some(),
        found
            .clone()
            .unwrap_or_else(|| "docker.service is not enabled".into()),
        "systemctl enable docker.service inside the tree",
    )
}

/// The hosts dockerd listens on: from its effective ExecStart (and
/// $DOCKER_OPTS from /etc/default/docker) and from daemon.json.
fn docker_hosts(img: &Image) -> (Vec<String>, Vec<String>) {
    let exec = unit_with_dropins(img, "docker.service")
        .map(|t| service_values(&t, "ExecStart"))
        .and_then(|v| v.last().cloned())
        .unwrap_or_default();
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    if exec.contains("DOCKER_OPTS") {
        let opts = img
            .text("/etc/default/docker")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("DOCKER_OPTS=")
                    .map(|v| v.trim_matches(['"', '\'']).to_string())
            })
            .unwrap_or_default();
        words.extend(opts.split_whitespace().map(str::to_owned));
    }
    let mut flags = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "-H" || w == "--host" {
            flags.extend(it.next().cloned());
        } else if let Some(v) = w.strip_prefix("--host=").or_else(|| w.strip_prefix("-H=")) {
            flags.push(v.to_string());
        }
    }
    let json_hosts = img
        .read("/etc/docker/daemon.json")
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("hosts").cloned())
        .and_then(|h| serde_json::from_value::<Vec<String>>(h).ok())
        .unwrap_or_default();
    (flags, json_hosts)
}

fn docker_listen(img: &Image) -> Check {
    let (flags, json) = docker_hosts(img);
    let all: Vec<&String> = flags.iter().chain(json.iter()).collect();
    let tcp = all.iter().any(|h| {
        matches!(
            h.as_str(),
            "tcp://0.0.0.0:2375" | "tcp://:2375" | "tcp://[::]:2375"
        )
    });
    let unix = all
        .iter()
        .any(|h| h.starts_with("fd://") || h.starts_with("unix://"));
    let conflict = !flags.is_empty() && !json.is_empty();
    let mut found = if all.is_empty() {
        "no -H hosts: dockerd listens only on its default unix socket".to_string()
    } else {
        format!(
            "hosts: {}",
            all.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if conflict {
        found
            .push_str("; hosts set both as -H flags and in daemon.json (dockerd refuses to start)");
    } else if !tcp {
        found.push_str("; not on tcp 2375");
    } else if !unix {
        found.push_str("; no unix socket");
    }
    check(
        "docker-listen",
        "Docker listens on tcp://0.0.0.0:2375 and its unix socket",
        tcp && unix && !conflict,
        found,
        &format!(
            "add a drop-in /etc/systemd/system/docker.service.d/*.conf with `ExecStart=` then `ExecStart=/usr/sbin/dockerd -H fd:// -H {DOCKER_TCP}`, and no `hosts` in daemon.json"
        ),
    )
}
