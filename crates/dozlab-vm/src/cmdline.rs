//! The guest kernel command line and the guest's network identity.
//!
//! The VM takes its address from the command line (`ip=` is read by
//! `systemd-network-generator` in the guest), so one image serves every
//! session without per-session edits.

use std::net::Ipv4Addr;

/// The guest side of the tap link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNet {
    /// The VM's address.
    pub vm_ip: Ipv4Addr,
    /// The tap's address, the VM's default gateway.
    pub gateway_ip: Ipv4Addr,
    /// Prefix length of the link (24 for 255.255.255.0).
    pub prefix_len: u8,
    /// The VM NIC's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The netmask for a prefix length (`24` → `255.255.255.0`).
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = match prefix_len {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(bits)
}

/// Whether `a` and `b` are in the same network of `prefix_len` bits.
pub fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let m = u32::from(netmask(prefix_len));
    u32::from(a) & m == u32::from(b) & m
}

/// A locally administered unicast MAC derived from the VM address
/// (`172.16.0.2` → `06:00:ac:10:00:02`), stable across restarts.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("06:00:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Whether `s` is a MAC address `xx:xx:xx:xx:xx:xx` usable for a guest NIC
/// (unicast: the lowest bit of the first octet clear).
pub fn valid_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

/// Builds the kernel command line.
///
/// `mmio` (virtio-mmio machines: Firecracker, QEMU `microvm`) adds `pci=off`:
/// there is no PCI bus to probe. `extra` is appended verbatim (the `--append` flag).
pub fn kernel_cmdline(net: &GuestNet, mmio: bool, extra: Option<&str>) -> String {
    let mut parts: Vec<String> = ["console=ttyS0", "reboot=k", "panic=1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if mmio {
        parts.push("pci=off".into());
    }
    parts.push("root=/dev/vda".into());
    parts.push("rw".into());
    // client:server:gateway:netmask:hostname:device:autoconf; the empty
    // device matches whatever name the NIC gets (enp0s* or eth0).
    parts.push(format!(
        "ip={}::{}:{}:::off",
        net.vm_ip,
        net.gateway_ip,
        netmask(net.prefix_len)
    ));
    if let Some(extra) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        parts.push(extra.to_string());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> GuestNet {
        GuestNet {
            vm_ip: "172.16.0.2".parse().unwrap(),
            gateway_ip: "172.16.0.1".parse().unwrap(),
            prefix_len: 24,
            mac: mac_for("172.16.0.2".parse().unwrap()),
        }
    }

    #[test]
    fn qemu_cmdline_carries_the_address() {
        assert_eq!(
            kernel_cmdline(&net(), false, None),
            "console=ttyS0 reboot=k panic=1 root=/dev/vda rw \
             ip=172.16.0.2::172.16.0.1:255.255.255.0:::off"
        );
    }

    #[test]
    fn firecracker_cmdline_turns_pci_off_and_appends_extra() {
        let c = kernel_cmdline(&net(), true, Some(" quiet "));
        assert!(c.starts_with("console=ttyS0 reboot=k panic=1 pci=off root=/dev/vda rw ip="));
        assert!(c.ends_with(":::off quiet"), "{c}");
    }

    #[test]
    fn netmasks_and_subnets() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert!(same_subnet(
            "172.16.0.2".parse().unwrap(),
            "172.16.0.1".parse().unwrap(),
            24
        ));
        assert!(!same_subnet(
            "172.16.1.2".parse().unwrap(),
            "172.16.0.1".parse().unwrap(),
            24
        ));
    }

    #[test]
    fn macs() {
        assert_eq!(net().mac, "06:00:ac:10:00:02");
        assert!(valid_mac(&net().mac));
        assert!(!valid_mac("07:00:00:00:00:01"), "multicast refused");
        assert!(!valid_mac("06:00:00:00:01"));
        assert!(!valid_mac("zz:00:00:00:00:01"));
    }
}
