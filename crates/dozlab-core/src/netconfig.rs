//! The network config file (`/shared/network-config`): written by
//! `network-setup`, read by `vm run` and anything else in the pod.
//!
//! The format is the original's: one `KEY=VALUE` per line with the keys
//! `GATEWAY_IP`, `VM_IP`, `POD_IP`, `TAP_DEVICE`, so existing scripts that
//! `source` it keep working. Dozlab adds `PREFIX_LEN`, `VM_MAC`, `UPLINK` and
//! `FORWARD_PORTS` (`22:22,8000:80`). Blank lines and `#` comments are ignored.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

/// Default location inside the pod's `shared-config` volume.
pub const DEFAULT_PATH: &str = "/shared/network-config";

/// A port on the pod forwarded to a port on the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortForward {
    /// Port on the pod (host) side.
    pub host: u16,
    /// Port on the VM.
    pub vm: u16,
}

impl std::str::FromStr for PortForward {
    type Err = NetConfigError;

    /// Parses `PORT` or `PORT:VMPORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetConfigError::BadPort(s.to_string());
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(bad)
        };
        match s.split_once(':') {
            Some((h, v)) => Ok(Self {
                host: port(h)?,
                vm: port(v)?,
            }),
            None => {
                let p = port(s)?;
                Ok(Self { host: p, vm: p })
            }
        }
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.vm)
    }
}

/// The pod's network as set up for the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub gateway_ip: Ipv4Addr,
    pub vm_ip: Ipv4Addr,
    pub pod_ip: Option<Ipv4Addr>,
    pub tap_device: String,
    pub prefix_len: u8,
    pub vm_mac: Option<String>,
    pub uplink: Option<String>,
    pub forward_ports: Vec<PortForward>,
}

/// Why a network config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetConfigError {
    #[error("cannot read network config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: expected KEY=VALUE, found {text:?}")]
    Syntax { line: usize, text: String },
    #[error("{key}={value:?} is not valid: {why}")]
    Value {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("missing required key {0}")]
    Missing(&'static str),
    #[error("invalid port forward {0:?}: write PORT or PORT:VMPORT with ports 1-65535")]
    BadPort(String),
}

impl NetworkConfig {
    /// Renders the file, original keys first.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "GATEWAY_IP={}", self.gateway_ip);
        let _ = writeln!(s, "VM_IP={}", self.vm_ip);
        let _ = writeln!(
            s,
            "POD_IP={}",
            self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default()
        );
        let _ = writeln!(s, "TAP_DEVICE={}", self.tap_device);
        let _ = writeln!(s, "PREFIX_LEN={}", self.prefix_len);
        if let Some(mac) = &self.vm_mac {
            let _ = writeln!(s, "VM_MAC={mac}");
        }
        if let Some(up) = &self.uplink {
            let _ = writeln!(s, "UPLINK={up}");
        }
        let ports: Vec<String> = self.forward_ports.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(s, "FORWARD_PORTS={}", ports.join(","));
        s
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, NetConfigError> {
        let kv = parse_pairs(text)?;
        let ip = |key: &'static str| -> Result<Option<Ipv4Addr>, NetConfigError> {
            match kv.get(key).map(String::as_str) {
                None | Some("") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|e: std::net::AddrParseError| {
                    NetConfigError::Value {
                        key,
                        value: v.into(),
                        why: e.to_string(),
                    }
                }),
            }
        };
        let required = |key: &'static str| ip(key)?.ok_or(NetConfigError::Missing(key));
        let prefix_len = match kv.get("PREFIX_LEN").map(String::as_str) {
            None | Some("") => 24,
            Some(v) => {
                v.parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| NetConfigError::Value {
                        key: "PREFIX_LEN",
                        value: v.into(),
                        why: "expected 0-32".into(),
                    })?
            }
        };
        let forward_ports = kv
            .get("FORWARD_PORTS")
            .map(|v| {
                v.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(str::parse)
                    .collect()
            })
            .transpose()?
            .unwrap_or_default();
        let opt = |key: &str| kv.get(key).filter(|v| !v.is_empty()).cloned();
        Ok(Self {
            gateway_ip: required("GATEWAY_IP")?,
            vm_ip: required("VM_IP")?,
            pod_ip: ip("POD_IP")?,
            tap_device: opt("TAP_DEVICE").ok_or(NetConfigError::Missing("TAP_DEVICE"))?,
            prefix_len,
            vm_mac: opt("VM_MAC"),
            uplink: opt("UPLINK"),
            forward_ports,
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, NetConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Writes the file atomically (mode 0644).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        crate::atomic::write_atomic(path, self.render().as_bytes(), 0o644)
    }
}

fn parse_pairs(text: &str) -> Result<BTreeMap<String, String>, NetConfigError> {
    let mut kv = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').ok_or_else(|| NetConfigError::Syntax {
            line: i + 1,
            text: raw.to_string(),
        })?;
        let v = v.trim().trim_matches('"').trim_matches('\'');
        kv.insert(k.trim().to_string(), v.to_string());
    }
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkConfig {
        NetworkConfig {
            gateway_ip: "172.16.0.1".parse().unwrap(),
            vm_ip: "172.16.0.2".parse().unwrap(),
            pod_ip: Some("10.1.2.3".parse().unwrap()),
            tap_device: "tap0".into(),
            prefix_len: 24,
            vm_mac: Some("06:00:ac:10:00:02".into()),
            uplink: Some("eth0".into()),
            forward_ports: vec!["22".parse().unwrap(), "8000:80".parse().unwrap()],
        }
    }

    #[test]
    fn renders_the_original_keys_first_and_round_trips() {
        let text = sample().render();
        assert!(text.starts_with(
            "GATEWAY_IP=172.16.0.1\nVM_IP=172.16.0.2\nPOD_IP=10.1.2.3\nTAP_DEVICE=tap0\n"
        ));
        assert_eq!(NetworkConfig::parse(&text).unwrap(), sample());
    }

    #[test]
    fn reads_the_original_file() {
        let c = NetworkConfig::parse(
            "GATEWAY_IP=172.16.0.1\nVM_IP=172.16.0.2\nPOD_IP=10.0.0.5\nTAP_DEVICE=tap0\n",
        )
        .unwrap();
        assert_eq!(c.prefix_len, 24);
        assert!(c.forward_ports.is_empty());
    }

    #[test]
    fn names_the_bad_line_or_key() {
        let e = NetworkConfig::parse("GATEWAY_IP=1.2.3.4\nnonsense\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = NetworkConfig::parse("GATEWAY_IP=1.2.3\nVM_IP=1.2.3.5\nTAP_DEVICE=t").unwrap_err();
        assert!(e.to_string().contains("GATEWAY_IP"), "{e}");
        let e = NetworkConfig::parse("GATEWAY_IP=1.2.3.4\nTAP_DEVICE=t").unwrap_err();
        assert!(matches!(e, NetConfigError::Missing("VM_IP")));
    }

    #[test]
    fn parses_port_forwards() {
        assert_eq!(
            "22".parse::<PortForward>().unwrap(),
            PortForward { host: 22, vm: 22 }
        );
        assert_eq!(
            "2222:22".parse::<PortForward>().unwrap(),
            PortForward { host: 2222, vm: 22 }
        );
        assert!("0".parse::<PortForward>().is_err());
        assert!("70000".parse::<PortForward>().is_err());
        assert!("a:b".parse::<PortForward>().is_err());
    }
}
