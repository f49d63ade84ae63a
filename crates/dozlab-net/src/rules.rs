//! Dozlab's nftables table (`table ip dozlab`), built as libnftables JSON
//! with the `nftables` crate and applied with `nft -j -f -` in one
//! transaction.
//!
//! The table holds everything and nothing else does: re-running replaces it
//! atomically (`add table; delete table; add table ...` in one batch), and
//! teardown deletes it. The ruleset:
//!
//! ```text
//! table ip dozlab {
//!   chain prerouting  { type nat hook prerouting priority dstnat; policy accept;
//!     iifname UPLINK ip daddr POD_IP tcp dport PORT dnat to VM_IP:VMPORT }   # per port
//!   chain output      { type nat hook output priority dstnat; policy accept;
//!     ip daddr POD_IP tcp dport PORT dnat to VM_IP:VMPORT }                  # per port
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET/LEN oifname UPLINK masquerade }
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     tcp flags syn tcp option maxseg size set rt mtu
//!     iifname TAP accept
//!     oifname TAP ct state established,related accept
//!     oifname TAP ip daddr VM_IP tcp dport VMPORT ct status dnat accept      # per port
//!     oifname TAP drop }
//! }
//! ```
//!
//! The last forward rule keeps the VM unreachable from outside the pod
//! except through the forwarded ports, even for a neighbour that routes the
//! VM subnet via the pod IP. Traffic the pod itself sends to the VM (the
//! terminal, code-server's Docker client) does not cross the forward hook.

use dozlab_core::netconfig::PortForward;
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::net::Ipv4Addr;

/// Name of Dozlab's table (family `ip`).
pub const TABLE: &str = "dozlab";

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
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        ..Rule::default()
    })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn s(v: impl ToString) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
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
    let subnet = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(spec.subnet)),
        len: u32::from(spec.prefix_len),
    }));
    rule(
        "postrouting",
        vec![
            eq(field("ip", "saddr"), subnet),
            eq(meta(MetaKey::Oifname), s(spec.uplink)),
            Statement::Masquerade(None),
        ],
    )
}

fn ct_state(states: &[&'static str]) -> Expression<'static> {
    Expression::List(states.iter().map(|st| s(st)).collect())
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
            Statement::Match(Match {
                left: field("tcp", "flags"),
                right: s("syn"),
                op: Operator::IN,
            }),
            Statement::Mangle(nftables::stmt::Mangle {
                key: mss,
                value: route_mtu,
            }),
        ],
    )
}

fn forward_rules(spec: &RuleSpec<'_>) -> Vec<NfListObject<'static>> {
    let ct = |key: &'static str| {
        Expression::Named(NamedExpression::CT(nftables::expr::CT {
            key: key.into(),
            family: None,
            dir: None,
        }))
    };
    let mut rules = vec![
        mss_clamp_rule(),
        rule(
            "forward",
            vec![
                eq(meta(MetaKey::Iifname), s(spec.tap)),
                Statement::Accept(None),
            ],
        ),
        rule(
            "forward",
            vec![
                eq(meta(MetaKey::Oifname), s(spec.tap)),
                Statement::Match(Match {
                    left: ct("state"),
                    right: ct_state(&["established", "related"]),
                    op: Operator::IN,
                }),
                Statement::Accept(None),
            ],
        ),
    ];
    for fwd in spec.forwards {
        rules.push(rule(
            "forward",
            vec![
                eq(meta(MetaKey::Oifname), s(spec.tap)),
                eq(field("ip", "daddr"), s(spec.vm_ip)),
                eq(field("tcp", "dport"), Expression::Number(u32::from(fwd.vm))),
                Statement::Match(Match {
                    left: ct("status"),
                    right: s("dnat"),
                    op: Operator::IN,
                }),
                Statement::Accept(None),
            ],
        ));
    }
    rules.push(rule(
        "forward",
        vec![
            eq(meta(MetaKey::Oifname), s(spec.tap)),
            Statement::Drop(None),
        ],
    ));
    rules
}

/// The batch that (re)creates the whole table in one transaction.
pub fn replace_batch(spec: &RuleSpec<'_>) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.add(NfListObject::Table(table()));
    b.add(base_chain(
        "prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        -100,
    ));
    b.add(base_chain("output", NfChainType::NAT, NfHook::Output, -100));
    b.add(base_chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    b.add(base_chain(
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
    ));
    for fwd in spec.forwards.iter().filter(|_| spec.pod_ip.is_some()) {
        let pod_ip = spec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        b.add(dnat_rule("prerouting", spec, pod_ip, *fwd, true));
        b.add(dnat_rule("output", spec, pod_ip, *fwd, false));
    }
    b.add(masquerade_rule(spec));
    for r in forward_rules(spec) {
        b.add(r);
    }
    b.to_nftables()
}

/// The batch that removes the table if present (a no-op otherwise).
pub fn delete_batch() -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(table()));
    b.delete(NfListObject::Table(table()));
    b.to_nftables()
}

fn apply(what: &'static str, batch: &Nftables<'_>) -> Result<(), RulesError> {
    nftables::helper::apply_ruleset(batch).map_err(|e| RulesError::Nft {
        what,
        detail: nft_detail(e),
    })
}

fn nft_detail(e: nftables::helper::NftablesError) -> String {
    match e {
        nftables::helper::NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    }
}

/// Replaces Dozlab's table with the rules for `spec`.
pub fn install(spec: &RuleSpec<'_>) -> Result<(), RulesError> {
    apply("install the dozlab table", &replace_batch(spec))
}

/// Deletes Dozlab's table (nothing happens when it does not exist).
pub fn remove() -> Result<(), RulesError> {
    apply("delete the dozlab table", &delete_batch())
}

/// Whether `table ip dozlab` exists in this namespace.
pub fn table_exists() -> Result<bool, RulesError> {
    let args = ["list", "tables", "ip"];
    let tables =
        nftables::helper::get_current_ruleset_with_args(nftables::helper::DEFAULT_NFT, &args)
            .map_err(|e| RulesError::Nft {
                what: "list tables",
                detail: nft_detail(e),
            })?;
    Ok(tables.objects.iter().any(|o| {
        matches!(o, nftables::schema::NfObject::ListObject(NfListObject::Table(t)) if t.name == TABLE && t.family == NfFamily::IP)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(forwards: &[PortForward]) -> RuleSpec<'_> {
        RuleSpec {
            tap: "tap0",
            uplink: "eth0",
            pod_ip: Some("10.1.2.3".parse().unwrap()),
            vm_ip: "172.16.0.2".parse().unwrap(),
            subnet: "172.16.0.0".parse().unwrap(),
            prefix_len: 24,
            forwards,
        }
    }

    #[test]
    fn the_batch_replaces_the_table_and_forwards_only_listed_ports() {
        let fwd = ["22".parse().unwrap(), "2222:2200".parse().unwrap()];
        let json = serde_json::to_value(replace_batch(&spec(&fwd))).unwrap();
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
}
