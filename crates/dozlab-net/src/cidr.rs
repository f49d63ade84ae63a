//! IPv4 CIDR blocks for the VM's destination filter: parsing with messages
//! that say what to type, containment, and the built-in blocks every VM is
//! kept away from (link-local and cloud metadata addresses).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network `ADDR/LEN` with no host bits set (a bare address is `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// A CIDR that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("invalid CIDR {0:?}: write an IPv4 network like 10.96.0.0/12 (or one address)")]
    Syntax(String),
    #[error(
        "invalid CIDR {0:?}: only IPv4 blocks can be denied or allowed (the VM gets no IPv6 at all)"
    )]
    Ipv6(String),
    #[error("invalid CIDR {given:?}: it has host bits set; did you mean {network}?")]
    HostBits { given: String, network: Cidr },
}

impl Cidr {
    /// `addr/len`; `None` when `len` is above 32 or `addr` has host bits set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Cidr> {
        let c = Cidr { addr, len };
        (len <= 32 && c.network() == addr).then_some(c)
    }

    fn mask(self) -> u32 {
        crate::plan::mask(self.len)
    }

    fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` lies in this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let given = s.trim();
        let syntax = || CidrError::Syntax(given.to_string());
        if given.contains(':') {
            return Err(CidrError::Ipv6(given.to_string()));
        }
        let (addr, len) = match given.split_once('/') {
            Some((a, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                (a, l.parse::<u8>().map_err(|_| syntax())?)
            }
            Some(_) => return Err(syntax()),
            None => (given, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        let network = Ipv4Addr::from(u32::from(addr) & crate::plan::mask(len));
        Cidr::new(addr, len).ok_or(CidrError::HostBits {
            given: given.to_string(),
            network: Cidr { addr: network, len },
        })
    }
}

/// Destinations the VM never reaches unless an allow entry is more specific:
/// the link-local block (cloud metadata at 169.254.169.254, ECS task
/// metadata at 169.254.170.2, and everything else link-local) and Alibaba
/// Cloud's metadata address, which is not link-local.
pub const BUILTIN_DENY: [(Cidr, &str); 2] = [
    (
        Cidr {
            addr: Ipv4Addr::new(169, 254, 0, 0),
            len: 16,
        },
        "link-local, including cloud metadata servers",
    ),
    (
        Cidr {
            addr: Ipv4Addr::new(100, 100, 100, 200),
            len: 32,
        },
        "Alibaba Cloud metadata server",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_single_addresses() {
        assert_eq!(c("10.96.0.0/12").to_string(), "10.96.0.0/12");
        assert_eq!(c(" 169.254.169.254 ").to_string(), "169.254.169.254/32");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(c("10.96.0.0/12").contains("10.111.255.255".parse().unwrap()));
        assert!(!c("10.96.0.0/12").contains("10.112.0.0".parse().unwrap()));
        assert!(c("0.0.0.0/0").contains("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn refuses_what_cannot_be_meant() {
        for bad in [
            "",
            "banana",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "10.0.0.0/-1",
            "/8",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "fd00::/8".parse::<Cidr>(),
            Err(CidrError::Ipv6(_))
        ));
        let err = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid CIDR \"10.1.2.3/8\": it has host bits set; did you mean 10.0.0.0/8?"
        );
    }

    #[test]
    fn the_builtin_blocks_hold_the_metadata_addresses() {
        for md in ["169.254.169.254", "169.254.170.2", "100.100.100.200"] {
            let ip = md.parse().unwrap();
            assert!(BUILTIN_DENY.iter().any(|(b, _)| b.contains(ip)), "{md}");
        }
        for (b, _) in BUILTIN_DENY {
            assert_eq!(Cidr::new(b.addr, b.len), Some(b));
        }
    }
}
