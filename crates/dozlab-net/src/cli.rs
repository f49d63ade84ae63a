//! `dozlab network-setup` flags (each with the original's environment
//! variable as fallback) and the entry point mapping errors to exit codes:
//! 2 for input the user must change, 1 for everything else.

use crate::cidr::Cidr;
use crate::{NetError, NetPlan};
use dozlab_core::failure::{CmdResult, Failure, exit};
use dozlab_core::netconfig::{DEFAULT_PATH, PortForward};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Wire the VM's tap device, NAT and port forwarding in this network namespace.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the tap device the VM attaches to.
    #[arg(long, env = "TAP_DEVICE_NAME", default_value = "tap0")]
    pub tap: String,
    /// User id that may attach to a newly created tap without CAP_NET_ADMIN
    /// (e.g. the Firecracker jailer's --uid).
    #[arg(long, env = "TAP_OWNER", value_name = "UID", default_value_t = 0)]
    pub tap_owner: u32,
    /// Address of the tap device: the VM's default gateway.
    #[arg(long, env = "GATEWAY_IP", default_value = "172.16.0.1")]
    pub gateway_ip: Ipv4Addr,
    /// The VM's address.
    #[arg(long, env = "VM_IP", default_value = "172.16.0.2")]
    pub vm_ip: Ipv4Addr,
    /// Prefix length of the tap subnet (1-30).
    #[arg(long, env = "PREFIX_LEN", default_value_t = 24)]
    pub prefix_len: u8,
    /// The pod's outward interface [default: the IPv4 default route's interface].
    #[arg(long, env = "UPLINK")]
    pub uplink: Option<String>,
    /// The pod's address, where forwarded ports arrive [default: the uplink's first IPv4 address].
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<Ipv4Addr>,
    /// Forward this TCP port of the pod IP to the VM (repeatable or comma-separated;
    /// `none` forwards nothing; 8080, 8081 and 2375 are refused).
    #[arg(
        long = "forward-port",
        value_name = "PORT[:VMPORT]",
        env = "FORWARD_PORTS",
        value_delimiter = ',',
        default_value = "22",
        value_parser = parse_forward
    )]
    pub forward_ports: Vec<Forward>,
    /// The VM's MAC address [default: 06:00 followed by the VM IP's four bytes].
    #[arg(long, env = "VM_MAC")]
    pub vm_mac: Option<String>,
    /// Keep the VM from reaching this IPv4 block, e.g. the cluster's pod and
    /// Service ranges (repeatable or comma-separated). Link-local and cloud
    /// metadata addresses are always denied.
    #[arg(
        long = "deny-cidr",
        value_name = "CIDR",
        env = "DENY_CIDRS",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub deny_cidrs: Vec<Cidrs>,
    /// Let the VM reach this IPv4 block even inside a denied one: the most
    /// specific block wins (repeatable or comma-separated).
    #[arg(
        long = "allow-cidr",
        value_name = "CIDR",
        env = "ALLOW_CIDRS",
        value_delimiter = ',',
        value_parser = parse_cidr
    )]
    pub allow_cidrs: Vec<Cidrs>,
    /// Where to write the network config file read by `vm run`.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PATH)]
    pub config_out: PathBuf,
    /// Remove the nftables table, the tap device and the config file instead.
    #[arg(long)]
    pub teardown: bool,
}

/// One `--forward-port` value: a port forward, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// `none`: forward no port at all.
    Nothing,
    /// `PORT` or `PORT:VMPORT`.
    Port(PortForward),
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Forward::Nothing);
    }
    s.parse()
        .map(Forward::Port)
        .map_err(|e| format!("{e}, or `none`"))
}

/// One `--deny-cidr`/`--allow-cidr` value; an empty one (an empty
/// environment variable, a trailing comma) stands for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidrs(Option<Cidr>);

fn parse_cidr(s: &str) -> Result<Cidrs, String> {
    if s.trim().is_empty() {
        return Ok(Cidrs(None));
    }
    s.parse()
        .map(|c| Cidrs(Some(c)))
        .map_err(|e: crate::cidr::CidrError| e.to_string())
}

fn cidrs(values: &[Cidrs]) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = Vec::new();
    for c in values.iter().filter_map(|c| c.0) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn forwards(values: &[Forward]) -> Result<Vec<PortForward>, Failure> {
    let ports: Vec<PortForward> = values
        .iter()
        .filter_map(|f| match f {
            Forward::Port(p) => Some(*p),
            Forward::Nothing => None,
        })
        .collect();
    if !ports.is_empty() && ports.len() != values.len() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--forward-port none cannot be combined with ports: give either `none` or the ports"
        )));
    }
    Ok(ports)
}

impl Args {
    /// The plan these flags describe.
    pub fn plan(&self) -> Result<NetPlan, Failure> {
        Ok(NetPlan {
            tap: self.tap.clone(),
            tap_owner: self.tap_owner,
            gateway_ip: self.gateway_ip,
            vm_ip: self.vm_ip,
            prefix_len: self.prefix_len,
            uplink: self.uplink.clone().filter(|u| !u.is_empty()),
            pod_ip: self.pod_ip,
            forward_ports: forwards(&self.forward_ports)?,
            vm_mac: self.vm_mac.clone().filter(|m| !m.is_empty()),
            deny_cidrs: cidrs(&self.deny_cidrs),
            allow_cidrs: cidrs(&self.allow_cidrs),
            config_out: self.config_out.clone(),
        })
    }
}

fn failure(e: NetError) -> Failure {
    let code = if e.is_usage() {
        exit::USAGE
    } else {
        exit::FAILURE
    };
    Failure::new(code, e)
}

/// Entry point of `dozlab network-setup`.
pub fn run(args: Args) -> CmdResult {
    let plan = args.plan()?;
    if args.teardown {
        crate::teardown(&plan).map_err(failure)?;
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = crate::setup(&plan).map_err(failure)?;
    tracing::info!("wrote {}", plan.config_out.display());
    print!("{}", cfg.render());
    Ok(ExitCode::SUCCESS)
}
