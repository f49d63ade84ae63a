//! Links, addresses and routes of the current network namespace through
//! rtnetlink: what exists (links, IPv4 addresses, the default route) and
//! the few changes network-setup makes (address, link up, link delete).

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType};
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

/// A netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket")]
    Connect(#[source] std::io::Error),
    #[error("netlink: cannot {what}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`tun`, `veth`, ...), when the driver reports one.
    pub kind: Option<String>,
    /// Whether it carries Ethernet frames (a tap, not a tun).
    pub ethernet: bool,
    /// Administratively up.
    pub up: bool,
    pub loopback: bool,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr4 {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// An rtnetlink connection driven by the current tokio runtime.
pub struct Netlink {
    handle: Handle,
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

impl Netlink {
    /// Opens the socket and spawns its connection task (needs a tokio runtime).
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// All interfaces of this namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("list links"))?;
        Ok(msgs.into_iter().map(to_link).collect())
    }

    /// The interface called `name`, if any.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Every IPv4 address of this namespace, in kernel order.
    pub async fn ipv4_addrs(&self) -> Result<Vec<Addr4>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("list addresses"))?;
        Ok(msgs.iter().filter_map(to_addr4).collect())
    }

    /// The output interface of the main table's IPv4 default route.
    pub async fn default_route_oif(&self) -> Result<Option<u32>, NetlinkError> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes: Vec<_> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(req("list routes"))?;
        Ok(routes.iter().find_map(|r| {
            let main = r.header.table == RouteHeader::RT_TABLE_MAIN
                || r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Table(t) if *t == 254));
            let default = r.header.destination_prefix_length == 0
                && r.header.kind == RouteType::Unicast
                && main;
            default
                .then(|| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                })
                .flatten()
        }))
    }

    /// Adds `ip/prefix_len` to interface `index`.
    pub async fn add_addr(&self, index: u32, ip: Ipv4Addr, len: u8) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), len)
            .execute()
            .await
            .map_err(req(format!("add address {ip}/{len}")))
    }

    /// Removes `ip` from interface `index`.
    pub async fn del_addr(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(req("list addresses"))?;
        for msg in msgs {
            if to_addr4(&msg).is_some_and(|a| a.ip == ip) {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(req(format!("delete address {ip}")))?;
            }
        }
        Ok(())
    }

    /// Sets interface `index` administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req("set the tap up"))
    }

    /// Deletes interface `index`.
    pub async fn delete_link(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(req(format!("delete interface {name}")))
    }
}

fn to_link(msg: rtnetlink::packet_route::link::LinkMessage) -> Link {
    let mut name = String::new();
    let mut kind = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    Link {
        index: msg.header.index,
        name,
        kind,
        ethernet: msg.header.link_layer_type == LinkLayerType::Ether,
        up: msg.header.flags.contains(LinkFlags::Up),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
    }
}

fn to_addr4(msg: &AddressMessage) -> Option<Addr4> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Addr4 {
        index: msg.header.index,
        ip,
        prefix_len: msg.header.prefix_len,
    })
}
