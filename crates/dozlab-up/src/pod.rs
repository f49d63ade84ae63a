//! The session's "pod": a network namespace `dozlab-<name>` joined to the
//! host by a veth pair, with addresses from a slot N of its own.
//!
//! Slot N (1-250) gives the veth 10.213.N.0/30 (host .1, namespace .2) and
//! the VM 172.16.N.0/24 (gateway .1 on the tap, VM .2), so sessions run side
//! by side. The VM's subnet exists only inside the namespace. Slots are
//! taken under a host-wide lock; a slot is free when no session record and
//! no host interface `dzl<N>h` uses it.

use crate::link;
use crate::netns;
use crate::state::{Layout, NetPlan, Session};
use nix::fcntl::{Flock, FlockArg};
use std::net::Ipv4Addr;

/// Prefix length of a session's VM subnet (172.16.N.0/24).
pub const PREFIX_LEN: u8 = 24;

/// Host-wide lock serialising slot allocation and veth creation.
const LOCK_PATH: &str = "/run/dozlab-up.lock";

/// Why the pod could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("no free network slot: 250 sessions exist (see `dozlab ls`)")]
    NoSlot,
    #[error("cannot take the lock {LOCK_PATH}")]
    Lock(#[source] std::io::Error),
    #[error(
        "network namespace {0} already exists (left by an earlier session? `dozlab down` it, or remove it with `ip netns del {0}`)"
    )]
    NetnsExists(String),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
}

/// The addresses of slot `index` for session `name`.
pub fn plan(name: &str, index: u8) -> NetPlan {
    NetPlan {
        index,
        netns: format!("dozlab-{name}"),
        host_if: format!("dzl{index}h"),
        pod_if: format!("dzl{index}p"),
        host_ip: Ipv4Addr::new(10, 213, index, 1),
        pod_ip: Ipv4Addr::new(10, 213, index, 2),
        gateway_ip: Ipv4Addr::new(172, 16, index, 1),
        vm_ip: Ipv4Addr::new(172, 16, index, 2),
        tap: "tap0".into(),
        nft_table: None,
    }
}

/// The veth subnet of a plan (for the host masquerade rule).
pub fn veth_subnet(p: &NetPlan) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, p.index, 0)
}

fn lock() -> Result<Flock<std::fs::File>, PodError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .map_err(PodError::Lock)?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| PodError::Lock(e.into()))
}

fn free_slot(layout: &Layout) -> Option<u8> {
    let used: Vec<u8> = layout
        .names()
        .iter()
        .filter_map(|n| Session::load(layout, n).ok()?.net.map(|p| p.index))
        .collect();
    (1..=250u8).find(|i| !used.contains(i) && !link::host_link_exists(&format!("dzl{i}h")))
}

/// Takes a slot and creates the namespace and veth. The plan is stored in
/// the record *before* anything exists, so a failure halfway is undone by
/// [`crate::teardown`].
pub async fn create(layout: &Layout, s: &mut Session) -> Result<NetPlan, anyhow::Error> {
    let _guard = lock()?;
    let index = free_slot(layout).ok_or(PodError::NoSlot)?;
    let p = plan(&s.name, index);
    if netns::exists(&p.netns) {
        return Err(PodError::NetnsExists(p.netns.clone()).into());
    }
    s.net = Some(p.clone());
    s.store(layout)?;
    netns::create(&p.netns)?;
    let host = link::connect(None).await?;
    link::create_veth(&host, &p.host_if, &p.pod_if, &p.netns).await?;
    link::up_with_addr(&host, &p.host_if, p.host_ip, 30).await?;
    let pod = link::connect(Some(&p.netns)).await?;
    link::configure_pod(&pod, &p.pod_if, p.pod_ip, p.host_ip).await?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_give_distinct_subnets() {
        let a = plan("a", 1);
        let b = plan("b", 2);
        assert_eq!(a.vm_ip.to_string(), "172.16.1.2");
        assert_eq!(b.gateway_ip.to_string(), "172.16.2.1");
        assert_eq!(b.pod_ip.to_string(), "10.213.2.2");
        assert_eq!(a.netns, "dozlab-a");
        assert!(plan("x", 250).host_if.len() <= 15);
    }
}
