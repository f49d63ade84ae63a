//! The veth pair between the host and a session's namespace, over netlink.
//!
//! The host end `dzl<N>h` gets 10.213.N.1/30; the pod end `dzl<N>p` is
//! created directly inside the namespace with 10.213.N.2/30 and a default
//! route via the host end. `lo` is brought up inside too (the terminal
//! listens on the namespace's loopback).

use crate::netns;
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

/// A netlink operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("{what} failed")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("interface {0} not found")]
    NoSuchLink(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Netlink { what, source }
}

/// A netlink handle bound to the host's namespace, or to `netns` when given.
/// Must be called inside a tokio runtime.
pub async fn connect(netns_name: Option<&str>) -> Result<Handle, LinkError> {
    fn make() -> std::io::Result<(
        rtnetlink::proto::Connection<rtnetlink::packet_route::RouteNetlinkMessage>,
        Handle,
    )> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok((conn, handle))
    }
    let (conn, handle) = match netns_name {
        None => make().map_err(LinkError::Socket)?,
        Some(name) => {
            let rt = tokio::runtime::Handle::current();
            netns::run_in(name, move || {
                let _guard = rt.enter();
                make()
            })?
            .map_err(LinkError::Socket)?
        }
    };
    tokio::spawn(conn);
    Ok(handle)
}

/// Index of interface `name`, if it exists.
pub async fn index(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}

async fn must_index(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    index(handle, name)
        .await?
        .ok_or_else(|| LinkError::NoSuchLink(name.into()))
}

/// Creates `host_if` on the host with its peer `pod_if` inside `netns_name`.
pub async fn create_veth(
    host: &Handle,
    host_if: &str,
    pod_if: &str,
    netns_name: &str,
) -> Result<(), LinkError> {
    let fd = netns::open(netns_name)?;
    let peer = LinkUnspec::new_with_name(pod_if)
        .setns_by_fd(fd.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host_if.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("creating veth {host_if}")))
}

/// Brings `name` up with `addr/prefix`.
pub async fn up_with_addr(
    handle: &Handle,
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<u32, LinkError> {
    let idx = must_index(handle, name).await?;
    handle
        .address()
        .add(idx, IpAddr::V4(addr), prefix)
        .execute()
        .await
        .map_err(nl(format!("adding {addr}/{prefix} to {name}")))?;
    set_up(handle, idx, name).await?;
    Ok(idx)
}

async fn set_up(handle: &Handle, idx: u32, name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("bringing {name} up")))
}

/// Inside the namespace: `lo` up, the pod end addressed and up, default route.
pub async fn configure_pod(
    pod: &Handle,
    pod_if: &str,
    pod_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
) -> Result<(), LinkError> {
    let lo = must_index(pod, "lo").await?;
    set_up(pod, lo, "lo").await?;
    up_with_addr(pod, pod_if, pod_ip, 30).await?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(host_ip)
        .build();
    pod.route()
        .add(route)
        .execute()
        .await
        .map_err(nl(format!("adding the default route via {host_ip}")))
}

/// Deletes interface `name` if present (idempotent).
pub async fn delete(handle: &Handle, name: &str) -> Result<bool, LinkError> {
    match index(handle, name).await? {
        None => Ok(false),
        Some(idx) => match handle.link().del(idx).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(nl(format!("deleting {name}"))(e)),
        },
    }
}

/// Whether an interface named `name` exists on the host (cheap, no netlink).
pub fn host_link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
