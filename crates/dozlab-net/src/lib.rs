//! `dozlab network-setup`: the VM's tap device, its gateway address, IPv4
//! forwarding, and Dozlab's nftables tables (masquerade out of the uplink,
//! DNAT of only the listed pod ports to the VM, and what the VM may reach:
//! not the pod, not link-local or metadata addresses, not the operator's
//! denied blocks, only its own source address), plus the config file the VM
//! runner reads.
//!
//! Library use: build a [`NetPlan`], call [`setup`] (or [`setup_async`] from
//! inside a tokio runtime) and [`teardown`]. Every change is made in the
//! calling thread's network namespace. Input is checked before anything
//! changes; if a later step fails, what this run created is removed again.

pub mod cidr;
pub mod cli;
pub mod netlink;
pub mod nft;
pub mod plan;
pub mod procfs;
pub mod rules;
mod setup;
pub mod tap;

pub use plan::{NetPlan, PlanError};
pub use setup::{setup_async, teardown_async};

use dozlab_core::netconfig::NetworkConfig;
use std::net::Ipv4Addr;

/// Why network-setup failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "network-setup needs CAP_NET_ADMIN, which this process lacks: run it as root or give the container the NET_ADMIN capability"
    )]
    NoNetAdmin,
    #[error(
        "uplink {name:?} does not exist in this network namespace (interfaces here: {present}): pass an existing --uplink or omit it to use the default route's"
    )]
    UnknownUplink { name: String, present: String },
    #[error("uplink {0:?} cannot be used: {1}")]
    BadUplink(String, &'static str),
    #[error(
        "no uplink found: there is no IPv4 default route and no non-loopback interface with an IPv4 address; pass --uplink"
    )]
    NoUplink,
    #[error("uplink {0} has no IPv4 address, so the pod IP is unknown: pass --pod-ip")]
    NoPodIp(String),
    #[error(
        "the VM subnet {net}/{len} overlaps {ip}/{ip_len} on {iface}: choose --gateway-ip/--vm-ip in another subnet"
    )]
    SubnetClash {
        net: Ipv4Addr,
        len: u8,
        ip: Ipv4Addr,
        ip_len: u8,
        iface: String,
    },
    #[error(
        "{name} exists but is not a tap device (kind {kind}): pick another --tap or remove that interface"
    )]
    NotATap { name: String, kind: String },
    #[error("cannot start the netlink runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error("cannot write the network config {path}")]
    WriteConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove the network config {path}")]
    RemoveConfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    /// Whether the user must change the command (exit code 2) rather than
    /// the environment (exit code 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Plan(_)
                | Self::UnknownUplink { .. }
                | Self::BadUplink(..)
                | Self::SubnetClash { .. }
                | Self::NotATap { .. }
        )
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, NetError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NetError::Runtime)
}

/// Builds the network of `plan` in this thread's network namespace and
/// writes the config file. Must not be called from inside a tokio runtime
/// (use [`setup_async`] there).
pub fn setup(plan: &NetPlan) -> Result<NetworkConfig, NetError> {
    runtime()?.block_on(setup_async(plan))
}

/// Removes Dozlab's table, the tap named in `plan` and the config file.
/// Leaves IPv4 forwarding as it is. Same runtime caveat as [`setup`].
pub fn teardown(plan: &NetPlan) -> Result<(), NetError> {
    runtime()?.block_on(teardown_async(plan))
}
