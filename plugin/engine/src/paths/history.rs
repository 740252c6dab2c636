//! `history/<name>`: the bounded record of every decision about a keyring.

use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, handler, name_segment};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use lockstep_model::rfc3339;
use lockstep_model::schedule::{FLEET_AHEAD, HistoryEntry};

use super::keys::name;
use super::time_json;
use crate::storage::require_keyring;

/// The `history/<name>` path.
pub fn path() -> Path {
    Path::new(format!("history/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .operation(
            Operation::Read,
            "Read the keyring's history, oldest first.",
            handler(|req, data| async move { read(&req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let ring = require_keyring(req.storage.as_ref(), name(data)?).await?;
    let entries: Vec<Value> = ring
        .history
        .iter()
        .map(|e| {
            let mut entry = json!({
                "seq": e.seq,
                "at": time_json(Some(e.at)),
                "action": e.action,
                "cause": e.cause,
                "actor": e.actor,
                "actor_entity_id": non_empty(&e.entity_id),
                "actor_accessor": non_empty(&e.accessor),
                "detail": e.detail,
                "versions": e.versions,
            });
            if let Some(r) = &e.reports {
                entry["reports"] =
                    json!({"claimant": r.claimant, "count": r.count, "first_at": time_json(Some(r.first_at))});
            }
            entry
        })
        .collect();
    let mut out = Map::new();
    out.insert("name".into(), json!(ring.name));
    // Flat first, for the CLI's table format: the last decision in one
    // line. The entries read best with -format=json.
    out.insert("entries_kept".into(), json!(entries.len()));
    let last = ring.history.iter().rev().find(|e| e.action != FLEET_AHEAD);
    out.insert("last_decision".into(), last.map_or(Value::Null, |e| json!(line(e))));
    out.insert("entries".into(), Value::Array(entries));
    Ok(Some(Response::with_data(out)))
}

/// `null` for an id the request did not carry.
fn non_empty(id: &str) -> Value {
    if id.is_empty() { Value::Null } else { json!(id) }
}

/// One entry in one line: `#12 2026-12-06T14:34:30Z publish v3 (scheduled, by scheduler): rotation due`.
fn line(e: &HistoryEntry) -> String {
    let versions: Vec<String> = e.versions.iter().map(|n| format!("v{n}")).collect();
    let versions = if versions.is_empty() { String::new() } else { format!(" {}", versions.join(", ")) };
    let cause = serde_json::to_value(e.cause).ok().and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_default();
    format!("#{} {} {}{versions} ({cause}, by {}): {}", e.seq, rfc3339(e.at), e.action, e.actor, e.detail)
}

const HELP_SYNOPSIS: &str = "Read the record of every rotation, revocation and policy change of a keyring.";
const HELP_DESCRIPTION: &str = "\
last_decision is the latest entry in one line, for the CLI's table format; \
read the entries with -format=json. Each entry says what happened (create, \
publish, commit, commit-forced, activate, revoke, renumber, supersede, \
policy, pool, expire), when, why (scheduled, manual, emergency), who (the \
request's display name, or the scheduler, with the caller's entity id and \
token accessor when the server sent them) with the operator's reason, and \
the versions affected. Entries are append-only with increasing seq; the \
oldest are dropped past the mount's history_entries (256 by default). Reports that the fleet holds versions this \
coordinator did not issue (fleet-ahead) are kept apart from those 256: one \
entry per claimant (pool/instance), moved to the end at each report recorded, \
with their count, the first time and the versions claimed, at most 4 \
claimants per pool and 16 in all. However many reports arrive, they never \
push other entries out.";
