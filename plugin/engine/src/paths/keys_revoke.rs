//! `keys/<name>/revoke`: emergency rotation for a compromised version.

use std::sync::Arc;

use lockstep_model::key_state;
use lockstep_model::schedule::{Cause, RevokeError, RevokeOutcome};
use serde_json::{Map, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::keys::name;
use super::{check_text, who};
use crate::state::MountState;
use crate::storage::{put_material, require_keyring};
use crate::{coordinator, scheduler};

/// The `keys/<name>/revoke` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("keys/{}/revoke", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .field(Field::new("version", FieldType::Int, "The compromised version.").required())
        .field(Field::new("reason", FieldType::String, "Why it is revoked; recorded in history.").required())
        .operation_on_active_node(
            Operation::Update,
            "Revoke a version now: it leaves every bundle, and if it was signing the next version signs at once.",
            stateful(&state, |state, req, data| async move { revoke(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn revoke(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let Some(version) = data.int("version") else {
        return Err(LogicalError::InvalidRequest("missing required field \"version\"".into()));
    };
    let version = u64::try_from(version)
        .map_err(|_| LogicalError::InvalidRequest("field \"version\": must be a positive number".into()))?;
    let reason = data.str("reason").unwrap_or_default().trim();
    if reason.is_empty() {
        return Err(LogicalError::InvalidRequest("missing required field \"reason\"".into()));
    }
    check_text("reason", reason)?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let mut ring = require_keyring(req.storage.as_ref(), name).await?;
    let t = state.now();
    let outcome = ring.revoke(version, t, reason.to_string()).map_err(|e| match e {
        RevokeError::NoSuchVersion(_) => LogicalError::NotFound(e.to_string()),
        RevokeError::AlreadyRevoked(_) => LogicalError::Conflict(e.to_string()),
    })?;
    let mut writes = Vec::new();
    let mut affected = vec![version];
    let outcome_kind = if matches!(outcome, RevokeOutcome::NeedsNewVersion) { Outcome::Created } else { Outcome::Kept };
    match outcome {
        RevokeOutcome::Revoked => {}
        RevokeOutcome::Replaced(next) => affected.push(next),
        RevokeOutcome::NeedsNewVersion => {
            let (next, material) = scheduler::emergency(state, &mut ring, t)?;
            writes.push(put_material(name, next, &material)?);
            affected.push(next);
        }
    }
    let what = match affected.get(1) {
        Some(next) if matches!(outcome_kind, Outcome::Created) => {
            format!("version {version} revoked; version {next} created, signing now")
        }
        Some(next) => format!("version {version} revoked; version {next}, already published, signing now"),
        None => format!("version {version} revoked"),
    };
    ring.record(t, "revoke", Cause::Emergency, who(req), format!("{reason} ({what})"), affected);
    // The revoked version's material is destroyed in the same change.
    let destroyed = ring.expire(t);
    coordinator::save(state, req.storage.as_ref(), &ring, writes, &destroyed).await?;
    tracing::warn!(keyring = name, version, actor = req.actor(), "version revoked");
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert("revoked_version".into(), json!(version));
    data.insert("signing_version".into(), json!(key_state(&ring.versions, t).signing));
    Ok(Some(Response::with_data(data)))
}

/// Whether the revocation made the version that signs now.
enum Outcome {
    Created,
    Kept,
}

const HELP_SYNOPSIS: &str = "Revoke a compromised version at once (emergency rotation).";
const HELP_DESCRIPTION: &str = "\
Security before availability: the revoked version leaves every bundle \
immediately and its material is destroyed. If it was the signing version, the \
version already published to pools (if any) signs at once, otherwise a new \
version is created and signs at once. This bypasses the distribution gate: \
pools that have not fetched the new version since reject tokens signed with \
it until their next poll. The revocation and its reason are recorded in \
history.";
