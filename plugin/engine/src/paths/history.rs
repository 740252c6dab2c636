//! `history/<name>`: the bounded record of every decision about a keyring.

use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, handler, name_segment};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

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
    out.insert("entries".into(), Value::Array(entries));
    Ok(Some(Response::with_data(out)))
}

const HELP_SYNOPSIS: &str = "Read the record of every rotation, revocation and policy change of a keyring.";
const HELP_DESCRIPTION: &str = "\
Each entry says what happened (create, publish, commit, commit-forced, \
revoke, policy, expire), when, why (scheduled, manual, emergency), who (the \
request's display name, or the scheduler) with the operator's reason, and the \
versions affected. Entries are append-only with increasing seq; the oldest \
are dropped past 256 entries. Reports that the fleet holds versions this \
coordinator did not issue (fleet-ahead) are kept apart from those 256: one \
entry per claimant (pool/instance), moved to the end at each report recorded, \
with their count, the first time and the versions claimed, at most 4 \
claimants per pool and 16 in all. However many reports arrive, they never \
push other entries out.";
