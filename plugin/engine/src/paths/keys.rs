//! `keys/<name>`: keyrings — create with a type and policy, read their
//! versions, change their policy, list and delete them.

use std::sync::Arc;

use lockstep_model::rfc3339;
use lockstep_model::schedule::{Cause, Keyring};
use lockstep_model::version::{VersionState, version_state};
use lockstep_model::{KeyType, key_state};
use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{
    Field, FieldData, FieldType, Path, existence_check, handler, name_segment, stateful,
};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::{check_name, fit_policy, policy_fields, policy_json, storage_error, time_json, validate_fitted, who};
use crate::config::Config;
use crate::coordinator::{self, apply};
use crate::scheduler;
use crate::state::MountState;
use crate::storage::{
    self, Tombstone, Write, encode, keyring_key, load_keyring, material_key, put_material, require_keyring,
    tombstone_key,
};

/// `keys/` (list).
pub fn list_path() -> Path {
    Path::new("keys/?")
        .operation(
            Operation::List,
            "List keyrings.",
            handler(|req: Request, _| async move {
                let names = req.storage.list("keyring/").await.map_err(storage_error)?;
                Ok(Some(Response::list(names)))
            }),
        )
        .help("List the keyrings.", "Lists the names of all keyrings of this mount.")
}

/// `keys/<name>`.
pub fn path(state: Arc<MountState>) -> Path {
    let mut path = Path::new(format!("keys/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .field(
            Field::new(
                "type",
                FieldType::String,
                "Key type, fixed at creation: hmac-sha256 (JWT HS256), aes256-gcm, ed25519 (EdDSA), ecdsa-p256 \
                 (ES256) or rsa-2048 (RS256).",
            )
            .required(),
        )
        .field(Field::new(
            "deletion_allowed",
            FieldType::Bool,
            "Whether the keyring may be deleted. False by default, so that a mistaken delete cannot destroy keys \
             pools rely on.",
        ))
        .field(Field::new(
            "public_jwks",
            FieldType::Bool,
            "Whether anyone may read the public keys of the verification set, without a token, at jwks/<name> \
             (for verifiers outside the fleet). Asymmetric types only; false by default.",
        ));
    for field in policy_fields() {
        path = path.field(field);
    }
    path.operation(
        Operation::Read,
        "Read a keyring's policy and every live version with its times and state (never key material).",
        stateful(&state, |state, req, data| async move { read(&state, &req, &data).await }),
    )
    .operation_on_active_node(
        Operation::Create,
        "Create a keyring; its first version signs at once.",
        stateful(&state, |state, req, data| async move { create(&state, &req, &data).await }),
    )
    .operation_on_active_node(
        Operation::Update,
        "Change a keyring's policy or deletion_allowed; the type cannot change.",
        stateful(&state, |state, req, data| async move { update(&state, &req, &data).await }),
    )
    .operation_on_active_node(
        Operation::Delete,
        "Delete a keyring and destroy its material; only when deletion_allowed is set.",
        stateful(&state, |state, req, data| async move { delete(&state, &req, &data).await }),
    )
    .exists(existence_check(|req: Request, data: FieldData| async move {
        Ok(load_keyring(req.storage.as_ref(), name(&data)?).await?.is_some())
    }))
    .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

pub(crate) fn name(data: &FieldData) -> Result<&str, LogicalError> {
    let name = data.str("name").unwrap_or_default();
    check_name("name", name)?;
    Ok(name)
}

async fn read(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let Some(ring) = load_keyring(req.storage.as_ref(), name(data)?).await? else {
        return Ok(None);
    };
    Ok(Some(render(&ring, state.now())))
}

async fn create(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let type_name = data.str("type").unwrap_or_default();
    let key_type = KeyType::parse(type_name).ok_or_else(|| {
        let known: Vec<&str> = lockstep_model::keytype::ALL.iter().map(|t| t.as_str()).collect();
        LogicalError::InvalidRequest(format!(
            "field \"type\": {type_name:?} is not a key type; use one of {}",
            known.join(", ")
        ))
    })?;
    // Held until the keyring is stored: a config change waits, so it is
    // checked against this keyring (and this keyring against it).
    let _config_guard = state.config_lock().read().await;
    let config = Config::load(req.storage.as_ref()).await?;
    let (policy, derived) = fit_policy(&config.default_policy, data, &config.fleet());
    validate_fitted(&policy, &config.fleet(), &derived)?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    if load_keyring(req.storage.as_ref(), name).await?.is_some() {
        return Err(LogicalError::InvalidRequest(format!("keyring {name:?} already exists")));
    }
    let t = state.now();
    let mut ring = Keyring::new(name.into(), key_type, policy, data.bool("deletion_allowed").unwrap_or(false));
    ring.public_jwks = public_jwks(data, key_type)?.unwrap_or(false);
    // A keyring made again under a deleted one's name goes on from its
    // numbers: versions are never reused, and sidecars that still hold the
    // old one see a newer generation, not a rollback.
    let tombstone: Option<Tombstone> = storage::load(req.storage.as_ref(), &tombstone_key(name)).await?;
    if let Some(tombstone) = tombstone {
        ring.latest = tombstone.latest;
        ring.generation = tombstone.generation + 1;
    }
    ring.record(t, "create", Cause::Manual, who(req), format!("type {key_type}"), vec![]);
    let (number, material) = scheduler::publish(state, &mut ring, t, t)?;
    ring.record(t, "publish", Cause::Manual, who(req), "first version, active at once".into(), vec![number]);
    let mut writes = vec![put_material(name, number, &material)?, Write::Put(keyring_key(name), encode(&ring)?)];
    if tombstone.is_some() {
        writes.push(Write::Delete(tombstone_key(name)));
    }
    apply(state, req.storage.as_ref(), writes).await?;
    tracing::info!(keyring = name, key_type = %key_type, actor = req.actor(), "keyring created");
    let mut response = render(&ring, t);
    response.warnings.extend(derived);
    if !key_type.is_asymmetric() {
        let verify = coordinator::verify_pools_listing(state, req.storage.as_ref(), name).await?;
        if !verify.is_empty() {
            response.warnings.push(coordinator::symmetric_warning(name, &verify));
        }
    }
    Ok(Some(response))
}

async fn update(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let _config_guard = state.config_lock().read().await;
    let config = Config::load(req.storage.as_ref()).await?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let mut ring = require_keyring(req.storage.as_ref(), name).await?;
    if let Some(type_name) = data.is_set("type").then(|| data.str("type")).flatten()
        && type_name != ring.key_type.as_str()
    {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"type\": a keyring's type cannot change (it is {}); create a new keyring",
            ring.key_type
        )));
    }
    let before = ring.policy;
    let (policy, derived) = fit_policy(&ring.policy, data, &config.fleet());
    validate_fitted(&policy, &config.fleet(), &derived)?;
    let t = state.now();
    ring.set_policy(policy, t);
    if data.is_set("deletion_allowed") {
        ring.deletion_allowed = data.bool("deletion_allowed").unwrap_or(false);
    }
    if let Some(public) = public_jwks(data, ring.key_type)? {
        ring.public_jwks = public;
    }
    // The policy's timings are in every bundle that carries the keyring.
    if ring.policy != before {
        ring.generation += 1;
    }
    let detail = policy_change(&before, &ring, t);
    ring.record(t, "policy", Cause::Manual, who(req), detail, vec![]);
    coordinator::save(state, req.storage.as_ref(), &ring, Vec::new(), &[]).await?;
    let mut response = render(&ring, t);
    response.warnings.extend(derived);
    Ok(Some(response))
}

/// `public_jwks` as the request sets it; only asymmetric keys have
/// public halves to publish.
fn public_jwks(data: &FieldData, key_type: KeyType) -> Result<Option<bool>, LogicalError> {
    let Some(public) = data.is_set("public_jwks").then(|| data.bool("public_jwks").unwrap_or(false)) else {
        return Ok(None);
    };
    if public && !key_type.is_asymmetric() {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"public_jwks\": a {key_type} keyring has no public key to publish"
        )));
    }
    Ok(Some(public))
}

fn policy_change(before: &lockstep_model::Policy, ring: &Keyring, t: i64) -> String {
    let (mut old, mut new) = (Map::new(), Map::new());
    policy_json(before, &mut old);
    policy_json(&ring.policy, &mut new);
    let mut changes: Vec<String> =
        new.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, v)| format!("{k}: {} -> {v}", old[k])).collect();
    changes.push(format!("deletion_allowed: {}", ring.deletion_allowed));
    changes.push(format!("public_jwks: {}", ring.public_jwks));
    let longer = |h: &lockstep_model::schedule::Honoured| {
        h.until > t && (h.prepublish > ring.policy.prepublish || h.grace_period > ring.policy.grace_period)
    };
    if let Some(h) = ring.honoured.filter(longer) {
        changes.push(format!(
            "prepublish {}s and grace_period {}s still apply until {} (sidecars cut off before the change rely on them)",
            h.prepublish,
            h.grace_period,
            time_json(Some(h.until)).as_str().unwrap_or_default()
        ));
    }
    changes.join(", ")
}

async fn delete(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let Some(ring) = load_keyring(req.storage.as_ref(), name).await? else {
        return Ok(None);
    };
    if !ring.deletion_allowed {
        return Err(LogicalError::InvalidRequest(format!(
            "deletion is not allowed for keyring {name:?}; set deletion_allowed=true on it first"
        )));
    }
    // The tombstone and the record go first: material without a record is
    // an orphan that the scheduler removes, a record without material would
    // be a broken keyring.
    let tombstone = Tombstone { latest: ring.latest, generation: ring.generation };
    let mut writes = vec![Write::Put(tombstone_key(name), encode(&tombstone)?), Write::Delete(keyring_key(name))];
    writes.extend(ring.versions.iter().map(|v| Write::Delete(material_key(name, v.number))));
    apply(state, req.storage.as_ref(), writes).await?;
    tracing::info!(keyring = name, actor = req.actor(), "keyring deleted");
    Ok(None)
}

/// A keyring as the API shows it.
pub(crate) fn render(ring: &Keyring, t: i64) -> Response {
    let state = key_state(&ring.versions, t);
    let versions: Vec<Value> = ring
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.number,
                "kid": v.kid,
                "state": version_state(v, state.signing, t),
                "created_at": time_json(Some(v.created_at)),
                "planned_activation": time_json(Some(v.planned_activation)),
                "committed": v.is_committed(),
                "not_before": time_json(v.not_before),
                "not_after": time_json(v.not_after),
                "expires_at": time_json(v.expires_at),
                "emergency": v.emergency,
                "revoked": v.revoked.as_ref().map(|r| json!({"at": time_json(Some(r.at)), "reason": r.reason})),
            })
        })
        .collect();
    let mut data = Map::new();
    data.insert("name".into(), json!(ring.name));
    // Flat first, for the CLI's table format; the versions read best with
    // -format=json.
    data.insert("summary".into(), json!(summary(ring, state.signing, t)));
    data.insert("next_rotation".into(), time_json(next_rotation(ring, t)));
    data.insert("type".into(), json!(ring.key_type));
    data.insert("deletion_allowed".into(), json!(ring.deletion_allowed));
    data.insert("public_jwks".into(), json!(ring.public_jwks));
    data.insert("latest_version".into(), json!(ring.latest));
    data.insert("signing_version".into(), json!(state.signing));
    data.insert("pending_version".into(), json!(ring.pending().map(|p| p.number)));
    data.insert("generation".into(), json!(ring.generation));
    policy_json(&ring.policy, &mut data);
    data.insert("versions".into(), Value::Array(versions));
    Response::with_data(data)
}

/// What each live version does, in one line: `v2 signs; v3 scheduled to
/// sign at …; v1 verifies until …`.
fn summary(ring: &Keyring, signing: Option<u64>, t: i64) -> String {
    let mut parts = Vec::new();
    for v in ring.versions.iter().rev().filter(|v| v.verifies_at(t)) {
        let n = v.number;
        let part = match version_state(v, signing, t) {
            VersionState::Active => format!("v{n} signs"),
            VersionState::Scheduled => {
                format!("v{n} scheduled to sign at {}", rfc3339(v.not_before.unwrap_or(v.planned_activation)))
            }
            VersionState::Pending => format!(
                "v{n} pending (published, waits for every live pool; planned for {})",
                rfc3339(v.planned_activation)
            ),
            VersionState::Grace => match v.expires_at {
                Some(end) => format!("v{n} verifies until {}", rfc3339(end)),
                None => format!("v{n} verifies"),
            },
            VersionState::Expired | VersionState::Revoked => continue,
        };
        parts.push(part);
    }
    if parts.is_empty() { "no version verifies".into() } else { parts.join("; ") }
}

/// When the next version is planned to sign: the pending or scheduled
/// one's instant, else the signing version's start plus the rotation
/// period (the scheduler publishes prepublish before it).
pub(crate) fn next_rotation(ring: &Keyring, t: i64) -> Option<i64> {
    let upcoming = ring
        .versions
        .iter()
        .filter(|v| v.verifies_at(t) && !v.is_superseded() && v.not_before.is_none_or(|start| start > t))
        .max_by_key(|v| v.number);
    if let Some(v) = upcoming {
        return Some(v.not_before.unwrap_or(v.planned_activation));
    }
    ring.current()
        .and_then(|v| v.not_before)
        .map(|start| start.saturating_add(i64::try_from(ring.policy.rotation_period).unwrap_or(i64::MAX)))
}

const HELP_SYNOPSIS: &str = "Manage keyrings: versioned keys that rotate on a schedule.";
const HELP_DESCRIPTION: &str = "\
summary says in one line what each live version does and next_rotation \
when the next version is planned to sign (they read well in the CLI's table \
format; the versions read best with -format=json). Durations are read back \
in seconds, times in RFC 3339 (UTC). A keyring holds numbered versions of one key type. Each version is published \
to pools prepublish before it is planned to activate, becomes the signing key \
once every live pool holds it (or commit_timeout has passed), stops signing when \
the next version activates, and stays valid for verification for grace_period \
after that; then its material is destroyed. Reading a keyring shows every live \
version with its state (pending, active, grace, expired, revoked) and times, \
never key material. The type cannot change. Delete requires deletion_allowed. \
Policy fields left out of a write come from the mount's default policy (on \
create) or the keyring's current one (on update) when they fit the fields \
given; a field that would not fit is derived from them instead, and the \
answer's warnings say which and why (docs/key-lifecycle.md). Fields given are \
checked as they are.";
