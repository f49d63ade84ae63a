//! The two `/proc` facts network-setup needs: whether this process holds
//! `CAP_NET_ADMIN`, and the IPv4 forwarding switch of its network namespace.

use std::path::Path;

/// Bit of `CAP_NET_ADMIN` in the capability sets.
pub const CAP_NET_ADMIN: u32 = 12;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Why a `/proc` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read {path}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no CapEff line in /proc/self/status")]
    NoCapEff,
}

/// Whether the effective capability set (`CapEff` of `/proc/self/status`)
/// contains `CAP_NET_ADMIN`.
pub fn has_net_admin() -> Result<bool, ProcError> {
    let path = "/proc/self/status";
    let text = std::fs::read_to_string(path).map_err(|source| ProcError::Read { path, source })?;
    let caps = cap_eff(&text).ok_or(ProcError::NoCapEff)?;
    Ok(caps & (1u64 << CAP_NET_ADMIN) != 0)
}

/// Parses the `CapEff:` hex mask out of a `/proc/<pid>/status` text.
pub fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether IPv4 forwarding is on in this network namespace.
pub fn ip_forward() -> Result<bool, ProcError> {
    let text = std::fs::read_to_string(IP_FORWARD).map_err(|source| ProcError::Read {
        path: IP_FORWARD,
        source,
    })?;
    Ok(text.trim() == "1")
}

/// Turns IPv4 forwarding on or off in this network namespace.
pub fn set_ip_forward(on: bool) -> Result<(), ProcError> {
    let value = if on { "1\n" } else { "0\n" };
    std::fs::write(Path::new(IP_FORWARD), value).map_err(|source| ProcError::Write {
        path: IP_FORWARD,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        let no_net_admin = "CapEff:\t0000000000000000\n";
        assert_eq!(cap_eff(no_net_admin).map(|c| c & (1 << 12)), Some(0));
        assert_eq!(cap_eff("Name: x\n"), None);
    }

    #[test]
    fn this_process_answers() {
        // Whatever we run as, the question has an answer.
        has_net_admin().unwrap();
        ip_forward().unwrap();
    }
}
