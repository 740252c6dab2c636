//! `bundle/<pool>`: what a pool's sidecars fetch. The call is also the
//! sidecar's acknowledgement of what it holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lockstep_model::KeyType;
use lockstep_model::bundle::{Bundle, BundleKeyring, BundleVersion, PoolMode, revision};
use lockstep_model::schedule::{Cause, Keyring};
use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};
use vault_plugin_sdk::storage::Storage;

use super::check_name;
use super::pools::{self, Pool};
use crate::config::Config;
use crate::state::MountState;
use crate::storage::{load_keyring, load_material};
use crate::{acks, scheduler};

/// The longest a bundle read may wait for a change; well below the
/// server's default request timeout (90 s).
pub const MAX_WAIT: u64 = 60;
/// Most `held` entries a sidecar may report.
const MAX_HELD: usize = 64;

/// The `bundle/<pool>` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("bundle/{}", name_segment("pool")))
        .field(Field::new("pool", FieldType::String, "The pool whose bundle to fetch."))
        .field(Field::new(
            "instance",
            FieldType::String,
            "The calling sidecar's instance id (for example its pod name).",
        ))
        .field(Field::new(
            "revision",
            FieldType::String,
            "The revision the caller holds; unchanged means \"not modified\".",
        ))
        .field(Field::new(
            "held",
            FieldType::CommaStringSlice,
            "What the caller holds, as keyring:version entries (the highest version per keyring). This is its \
             acknowledgement: a version activates only once every live pool holds it.",
        ))
        .field(Field::new(
            "wait",
            FieldType::DurationSeconds,
            "When revision is current, wait up to this long (at most 60s) for a change before answering \"not \
             modified\".",
        ))
        .operation(
            Operation::Read,
            "Fetch the pool's bundle, or \"not modified\" for a current revision; records the acknowledgement.",
            stateful(&state, |state, req, data| async move { read(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let pool_name = data.str("pool").unwrap_or_default();
    check_name("pool", pool_name)?;
    let instance = data.str("instance").unwrap_or_default();
    check_name("instance", instance)?;
    let wait = data.duration_secs("wait").unwrap_or(0);
    if wait > MAX_WAIT {
        return Err(LogicalError::InvalidRequest(format!("field \"wait\": at most {MAX_WAIT}s")));
    }
    let held = data.strings("held").unwrap_or_default();
    if held.len() > MAX_HELD {
        return Err(LogicalError::InvalidRequest(format!("field \"held\": at most {MAX_HELD} entries")));
    }
    let held = acks::parse_held(&held)?;
    let storage = req.storage.as_ref();
    let pool = pools::load(storage, pool_name)
        .await?
        .ok_or_else(|| LogicalError::NotFound(format!("pool {pool_name:?} not found")))?;
    let config = Config::load(storage).await?;
    let t = state.now();
    if acks::record(state, storage, pool_name, instance, held.clone(), t).await? {
        commit_if_acknowledged(state, storage, &config, &pool, &held).await;
    }
    let known = data.str("revision").unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Subscribe before looking, so a change made while building the
        // answer still wakes the wait below.
        let mut changes = state.subscribe();
        let t = state.now();
        let (mode, keyrings) = metadata(storage, &pool, t).await?;
        let current = revision(mode, &keyrings);
        if current != known {
            let bundle = locked_bundle(state, storage, &pool, pool_name, t).await?;
            return Ok(Some(render(&bundle)));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Changes made through another node reach this one as storage
        // invalidations, so the wait also wakes every second to look.
        let nap = remaining.min(Duration::from_secs(1));
        if nap.is_zero() || tokio::time::timeout(nap, changes.changed()).await.is_ok_and(|r| r.is_err()) {
            return Ok(Some(not_modified(pool_name, &current, t)));
        }
    }
}

/// A sidecar's new acknowledgement may complete the set a pending version
/// waits for: commit it now rather than at the next periodic call.
async fn commit_if_acknowledged(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    pool: &Pool,
    held: &BTreeMap<String, u64>,
) {
    for name in pool.keyrings.iter().filter(|k| held.contains_key(*k)) {
        let lock = state.keyring_lock(name);
        let _guard = lock.lock().await;
        let result = async {
            let Some(mut ring) = load_keyring(storage, name).await? else {
                return Ok(());
            };
            let generation = ring.generation;
            scheduler::try_commit(state, storage, config, &mut ring, state.now(), Cause::Scheduled, "scheduler")
                .await?;
            if ring.generation != generation {
                scheduler::save(storage, &ring, Vec::new(), &[]).await?;
                state.changed();
            }
            Ok::<(), LogicalError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(keyring = %name, %error, "commit after acknowledgement failed; the scheduler retries");
        }
    }
}

/// The bundle without material: enough to compute its revision.
async fn metadata(
    storage: &dyn Storage,
    pool: &Pool,
    t: i64,
) -> Result<(PoolMode, BTreeMap<String, BundleKeyring>), LogicalError> {
    let mut keyrings = BTreeMap::new();
    for name in &pool.keyrings {
        // A pool may name keyrings that do not exist yet.
        if let Some(ring) = load_keyring(storage, name).await? {
            keyrings.insert(name.clone(), bundle_keyring(&ring, t));
        }
    }
    Ok((pool.mode.bundle_mode(), keyrings))
}

/// The bundle with material. Each keyring is read under its lock, so its
/// metadata and material come from one state, never from both sides of a
/// rotation or revocation.
async fn locked_bundle(
    state: &MountState,
    storage: &dyn Storage,
    pool: &Pool,
    pool_name: &str,
    t: i64,
) -> Result<Bundle, LogicalError> {
    let mode = pool.mode.bundle_mode();
    let mut keyrings = BTreeMap::new();
    for name in &pool.keyrings {
        let lock = state.keyring_lock(name);
        let _guard = lock.lock().await;
        let Some(ring) = load_keyring(storage, name).await? else {
            continue;
        };
        let mut keyring = bundle_keyring(&ring, t);
        for version in &mut keyring.versions {
            let material = load_material(storage, name, version.meta.number).await?.ok_or_else(|| {
                LogicalError::Internal(format!("material of {name} version {} is missing", version.meta.number))
            })?;
            if private_allowed(mode, keyring.key_type) {
                version.private_key = Some(material.private_key);
            }
            version.public_key = material.public_key;
        }
        keyrings.insert(name.clone(), keyring);
    }
    let revision = revision(mode, &keyrings);
    Ok(Bundle { pool: pool_name.to_string(), mode, revision, server_time: t, keyrings })
}

/// What pools receive of a keyring at `t`, without material.
fn bundle_keyring(ring: &Keyring, t: i64) -> BundleKeyring {
    let versions = ring
        .versions
        .iter()
        .filter(|v| v.verifies_at(t) && !v.destroyed)
        .map(|v| BundleVersion { meta: v.clone(), private_key: None, public_key: None })
        .collect();
    BundleKeyring { key_type: ring.key_type, generation: ring.generation, versions }
}

fn private_allowed(mode: PoolMode, key_type: KeyType) -> bool {
    mode == PoolMode::Sign || !key_type.is_asymmetric()
}

fn render(bundle: &Bundle) -> Response {
    let mut data = match serde_json::to_value(bundle) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    data.insert("not_modified".into(), json!(false));
    Response::with_data(data)
}

fn not_modified(pool: &str, revision: &str, t: i64) -> Response {
    let mut data = Map::new();
    data.insert("pool".into(), json!(pool));
    data.insert("revision".into(), json!(revision));
    data.insert("server_time".into(), json!(t));
    data.insert("not_modified".into(), json!(true));
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Fetch a pool's key bundle (what its sidecars serve).";
const HELP_DESCRIPTION: &str = "\
For each keyring the pool may fetch: every version that still verifies, with \
its times and material (private keys only for pools in sign mode; verify-only \
pools get public keys of asymmetric keyrings, and the secret of HMAC/AES \
keyrings, which cannot be split). The revision changes whenever the content \
changes; called with the current revision, the answer is \"not modified\" \
without material, and with wait it returns as soon as something changes. \
server_time lets sidecars detect clock skew. The call records what the \
sidecar instance holds (held) and when it was seen: versions activate only \
once every live pool holds them. Sidecars need only read access to their own \
pool's bundle.";
