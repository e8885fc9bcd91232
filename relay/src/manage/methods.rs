//! The NIP-86 methods: what each one reads or changes.
//!
//! A change is a list of [`PolicyEdit`]s written with its audit record in one transaction
//! ([`Node::change_rules`]), then applied on every node. Lists answer the stored entries
//! joined with the configuration's, which the API cannot remove (they are changed in the
//! configuration file). Besides NIP-86's methods: `listdisallowedkinds`, `listroles` and
//! `listauditlog` (the audit log, newest first).

use std::{collections::HashSet, sync::Arc};

use serde_json::{Value, json};

use crate::{
    node::Node,
    nostr::{Event, Filter, hex},
    policy,
    proxy::Cidr,
    store::{
        StoreError,
        policy::{AuditRecord, PolicyEdit, PolicyEntry, PolicyList, StoredPolicy},
    },
};

/// Every method this relay answers, as `supportedmethods` lists them.
pub const METHODS: &[&str] = &[
    "supportedmethods",
    "banpubkey",
    "unbanpubkey",
    "listbannedpubkeys",
    "allowpubkey",
    "unallowpubkey",
    "listallowedpubkeys",
    "createrole",
    "editrole",
    "deleterole",
    "assignrole",
    "unassignrole",
    "listroles",
    "listeventsneedingmoderation",
    "allowevent",
    "banevent",
    "listbannedevents",
    "changerelayname",
    "changerelaydescription",
    "changerelayicon",
    "allowkind",
    "disallowkind",
    "listallowedkinds",
    "listdisallowedkinds",
    "blockip",
    "unblockip",
    "listblockedips",
    "listauditlog",
];

/// Whether `method` changes something (and is audited): every method but the reads.
pub fn changes(method: &str) -> bool {
    method != "supportedmethods" && !method.starts_with("list")
}

/// Longest reason, name or description an admin may store, in characters.
const MAX_TEXT_CHARS: usize = 2000;

/// How many reports `listeventsneedingmoderation` reads.
const REPORTS_READ: usize = 500;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The method or its parameters are wrong; the text says how (answered with 400).
    #[error("{0}")]
    Invalid(String),
    /// The store failed (answered with 500; the text stays in the logs).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid<T>(why: impl Into<String>) -> Result<T, CallError> {
    Err(CallError::Invalid(why.into()))
}

/// The parameters of one call.
struct Params<'a>(&'a [Value]);

impl Params<'_> {
    fn text(&self, at: usize, what: &str) -> Result<String, CallError> {
        match self.0.get(at).and_then(Value::as_str) {
            Some(text) if text.chars().count() <= MAX_TEXT_CHARS => Ok(text.to_string()),
            Some(_) => invalid(format!("{what} is longer than {MAX_TEXT_CHARS} characters")),
            None => invalid(format!("parameter {} must be {what} (a string)", at + 1)),
        }
    }

    /// An optional reason at `at` (empty when absent).
    fn reason(&self, at: usize) -> Result<String, CallError> {
        match self.0.get(at) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => self.text(at, "a reason"),
        }
    }

    fn key(&self, at: usize, what: &str) -> Result<String, CallError> {
        let text = self.text(at, what)?;
        match hex::decode::<32>(&text) {
            Some(_) => Ok(text),
            None => invalid(format!("`{text}` is not {what} (64 lowercase hex)")),
        }
    }

    fn kind(&self, at: usize) -> Result<u16, CallError> {
        match self.0.get(at).and_then(Value::as_u64).map(u16::try_from) {
            Some(Ok(kind)) => Ok(kind),
            _ => invalid(format!(
                "parameter {} must be a kind (an integer from 0 to 65535)",
                at + 1
            )),
        }
    }

    fn address(&self, at: usize) -> Result<String, CallError> {
        let text = self.text(at, "an IP address or CIDR range")?;
        match text.parse::<Cidr>() {
            Ok(cidr) => Ok(String::from(cidr)),
            Err(error) => invalid(error.to_string()),
        }
    }
}

/// Runs `method` with `params` for the admin `admin` (hex pubkey).
pub async fn call(
    node: &Arc<Node>,
    admin: &str,
    method: &str,
    params: &[Value],
) -> Result<Value, CallError> {
    let p = Params(params);
    let audit = || AuditRecord {
        seq: 0,
        at: policy::now(),
        actor: admin.to_string(),
        method: method.to_string(),
        params: Value::Array(params.to_vec()).to_string(),
    };
    let put = |list, value: &str, note: String| {
        PolicyEdit::Put(PolicyEntry {
            list,
            value: value.to_string(),
            note,
        })
    };
    let remove = |list, value: &str| PolicyEdit::Remove(list, value.to_string());
    let config = node.config();
    let edits = match method {
        "supportedmethods" => return Ok(json!(METHODS)),
        "listbannedpubkeys" => {
            return listed(
                node,
                PolicyList::BannedPubkey,
                "pubkey",
                &config.banned_pubkeys,
            )
            .await;
        }
        "listallowedpubkeys" => {
            return listed(
                node,
                PolicyList::AllowedPubkey,
                "pubkey",
                &config.allowed_pubkeys,
            )
            .await;
        }
        "listbannedevents" => return listed(node, PolicyList::BannedEvent, "id", &[]).await,
        "listblockedips" => {
            let configured: Vec<String> = config
                .blocked_ips
                .iter()
                .copied()
                .map(String::from)
                .collect();
            return listed(node, PolicyList::BlockedIp, "ip", &configured).await;
        }
        "listallowedkinds" => {
            return kinds(node, PolicyList::AllowedKind, &config.allowed_kinds).await;
        }
        "listdisallowedkinds" => {
            return kinds(node, PolicyList::BannedKind, &config.banned_kinds).await;
        }
        "listroles" => return roles(node).await,
        "listeventsneedingmoderation" => return needing_moderation(node).await,
        "listauditlog" => {
            let limit = params
                .first()
                .and_then(Value::as_u64)
                .unwrap_or(100)
                .min(1000);
            let records = node.store().audit_log(limit as usize).await?;
            return Ok(Value::Array(records.iter().map(audit_json).collect()));
        }
        "banpubkey" => {
            let key = p.key(0, "a pubkey")?;
            vec![put(PolicyList::BannedPubkey, &key, p.reason(1)?)]
        }
        "unbanpubkey" => {
            let key = p.key(0, "a pubkey")?;
            not_configured(&config.banned_pubkeys, &key, "banned")?;
            vec![remove(PolicyList::BannedPubkey, &key)]
        }
        "allowpubkey" => {
            let key = p.key(0, "a pubkey")?;
            vec![put(PolicyList::AllowedPubkey, &key, p.reason(1)?)]
        }
        "unallowpubkey" => {
            let key = p.key(0, "a pubkey")?;
            not_configured(&config.allowed_pubkeys, &key, "allowed")?;
            vec![remove(PolicyList::AllowedPubkey, &key)]
        }
        "banevent" => {
            let id = p.key(0, "an event id")?;
            let reason = p.reason(1)?;
            vec![
                put(PolicyList::BannedEvent, &id, reason),
                remove(PolicyList::AllowedEvent, &id),
            ]
        }
        "allowevent" => {
            let id = p.key(0, "an event id")?;
            let reason = p.reason(1)?;
            vec![
                put(PolicyList::AllowedEvent, &id, reason),
                remove(PolicyList::BannedEvent, &id),
            ]
        }
        "allowkind" => {
            let kind = p.kind(0)?.to_string();
            if config.banned_kinds.iter().any(|k| k.to_string() == kind) {
                return invalid(format!(
                    "kind {kind} is refused in the configuration file; change it there"
                ));
            }
            vec![
                put(PolicyList::AllowedKind, &kind, String::new()),
                remove(PolicyList::BannedKind, &kind),
            ]
        }
        "disallowkind" => {
            let kind = p.kind(0)?.to_string();
            vec![
                put(PolicyList::BannedKind, &kind, String::new()),
                remove(PolicyList::AllowedKind, &kind),
            ]
        }
        "blockip" => {
            let address = p.address(0)?;
            vec![put(PolicyList::BlockedIp, &address, p.reason(1)?)]
        }
        "unblockip" => {
            let address = p.address(0)?;
            let configured: Vec<String> = config
                .blocked_ips
                .iter()
                .copied()
                .map(String::from)
                .collect();
            not_configured(&configured, &address, "blocked")?;
            vec![remove(PolicyList::BlockedIp, &address)]
        }
        "changerelayname" => vec![PolicyEdit::Set("name".into(), p.text(0, "a name")?)],
        "changerelaydescription" => {
            vec![PolicyEdit::Set(
                "description".into(),
                p.text(0, "a description")?,
            )]
        }
        "changerelayicon" => {
            let icon = p.text(0, "an icon URL")?;
            if !(icon.starts_with("https://") || icon.starts_with("http://")) {
                return invalid("the icon must be an http:// or https:// URL");
            }
            vec![PolicyEdit::Set("icon".into(), icon)]
        }
        "createrole" | "editrole" => {
            let id = p.text(0, "a role id")?;
            let role = json!([
                p.reason(1)?,
                p.reason(2)?,
                p.reason(3)?,
                params.get(4).and_then(Value::as_i64).unwrap_or(0)
            ]);
            let exists = stored_values(node, PolicyList::Role).await?.contains(&id);
            if method == "createrole" && exists {
                return invalid(format!("role `{id}` exists; use editrole"));
            }
            if method == "editrole" && !exists {
                return invalid(format!("there is no role `{id}`"));
            }
            vec![put(PolicyList::Role, &id, role.to_string())]
        }
        "deleterole" => {
            let id = p.text(0, "a role id")?;
            let mut edits = vec![remove(PolicyList::Role, &id)];
            for member in stored_values(node, PolicyList::RoleMember).await? {
                if member.split_once(' ').is_some_and(|(_, role)| role == id) {
                    edits.push(remove(PolicyList::RoleMember, &member));
                }
            }
            edits
        }
        "assignrole" | "unassignrole" => {
            let key = p.key(0, "a pubkey")?;
            let role = p.text(1, "a role id")?;
            if !stored_values(node, PolicyList::Role).await?.contains(&role) {
                return invalid(format!("there is no role `{role}`"));
            }
            let member = format!("{key} {role}");
            if method == "assignrole" {
                vec![put(PolicyList::RoleMember, &member, String::new())]
            } else {
                vec![remove(PolicyList::RoleMember, &member)]
            }
        }
        other => return invalid(format!("unknown method `{other}`; see supportedmethods")),
    };
    // Applying a ban removes what it bans (see `node::rulebook`).
    node.change_rules(edits, audit()).await?;
    Ok(Value::Bool(true))
}

/// Refuses to remove through the API what the configuration file sets.
fn not_configured(configured: &[String], value: &str, what: &str) -> Result<(), CallError> {
    if configured.iter().any(|c| c == value) {
        return invalid(format!(
            "`{value}` is {what} in the configuration file; change it there"
        ));
    }
    Ok(())
}

async fn stored(node: &Node) -> Result<StoredPolicy, CallError> {
    Ok(node.store().load_policy().await?)
}

async fn stored_values(node: &Node, list: PolicyList) -> Result<HashSet<String>, CallError> {
    Ok(stored(node)
        .await?
        .entries
        .into_iter()
        .filter(|e| e.list == list)
        .map(|e| e.value)
        .collect())
}

/// `[{field: value, "reason": note}, …]`: the configuration's entries, then the stored ones.
async fn listed(
    node: &Node,
    list: PolicyList,
    field: &str,
    configured: &[String],
) -> Result<Value, CallError> {
    let stored = stored(node).await?;
    let from_config = configured
        .iter()
        .map(|value| json!({ field: value, "reason": "set in the configuration file" }));
    let from_store = stored
        .entries
        .iter()
        .filter(|e| e.list == list && !configured.contains(&e.value))
        .map(|e| json!({ field: e.value, "reason": e.note }));
    Ok(Value::Array(from_config.chain(from_store).collect()))
}

async fn kinds(node: &Node, list: PolicyList, configured: &[u16]) -> Result<Value, CallError> {
    let stored = stored(node).await?;
    let mut kinds: Vec<u16> = configured.to_vec();
    kinds.extend(
        stored
            .entries
            .iter()
            .filter(|e| e.list == list)
            .filter_map(|e| e.value.parse::<u16>().ok()),
    );
    kinds.sort_unstable();
    kinds.dedup();
    Ok(json!(kinds))
}

async fn roles(node: &Node) -> Result<Value, CallError> {
    let stored = stored(node).await?;
    let members = |id: &str| -> Vec<&str> {
        stored
            .entries
            .iter()
            .filter(|e| e.list == PolicyList::RoleMember)
            .filter_map(|e| e.value.split_once(' '))
            .filter(|(_, role)| *role == id)
            .map(|(pubkey, _)| pubkey)
            .collect()
    };
    let roles = stored
        .entries
        .iter()
        .filter(|e| e.list == PolicyList::Role)
        .map(|e| {
            let fields: Value = serde_json::from_str(&e.note).unwrap_or(Value::Null);
            json!({
                "id": e.value,
                "label": fields[0],
                "description": fields[1],
                "color": fields[2],
                "order": fields[3],
                "members": members(&e.value),
            })
        })
        .collect();
    Ok(Value::Array(roles))
}

/// Events reported with NIP-56 (kind 1984 `e` tags) that no moderator has allowed or
/// banned yet, each with the report's type and text.
async fn needing_moderation(node: &Node) -> Result<Value, CallError> {
    let decided: HashSet<String> = stored(node)
        .await?
        .entries
        .into_iter()
        .filter(|e| matches!(e.list, PolicyList::AllowedEvent | PolicyList::BannedEvent))
        .map(|e| e.value)
        .collect();
    let filter = Filter::parse(&json!({"kinds": [1984], "limit": REPORTS_READ}).to_string())
        .map_err(|e| CallError::Invalid(e.to_string()))?;
    let reports = node
        .store()
        .query(Arc::from([filter]), policy::now())
        .await?;
    let mut seen = HashSet::new();
    let mut needing = Vec::new();
    for json in reports {
        let Ok(report) = Event::parse(&json) else {
            continue;
        };
        for tag in report
            .tags
            .iter()
            .filter(|t| t.first().is_some_and(|n| n == "e"))
        {
            let Some(id) = tag.get(1).filter(|id| hex::decode::<32>(id).is_some()) else {
                continue;
            };
            if decided.contains(id) || !seen.insert(id.clone()) {
                continue;
            }
            let kind = tag.get(2).map_or("", String::as_str);
            let reason = match (kind, report.content.as_str()) {
                ("", text) => text.to_string(),
                (kind, "") => kind.to_string(),
                (kind, text) => format!("{kind}: {text}"),
            };
            needing.push(json!({"id": id, "reason": reason}));
        }
    }
    Ok(Value::Array(needing))
}

fn audit_json(record: &AuditRecord) -> Value {
    json!({
        "seq": record.seq,
        "at": record.at,
        "pubkey": record.actor,
        "method": record.method,
        "params": serde_json::from_str::<Value>(&record.params).unwrap_or(Value::Null),
    })
}
