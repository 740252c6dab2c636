//! `keys/<name>/rotate`: manual rotation, compare-and-swap and idempotent.

use std::sync::Arc;

use lockstep_model::schedule::Cause;
use serde_json::{Map, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::keys::name;
use super::{check_text, time_json, who};
use crate::config::Config;
use crate::state::MountState;
use crate::storage::{put_material, require_keyring};
use crate::{coordinator, scheduler};

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The `keys/<name>/rotate` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("keys/{}/rotate", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .field(Field::new(
            "expected_version",
            FieldType::Int,
            "The version the caller believes is the latest. When another version is the latest, nothing changes \
             and the answer is 409 naming the latest version.",
        ))
        .field(Field::new(
            "idempotency_key",
            FieldType::String,
            "A key unique to this rotation request. A retried or duplicated request with the same key returns \
             the version the first one created and never rotates twice.",
        ))
        .field(Field::new("reason", FieldType::String, "Why, for the history."))
        .field(Field::new(
            "prepublish",
            FieldType::DurationSeconds,
            "For this rotation only, a shorter lead than the keyring's prepublish: the version is planned to \
             activate this long from now (0 activates it as soon as it is committed). It still activates only \
             once every live pool holds it, and activation_margin after its commit.",
        ))
        .operation_on_active_node(
            Operation::Update,
            "Publish a new version now; it activates prepublish from now once every live pool holds it.",
            stateful(&state, |state, req, data| async move { rotate(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn rotate(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let idempotency_key = data.str("idempotency_key").filter(|k| !k.is_empty());
    if let Some(key) = idempotency_key
        && key.len() > MAX_IDEMPOTENCY_KEY
    {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"idempotency_key\": longer than {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    let reason = data.str("reason").unwrap_or_default();
    check_text("reason", reason)?;
    let expected = match data.int("expected_version") {
        Some(v) if v < 0 => {
            return Err(LogicalError::InvalidRequest("field \"expected_version\": must not be negative".into()));
        }
        v => v.map(i64::unsigned_abs),
    };
    let config = Config::load(req.storage.as_ref()).await?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let mut ring = require_keyring(req.storage.as_ref(), name).await?;
    if let Some(version) = idempotency_key.and_then(|key| ring.idempotent_result(key)) {
        return Ok(Some(render(&ring, version, true)));
    }
    let t = state.now();
    ring.check_rotation(expected, t).map_err(|e| LogicalError::Conflict(e.to_string()))?;
    let lead = match data.is_set("prepublish").then(|| data.duration_secs("prepublish")).flatten() {
        Some(lead) if lead > ring.prepublish(t) => {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"prepublish\": {lead}s is longer than the keyring's prepublish ({}s); this field only \
                 shortens one rotation",
                ring.prepublish(t)
            )));
        }
        Some(lead) => lead,
        None => ring.prepublish(t),
    };
    let planned = t.saturating_add(i64::try_from(lead).unwrap_or(i64::MAX));
    let (number, material) = scheduler::publish(state, &mut ring, t, planned)?;
    ring.record(t, "publish", Cause::Manual, who(req), reason.to_string(), vec![number]);
    if let Some(key) = idempotency_key {
        ring.remember(key.to_string(), number, t);
    }
    coordinator::try_commit(state, req.storage.as_ref(), &config, &mut ring, t, Cause::Manual, who(req)).await?;
    coordinator::save(state, req.storage.as_ref(), &ring, vec![put_material(name, number, &material)?], &[]).await?;
    tracing::info!(keyring = name, version = number, actor = req.actor(), "manual rotation published");
    Ok(Some(render(&ring, number, false)))
}

fn render(ring: &lockstep_model::schedule::Keyring, number: u64, replayed: bool) -> Response {
    let version = ring.versions.iter().find(|v| v.number == number);
    let mut data = Map::new();
    data.insert("name".into(), json!(ring.name));
    data.insert("version".into(), json!(number));
    data.insert("kid".into(), json!(version.map(|v| v.kid.clone())));
    data.insert("planned_activation".into(), time_json(version.map(|v| v.planned_activation)));
    data.insert("committed".into(), json!(version.is_some_and(|v| v.is_committed())));
    data.insert("not_before".into(), time_json(version.and_then(|v| v.not_before)));
    data.insert("latest_version".into(), json!(ring.latest));
    data.insert("replayed".into(), json!(replayed));
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Rotate a keyring now: publish its next version.";
const HELP_DESCRIPTION: &str = "\
Publishes a new version at once. Pools can verify with it as soon as they \
fetch it; it becomes the signing version prepublish from now, but only once \
every live pool holds it (or the keyring's commit_timeout has passed). \
expected_version makes the rotation a compare-and-swap: if the latest version \
is not the expected one, nothing changes and the 409 answer names the latest. \
idempotency_key makes retries safe: the same key returns the same version \
(with replayed=true) and never rotates twice. prepublish shortens the lead of \
this one rotation (down to 0: activation as soon as every live pool holds the \
version, plus activation_margin). Only one version can wait for activation at \
a time.";
