//! What `network-setup` is asked to build, and the checks that need no
//! system access: address arithmetic, tap names, port forwards, MAC syntax,
//! the VM's destination allow and deny lists.
//!
//! A [`NetPlan`] is what the user asked for; [`NetPlan::validate`] rejects
//! every value that can be judged without looking at the machine, so that
//! nothing is changed when the input is wrong.

use crate::cidr::Cidr;
use dozlab_core::netconfig::PortForward;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Ports that are never forwarded to the VM, with the reason.
pub const FORBIDDEN_PORTS: [(u16, &str); 3] = [
    (
        8080,
        "it is VS Code's (code-server) port on the pod; forwarding it would hijack the editor",
    ),
    (
        8081,
        "it is the web terminal's port on the pod; forwarding it would hijack the terminal",
    ),
    (
        2375,
        "it is the VM's unauthenticated Docker API, which must stay reachable only from inside the pod",
    ),
];

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

/// The network `network-setup` builds (or tears down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// Name of the tap device for the VM.
    pub tap: String,
    /// User id allowed to attach to the tap without `CAP_NET_ADMIN`
    /// (set when the tap is created; 0 = root only).
    pub tap_owner: u32,
    /// Address of the tap device: the VM's default gateway.
    pub gateway_ip: Ipv4Addr,
    /// The VM's address.
    pub vm_ip: Ipv4Addr,
    /// Prefix length of the tap subnet.
    pub prefix_len: u8,
    /// The pod's outward interface; `None`: the default route's interface.
    pub uplink: Option<String>,
    /// The pod's address; `None`: the uplink's first IPv4 address.
    pub pod_ip: Option<Ipv4Addr>,
    /// Ports on the pod IP forwarded to the VM.
    pub forward_ports: Vec<PortForward>,
    /// The VM's MAC address; `None`: derived from the VM IP.
    pub vm_mac: Option<String>,
    /// Destinations the VM must not reach (besides the built-in link-local
    /// and metadata blocks).
    pub deny_cidrs: Vec<Cidr>,
    /// Destinations the VM may reach even inside a denied block.
    pub allow_cidrs: Vec<Cidr>,
    /// Where the config file is written.
    pub config_out: PathBuf,
}

/// A value in the plan that can never work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("invalid tap name {0:?}: use 1-15 characters from A-Z a-z 0-9 . _ - (e.g. tap0)")]
    TapName(String),
    #[error(
        "invalid uplink name {0:?}: interface names are 1-15 characters without '/', ':' or spaces"
    )]
    UplinkName(String),
    #[error("prefix length {0} cannot hold a gateway and a VM: use 1-30 (e.g. --prefix-len 24)")]
    PrefixLen(u8),
    #[error("VM IP and gateway IP are both {0}: give the VM another address in the same subnet")]
    SameAddress(Ipv4Addr),
    #[error(
        "VM IP {vm} is outside the gateway's subnet {net}/{len}: use addresses of one subnet or change --prefix-len"
    )]
    OutsidePrefix {
        vm: Ipv4Addr,
        net: Ipv4Addr,
        len: u8,
    },
    #[error("{what} {ip} is the network address of {net}/{len}: pick a host address")]
    NetworkAddress {
        what: &'static str,
        ip: Ipv4Addr,
        net: Ipv4Addr,
        len: u8,
    },
    #[error("{what} {ip} is the broadcast address of {net}/{len}: pick a host address")]
    BroadcastAddress {
        what: &'static str,
        ip: Ipv4Addr,
        net: Ipv4Addr,
        len: u8,
    },
    #[error(
        "{what} {ip} is not a unicast host address (loopback, multicast, broadcast or 0.0.0.0)"
    )]
    NotUnicast { what: &'static str, ip: Ipv4Addr },
    #[error("refusing to forward port {port}: {why}")]
    ForbiddenPort { port: u16, why: &'static str },
    #[error("pod port {0} is forwarded twice: list each pod port once")]
    DuplicatePort(u16),
    #[error(
        "invalid VM MAC {0:?}: write six hex pairs like 06:00:ac:10:00:02 with the multicast bit clear"
    )]
    Mac(String),
    #[error("tap owner {0} is not a valid user id: use 0-2147483647")]
    TapOwner(u32),
    #[error("config output {0} is a directory: give a file path such as /shared/network-config")]
    ConfigIsDir(String),
    #[error(
        "{0} is both allowed and denied: drop it from one list (a more specific allow inside a denied block is fine)"
    )]
    CidrConflict(Cidr),
}

impl NetPlan {
    /// Checks every value that needs no system access.
    pub fn validate(&self) -> Result<(), PlanError> {
        if !is_valid_ifname(&self.tap) {
            return Err(PlanError::TapName(self.tap.clone()));
        }
        if i32::try_from(self.tap_owner).is_err() {
            return Err(PlanError::TapOwner(self.tap_owner));
        }
        if let Some(up) = &self.uplink {
            validate_uplink_name(up)?;
        }
        self.validate_addresses()?;
        validate_ports(&self.forward_ports)?;
        if let Some(mac) = &self.vm_mac {
            parse_mac(mac)?;
        }
        if let Some(c) = self
            .deny_cidrs
            .iter()
            .find(|c| self.allow_cidrs.contains(c))
        {
            return Err(PlanError::CidrConflict(*c));
        }
        if self.config_out.is_dir() {
            return Err(PlanError::ConfigIsDir(
                self.config_out.display().to_string(),
            ));
        }
        Ok(())
    }

    fn validate_addresses(&self) -> Result<(), PlanError> {
        let len = self.prefix_len;
        if !(1..=30).contains(&len) {
            return Err(PlanError::PrefixLen(len));
        }
        check_unicast("gateway IP", self.gateway_ip)?;
        check_unicast("VM IP", self.vm_ip)?;
        if self.vm_ip == self.gateway_ip {
            return Err(PlanError::SameAddress(self.vm_ip));
        }
        let net = network(self.gateway_ip, len);
        if network(self.vm_ip, len) != net {
            return Err(PlanError::OutsidePrefix {
                vm: self.vm_ip,
                net,
                len,
            });
        }
        for (what, ip) in [("gateway IP", self.gateway_ip), ("VM IP", self.vm_ip)] {
            if ip == net {
                return Err(PlanError::NetworkAddress { what, ip, net, len });
            }
            if ip == broadcast(ip, len) {
                return Err(PlanError::BroadcastAddress { what, ip, net, len });
            }
        }
        Ok(())
    }

    /// The VM's MAC: the one given, normalised, or one derived from the VM IP.
    pub fn effective_mac(&self) -> String {
        match &self.vm_mac {
            Some(mac) => parse_mac(mac)
                .map(format_mac)
                .unwrap_or_else(|_| mac.clone()),
            None => mac_for_ip(self.vm_ip),
        }
    }

    /// The tap subnet's network address.
    pub fn subnet(&self) -> Ipv4Addr {
        network(self.gateway_ip, self.prefix_len)
    }
}

/// Mask of a prefix length (0-32).
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The network address of `ip/len`.
pub fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & mask(len))
}

/// The broadcast address of `ip/len`.
pub fn broadcast(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) | !mask(len))
}

/// Whether `ip` lies in `net/len`.
pub fn contains(net: Ipv4Addr, len: u8, ip: Ipv4Addr) -> bool {
    network(ip, len) == network(net, len)
}

fn check_unicast(what: &'static str, ip: Ipv4Addr) -> Result<(), PlanError> {
    if ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() {
        return Err(PlanError::NotUnicast { what, ip });
    }
    Ok(())
}

/// Whether `name` is acceptable for a device Dozlab creates: 1-15 of `[A-Za-z0-9._-]`.
pub fn is_valid_ifname(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && name.chars().all(ok_char)
}

fn validate_uplink_name(name: &str) -> Result<(), PlanError> {
    let bad = |c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control();
    if name.is_empty() || name.len() > MAX_IFNAME_LEN || name.chars().any(bad) {
        return Err(PlanError::UplinkName(name.to_string()));
    }
    Ok(())
}

/// Refuses the sidecars' and Docker's ports and duplicate pod ports.
pub fn validate_ports(ports: &[PortForward]) -> Result<(), PlanError> {
    let mut seen = std::collections::BTreeSet::new();
    for p in ports {
        for port in [p.host, p.vm] {
            if let Some((_, why)) = FORBIDDEN_PORTS.iter().find(|(f, _)| *f == port) {
                return Err(PlanError::ForbiddenPort { port, why });
            }
        }
        if !seen.insert(p.host) {
            return Err(PlanError::DuplicatePort(p.host));
        }
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), rejecting multicast addresses.
pub fn parse_mac(s: &str) -> Result<[u8; 6], PlanError> {
    let bad = || PlanError::Mac(s.to_string());
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

/// Formats a MAC as lowercase colon-separated hex.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The deterministic, locally administered MAC for a VM IP: `06:00:` + the
/// four address bytes (172.16.0.2 → `06:00:ac:10:00:02`).
pub fn mac_for_ip(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format_mac([0x06, 0x00, a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> NetPlan {
        NetPlan {
            tap: "tap0".into(),
            tap_owner: 0,
            gateway_ip: "172.16.0.1".parse().unwrap(),
            vm_ip: "172.16.0.2".parse().unwrap(),
            prefix_len: 24,
            uplink: None,
            pod_ip: None,
            forward_ports: vec!["22".parse().unwrap()],
            vm_mac: None,
            deny_cidrs: Vec::new(),
            allow_cidrs: Vec::new(),
            config_out: "/nonexistent/network-config".into(),
        }
    }

    #[test]
    fn the_same_block_cannot_be_allowed_and_denied() {
        let mut p = plan();
        p.deny_cidrs = vec!["10.0.0.0/8".parse().unwrap()];
        p.allow_cidrs = vec!["10.96.0.10".parse().unwrap()];
        assert_eq!(p.validate(), Ok(()));
        p.allow_cidrs.push("10.0.0.0/8".parse().unwrap());
        let err = p.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("10.0.0.0/8 is both allowed and denied")
        );
    }

    #[test]
    fn accepts_the_defaults() {
        assert_eq!(plan().validate(), Ok(()));
        assert_eq!(plan().effective_mac(), "06:00:ac:10:00:02");
        assert_eq!(plan().subnet(), Ipv4Addr::new(172, 16, 0, 0));
    }

    #[test]
    fn rejects_bad_addresses() {
        let with = |f: &dyn Fn(&mut NetPlan)| {
            let mut p = plan();
            f(&mut p);
            p.validate().unwrap_err()
        };
        assert!(matches!(
            with(&|p| p.vm_ip = "172.16.1.2".parse().unwrap()),
            PlanError::OutsidePrefix { .. }
        ));
        assert!(matches!(
            with(&|p| p.vm_ip = p.gateway_ip),
            PlanError::SameAddress(_)
        ));
        assert!(matches!(
            with(&|p| p.vm_ip = "172.16.0.0".parse().unwrap()),
            PlanError::NetworkAddress { .. }
        ));
        assert!(matches!(
            with(&|p| p.vm_ip = "172.16.0.255".parse().unwrap()),
            PlanError::BroadcastAddress { .. }
        ));
        assert!(matches!(
            with(&|p| p.prefix_len = 31),
            PlanError::PrefixLen(31)
        ));
        assert!(matches!(
            with(&|p| p.gateway_ip = "127.0.0.1".parse().unwrap()),
            PlanError::NotUnicast { .. }
        ));
    }

    #[test]
    fn a_wider_prefix_admits_other_third_octets() {
        let mut p = plan();
        p.prefix_len = 16;
        p.vm_ip = "172.16.5.9".parse().unwrap();
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn refuses_sidecar_and_docker_ports_on_either_side() {
        for spec in ["8080", "8081", "2375", "2222:2375", "8081:22"] {
            let ports = vec![spec.parse().unwrap()];
            let err = validate_ports(&ports).unwrap_err();
            assert!(matches!(err, PlanError::ForbiddenPort { .. }), "{spec}");
            assert!(err.to_string().contains("refusing to forward port"));
        }
        let dup = vec!["22".parse().unwrap(), "22:2222".parse().unwrap()];
        assert_eq!(validate_ports(&dup), Err(PlanError::DuplicatePort(22)));
        let ok = vec!["22".parse().unwrap(), "8000:80".parse().unwrap()];
        assert_eq!(validate_ports(&ok), Ok(()));
    }

    #[test]
    fn checks_tap_names() {
        for good in ["tap0", "vm-tap.1", "a", "abcdefghijklmno"] {
            assert!(is_valid_ifname(good), "{good}");
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "tap 0",
            "tap/0",
            "..",
            "tap:0",
            "täp",
        ] {
            assert!(!is_valid_ifname(bad), "{bad}");
        }
    }

    #[test]
    fn parses_and_derives_macs() {
        assert_eq!(
            parse_mac("06:00:AC:10:00:02").unwrap(),
            [6, 0, 0xac, 0x10, 0, 2]
        );
        assert!(parse_mac("01:00:00:00:00:01").is_err(), "multicast");
        assert!(parse_mac("06:00:ac:10:00").is_err());
        assert!(parse_mac("zz:00:ac:10:00:02").is_err());
        assert_eq!(mac_for_ip(Ipv4Addr::new(10, 0, 0, 9)), "06:00:0a:00:00:09");
        let mut p = plan();
        p.vm_mac = Some("06-AA-BB-CC-DD-EE".into());
        assert_eq!(p.effective_mac(), "06:aa:bb:cc:dd:ee");
    }
}
