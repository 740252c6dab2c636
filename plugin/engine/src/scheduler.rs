//! Scheduled rotation, driven by the host's periodic call. The server makes
//! that call on its active node only, so one scheduler decides for the
//! whole fleet.
//!
//! Each run, per keyring and under the keyring's lock: destroy the material
//! of versions that expired, publish the next version when it is due
//! (`prepublish` before its planned activation; once after downtime, never
//! a burst; never in a mount's first two poll intervals), and commit a published version once every live pool holds it
//! or its commit timeout has passed (the decision is the coordinator's).
//! One keyring's failure never stops the others; the next run retries.

use lockstep_model::schedule::{ACTIVATE, Cause, FLEET_NUMBERING_BOUND, Keyring};
use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::Storage;

use crate::config::Config;
use crate::coordinator::{self, SCHEDULER};
use crate::keygen::{self, Material};
use crate::state::MountState;
use crate::storage::{self, keyring_key, put_material, storage_error};

fn internal(error: keygen::KeygenError) -> LogicalError {
    LogicalError::Internal(error.to_string())
}

/// Numbering goes on past what the fleet reported that this coordinator
/// did not issue, up to [`FLEET_NUMBERING_BOUND`] past the latest number:
/// no number names two versions after a restore, and no report moves the
/// numbering further (an operator's `renumber` does).
fn past_the_fleet(state: &MountState, ring: &mut Keyring) {
    let ceiling = ring.latest.saturating_add(FLEET_NUMBERING_BOUND);
    if let Some(number) = state.with_fleet(|fleet| fleet.highest_ahead(&ring.name, ceiling)) {
        ring.continue_numbering_past(number);
    }
}

/// Publishes a new version with fresh material; returns its number and
/// material (the caller writes the material before the keyring).
pub fn publish(state: &MountState, ring: &mut Keyring, t: i64, planned: i64) -> Result<(u64, Material), LogicalError> {
    past_the_fleet(state, ring);
    let material = keygen::generate(ring.key_type).map_err(internal)?;
    let kid = format!("{}-v{}-{}", ring.name, ring.latest + 1, keygen::random_hex(4).map_err(internal)?);
    Ok((ring.publish(kid, t, planned), material))
}

/// Publishes and commits a version that signs at once.
pub fn emergency(state: &MountState, ring: &mut Keyring, t: i64) -> Result<(u64, Material), LogicalError> {
    past_the_fleet(state, ring);
    let material = keygen::generate(ring.key_type).map_err(internal)?;
    let kid = format!("{}-v{}-{}", ring.name, ring.latest + 1, keygen::random_hex(4).map_err(internal)?);
    Ok((ring.emergency_version(kid, t), material))
}

/// One periodic run over every keyring.
pub async fn run(state: &MountState, storage: &dyn Storage) -> Result<(), LogicalError> {
    // A standby serving reads plans nothing: its storage takes no writes,
    // and the active node's scheduler does the work once.
    if state.is_standby().await {
        tracing::debug!("standby: the active node's scheduler plans rotations");
        return Ok(());
    }
    let config = Config::load(storage).await?;
    let keyrings = storage.list("keyring/").await.map_err(storage_error)?;
    for name in &keyrings {
        if let Err(error) = run_keyring(state, storage, &config, name).await {
            tracing::error!(keyring = %name, %error, "scheduled work failed; retrying at the next periodic call");
        }
    }
    for entry in storage.list("material/").await.map_err(storage_error)? {
        let name = entry.trim_end_matches('/');
        if !keyrings.iter().any(|k| k == name)
            && let Err(error) = sweep_orphaned(state, storage, name).await
        {
            tracing::error!(keyring = %name, %error, "removing orphaned material failed; retrying at the next periodic call");
        }
    }
    let t = state.now();
    coordinator::forget_stale(state, storage, &config, t).await
}

/// The scheduler's work on one keyring.
pub async fn run_keyring(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    name: &str,
) -> Result<(), LogicalError> {
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let Some(mut ring) = storage::load_keyring(storage, name).await? else {
        return Ok(());
    };
    let t = state.now();
    let generation = ring.generation;
    let recorded = ring.history_seq;
    // A version's activation is an instant every pool acts on by its own
    // clock, with no write: the history says so at the next run.
    if let Some(v) = ring.unrecorded_activation(t) {
        let (number, kid, at) = (v.number, v.kid.clone(), v.not_before.unwrap_or(t));
        let detail = format!("version {number} (kid {kid}) signs from {}", lockstep_model::rfc3339(at));
        ring.record(at, ACTIVATE, Cause::Scheduled, SCHEDULER, detail, vec![number]);
    }
    let destroyed = ring.expire(t);
    if !destroyed.is_empty() {
        ring.record(t, "expire", Cause::Scheduled, SCHEDULER, "material destroyed".into(), destroyed.clone());
    }
    let mut writes = Vec::new();
    if let Some(planned) = ring.due_publication(t).filter(|_| settled(state, config, t)) {
        let (number, material) = publish(state, &mut ring, t, planned)?;
        ring.record(t, "publish", Cause::Scheduled, SCHEDULER, "rotation due".into(), vec![number]);
        writes.push(put_material(name, number, &material)?);
    }
    coordinator::try_commit(state, storage, config, &mut ring, t, Cause::Scheduled, SCHEDULER.into()).await?;
    if ring.generation != generation || ring.history_seq != recorded {
        coordinator::save(state, storage, &ring, writes, &destroyed).await?;
    }
    let orphans = storage::repair(storage, &ring).await?;
    if !orphans.is_empty() {
        tracing::warn!(keyring = name, versions = ?orphans, "removed material left by an interrupted change");
    }
    Ok(())
}

/// Whether this coordinator has been up long enough to publish on
/// schedule: two poll intervals, in which every live sidecar has polled and
/// said what it holds. A mount starts afresh after a failover, a restart,
/// a plugin reload and a storage restore; after a restore, the sidecars'
/// polls tell it of the versions its copy forgot (`fleet-ahead`) before it
/// numbers a new one, so no number is issued twice. A rotation that waits
/// here waits at most that long; an operator's rotation does not wait.
fn settled(state: &MountState, config: &Config, t: i64) -> bool {
    let settle = i64::try_from(config.poll_interval.saturating_mul(2)).unwrap_or(i64::MAX);
    t >= state.started().saturating_add(settle)
}

/// Destroys the material of a keyring that has no record (a delete or a
/// create interrupted on a host without transactions). Under the keyring's
/// lock, and only if the record is still missing, so a create in progress
/// is never touched.
async fn sweep_orphaned(state: &MountState, storage: &dyn Storage, name: &str) -> Result<(), LogicalError> {
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    if storage.get(&keyring_key(name)).await.map_err(storage_error)?.is_some() {
        return Ok(());
    }
    let prefix = format!("material/{name}/");
    let entries = storage.list(&prefix).await.map_err(storage_error)?;
    let writes = entries.iter().map(|entry| storage::Write::Delete(format!("{prefix}{entry}"))).collect();
    coordinator::apply(state, storage, writes).await?;
    tracing::warn!(keyring = name, versions = ?entries, "removed material of a keyring that has no record");
    Ok(())
}
