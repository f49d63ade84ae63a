//! Talking to nftables with typed rules (the `nftables` crate's JSON
//! schema): small expression builders, applying a batch in one `nft -j`
//! transaction with nft's own complaint as the error, and asking whether a
//! table exists. Shared by network-setup's tables ([`crate::rules`]) and
//! `dozlab up`'s host table.

use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfListObject, NfObject, Nftables, Rule};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::net::Ipv4Addr;

/// `nft` refused a batch or a query.
#[derive(Debug, thiserror::Error)]
#[error("nft failed to {what}: {detail}")]
pub struct NftError {
    /// What was asked.
    pub what: String,
    /// nft's stderr, or why nft could not run.
    pub detail: String,
}

/// A base chain `name` of `table` on `hook` at `prio`, policy accept.
pub fn base_chain(
    family: NfFamily,
    table: &str,
    name: &'static str,
    (kind, hook, prio): (NfChainType, NfHook, i32),
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family,
        table: Cow::Owned(table.to_string()),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

/// A rule of `chain` in `table`.
pub fn rule(
    family: NfFamily,
    table: &str,
    chain: &'static str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family,
        table: Cow::Owned(table.to_string()),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        ..Rule::default()
    })
}

/// `left OP right`.
pub fn cmp(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// `left == right`.
pub fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    cmp(left, Operator::EQ, right)
}

/// `meta KEY` (e.g. `iifname`).
pub fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// A header field, e.g. `ip saddr`.
pub fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

/// A string or address literal.
pub fn s(v: impl ToString) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

/// `ADDR/LEN` (a plain address for /32).
pub fn prefix(addr: Ipv4Addr, len: u8) -> Expression<'static> {
    if len == 32 {
        return s(addr);
    }
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len: u32::from(len),
    }))
}

/// Applies `batch` in one transaction.
pub fn apply(what: &str, batch: &Nftables<'_>) -> Result<(), NftError> {
    nftables::helper::apply_ruleset(batch).map_err(|e| error(what, e))
}

/// Whether table `name` of `family` exists in this network namespace.
pub fn table_exists(family: NfFamily, name: &str) -> Result<bool, NftError> {
    let family_arg = match family {
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        _ => "ip",
    };
    let args = ["list", "tables", family_arg];
    let tables =
        nftables::helper::get_current_ruleset_with_args(nftables::helper::DEFAULT_NFT, &args)
            .map_err(|e| error("list tables", e))?;
    Ok(tables.objects.iter().any(|o| {
        matches!(o, NfObject::ListObject(NfListObject::Table(t)) if t.name == name && t.family == family)
    }))
}

fn error(what: &str, e: nftables::helper::NftablesError) -> NftError {
    let detail = match e {
        nftables::helper::NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    };
    NftError {
        what: what.to_string(),
        detail,
    }
}
