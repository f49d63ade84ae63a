//! Dozlab's nftables tables (`table ip dozlab`, and `table ip6 dozlab`
//! where the kernel has IPv6), built as libnftables JSON with the
//! `nftables` crate and applied with `nft -j -f -` in one transaction.
//!
//! The tables hold everything and nothing else does: re-running replaces
//! them atomically (`add table; delete table; add table ...` in one batch),
//! and teardown deletes them. The ruleset:
//!
//! ```text
//! table ip dozlab {
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     iifname UPLINK ip daddr POD_IP tcp dport PORT dnat to VM_IP:VMPORT }   # per port
//!   chain output      { type nat hook output priority dstnat; policy accept;
//!     ip daddr POD_IP tcp dport PORT dnat to VM_IP:VMPORT }                  # per port
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET/LEN oifname UPLINK masquerade }
//!   chain antispoof   { type filter hook prerouting priority raw; policy accept;
//!     iifname TAP ip saddr != VM_IP drop }
//!   chain input       { type filter hook input priority filter; policy accept;
//!     iifname TAP ct state established,related accept
//!     iifname TAP icmp type echo-request accept
//!     iifname TAP drop }
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     tcp flags syn tcp option maxseg size set rt mtu
//!     iifname TAP jump from_vm
//!     oifname TAP ct state established,related accept
//!     oifname TAP ip daddr VM_IP tcp dport VMPORT ct status dnat accept      # per port
//!     oifname TAP drop }
//!   chain from_vm {
//!     ct state established,related accept
//!     ip daddr CIDR accept|drop                 # allow, deny and built-in, most specific first
//!     accept }
//! }
//! table ip6 dozlab {
//!   chain antispoof   { type filter hook prerouting priority raw; policy accept;
//!     iifname TAP drop }
//! }
//! ```
//!
//! The VM reaches the pod only with replies (and pings to its gateway), the
//! outside only where the destination filter lets it, and nothing at all
//! over IPv6. The last forward rule keeps the VM unreachable from outside the
//! pod except through the forwarded ports, even for a neighbour that routes
//! the VM subnet via the pod IP. Traffic the pod itself sends to the VM (the
//! terminal, code-server's Docker client) and its replies need no rule.

use crate::cidr::{BUILTIN_DENY, Cidr};
use crate::nft::{self, cmp, eq, field, meta, prefix, s};
use dozlab_core::netconfig::PortForward;
use nftables::batch::Batch;
use nftables::expr::{Expression, MetaKey, NamedExpression};
use nftables::schema::{Chain, NfListObject, Nftables, Table};
use nftables::stmt::{JumpTarget, NAT, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use std::net::Ipv4Addr;

/// Name of Dozlab's tables (family `ip`, and `ip6` where the kernel has IPv6).
pub const TABLE: &str = "dozlab";

/// Priority of the `raw` hook slot: before connection tracking and NAT.
const PRIO_RAW: i32 = -300;

/// Applying or reading the ruleset failed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("nft failed to {what}: {detail}")]
    Nft { what: &'static str, detail: String },
}

/// What the rules are about.
#[derive(Debug, Clone)]
pub struct RuleSpec<'a> {
    pub tap: &'a str,
    pub uplink: &'a str,
    /// Where forwarded ports arrive; no DNAT rules without it.
    pub pod_ip: Option<Ipv4Addr>,
    pub vm_ip: Ipv4Addr,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub forwards: &'a [PortForward],
    /// Destinations the VM must not reach (besides [`BUILTIN_DENY`]).
    pub deny: &'a [Cidr],
    /// Destinations the VM may reach even inside a denied block.
    pub allow: &'a [Cidr],
    /// Whether to install `table ip6 dozlab` (the kernel has IPv6).
    pub ipv6: bool,
}

/// What the VM's traffic to a destination block gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

/// The destination filter in evaluation order: every allow, deny and
/// built-in block, the most specific (longest prefix) first, so the first
/// match is the most specific block holding the address. For the same
/// block, an allow beats the built-in deny (the operator asked for it);
/// the same block in both of the operator's lists is refused by
/// [`crate::NetPlan::validate`].
pub fn destination_filter(deny: &[Cidr], allow: &[Cidr]) -> Vec<(Cidr, Verdict)> {
    let builtin: Vec<Cidr> = BUILTIN_DENY.iter().map(|(c, _)| *c).collect();
    let entries = allow
        .iter()
        .map(|c| (*c, Verdict::Accept))
        .chain(deny.iter().chain(&builtin).map(|c| (*c, Verdict::Drop)));
    let mut out: Vec<(Cidr, Verdict)> = Vec::new();
    for (c, v) in entries {
        if !out.iter().any(|(seen, _)| *seen == c) {
            out.push((c, v));
        }
    }
    out.sort_by(|a, b| b.0.len.cmp(&a.0.len).then(a.0.addr.cmp(&b.0.addr)));
    out
}

fn table(family: NfFamily) -> Table<'static> {
    Table {
        family,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(
    family: NfFamily,
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    nft::base_chain(family, TABLE, name, (kind, hook, prio))
}

fn regular_chain(name: &'static str) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.into(),
        ..Chain::default()
    })
}

fn rule_in(
    family: NfFamily,
    chain: &'static str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    nft::rule(family, TABLE, chain, expr)
}

fn rule(chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    rule_in(NfFamily::IP, chain, expr)
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(nftables::expr::CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

/// `ct state established,related`.
fn ct_replies() -> Statement<'static> {
    let states = Expression::List(vec![s("established"), s("related")]);
    cmp(ct("state"), Operator::IN, states)
}

fn from_tap(spec: &RuleSpec<'_>) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), s(spec.tap))
}

fn to_tap(spec: &RuleSpec<'_>) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), s(spec.tap))
}

fn dnat_rule(
    chain: &'static str,
    spec: &RuleSpec<'_>,
    pod_ip: Ipv4Addr,
    fwd: PortForward,
    on_uplink: bool,
) -> NfListObject<'static> {
    let mut expr = Vec::new();
    if on_uplink {
        expr.push(eq(meta(MetaKey::Iifname), s(spec.uplink)));
    }
    expr.push(eq(field("ip", "daddr"), s(pod_ip)));
    expr.push(eq(
        field("tcp", "dport"),
        Expression::Number(u32::from(fwd.host)),
    ));
    expr.push(Statement::DNAT(Some(NAT {
        addr: Some(s(spec.vm_ip)),
        family: None,
        port: Some(Expression::Number(u32::from(fwd.vm))),
        flags: None,
    })));
    rule(chain, expr)
}

fn masquerade_rule(spec: &RuleSpec<'_>) -> NfListObject<'static> {
    rule(
        "postrouting",
        vec![
            eq(field("ip", "saddr"), prefix(spec.subnet, spec.prefix_len)),
            eq(meta(MetaKey::Oifname), s(spec.uplink)),
            Statement::Masquerade(None),
        ],
    )
}

/// `iifname TAP ip saddr != VM_IP drop`: the VM speaks only as itself.
fn antispoof_rule(spec: &RuleSpec<'_>) -> NfListObject<'static> {
    rule(
        "antispoof",
        vec![
            from_tap(spec),
            cmp(field("ip", "saddr"), Operator::NEQ, s(spec.vm_ip)),
            Statement::Drop(None),
        ],
    )
}

/// From the VM to the pod itself: replies, and pings.
fn input_rules(spec: &RuleSpec<'_>) -> Vec<NfListObject<'static>> {
    let echo = eq(field("icmp", "type"), s("echo-request"));
    vec![
        rule(
            "input",
            vec![from_tap(spec), ct_replies(), Statement::Accept(None)],
        ),
        rule("input", vec![from_tap(spec), echo, Statement::Accept(None)]),
        rule("input", vec![from_tap(spec), Statement::Drop(None)]),
    ]
}

/// `tcp flags syn tcp option maxseg size set rt mtu`: the VM's MTU is 1500
/// while pod networks are often smaller (overlays); the kernel only ever
/// lowers the MSS here.
fn mss_clamp_rule() -> NfListObject<'static> {
    let mss = Expression::Named(NamedExpression::TcpOption(nftables::expr::TcpOption {
        name: "maxseg".into(),
        field: Some("size".into()),
    }));
    let route_mtu = Expression::Named(NamedExpression::RT(nftables::expr::RT {
        key: nftables::expr::RTKey::MTU,
        family: None,
    }));
    rule(
        "forward",
        vec![
            cmp(field("tcp", "flags"), Operator::IN, s("syn")),
            Statement::Mangle(nftables::stmt::Mangle {
                key: mss,
                value: route_mtu,
            }),
        ],
    )
}

fn forward_rules(spec: &RuleSpec<'_>) -> Vec<NfListObject<'static>> {
    let jump = Statement::Jump(JumpTarget {
        target: "from_vm".into(),
    });
    let mut rules = vec![
        mss_clamp_rule(),
        rule("forward", vec![from_tap(spec), jump]),
        rule(
            "forward",
            vec![to_tap(spec), ct_replies(), Statement::Accept(None)],
        ),
    ];
    for fwd in spec.forwards {
        rules.push(rule(
            "forward",
            vec![
                to_tap(spec),
                eq(field("ip", "daddr"), s(spec.vm_ip)),
                eq(field("tcp", "dport"), Expression::Number(u32::from(fwd.vm))),
                cmp(ct("status"), Operator::IN, s("dnat")),
                Statement::Accept(None),
            ],
        ));
    }
    rules.push(rule("forward", vec![to_tap(spec), Statement::Drop(None)]));
    rules
}

/// The VM's new connections out of the pod: the destination filter, then
/// everything else (the internet) is accepted.
fn from_vm_rules(spec: &RuleSpec<'_>) -> Vec<NfListObject<'static>> {
    let mut rules = vec![rule("from_vm", vec![ct_replies(), Statement::Accept(None)])];
    for (c, verdict) in destination_filter(spec.deny, spec.allow) {
        let v = match verdict {
            Verdict::Accept => Statement::Accept(None),
            Verdict::Drop => Statement::Drop(None),
        };
        rules.push(rule(
            "from_vm",
            vec![eq(field("ip", "daddr"), prefix(c.addr, c.len)), v],
        ));
    }
    rules.push(rule("from_vm", vec![Statement::Accept(None)]));
    rules
}

fn families(ipv6: bool) -> Vec<NfFamily> {
    if ipv6 {
        vec![NfFamily::IP, NfFamily::IP6]
    } else {
        vec![NfFamily::IP]
    }
}

/// The batch that (re)creates the tables in one transaction.
pub fn replace_batch(spec: &RuleSpec<'_>) -> Nftables<'static> {
    let mut b = Batch::new();
    for family in families(spec.ipv6) {
        b.add(NfListObject::Table(table(family)));
        b.delete(NfListObject::Table(table(family)));
        b.add(NfListObject::Table(table(family)));
    }
    let ip = NfFamily::IP;
    let chains = [
        ("prerouting", NfChainType::NAT, NfHook::Prerouting, -100),
        ("output", NfChainType::NAT, NfHook::Output, -100),
        ("postrouting", NfChainType::NAT, NfHook::Postrouting, 100),
        (
            "antispoof",
            NfChainType::Filter,
            NfHook::Prerouting,
            PRIO_RAW,
        ),
        ("input", NfChainType::Filter, NfHook::Input, 0),
        ("forward", NfChainType::Filter, NfHook::Forward, 0),
    ];
    for (name, kind, hook, prio) in chains {
        b.add(base_chain(ip, name, kind, hook, prio));
    }
    b.add(regular_chain("from_vm"));
    for fwd in spec.forwards.iter().filter(|_| spec.pod_ip.is_some()) {
        let pod_ip = spec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        b.add(dnat_rule("prerouting", spec, pod_ip, *fwd, true));
        b.add(dnat_rule("output", spec, pod_ip, *fwd, false));
    }
    b.add(masquerade_rule(spec));
    b.add(antispoof_rule(spec));
    let filter = [input_rules(spec), forward_rules(spec), from_vm_rules(spec)];
    for r in filter.into_iter().flatten() {
        b.add(r);
    }
    if spec.ipv6 {
        let v6 = NfFamily::IP6;
        let (kind, hook) = (NfChainType::Filter, NfHook::Prerouting);
        b.add(base_chain(v6, "antispoof", kind, hook, PRIO_RAW));
        b.add(rule_in(
            v6,
            "antispoof",
            vec![from_tap(spec), Statement::Drop(None)],
        ));
    }
    b.to_nftables()
}

/// The batch that removes the tables if present (a no-op otherwise).
pub fn delete_batch(ipv6: bool) -> Nftables<'static> {
    let mut b = Batch::new();
    for family in families(ipv6) {
        b.add(NfListObject::Table(table(family)));
        b.delete(NfListObject::Table(table(family)));
    }
    b.to_nftables()
}

fn apply(what: &'static str, batch: &Nftables<'_>) -> Result<(), RulesError> {
    nft::apply(what, batch).map_err(|e| RulesError::Nft {
        what,
        detail: e.detail,
    })
}

/// Whether this network namespace has IPv6 (so `table ip6 dozlab` can and
/// must exist).
pub fn kernel_has_ipv6() -> bool {
    std::path::Path::new("/proc/sys/net/ipv6").exists()
}

/// Replaces Dozlab's tables with the rules for `spec`.
pub fn install(spec: &RuleSpec<'_>) -> Result<(), RulesError> {
    apply("install the dozlab tables", &replace_batch(spec))
}

/// Deletes Dozlab's tables (nothing happens when they do not exist).
pub fn remove() -> Result<(), RulesError> {
    apply("delete the dozlab tables", &delete_batch(kernel_has_ipv6()))
}

/// Whether `table ip dozlab` exists in this namespace.
pub fn table_exists() -> Result<bool, RulesError> {
    nft::table_exists(NfFamily::IP, TABLE).map_err(|e| RulesError::Nft {
        what: "list tables",
        detail: e.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(forwards: &'a [PortForward], deny: &'a [Cidr], allow: &'a [Cidr]) -> RuleSpec<'a> {
        RuleSpec {
            tap: "tap0",
            uplink: "eth0",
            pod_ip: Some("10.1.2.3".parse().unwrap()),
            vm_ip: "172.16.0.2".parse().unwrap(),
            subnet: "172.16.0.0".parse().unwrap(),
            prefix_len: 24,
            forwards,
            deny,
            allow,
            ipv6: true,
        }
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_batch_replaces_the_table_and_forwards_only_listed_ports() {
        let fwd = ["22".parse().unwrap(), "2222:2200".parse().unwrap()];
        let json = serde_json::to_value(replace_batch(&spec(&fwd, &[], &[]))).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        assert!(cmds[0]["add"]["table"]["name"] == "dozlab");
        assert!(cmds[1]["delete"]["table"]["name"] == "dozlab");
        let text = json.to_string();
        assert!(
            text.contains(r#""dnat":{"addr":"172.16.0.2","port":22}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""dnat":{"addr":"172.16.0.2","port":2200}"#),
            "{text}"
        );
        assert!(text.contains(r#""masquerade":null"#), "{text}");
        let dnats = text.matches("\"dnat\":{").count();
        assert_eq!(dnats, 4, "prerouting + output for each of two ports");
        for port in ["8080", "8081", "2375"] {
            assert!(!text.contains(&format!(":{port}")), "{port} in {text}");
        }
    }

    #[test]
    fn the_most_specific_block_comes_first_and_allow_beats_the_builtin() {
        let deny = cidrs(&["10.0.0.0/8", "10.96.0.0/12", "169.254.0.0/16"]);
        let allow = cidrs(&["10.96.0.10", "169.254.20.10/32", "0.0.0.0/0"]);
        let got: Vec<String> = destination_filter(&deny, &allow)
            .iter()
            .map(|(c, v)| format!("{c} {v:?}"))
            .collect();
        assert_eq!(
            got,
            [
                "10.96.0.10/32 Accept",
                "100.100.100.200/32 Drop",
                "169.254.20.10/32 Accept",
                "169.254.0.0/16 Drop",
                "10.96.0.0/12 Drop",
                "10.0.0.0/8 Drop",
                "0.0.0.0/0 Accept",
            ]
        );
        let builtin_only = destination_filter(&[], &cidrs(&["169.254.0.0/16"]));
        assert!(builtin_only.contains(&(cidrs(&["169.254.0.0/16"])[0], Verdict::Accept)));
    }

    #[test]
    fn the_vm_gets_filter_chains_and_no_ipv6() {
        let deny = cidrs(&["10.96.0.0/12"]);
        let json = serde_json::to_value(replace_batch(&spec(&[], &deny, &[]))).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        let chains: Vec<(String, String)> = cmds
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .map(|c| {
                (
                    c["family"].as_str().unwrap().into(),
                    c["name"].as_str().unwrap().into(),
                )
            })
            .collect();
        for want in ["antispoof", "input", "forward", "from_vm"] {
            assert!(
                chains.contains(&("ip".into(), want.into())),
                "{want}: {chains:?}"
            );
        }
        assert!(
            chains.contains(&("ip6".into(), "antispoof".into())),
            "{chains:?}"
        );
        let text = json.to_string();
        assert!(text.contains(r#"{"left":{"payload":{"field":"saddr","protocol":"ip"}},"op":"!=","right":"172.16.0.2"}"#), "{text}");
        assert!(
            text.contains(
                r#""op":"==","right":{"prefix":{"addr":"10.96.0.0","len":12}}}},{"drop":null}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"{"jump":{"target":"from_vm"}}"#), "{text}");
        let v4_only = serde_json::to_value(replace_batch(&RuleSpec {
            ipv6: false,
            ..spec(&[], &[], &[])
        }))
        .unwrap();
        assert!(!v4_only.to_string().contains("ip6"), "{v4_only}");
        assert_eq!(
            serde_json::to_value(delete_batch(true)).unwrap()["nftables"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
}
