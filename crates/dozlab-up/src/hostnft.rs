//! The host side of a session's internet access: one nftables table of the
//! session's own (`ip dozlab-<name>`) that masquerades traffic from the
//! session's veth subnet leaving by any other interface, and accepts its
//! forwarding. Removing the table removes exactly these rules.
//!
//! Rules are typed (the `nftables` crate), applied through dozlab-net's
//! [`nft`] helpers in one `nft -j` transaction.

use dozlab_net::nft::{self, NftError, eq, field, meta, prefix, s};
use nftables::batch::Batch;
use nftables::expr::MetaKey;
use nftables::schema::{NfListObject, Nftables, Table};
use nftables::stmt::{Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::net::Ipv4Addr;

fn table(name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::IP,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })
}

fn chain(
    table: &str,
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    nft::base_chain(NfFamily::IP, table, name, (kind, hook, prio))
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    nft::rule(NfFamily::IP, table, chain, expr)
}

/// The ruleset: masquerade `subnet/prefix` out of anything but `veth`, and
/// accept forwarding to and from `veth`.
pub fn ruleset(table_name: &str, veth: &str, subnet: Ipv4Addr, len: u8) -> Nftables<'static> {
    let t = table_name;
    let mut b = Batch::new();
    b.add(table(t));
    b.add(chain(
        t,
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    b.add(chain(t, "forward", NfChainType::Filter, NfHook::Forward, 0));
    let masquerade = vec![
        eq(field("ip", "saddr"), prefix(subnet, len)),
        nft::cmp(meta(MetaKey::Oifname), Operator::NEQ, s(veth)),
        Statement::Masquerade(None),
    ];
    b.add(rule(t, "postrouting", masquerade));
    for key in [MetaKey::Iifname, MetaKey::Oifname] {
        b.add(rule(
            t,
            "forward",
            vec![eq(meta(key), s(veth)), Statement::Accept(None)],
        ));
    }
    b.to_nftables()
}

/// Creates the table (replacing a stale one of the same name).
pub fn create(table: &str, veth: &str, subnet: Ipv4Addr, prefix: u8) -> Result<(), NftError> {
    remove(table)?;
    nft::apply(
        &format!("create table ip {table}"),
        &ruleset(table, veth, subnet, prefix),
    )
}

/// Removes the table if present (idempotent: add-then-delete in one batch).
pub fn remove(name: &str) -> Result<(), NftError> {
    let mut b = Batch::new();
    b.add(table(name));
    b.delete(table(name));
    nft::apply(&format!("delete table ip {name}"), &b.to_nftables())
}

/// Whether the table exists.
pub fn exists(table: &str) -> bool {
    nft::table_exists(NfFamily::IP, table).unwrap_or(false)
}

pub use dozlab_net::procfs::{ProcError, ip_forward, set_ip_forward};

/// Marker left by the session that switched forwarding on (it was off).
const FORWARD_ORIGIN: &str = "/run/dozlab-ip_forward.was-off";

/// Switches forwarding on, remembering that it was off.
pub fn enable_ip_forward() -> Result<(), ProcError> {
    if ip_forward()? {
        return Ok(());
    }
    std::fs::write(FORWARD_ORIGIN, "0\n").map_err(|source| ProcError::Write {
        path: FORWARD_ORIGIN,
        source,
    })?;
    set_ip_forward(true)
}

/// Whether a Dozlab session switched forwarding on.
pub fn forward_was_enabled_by_us() -> bool {
    std::path::Path::new(FORWARD_ORIGIN).exists()
}

/// Drops the marker once forwarding is restored.
pub fn forget_forward_origin() {
    let _ = std::fs::remove_file(FORWARD_ORIGIN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_masquerades_only_the_session_subnet() {
        let r = ruleset("dozlab-x", "dzl3h", "10.213.3.0".parse().unwrap(), 30);
        let v = serde_json::to_string(&r).unwrap();
        assert!(v.contains(r#""addr":"10.213.3.0","len":30"#), "{v}");
        assert!(v.contains(r#""masquerade":null"#));
        assert!(v.contains(r#""name":"dozlab-x""#));
    }

    #[test]
    fn root_create_and_remove_a_table() {
        dozlab_testkit::require_root!("nftables needs root");
        let table = format!("dozlab-t-nft-{}", std::process::id());
        create(&table, "dzl250h", "10.213.250.0".parse().unwrap(), 30).unwrap();
        let present = exists(&table);
        remove(&table).unwrap();
        assert!(present);
        assert!(!exists(&table));
        remove(&table).unwrap();
    }
}
