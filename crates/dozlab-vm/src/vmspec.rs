//! The one description of a VM that every backend boots: kernel, initrd,
//! kernel command line, root disk, tap, MAC, vCPUs and memory.
//!
//! QEMU `microvm` and Firecracker give the guest the same device model
//! (virtio-mmio, no PCI, direct kernel boot), so a boot on `microvm` proves
//! Firecracker's configuration: both launches are made from one [`VmSpec`]
//! and differ only in what is the VMM's own business (the ELF kernel
//! Firecracker needs, QEMU's TCG clock parameters).

use crate::cmdline::{self, GuestNet};
use crate::config::Jailer;
use crate::firecracker::FcPlan;
use crate::hosttsc;
use crate::qemu::{Accel, Machine, QemuPlan};
use std::path::PathBuf;

/// What the guest gets, whichever VMM runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The kernel as found (bzImage or ELF).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The guest kernel command line.
    pub cmdline: String,
    /// The root disk (`/dev/vda`).
    pub rootfs: PathBuf,
    pub tap: String,
    pub mac: String,
    pub cpus: u32,
    pub memory_mib: u32,
}

/// Which bus the guest's virtio devices sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// virtio-pci (QEMU `q35`).
    Pci,
    /// virtio-mmio (QEMU `microvm`, Firecracker): `pci=off`.
    Mmio,
}

impl Bus {
    /// The bus of a QEMU machine (`auto` must be resolved first; it counts as mmio).
    pub fn of(machine: Machine) -> Self {
        match machine {
            Machine::Q35 => Bus::Pci,
            Machine::Microvm | Machine::Auto => Bus::Mmio,
        }
    }
}

/// Inputs of a [`VmSpec`] that do not depend on the bus.
#[derive(Debug, Clone)]
pub struct SpecInputs<'a> {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub net: &'a GuestNet,
    pub tap: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// `--append`.
    pub append: Option<&'a str>,
}

impl VmSpec {
    /// The spec for a guest on `bus`.
    pub fn new(i: SpecInputs<'_>, bus: Bus) -> Self {
        Self {
            cmdline: cmdline::kernel_cmdline(i.net, bus == Bus::Mmio, i.append),
            kernel: i.kernel,
            initrd: i.initrd,
            rootfs: i.rootfs,
            tap: i.tap,
            mac: i.net.mac.clone(),
            cpus: i.cpus,
            memory_mib: i.memory_mib,
        }
    }

    /// The QEMU launch. On `microvm` under TCG the guest is told the host's
    /// TSC frequency (see [`hosttsc`]); `tsc_khz` is that frequency (`None`:
    /// measured now).
    pub fn qemu(&self, q: QemuTarget, tsc_khz: Option<u32>) -> QemuPlan {
        let mut cmdline = self.cmdline.clone();
        if q.machine == Machine::Microvm && q.accel == Accel::Tcg {
            let khz =
                tsc_khz.or_else(|| hosttsc::measure_khz(std::time::Duration::from_millis(50)));
            if let Some(khz) = khz {
                cmdline = format!("{cmdline} {}", hosttsc::tcg_clock_params(khz));
            }
        }
        QemuPlan {
            bin: q.bin,
            name: q.name,
            machine: q.machine,
            accel: q.accel,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline,
            rootfs: self.rootfs.clone(),
            tap: self.tap.clone(),
            mac: self.mac.clone(),
            qmp_socket: q.qmp_socket,
            agent_socket: q.agent_socket,
            incoming: None,
        }
    }

    /// The Firecracker launch; `vmlinux` is the ELF form of [`VmSpec::kernel`].
    pub fn firecracker(&self, f: FcTarget, vmlinux: PathBuf) -> FcPlan {
        FcPlan {
            bin: f.bin,
            jailer: f.jailer,
            session_id: f.session_id,
            api_socket: f.api_socket,
            vmlinux,
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            rootfs: self.rootfs.clone(),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            tap: self.tap.clone(),
            mac: self.mac.clone(),
        }
    }
}

/// What only QEMU needs.
#[derive(Debug, Clone)]
pub struct QemuTarget {
    pub bin: PathBuf,
    pub name: String,
    /// `q35` or `microvm` (resolved, not `auto`).
    pub machine: Machine,
    pub accel: Accel,
    pub qmp_socket: PathBuf,
    /// See [`QemuPlan::agent_socket`].
    pub agent_socket: Option<PathBuf>,
}

/// What only Firecracker needs.
#[derive(Debug, Clone)]
pub struct FcTarget {
    pub bin: PathBuf,
    pub jailer: Option<Jailer>,
    pub session_id: String,
    pub api_socket: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bus: Bus) -> VmSpec {
        let net = GuestNet {
            vm_ip: "172.16.0.2".parse().unwrap(),
            gateway_ip: "172.16.0.1".parse().unwrap(),
            prefix_len: 24,
            mac: "06:00:ac:10:00:02".into(),
        };
        VmSpec::new(
            SpecInputs {
                kernel: "/state/vmlinuz".into(),
                initrd: Some("/state/initrd.img".into()),
                rootfs: "/srv/rootfs.ext4".into(),
                net: &net,
                tap: "tap0".into(),
                cpus: 2,
                memory_mib: 1024,
                append: Some("quiet"),
            },
            bus,
        )
    }

    fn target(machine: Machine, accel: Accel) -> QemuTarget {
        QemuTarget {
            bin: "qemu-system-x86_64".into(),
            name: "dozlab-s1".into(),
            machine,
            accel,
            qmp_socket: "/state/qmp.sock".into(),
            agent_socket: None,
        }
    }

    /// What microvm boots is what Firecracker is configured with.
    #[test]
    fn microvm_and_firecracker_boot_the_same_vm() {
        let s = spec(Bus::Mmio);
        let q = s.qemu(target(Machine::Microvm, Accel::Kvm), None);
        let f = s.firecracker(
            FcTarget {
                bin: "firecracker".into(),
                jailer: None,
                session_id: "s1".into(),
                api_socket: "/state/fc.sock".into(),
            },
            "/state/vmlinux".into(),
        );
        assert_eq!(q.cmdline, f.cmdline);
        assert!(f.cmdline.contains(" pci=off "), "{}", f.cmdline);
        assert_eq!((&q.initrd, &q.rootfs), (&f.initrd, &f.rootfs));
        assert_eq!((&q.tap, &q.mac), (&f.tap, &f.mac));
        assert_eq!((q.cpus, q.memory_mib), (f.cpus, f.memory_mib));
        // Firecracker's API gets exactly these values.
        let boot = &f.requests()[0].body;
        assert_eq!(boot["boot_args"], q.cmdline.as_str());
    }

    #[test]
    fn tcg_microvm_gets_the_clock_and_q35_does_not() {
        let s = spec(Bus::Mmio);
        let tcg = s.qemu(target(Machine::Microvm, Accel::Tcg), Some(2_300_000));
        assert!(
            tcg.cmdline
                .ends_with("quiet tsc_early_khz=2300000 tsc=reliable no_timer_check"),
            "{}",
            tcg.cmdline
        );
        let q35 = spec(Bus::Pci).qemu(target(Machine::Q35, Accel::Tcg), Some(2_300_000));
        assert!(!q35.cmdline.contains("tsc") && !q35.cmdline.contains("pci=off"));
    }
}
