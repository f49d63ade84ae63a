//! Trusted reverse proxies: which peers may speak for the client, the client
//! address of a request (`X-Forwarded-For`) and whether it came over TLS
//! (`X-Forwarded-Proto`).
//!
//! Only proxies the operator names (`--trusted-proxy CIDR`) are believed. The
//! client is found by walking from the TCP peer leftwards through the
//! `X-Forwarded-For` list while the address at hand is a trusted proxy: the
//! first untrusted address is the client. Entries left of it were written by
//! the client itself and are never used, so neither rotating nor spoofing
//! them changes the address the login limits apply to. With no trusted
//! proxies the headers are ignored and the peer is the client.

use axum::http::HeaderMap;
use std::net::IpAddr;
use std::str::FromStr;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Not `ADDRESS` or `ADDRESS/PREFIX`.
    #[error("{0:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, 192.168.1.10, fd00::/8)")]
    BadCidr(String),
}

/// An IPv4 or IPv6 network, `ADDRESS/PREFIX` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProxyError::BadCidr(s.to_string());
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u32::from(v4).into(), 32),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u32::from(v4).into(), 32),
            None => (u128::from(v6), 128),
        },
    }
}

impl Cidr {
    /// True when `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(ip);
        if width != ip_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        (net & mask) == (ip & mask)
    }
}

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    /// True when `ip` is one of them.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the right-most untrusted hop, starting at `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        if !self.trusts(peer) {
            return client;
        }
        for hop in forwarded_for(headers).into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // Garbage written by whoever is left of here: stop at the last good hop.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return client;
            }
        }
        client
    }

    /// True when a trusted proxy says the client spoke TLS to it.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusts(peer)
            && last_value(headers, "x-forwarded-proto")
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }
}

/// Every `X-Forwarded-For` entry, left to right, over all such headers.
fn forwarded_for(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect()
}

fn last_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in xff {
            m.append("x-forwarded-for", v.parse().unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "ten", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let t = TrustedProxies(vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy = ip("10.0.0.5");
        // Spoofed left entries are ignored.
        let x = h(&["1.2.3.4, 203.0.113.9"]);
        assert_eq!(t.client_ip(proxy, &x), ip("203.0.113.9"));
        // Two trusted hops, split over two headers.
        let x = h(&["6.6.6.6, 203.0.113.9", "10.0.0.7"]);
        assert_eq!(t.client_ip(proxy, &x), ip("203.0.113.9"));
        // An untrusted peer's headers mean nothing.
        assert_eq!(t.client_ip(ip("198.51.100.1"), &x), ip("198.51.100.1"));
        // No header, or garbage: the last good hop.
        assert_eq!(t.client_ip(proxy, &h(&[])), proxy);
        assert_eq!(t.client_ip(proxy, &h(&["junk"])), proxy);
        // Nothing trusted: headers ignored.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(proxy, &h(&["203.0.113.9"])), proxy);
    }
}
