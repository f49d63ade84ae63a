//! The host side of a session's internet access: one nftables table of the
//! session's own (`ip dozlab-<name>`) that masquerades traffic from the
//! session's veth subnet leaving by any other interface, and accepts its
//! forwarding. Removing the table removes exactly these rules.
//!
//! Rules go through the `nftables` crate (JSON to `nft -j`).

use serde_json::json;
use std::net::Ipv4Addr;

/// An nftables operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables {what} for table {table} failed")]
    Apply {
        what: &'static str,
        table: String,
        #[source]
        source: Box<nftables::helper::NftablesError>,
    },
}

fn apply(payload: serde_json::Value, what: &'static str, table: &str) -> Result<(), NftError> {
    nftables::helper::apply_ruleset_raw(
        &payload.to_string(),
        nftables::helper::DEFAULT_NFT,
        nftables::helper::DEFAULT_ARGS,
    )
    .map(|_| ())
    .map_err(|source| NftError::Apply {
        what,
        table: table.into(),
        source: Box::new(source),
    })
}

/// The ruleset: masquerade `subnet/prefix` out of anything but `veth`.
pub fn ruleset(table: &str, veth: &str, subnet: Ipv4Addr, prefix: u8) -> serde_json::Value {
    let t = |extra: serde_json::Value| {
        let mut base = json!({"family": "ip", "table": table});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        base
    };
    let saddr = json!({"match": {"op": "==",
        "left": {"payload": {"protocol": "ip", "field": "saddr"}},
        "right": {"prefix": {"addr": subnet.to_string(), "len": prefix}}}});
    let oif_not_veth = json!({"match": {"op": "!=",
        "left": {"meta": {"key": "oifname"}}, "right": veth}});
    let iif = |name: &str| json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": name}});
    let oif = |name: &str| json!({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": name}});
    json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": table}}},
        {"add": {"chain": t(json!({"name": "postrouting", "type": "nat",
            "hook": "postrouting", "prio": 100, "policy": "accept"}))}},
        {"add": {"chain": t(json!({"name": "forward", "type": "filter",
            "hook": "forward", "prio": 0, "policy": "accept"}))}},
        {"add": {"rule": t(json!({"chain": "postrouting",
            "expr": [saddr, oif_not_veth, {"masquerade": null}]}))}},
        {"add": {"rule": t(json!({"chain": "forward", "expr": [iif(veth), {"accept": null}]}))}},
        {"add": {"rule": t(json!({"chain": "forward", "expr": [oif(veth), {"accept": null}]}))}},
    ]})
}

/// Creates the table (replacing a stale one of the same name).
pub fn create(table: &str, veth: &str, subnet: Ipv4Addr, prefix: u8) -> Result<(), NftError> {
    remove(table)?;
    apply(ruleset(table, veth, subnet, prefix), "create", table)
}

/// Removes the table if present (idempotent: add-then-delete in one batch).
pub fn remove(table: &str) -> Result<(), NftError> {
    let t = json!({"family": "ip", "name": table});
    apply(
        json!({"nftables": [{"add": {"table": t.clone()}}, {"delete": {"table": t}}]}),
        "delete",
        table,
    )
}

/// Whether the table exists.
pub fn exists(table: &str) -> bool {
    nftables::helper::get_current_ruleset_raw(
        nftables::helper::DEFAULT_NFT,
        ["list", "table", "ip", table],
    )
    .is_ok()
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
        let v = ruleset("dozlab-x", "dzl3h", "10.213.3.0".parse().unwrap(), 30).to_string();
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
