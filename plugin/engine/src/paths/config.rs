//! `config`: mount-wide fleet timings and the default keyring policy.

use std::sync::Arc;

use serde_json::{Map, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, handler, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::{fit_policy, invalid, policy_fields, policy_json, storage_error};
use crate::config::{Config, KEY};
use crate::coordinator::apply;
use crate::state::MountState;
use crate::storage::{Write, encode, load_keyring};

/// The `config` path.
pub fn path(state: Arc<MountState>) -> Path {
    let mut path = Path::new("config")
        .field(Field::new(
            "poll_interval",
            FieldType::DurationSeconds,
            "The longest interval at which sidecars poll their bundle.",
        ))
        .field(Field::new(
            "max_clock_skew",
            FieldType::DurationSeconds,
            "The largest clock difference tolerated between pools.",
        ))
        .field(Field::new(
            "liveness_window",
            FieldType::DurationSeconds,
            "A sidecar instance seen within this window is live; every live pool must hold a version before it \
             activates. At least twice poll_interval.",
        ))
        .field(Field::new(
            "activation_margin",
            FieldType::DurationSeconds,
            "A committed version activates no sooner than this after its commit.",
        ))
        .field(Field::new(
            "max_instances_per_pool",
            FieldType::Int,
            "The most sidecar instances one pool may have (default 10000). A poll from a new instance beyond it \
             is refused; status warns when a pool nears it. Instances unseen for twice liveness_window are \
             forgotten and free their place.",
        ))
        .field(Field::new(
            "history_entries",
            FieldType::Int,
            "How many history entries each keyring keeps (default 256, 32 to 2000), oldest dropped first; reports \
             of versions the coordinator did not issue are coalesced and kept apart, so they never push these out.",
        ));
    for field in policy_fields() {
        path = path.field(field);
    }
    path.operation(
        Operation::Read,
        "Read the mount's settings.",
        handler(|req: Request, _| async move { read(&req).await }),
    )
    .operation_on_active_node(
        Operation::Update,
        "Change the mount's settings; fields not named keep their value.",
        stateful(&state, |state, req, data| async move { write(&state, &req, &data).await }),
    )
    .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(req: &Request) -> Result<Option<Response>, LogicalError> {
    Ok(Some(render(&Config::load(req.storage.as_ref()).await?)))
}

async fn write(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    // No keyring is created or changed while the new timings are checked
    // against every keyring and stored.
    let _config_guard = state.config_lock().write().await;
    let mut config = Config::load(req.storage.as_ref()).await?;
    let fleet: [(&str, &mut u64); 4] = [
        ("poll_interval", &mut config.poll_interval),
        ("max_clock_skew", &mut config.max_clock_skew),
        ("liveness_window", &mut config.liveness_window),
        ("activation_margin", &mut config.activation_margin),
    ];
    for (name, slot) in fleet {
        if let Some(value) = data.is_set(name).then(|| data.duration_secs(name)).flatten() {
            *slot = value;
        }
    }
    if let Some(most) = data.is_set("max_instances_per_pool").then(|| data.int("max_instances_per_pool")).flatten() {
        config.max_instances_per_pool = u64::try_from(most).unwrap_or(0);
    }
    if let Some(kept) = data.is_set("history_entries").then(|| data.int("history_entries")).flatten() {
        config.history_entries = u64::try_from(kept).unwrap_or(0);
    }
    // Default-policy fields are fitted only when the request sets one: new
    // fleet timings alone never change the default policy behind the
    // operator's back; they are refused if it no longer fits.
    let mut derived = Vec::new();
    if policy_fields().iter().any(|field| data.is_set(field.name)) {
        (config.default_policy, derived) = fit_policy(&config.default_policy, data, &config.fleet());
    }
    config.validate().map_err(invalid)?;
    // New fleet timings must still fit every existing keyring's policy (a
    // longer poll interval needs a longer grace period, say).
    let storage = req.storage.as_ref();
    for name in storage.list("keyring/").await.map_err(storage_error)? {
        if let Some(ring) = load_keyring(storage, &name).await? {
            ring.policy
                .validate(&config.fleet())
                .map_err(|e| LogicalError::InvalidRequest(format!("keyring {name:?} would no longer be valid: {e}")))?;
        }
    }
    apply(state, req.storage.as_ref(), vec![Write::Put(KEY.into(), encode(&config)?)]).await?;
    tracing::info!(actor = req.actor(), "mount config updated");
    let mut response = render(&config);
    response.warnings.extend(derived);
    Ok(Some(response))
}

fn render(config: &Config) -> Response {
    let mut data = Map::new();
    data.insert("poll_interval".into(), json!(config.poll_interval));
    data.insert("max_clock_skew".into(), json!(config.max_clock_skew));
    data.insert("liveness_window".into(), json!(config.liveness_window));
    data.insert("activation_margin".into(), json!(config.activation_margin));
    data.insert("max_instances_per_pool".into(), json!(config.max_instances_per_pool));
    data.insert("history_entries".into(), json!(config.history_entries));
    policy_json(&config.default_policy, &mut data);
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Mount-wide fleet timings and the default keyring policy.";
const HELP_DESCRIPTION: &str = "\
Fleet timings describe the sidecars: how often they poll, how far their clocks \
may drift, and how long an instance counts as live after its last poll. Every \
keyring's grace period must cover its max_token_ttl plus poll_interval plus \
max_clock_skew, so that a token signed just before a switch still verifies \
everywhere; new timings that an existing keyring's policy no longer covers \
are refused, naming the keyring and the field. The policy fields set the defaults for keyrings created later; \
existing keyrings keep theirs. Durations accept seconds or strings like 90s, \
15m, 2h, 7d, and are read back in whole seconds.";
