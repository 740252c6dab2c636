//! The coordinator: the one place that decides whether a pending version
//! commits, the fleet's acknowledgements, and the reads of the hot path
//! (a sidecar's poll) through the cache. Paths and the scheduler call it;
//! it calls the cache, the fleet, storage and the model, never a path.
//!
//! Every write of the engine goes through [`apply`], which drops what the
//! written keys feed from the cache and wakes the long-polls concerned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lockstep_model::KeyType;
use lockstep_model::bundle::{BundleKeyring, BundleVersion, FORMAT, Limits, PoolMode, revision};
use lockstep_model::schedule::{Actor, Cause, FLEET_NUMBERING_BOUND, Keyring};
use serde_json::json;
use vault_plugin_sdk::logical::{EncodedData, LogicalError, Response};
use vault_plugin_sdk::storage::Storage;
use zeroize::Zeroizing;

use crate::acks::{self, Ack, Caller, Liveness, PoolView, Reported};
use crate::cache::{Answer, CachedRing};
use crate::config::Config;
use crate::pool::{self, Pool};
use crate::state::{FleetLoad, MountState};
use crate::storage::{self, Write, encode, keyring_key, load_keyring, load_material, material_key, storage_error};

/// Who commits when a commit follows an acknowledgement or the schedule.
pub const SCHEDULER: &str = "scheduler";

/// Applies writes (in one transaction where the host has them), then
/// drops what they feed from the cache, whether or not they all landed.
pub async fn apply(state: &MountState, storage: &dyn Storage, writes: Vec<Write>) -> Result<(), LogicalError> {
    let keys: Vec<String> = writes.iter().map(|w| w.key().to_string()).collect();
    let result = storage::apply(storage, writes).await;
    for key in &keys {
        state.written(key);
    }
    result
}

/// Stores a changed keyring: new material first, then the record (its
/// history trimmed to the mount's `history_entries`), then the deletion of
/// destroyed material.
pub async fn save(
    state: &MountState,
    storage: &dyn Storage,
    ring: &Keyring,
    new_material: Vec<Write>,
    destroyed: &[u64],
) -> Result<(), LogicalError> {
    let mut writes = new_material;
    writes.push(ring_write(state, storage, ring).await?);
    writes.extend(destroyed.iter().map(|n| Write::Delete(material_key(&ring.name, *n))));
    apply(state, storage, writes).await
}

/// The write that stores `ring`, its history trimmed to the mount's
/// `history_entries`.
pub async fn ring_write(state: &MountState, storage: &dyn Storage, ring: &Keyring) -> Result<Write, LogicalError> {
    let kept = config(state, storage).await?.history_kept();
    let record = if ring.history_beyond(kept) {
        let mut trimmed = ring.clone();
        trimmed.keep_history(kept);
        encode(&trimmed)?
    } else {
        encode(ring)?
    };
    Ok(Write::Put(keyring_key(&ring.name), record))
}

/// The mount's config, from the cache.
pub async fn config(state: &MountState, storage: &dyn Storage) -> Result<Config, LogicalError> {
    if let Some(config) = state.cache.config() {
        return Ok(config);
    }
    let epoch = state.cache.epoch();
    let config = Config::load(storage).await?;
    state.cache.offer_config(epoch, config);
    Ok(config)
}

/// A pool record, from the cache.
pub async fn pool(state: &MountState, storage: &dyn Storage, name: &str) -> Result<Option<Arc<Pool>>, LogicalError> {
    if let Some(pool) = state.cache.pool(name) {
        return Ok(pool);
    }
    let epoch = state.cache.epoch();
    let pool = pool::load(storage, name).await?.map(Arc::new);
    state.cache.offer_pool(epoch, name, pool.clone());
    Ok(pool)
}

/// Every pool that lists `keyring`.
pub async fn pools_listing(
    state: &MountState,
    storage: &dyn Storage,
    keyring: &str,
) -> Result<BTreeSet<String>, LogicalError> {
    let names = match state.cache.pool_names() {
        Some(names) => names,
        None => {
            let epoch = state.cache.epoch();
            let names = storage.list(pool::PREFIX).await.map_err(storage_error)?;
            state.cache.offer_pool_names(epoch, names.clone());
            Arc::new(names)
        }
    };
    let mut listing = BTreeSet::new();
    for name in names.iter() {
        if pool(state, storage, name).await?.is_some_and(|p| p.has(keyring)) {
            listing.insert(name.clone());
        }
    }
    Ok(listing)
}

/// Verify-only pools that list `keyring`: if it is symmetric, they hold
/// the secret that signs.
pub async fn verify_pools_listing(
    state: &MountState,
    storage: &dyn Storage,
    keyring: &str,
) -> Result<Vec<String>, LogicalError> {
    let mut verify = Vec::new();
    for name in pools_listing(state, storage, keyring).await? {
        if pool(state, storage, &name).await?.is_some_and(|p| p.mode == crate::pool::Mode::Verify) {
            verify.push(name);
        }
    }
    Ok(verify)
}

/// What to tell the operator when a symmetric keyring reaches verify-only
/// pools.
pub fn symmetric_warning(keyring: &str, pools: &[String]) -> String {
    format!(
        "keyring {keyring:?} is symmetric and verify-only pools list it ({}): they must hold its secret to \
         verify, and with it anyone there could sign; sidecars of those pools refuse to sign, but use an \
         asymmetric keyring where a pool must not be able to sign",
        pools.join(", ")
    )
}

/// A keyring with its material, from the cache.
pub async fn cached_ring(
    state: &MountState,
    storage: &dyn Storage,
    name: &str,
) -> Result<Option<Arc<CachedRing>>, LogicalError> {
    ring(state, storage, name).await
}

/// A keyring with its material, from the cache; read under the keyring's
/// lock, so record and material come from one state.
async fn ring(state: &MountState, storage: &dyn Storage, name: &str) -> Result<Option<Arc<CachedRing>>, LogicalError> {
    if let Some(ring) = state.cache.ring(name) {
        return Ok(ring);
    }
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    if let Some(ring) = state.cache.ring(name) {
        return Ok(ring);
    }
    let epoch = state.cache.epoch();
    let Some(ring) = load_keyring(storage, name).await? else {
        state.cache.offer_ring(epoch, name, None);
        return Ok(None);
    };
    let mut material = BTreeMap::new();
    for version in ring.versions.iter().filter(|v| !v.destroyed) {
        if let Some(m) = load_material(storage, name, version.number).await? {
            material.insert(version.number, m);
        }
    }
    let cached = Some(Arc::new(CachedRing { ring, material }));
    state.cache.offer_ring(epoch, name, cached.clone());
    Ok(cached)
}

/// A pool's answer at `t`, built once per change; `None` when the pool
/// does not exist.
pub async fn answer(
    state: &MountState,
    storage: &dyn Storage,
    name: &str,
    t: i64,
) -> Result<Option<Arc<Answer>>, LogicalError> {
    // An answer is dropped with its pool's record, so one at hand means
    // the pool exists.
    if let Some(answer) = state.cache.answer(name, t) {
        return Ok(Some(answer));
    }
    let lock = state.build_lock(name);
    let _guard = lock.lock().await;
    let epoch = state.cache.epoch();
    let Some(pool) = pool(state, storage, name).await? else {
        return Ok(None);
    };
    if let Some(answer) = state.cache.answer(name, t) {
        return Ok(Some(answer));
    }
    let answer = Arc::new(build(state, storage, &pool, t).await?);
    state.cache.offer_answer(epoch, name, answer.clone());
    Ok(Some(answer))
}

async fn build(state: &MountState, storage: &dyn Storage, pool: &Pool, t: i64) -> Result<Answer, LogicalError> {
    let mode = pool.mode.bundle_mode();
    let mut keyrings = BTreeMap::new();
    let mut valid_until: Option<i64> = None;
    for name in &pool.keyrings {
        // A pool may name keyrings that do not exist yet.
        let Some(cached) = ring(state, storage, name).await? else {
            continue;
        };
        let mut keyring = bundle_keyring(&cached.ring, t);
        for version in &mut keyring.versions {
            let number = version.meta.number;
            let material = cached
                .material
                .get(&number)
                .ok_or_else(|| LogicalError::Internal(format!("material of {name} version {number} is missing")))?;
            if private_allowed(mode, keyring.key_type) {
                version.private_key = Some(material.private_key.clone());
            }
            version.public_key.clone_from(&material.public_key);
            if let Some(end) = version.meta.expires_at {
                valid_until = Some(valid_until.map_or(end, |u| u.min(end)));
            }
        }
        keyrings.insert(name.clone(), keyring);
    }
    let revision = revision(mode, &keyrings);
    // Sized up front from the material it will hold (base64 takes 4 bytes
    // for 3), so the text holding it is never copied around, leaving a
    // freed copy behind, while it grows.
    let material: usize = keyrings
        .values()
        .flat_map(|k| &k.versions)
        .map(|v| {
            v.private_key.as_ref().map_or(0, |k| k.len().div_ceil(3) * 4) + v.public_key.as_ref().map_or(0, String::len)
        })
        .sum();
    let versions: usize = keyrings.values().map(|k| k.versions.len()).sum();
    let capacity = 1024 + 1024 * keyrings.len() + 1024 * versions + material;
    let mut text = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *text, &keyrings)
        .map_err(|e| LogicalError::Internal(format!("encoding a bundle: {:?} error", e.classify())))?;
    debug_assert!(text.capacity() == capacity, "a bundle's text outgrew its {capacity} bytes");
    let keyrings = Zeroizing::new(String::from_utf8(std::mem::take(&mut *text)).unwrap_or_default());
    Ok(Answer { revision, mode, keyrings, valid_until })
}

/// What pools receive of a keyring at `t`, without material.
fn bundle_keyring(ring: &Keyring, t: i64) -> BundleKeyring {
    let versions = ring
        .versions
        .iter()
        .filter(|v| v.verifies_at(t) && !v.destroyed)
        .map(|v| BundleVersion { meta: v.clone(), private_key: None, public_key: None })
        .collect();
    let policy = &ring.policy;
    let limits = Limits {
        max_token_ttl: policy.max_token_ttl,
        prepublish: policy.prepublish,
        grace_period: policy.grace_period,
    };
    let revoked_list = ring.versions.iter().filter(|v| v.revoked.is_some());
    let revoked = revoked_list.clone().map(|v| v.kid.clone()).collect();
    let revoked_versions = revoked_list.map(|v| v.number).collect();
    BundleKeyring {
        key_type: ring.key_type,
        generation: ring.generation,
        versions,
        limits: Some(limits),
        revoked: Some(revoked),
        revoked_versions: Some(revoked_versions),
    }
}

fn private_allowed(mode: PoolMode, key_type: KeyType) -> bool {
    mode == PoolMode::Sign || !key_type.is_asymmetric()
}

/// The full answer of a bundle read, as the `Bundle` the sidecar decodes.
pub fn render(answer: &Answer, pool: &str, t: i64) -> Response {
    let text = format!(
        r#"{{"format":{FORMAT},"pool":{},"mode":{},"revision":{},"server_time":{t},"keyrings":{},"not_modified":false}}"#,
        json!(pool),
        json!(answer.mode),
        json!(answer.revision),
        answer.keyrings.as_str()
    );
    Response::encoded(EncodedData::trusted(text))
}

/// Reads the fleet's records from storage where memory lacks them: all of
/// them once per mount start, and those another node changed.
pub async fn ensure_fleet(state: &MountState, storage: &dyn Storage) -> Result<(), LogicalError> {
    if state.fleet_load() == FleetLoad::Ready {
        return Ok(());
    }
    let _guard = state.fleet_loading().lock().await;
    match state.fleet_load() {
        FleetLoad::Ready => Ok(()),
        FleetLoad::All => {
            let mut keys = Vec::new();
            for pool in storage.list("acks/").await.map_err(storage_error)? {
                let pool = pool.trim_end_matches('/').to_string();
                for instance in storage.list(&format!("acks/{pool}/")).await.map_err(storage_error)? {
                    keys.push(acks::key(&pool, &instance));
                }
            }
            read_records(state, storage, &keys).await?;
            state.fleet_loaded(true, &[]);
            Ok(())
        }
        FleetLoad::Records(keys) => {
            read_records(state, storage, &keys).await?;
            state.fleet_loaded(false, &keys);
            Ok(())
        }
    }
}

async fn read_records(state: &MountState, storage: &dyn Storage, keys: &[String]) -> Result<(), LogicalError> {
    for key in keys {
        let Some((pool, instance)) = key.strip_prefix("acks/").and_then(|rest| rest.split_once('/')) else {
            continue;
        };
        let ack: Option<Ack> = storage::load(storage, key).await?;
        let started = state.started();
        state.with_fleet(|fleet| match ack {
            Some(ack) => fleet.load(pool, instance, ack, started),
            None => fleet.remove(pool, instance),
        });
    }
    Ok(())
}

/// How far past a keyring's latest version a version the fleet holds may
/// be; a claim beyond it is not a restore but a wrong or hostile caller.
const MAX_AHEAD: u64 = 10_000;

/// How many generations one version's life takes at most (published,
/// committed, activated early, expired, revoked, with room): with
/// [`MAX_AHEAD`], how far past a keyring's generation the fleet's may be.
const GENERATIONS_PER_VERSION: u64 = 10;

/// A version a sidecar holds that this coordinator did not issue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Foreign {
    keyring: String,
    number: u64,
    kid: String,
    generation: u64,
}

/// What the poll's `held` counts for: versions this coordinator issued,
/// named by their kid (or, from older sidecars, by number alone). A number
/// with a kid it did not issue, or with a kid under a number it has no
/// version for, is foreign: it counts for nothing. A number
/// past the latest without a kid names nothing and is refused. Keyrings the
/// pool no longer lists are left out.
async fn check_held(
    state: &MountState,
    storage: &dyn Storage,
    pool: &Pool,
    reported: BTreeMap<String, Reported>,
) -> Result<(BTreeMap<String, u64>, Vec<Foreign>), LogicalError> {
    let (mut held, mut foreign) = (BTreeMap::new(), Vec::new());
    for (name, report) in reported {
        if !pool.has(&name) {
            continue;
        }
        let Some(cached) = ring(state, storage, &name).await? else {
            continue;
        };
        let ring = &cached.ring;
        let ours = ring.versions.iter().find(|v| v.number == report.number);
        let beyond = report.number > ring.latest;
        if beyond && report.number - ring.latest > MAX_AHEAD {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"held\": keyring {name:?} has no version {} (its latest is {})",
                report.number, ring.latest
            )));
        }
        let generation = report.generation.unwrap_or(0);
        if generation > ring.generation.saturating_add(MAX_AHEAD.saturating_mul(GENERATIONS_PER_VERSION)) {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"held\": keyring {name:?} has no generation {generation} (its generation is {})",
                ring.generation
            )));
        }
        match (report.kid, ours) {
            (Some(kid), Some(version)) if version.kid != kid => {
                foreign.push(Foreign { keyring: name, number: report.number, kid, generation });
            }
            // A kid under a number this coordinator has no version for:
            // past its latest, or one it skipped when numbering continued
            // past a restored fleet's versions. Counting it would let a
            // reused lower number pass the gate (found by the fault run).
            (Some(kid), None) => {
                foreign.push(Foreign { keyring: name, number: report.number, kid, generation });
            }
            (None, _) if beyond => {
                return Err(LogicalError::InvalidRequest(format!(
                    "field \"held\": keyring {name:?} has no version {} (its latest is {})",
                    report.number, ring.latest
                )));
            }
            _ => {
                held.insert(name, report.number);
            }
        }
    }
    Ok((held, foreign))
}

/// Whether the caller holds more of a keyring than this node knows: a
/// version past its latest, a key id it has no version for, or a later
/// generation. On a standby that means its storage lags the active node's
/// (or the caller reports falsely); either way the active node decides.
pub async fn ahead_of_this_node(
    state: &MountState,
    storage: &dyn Storage,
    pool: &Pool,
    reported: &BTreeMap<String, Reported>,
) -> Result<bool, LogicalError> {
    for (name, report) in reported {
        if !pool.has(name) {
            continue;
        }
        let Some(cached) = ring(state, storage, name).await? else {
            // A keyring this node does not have yet.
            return Ok(true);
        };
        let ring = &cached.ring;
        let known = ring.versions.iter().find(|v| v.number == report.number);
        let kid_unknown = report.kid.as_ref().is_some_and(|kid| known.is_none_or(|v| &v.kid != kid));
        if report.number > ring.latest || kid_unknown || report.generation.is_some_and(|g| g > ring.generation) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records that a sidecar holds a version this coordinator did not issue.
/// A report informs; it decides nothing an operator would have to undo,
/// whoever sends it and however often:
///
/// * it counts for nothing towards a commit (see [`check_held`]);
/// * the claimant's one coalesced `fleet-ahead` history entry says so,
///   written at most once a poll interval per pool and keyring, and
///   `status` turns those entries into one alert;
/// * a claim at most [`FLEET_NUMBERING_BOUND`] past the latest number
///   moves, in memory only, the number the next version gets (see
///   `scheduler::publish`), and once a poll interval per keyring the
///   generation past the highest such claim's (bounded likewise), so that
///   the fleet takes the next bundle.
///
/// No pending version is given up, no rotation is made due, and the stored
/// numbering stays: past the bound, or to give up a pending version, an
/// operator decides (`keys/<name>/renumber`).
async fn note_foreign(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    caller: (&str, &str),
    foreign: &Foreign,
) -> Result<(), LogicalError> {
    let (pool, instance) = caller;
    let claimant = format!("{pool}/{instance}");
    let number = foreign.number;
    let within = |ring: &Keyring| number <= ring.latest.saturating_add(FLEET_NUMBERING_BOUND);
    let recorded = |ring: &Keyring| {
        ring.history
            .iter()
            .any(|e| e.reports.as_ref().is_some_and(|r| r.claimant == claimant) && e.versions.contains(&number))
    };
    let behind = |ring: &Keyring| within(ring) && foreign.generation >= ring.generation;
    let t = state.now();
    let interval = i64::try_from(config.poll_interval).unwrap_or(i64::MAX);
    let report_key = format!("{}/{pool}", foreign.keyring);
    // Until the fleet is back in step this instance says so at every poll:
    // the cached record and the rate of writes tell whether there is
    // anything to note now, without storage or the keyring's lock.
    let nothing_to_do = |ring: &Keyring| {
        let report = !recorded(ring) && state.with_fleet(|f| f.may_act_alone(&report_key, "report", t, interval));
        let generation = behind(ring) && state.with_fleet(|f| f.may_act_alone(&ring.name, "generation", t, interval));
        !report && !generation
    };
    if ring(state, storage, &foreign.keyring).await?.is_none_or(|c| nothing_to_do(&c.ring)) {
        return Ok(());
    }
    let lock = state.keyring_lock(&foreign.keyring);
    let _guard = lock.lock().await;
    let Some(mut ring) = load_keyring(storage, &foreign.keyring).await? else {
        return Ok(());
    };
    let mut changed = false;
    if behind(&ring) && state.with_fleet(|f| f.act_alone(&ring.name, "generation", t, interval)) {
        // Past every claim within the bound, not only this one: a caller
        // that polls first cannot keep the fleet's own claim from counting.
        let ceiling = ring.latest.saturating_add(FLEET_NUMBERING_BOUND);
        let cap = generation_cap(&ring, ceiling);
        let claimed = state
            .with_fleet(|f| f.claims(&ring.name).filter(|c| c.number <= ceiling).map(|c| c.generation.min(cap)).max());
        changed |= ring.continue_generation_past(claimed.unwrap_or(0).max(foreign.generation.min(cap)));
    }
    if !recorded(&ring) && state.with_fleet(|f| f.act_alone(&report_key, "report", t, interval)) {
        let next = if within(&ring) {
            format!("the next version is numbered past {number}")
        } else {
            format!(
                "that is more than {FLEET_NUMBERING_BOUND} past the latest version ({}), so numbering stays as it is \
                 until an operator decides (keys/{}/renumber)",
                ring.latest, ring.name
            )
        };
        let detail = format!(
            "{claimant} holds version {number} (kid {}), which this coordinator did not issue: its storage may have \
             been restored from an older copy, or the caller reports falsely; {next}",
            foreign.kid
        );
        ring.record_fleet_report(t, &claimant, detail, number);
        tracing::warn!(keyring = %foreign.keyring, version = number, pool, instance, "a sidecar reports a version this coordinator did not issue");
        changed = true;
    }
    if changed {
        save(state, storage, &ring, Vec::new(), &[]).await?;
    }
    Ok(())
}

/// The highest generation a fleet holding versions up to `number` can have
/// reached: [`GENERATIONS_PER_VERSION`] per version past the latest, and
/// never less than the bound reports may move numbering by.
pub fn generation_cap(ring: &Keyring, number: u64) -> u64 {
    let versions = number.saturating_sub(ring.latest).max(FLEET_NUMBERING_BOUND);
    ring.generation.saturating_add(versions.saturating_mul(GENERATIONS_PER_VERSION))
}

pub use lockstep_model::schedule::FLEET_AHEAD;

/// The history action of a pending version given up because the fleet
/// went on past it.
pub const SUPERSEDE: &str = "supersede";

/// What recording a poll did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// A warning for the caller: two sidecar processes poll under its
    /// instance id.
    pub warning: Option<String>,
    /// The instance's record was written (an acknowledgement, a first
    /// poll, a heartbeat or a refresh).
    pub stored: bool,
    /// A standby answered polls within the liveness window (read under
    /// the same lock as the poll; meaningful on the active node).
    pub standbys_serve: bool,
}

/// Records a poll: what the instance holds and that it was seen. Stores
/// the record when what it holds changed, and commits what the
/// acknowledgement completes.
pub async fn record_poll(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    pool_name: &str,
    pool: &Pool,
    caller: Caller<'_>,
    reported: BTreeMap<String, Reported>,
) -> Result<Recorded, LogicalError> {
    let instance = caller.instance;
    let (held, foreign) = check_held(state, storage, pool, reported).await?;
    ensure_fleet(state, storage).await?;
    let live = Liveness::new(state.now(), config.liveness_window);
    let cap = usize::try_from(config.max_instances_per_pool).unwrap_or(usize::MAX);
    let ahead = foreign
        .iter()
        .map(|f| (f.keyring.clone(), acks::Claim { number: f.number, generation: f.generation }))
        .collect();
    let (polled, standbys_serve) = state
        .with_fleet(|fleet| {
            let polled = fleet.poll(pool_name, &pool.keyrings, caller, held, live, cap)?;
            fleet.reported_ahead(pool_name, instance, ahead);
            Ok((polled, fleet.standbys_serve(live)))
        })
        .map_err(|full: acks::PoolFull| LogicalError::InvalidRequest(format!("field \"instance\": {full}")))?;
    for foreign in &foreign {
        if let Err(error) = note_foreign(state, storage, config, (pool_name, instance), foreign).await {
            tracing::warn!(keyring = %foreign.keyring, %error, "recording a version this coordinator did not issue failed");
        }
    }
    // A heartbeat (the instance polls a standby, which sent it here to be
    // stored) marks it remote; the record says so, and when it was seen.
    let beat =
        if caller.heartbeat { state.with_fleet(|fleet| fleet.heartbeat(pool_name, instance, live)) } else { None };
    let stored = beat.is_some() || polled.store.is_some();
    if let Some(ack) = beat.or(polled.store) {
        // One put, not a transaction: concurrent polls of one instance
        // then never conflict. On a standby it fails as read-only, and the
        // server runs the whole poll on the active node.
        storage.put(&acks::key(pool_name, instance), encode(&ack)?).await.map_err(storage_error)?;
        state.with_fleet(|fleet| fleet.stored(pool_name, instance, &ack));
    }
    for name in polled.decide {
        if let Err(error) = commit_if_acknowledged(state, storage, config, &name).await {
            tracing::warn!(keyring = %name, %error, "commit after acknowledgement failed; the scheduler retries");
        }
    }
    let warning = polled.shared.then(|| {
        format!(
            "instance id {instance:?} of pool {pool_name:?} is used by two sidecar processes at once; give each \
             pod its own instance id (the default is the pod's hostname)"
        )
    });
    Ok(Recorded { warning, stored, standbys_serve })
}

/// An acknowledgement may complete the set a pending version waits for:
/// commit it now rather than at the next periodic call.
async fn commit_if_acknowledged(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    name: &str,
) -> Result<(), LogicalError> {
    // Most acknowledgements concern keyrings with nothing pending: the
    // cached record says so without a storage read.
    if ring(state, storage, name).await?.is_none_or(|c| c.ring.pending().is_none()) {
        return Ok(());
    }
    let lock = state.keyring_lock(name);
    let _guard = lock.lock().await;
    let Some(mut ring) = load_keyring(storage, name).await? else {
        return Ok(());
    };
    let generation = ring.generation;
    try_commit(state, storage, config, &mut ring, state.now(), Cause::Scheduled, SCHEDULER.into()).await?;
    if ring.generation != generation {
        save(state, storage, &ring, Vec::new(), &[]).await?;
    }
    Ok(())
}

/// The deliberately broken build the fault-injection test must catch:
/// with the `test-clock` feature and `LOCKSTEP_TEST_SKIP_GATE=1` in the
/// plugin's environment, a pending version commits without waiting for
/// acknowledgements. Release builds have no such switch.
fn gate_skipped() -> bool {
    cfg!(feature = "test-clock") && std::env::var_os("LOCKSTEP_TEST_SKIP_GATE").is_some_and(|v| v == "1")
}

/// The commit decision, for the scheduler, manual rotation and
/// acknowledgements alike: commits the pending version if every live
/// instance of every pool that lists the keyring holds it, or if its
/// commit timeout has passed (recorded as a forced commit, which `status`
/// reports as an alert). The caller holds the keyring's lock and stores
/// the keyring if it changed.
pub async fn try_commit(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    ring: &mut Keyring,
    t: i64,
    cause: Cause,
    actor: Actor<'_>,
) -> Result<(), LogicalError> {
    let Some(pending) = ring.pending().cloned() else {
        state.with_fleet(|fleet| fleet.idle(&ring.name));
        return Ok(());
    };
    ensure_fleet(state, storage).await?;
    let pools = pools_listing(state, storage, &ring.name).await?;
    let live = Liveness::new(t, config.liveness_window);
    let lacking = state.with_fleet(|fleet| fleet.lacking(&ring.name, pending.number, &pools, live));
    let timeout = i64::try_from(ring.policy.commit_timeout).unwrap_or(i64::MAX);
    let (action, detail) = if lacking.is_empty() {
        ("commit", "every live pool holds it".to_string())
    } else if gate_skipped() {
        ("commit", "the gate is switched off (test build)".to_string())
    } else if t - pending.created_at >= timeout {
        ("commit-forced", format!("commit timeout passed without acknowledgement from: {}", lacking.join(", ")))
    } else {
        return Ok(());
    };
    if let Some(number) = ring.commit(t, config.activation_margin) {
        ring.record(t, action, cause, actor, detail, vec![number]);
        if action == "commit-forced" {
            tracing::warn!(keyring = %ring.name, version = number, "version committed without every live pool holding it");
        }
        state.with_fleet(|fleet| fleet.idle(&ring.name));
    }
    Ok(())
}

/// Every pool that lists `keyring`, with its instances, for `status`.
pub async fn fleet_view(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    keyring: &str,
    t: i64,
) -> Result<Vec<PoolView>, LogicalError> {
    ensure_fleet(state, storage).await?;
    let pools = pools_listing(state, storage, keyring).await?;
    let live = Liveness::new(t, config.liveness_window);
    Ok(state.with_fleet(|fleet| fleet.views(keyring, &pools, live)))
}

/// Forgets instances unseen for twice the liveness window, in memory and
/// in storage.
pub async fn forget_stale(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    t: i64,
) -> Result<(), LogicalError> {
    ensure_fleet(state, storage).await?;
    let horizon = i64::try_from(config.liveness_window.saturating_mul(2)).unwrap_or(i64::MAX);
    let gone = state.with_fleet(|fleet| fleet.forget_before(t.saturating_sub(horizon)));
    for (pool, instance) in gone {
        storage.delete(&acks::key(&pool, &instance)).await.map_err(storage_error)?;
    }
    Ok(())
}
