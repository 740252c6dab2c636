//! `keys/<name>/renumber`: an operator's decision that sidecars which report
//! versions this coordinator did not issue are right (its storage was
//! restored from an older copy). Reports alone never do what this does.

use std::sync::Arc;

use lockstep_model::schedule::{Cause, FLEET_AHEAD, Keyring};
use serde_json::{Map, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::keys::name;
use super::{check_text, who};
use crate::config::Config;
use crate::state::MountState;
use crate::storage::{put_material, require_keyring};
use crate::{coordinator, scheduler};

/// The history action of an operator's renumbering.
pub const RENUMBER: &str = "renumber";

/// The `keys/<name>/renumber` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("keys/{}/renumber", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .field(
            Field::new(
                "past_version",
                FieldType::Int,
                "The highest version number the fleet holds, as the keyring's status reports it: new versions are \
                 numbered past it, and a pending version numbered at or below it is given up.",
            )
            .required(),
        )
        .field(Field::new("reason", FieldType::String, "Why; recorded in history.").required())
        .operation_on_active_node(
            Operation::Update,
            "Accept the fleet's reports of versions this coordinator did not issue: number past them, give up the \
             pending version they went past, and publish a new version.",
            stateful(&state, |state, req, data| async move { renumber(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

/// The highest number of `ring` that any sidecar reported holding without
/// this coordinator having issued it: heard since the mount started, or
/// recorded in history.
fn highest_reported(state: &MountState, ring: &Keyring) -> Option<u64> {
    let heard = state.with_fleet(|fleet| fleet.claims(&ring.name).map(|c| c.number).max());
    let recorded = ring.history.iter().filter(|e| e.action == FLEET_AHEAD).flat_map(|e| e.versions.iter()).max();
    heard.max(recorded.copied())
}

async fn renumber(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let Some(past) = data.int("past_version") else {
        return Err(LogicalError::InvalidRequest("missing required field \"past_version\"".into()));
    };
    let past = u64::try_from(past)
        .map_err(|_| LogicalError::InvalidRequest("field \"past_version\": must be a positive number".into()))?;
    let reason = data.str("reason").unwrap_or_default().trim();
    if reason.is_empty() {
        return Err(LogicalError::InvalidRequest("missing required field \"reason\"".into()));
    }
    check_text("reason", reason)?;
    let config = Config::load(req.storage.as_ref()).await?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let mut ring = require_keyring(req.storage.as_ref(), name).await?;
    if past <= ring.latest {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"past_version\": {past} is not past the keyring's latest version ({})",
            ring.latest
        )));
    }
    match highest_reported(state, &ring) {
        Some(highest) if past <= highest => {}
        Some(highest) => {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"past_version\": no sidecar reported holding version {past} or a later one; the highest \
                 reported is {highest}"
            )));
        }
        None => {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"past_version\": no sidecar reported holding a version of {name:?} that this coordinator \
                 did not issue; there is nothing to renumber past"
            )));
        }
    }
    let t = state.now();
    let actor = who(req);
    let superseded = ring.supersede_pending(past, t, state.started());
    // As far as a fleet can have gone in the versions accepted, no further.
    let cap = coordinator::generation_cap(&ring, past);
    let generation = state.with_fleet(|f| f.claims(name).filter(|c| c.number <= past).map(|c| c.generation).max());
    ring.continue_numbering_past(past);
    ring.continue_generation_past(generation.unwrap_or(0).min(cap).max(ring.generation));
    ring.record(t, RENUMBER, Cause::Manual, actor, format!("{reason} (numbering continues past {past})"), vec![past]);
    if let Some(number) = superseded {
        let detail = format!(
            "the fleet went on past version {number}, which this coordinator's storage left pending: it never signs"
        );
        ring.record(t, coordinator::SUPERSEDE, Cause::Manual, actor, detail, vec![number]);
    }
    // A new version, numbered past the fleet's, brings every pool onto one
    // again; when one already waits to activate, the next rotation does.
    let mut writes = Vec::new();
    let mut published = None;
    if ring.check_rotation(None, t).is_ok() {
        let planned = t.saturating_add(i64::try_from(ring.prepublish(t)).unwrap_or(i64::MAX));
        let (number, material) = scheduler::publish(state, &mut ring, t, planned)?;
        ring.record(t, "publish", Cause::Manual, actor, reason.to_string(), vec![number]);
        writes.push(put_material(name, number, &material)?);
        published = Some(number);
    }
    coordinator::try_commit(state, req.storage.as_ref(), &config, &mut ring, t, Cause::Manual, actor).await?;
    coordinator::save(state, req.storage.as_ref(), &ring, writes, &[]).await?;
    tracing::warn!(
        keyring = name,
        past,
        actor = actor.name,
        "numbering moved past the fleet's versions by an operator"
    );
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert("numbered_past".into(), json!(past));
    data.insert("superseded_version".into(), json!(superseded));
    data.insert("published_version".into(), json!(published));
    data.insert("latest_version".into(), json!(ring.latest));
    let mut response = Response::with_data(data);
    if published.is_none() {
        response.warnings.push(
            "no version was published: one already waits to activate; the next rotation is numbered past \
             past_version"
                .into(),
        );
    }
    Ok(Some(response))
}

const HELP_SYNOPSIS: &str = "Accept that the fleet holds versions this coordinator did not issue.";
const HELP_DESCRIPTION: &str = "\
When sidecars report versions of a keyring that this coordinator did not \
issue (status shows an alert: its storage was restored from an older copy, \
or a caller reports falsely), reports alone move nothing further than a \
small bound. This is the operator's decision that the reports are true: new \
versions are numbered past past_version, a pending version numbered at or \
below it is given up (it never signs), the generation moves past the fleet's \
so every sidecar takes the next bundle, and a new version is published at \
once and goes through the gate like any other. past_version must be past the \
latest version and at most the highest number reported. The decision and its \
reason are recorded in history.";
