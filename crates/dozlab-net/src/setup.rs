//! The order of work for setup and teardown: resolve and check everything
//! read-only first, then change the namespace step by step while recording
//! what this run created, and undo exactly that if a later step fails.

use crate::netlink::{Addr4, Link, Netlink};
use crate::plan::{NetPlan, network};
use crate::rules::{self, RuleSpec};
use crate::{NetError, procfs, tap};
use dozlab_core::netconfig::NetworkConfig;
use std::net::Ipv4Addr;

/// What the namespace looks like before any change.
struct Resolved {
    uplink: Link,
    pod_ip: Option<Ipv4Addr>,
    existing_tap: Option<Link>,
    addrs: Vec<Addr4>,
    ip_forward_was: bool,
    table_existed: bool,
}

/// What this run changed, for rollback.
#[derive(Default)]
struct Undo {
    created_tap: Option<u32>,
    added_addr: Option<u32>,
    enabled_forward: bool,
    created_table: bool,
}

fn check_caps() -> Result<(), NetError> {
    if procfs::has_net_admin()? {
        Ok(())
    } else {
        Err(NetError::NoNetAdmin)
    }
}

/// See [`crate::setup`].
pub async fn setup_async(plan: &NetPlan) -> Result<NetworkConfig, NetError> {
    plan.validate()?;
    check_caps()?;
    let nl = Netlink::connect()?;
    let r = resolve(&nl, plan).await?;
    let mut undo = Undo::default();
    match apply(&nl, plan, &r, &mut undo).await {
        Ok(cfg) => Ok(cfg),
        Err(e) => {
            tracing::warn!("setup failed; removing what this run created");
            rollback(&nl, plan, &undo).await;
            Err(e)
        }
    }
}

async fn resolve(nl: &Netlink, plan: &NetPlan) -> Result<Resolved, NetError> {
    let links = nl.links().await?;
    let addrs = nl.ipv4_addrs().await?;
    let existing_tap = links.iter().find(|l| l.name == plan.tap).cloned();
    if let Some(t) = &existing_tap {
        let is_tap = t.kind.as_deref() == Some("tun") && t.ethernet;
        if !is_tap {
            return Err(NetError::NotATap {
                name: t.name.clone(),
                kind: t.kind.clone().unwrap_or_else(|| "unknown".into()),
            });
        }
    }
    let uplink = resolve_uplink(nl, plan, &links, &addrs).await?;
    let pod_ip = resolve_pod_ip(plan, &uplink, &addrs)?;
    check_subnet_clash(plan, &links, &addrs, existing_tap.as_ref())?;
    Ok(Resolved {
        uplink,
        pod_ip,
        existing_tap,
        addrs,
        ip_forward_was: procfs::ip_forward()?,
        table_existed: rules::table_exists()?,
    })
}

fn resolve_pod_ip(
    plan: &NetPlan,
    uplink: &Link,
    addrs: &[Addr4],
) -> Result<Option<Ipv4Addr>, NetError> {
    if let Some(ip) = plan.pod_ip {
        if !addrs.iter().any(|a| a.ip == ip) {
            tracing::warn!("pod IP {ip} is not an address of this network namespace");
        }
        return Ok(Some(ip));
    }
    let found = addrs.iter().find(|a| a.index == uplink.index).map(|a| a.ip);
    if found.is_none() && !plan.forward_ports.is_empty() {
        return Err(NetError::NoPodIp(uplink.name.clone()));
    }
    Ok(found)
}

async fn resolve_uplink(
    nl: &Netlink,
    plan: &NetPlan,
    links: &[Link],
    addrs: &[Addr4],
) -> Result<Link, NetError> {
    if let Some(name) = &plan.uplink {
        let link = links.iter().find(|l| &l.name == name).ok_or_else(|| {
            let present: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
            NetError::UnknownUplink {
                name: name.clone(),
                present: present.join(", "),
            }
        })?;
        if link.name == plan.tap {
            return Err(NetError::BadUplink(
                name.clone(),
                "it is the VM's tap device",
            ));
        }
        if link.loopback {
            return Err(NetError::BadUplink(
                name.clone(),
                "it is the loopback interface",
            ));
        }
        return Ok(link.clone());
    }
    if let Some(oif) = nl.default_route_oif().await?
        && let Some(link) = links.iter().find(|l| l.index == oif && l.name != plan.tap)
    {
        return Ok(link.clone());
    }
    let fallback = links
        .iter()
        .filter(|l| !l.loopback && l.name != plan.tap)
        .find(|l| addrs.iter().any(|a| a.index == l.index))
        .ok_or(NetError::NoUplink)?;
    tracing::warn!(
        "no IPv4 default route; using {} as the uplink (the first non-loopback interface with an IPv4 address)",
        fallback.name
    );
    Ok(fallback.clone())
}

fn check_subnet_clash(
    plan: &NetPlan,
    links: &[Link],
    addrs: &[Addr4],
    tap: Option<&Link>,
) -> Result<(), NetError> {
    let (net, len) = (plan.subnet(), plan.prefix_len);
    for a in addrs {
        if tap.is_some_and(|t| t.index == a.index) {
            continue;
        }
        let shortest = len.min(a.prefix_len);
        let name = links.iter().find(|l| l.index == a.index);
        if name.is_some_and(|l| l.loopback) {
            continue;
        }
        if network(net, shortest) == network(a.ip, shortest) {
            return Err(NetError::SubnetClash {
                net,
                len,
                ip: a.ip,
                ip_len: a.prefix_len,
                iface: name.map(|l| l.name.clone()).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

async fn apply(
    nl: &Netlink,
    plan: &NetPlan,
    r: &Resolved,
    undo: &mut Undo,
) -> Result<NetworkConfig, NetError> {
    let tap_index = ensure_tap(nl, plan, r, undo).await?;
    ensure_addr(nl, plan, r, tap_index, undo).await?;
    nl.set_up(tap_index).await?;
    if !r.ip_forward_was {
        procfs::set_ip_forward(true)?;
        undo.enabled_forward = true;
    }
    let spec = RuleSpec {
        tap: &plan.tap,
        uplink: &r.uplink.name,
        pod_ip: r.pod_ip,
        vm_ip: plan.vm_ip,
        subnet: plan.subnet(),
        prefix_len: plan.prefix_len,
        forwards: &plan.forward_ports,
        deny: &plan.deny_cidrs,
        allow: &plan.allow_cidrs,
        ipv6: rules::kernel_has_ipv6(),
    };
    rules::install(&spec)?;
    undo.created_table = !r.table_existed;
    let cfg = config(plan, r);
    cfg.store(&plan.config_out)
        .map_err(|source| NetError::WriteConfig {
            path: plan.config_out.display().to_string(),
            source,
        })?;
    tracing::info!(
        "{} up with {}/{}, VM {} behind it; uplink {} (pod IP {}); forwarding {}; VM may not reach {}",
        plan.tap,
        plan.gateway_ip,
        plan.prefix_len,
        plan.vm_ip,
        r.uplink.name,
        r.pod_ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "none".into()),
        if plan.forward_ports.is_empty() {
            "no ports".to_string()
        } else {
            ports_text(plan)
        },
        filter_text(plan)
    );
    Ok(cfg)
}

fn filter_text(plan: &NetPlan) -> String {
    let list = |v: &[crate::cidr::Cidr]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = "the pod, link-local and metadata addresses".to_string();
    if !plan.deny_cidrs.is_empty() {
        text.push_str(&format!(", {}", list(&plan.deny_cidrs)));
    }
    if !plan.allow_cidrs.is_empty() {
        text.push_str(&format!(" (except {})", list(&plan.allow_cidrs)));
    }
    text
}

fn ports_text(plan: &NetPlan) -> String {
    let v: Vec<String> = plan.forward_ports.iter().map(|p| p.to_string()).collect();
    v.join(", ")
}

async fn ensure_tap(
    nl: &Netlink,
    plan: &NetPlan,
    r: &Resolved,
    undo: &mut Undo,
) -> Result<u32, NetError> {
    if let Some(t) = &r.existing_tap {
        tracing::info!("reusing tap device {}", t.name);
        return Ok(t.index);
    }
    tap::create_persistent_tap(&plan.tap, plan.tap_owner)?;
    let link = nl.link(&plan.tap).await?;
    let index = link.map(|l| l.index).ok_or_else(|| tap::TapError::SetIff {
        name: plan.tap.clone(),
        source: nix::Error::ENODEV,
    })?;
    undo.created_tap = Some(index);
    Ok(index)
}

async fn ensure_addr(
    nl: &Netlink,
    plan: &NetPlan,
    r: &Resolved,
    index: u32,
    undo: &mut Undo,
) -> Result<(), NetError> {
    let mut present = false;
    for a in r.addrs.iter().filter(|a| a.index == index) {
        if a.ip == plan.gateway_ip && a.prefix_len == plan.prefix_len {
            present = true;
        } else {
            tracing::info!(
                "removing stale address {}/{} from {}",
                a.ip,
                a.prefix_len,
                plan.tap
            );
            nl.del_addr(index, a.ip).await?;
        }
    }
    if !present {
        nl.add_addr(index, plan.gateway_ip, plan.prefix_len).await?;
        undo.added_addr = Some(index);
    }
    Ok(())
}

fn config(plan: &NetPlan, r: &Resolved) -> NetworkConfig {
    NetworkConfig {
        gateway_ip: plan.gateway_ip,
        vm_ip: plan.vm_ip,
        pod_ip: r.pod_ip,
        tap_device: plan.tap.clone(),
        prefix_len: plan.prefix_len,
        vm_mac: Some(plan.effective_mac()),
        uplink: Some(r.uplink.name.clone()),
        forward_ports: plan.forward_ports.clone(),
    }
}

async fn rollback(nl: &Netlink, plan: &NetPlan, undo: &Undo) {
    let report = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!("rollback: cannot {what}: {e}");
    };
    if undo.created_table
        && let Err(e) = rules::remove()
    {
        report("delete the dozlab table", &e);
    }
    if undo.enabled_forward
        && let Err(e) = procfs::set_ip_forward(false)
    {
        report("restore ip_forward", &e);
    }
    if let Some(index) = undo.created_tap {
        if let Err(e) = nl.delete_link(index, &plan.tap).await {
            report("delete the tap", &e);
        }
    } else if let Some(index) = undo.added_addr
        && let Err(e) = nl.del_addr(index, plan.gateway_ip).await
    {
        report("remove the gateway address", &e);
    }
}

/// See [`crate::teardown`].
pub async fn teardown_async(plan: &NetPlan) -> Result<(), NetError> {
    if !crate::plan::is_valid_ifname(&plan.tap) {
        return Err(crate::PlanError::TapName(plan.tap.clone()).into());
    }
    check_caps()?;
    let nl = Netlink::connect()?;
    let tap = nl.link(&plan.tap).await?;
    if let Some(link) = tap.as_ref().filter(|l| l.kind.as_deref() != Some("tun")) {
        return Err(NetError::NotATap {
            name: link.name.clone(),
            kind: link.kind.clone().unwrap_or_else(|| "unknown".into()),
        });
    }
    rules::remove()?;
    if let Some(link) = tap {
        nl.delete_link(link.index, &link.name).await?;
        tracing::info!("deleted tap device {}", link.name);
    }
    match std::fs::remove_file(&plan.config_out) {
        Ok(()) => tracing::info!("removed {}", plan.config_out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(NetError::RemoveConfig {
                path: plan.config_out.display().to_string(),
                source,
            });
        }
    }
    Ok(())
}
