//! `status/<name>`: per pool, which instances hold which version of a
//! keyring, when each was last seen, and alerts.

use std::sync::Arc;

use lockstep_model::key_state;
use lockstep_model::schedule::Keyring;
use lockstep_model::version::VersionMeta;
use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::keys::name;
use super::time_json;
use crate::acks::PoolView;
use crate::config::Config;
use crate::coordinator;
use crate::state::MountState;
use crate::storage::load_keyring;
use vault_plugin_sdk::storage::Storage;

/// The `status/<name>` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("status/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .operation(
            Operation::Read,
            "Show which pool instances hold which version, and alerts.",
            stateful(&state, |state, req, data| async move { read(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let storage = req.storage.as_ref();
    let Some(ring) = load_keyring(storage, name).await? else {
        return missing(state, storage, name).await;
    };
    let config = Config::load(storage).await?;
    let t = state.now();
    let fleet = coordinator::fleet_view(state, storage, &config, name, t).await?;
    let key = key_state(&ring.versions, t);
    // The version pools must hold next: waiting for commit, or committed
    // and not active yet.
    let upcoming = ring
        .versions
        .iter()
        .filter(|v| v.verifies_at(t) && !v.is_superseded() && v.not_before.is_none_or(|s| s > t))
        .max_by_key(|v| v.number);
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    // Flat first, for the CLI's table format; the details below are
    // nested (read them with -format=json).
    data.insert("summary".into(), json!(summary(key.signing, upcoming, &fleet)));
    data.insert("next_rotation".into(), time_json(super::keys::next_rotation(&ring, t)));
    data.insert("server_time".into(), time_json(Some(t)));
    data.insert("signing_version".into(), json!(key.signing));
    data.insert("verifying_versions".into(), json!(key.verifying));
    data.insert("upcoming".into(), upcoming.map_or(Value::Null, |v| upcoming_json(v, &fleet)));
    data.insert("pools".into(), Value::Array(fleet.iter().map(pool_json).collect()));
    let mut alerts = alerts(&ring, upcoming, &fleet, t);
    alerts.extend(crowded(&fleet, config.max_instances_per_pool));
    if !ring.key_type.is_asymmetric() {
        let verify = coordinator::verify_pools_listing(state, storage, name).await?;
        if !verify.is_empty() {
            alerts.push(coordinator::symmetric_warning(name, &verify));
        }
    }
    data.insert("alerts".into(), json!(alerts));
    Ok(Some(Response::with_data(data)))
}

/// The status of a name no keyring has: an alert when pools list it
/// (their bundles leave it out), else not found.
async fn missing(state: &MountState, storage: &dyn Storage, name: &str) -> Result<Option<Response>, LogicalError> {
    let pools = coordinator::pools_listing(state, storage, name).await?;
    if pools.is_empty() {
        return Err(LogicalError::NotFound(format!("keyring {name:?} not found")));
    }
    let listing: Vec<&str> = pools.iter().map(String::as_str).collect();
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert("exists".into(), json!(false));
    data.insert("pools".into(), json!(listing));
    let alert = format!(
        "keyring {name:?} does not exist, and pools list it ({}): their bundles leave it out until it is created",
        listing.join(", ")
    );
    data.insert("alerts".into(), json!([alert]));
    Ok(Some(Response::with_data(data)))
}

fn upcoming_json(version: &VersionMeta, fleet: &[PoolView]) -> Value {
    let lacking: Vec<String> = fleet.iter().flat_map(|p| p.lacking(version.number)).collect();
    json!({
        "version": version.number,
        "kid": version.kid,
        "published_at": time_json(Some(version.created_at)),
        "planned_activation": time_json(Some(version.planned_activation)),
        "committed": version.is_committed(),
        "not_before": time_json(version.not_before),
        "not_held_by": lacking,
    })
}

/// One line for a person: what signs, what comes next and how many live
/// pools hold it.
fn summary(signing: Option<u64>, upcoming: Option<&VersionMeta>, fleet: &[PoolView]) -> String {
    let signs = signing.map_or_else(|| "no version signs".to_string(), |n| format!("v{n} signs"));
    let live: Vec<&PoolView> = fleet.iter().filter(|p| p.live()).collect();
    let holding = |n: u64| live.iter().filter(|p| p.lacking(n).next().is_none()).count();
    match (upcoming, signing) {
        (Some(v), _) => {
            let state = if v.is_committed() { "scheduled" } else { "pending" };
            format!("{signs}; v{} {state}: {} of {} live pools hold it", v.number, holding(v.number), live.len())
        }
        (None, Some(n)) => format!("{signs}; {} of {} live pools hold it", holding(n), live.len()),
        (None, None) => signs,
    }
}

fn pool_json(pool: &PoolView) -> Value {
    let instances: Vec<Value> = pool
        .instances
        .iter()
        .map(|i| {
            json!({"instance": i.instance, "held_version": i.held, "last_seen": time_json(Some(i.last_seen)),
                   "live": i.live, "shared": i.shared})
        })
        .collect();
    json!({"pool": pool.pool, "live": pool.live(), "instances": instances})
}

fn alerts(ring: &Keyring, upcoming: Option<&VersionMeta>, fleet: &[PoolView], t: i64) -> Vec<String> {
    let mut alerts = Vec::new();
    if let Some(v) = upcoming {
        let lacking: Vec<String> = fleet.iter().flat_map(|p| p.lacking(v.number)).collect();
        let when = v.not_before.unwrap_or(v.planned_activation);
        if !lacking.is_empty() {
            let deadline = v.created_at.saturating_add(i64::try_from(ring.policy.commit_timeout).unwrap_or(i64::MAX));
            alerts.push(format!(
                "version {} activates at {} (or is committed by {} at the latest) and is not yet held by: {}",
                v.number,
                time_json(Some(when)).as_str().unwrap_or_default(),
                time_json(Some(deadline)).as_str().unwrap_or_default(),
                some_of(&lacking)
            ));
        }
    }
    alerts.extend(fleet_ahead(ring));
    for pool in fleet {
        let shared: Vec<String> =
            pool.instances.iter().filter(|i| i.shared).map(|i| format!("{}/{}", pool.pool, i.instance)).collect();
        if !shared.is_empty() {
            alerts.push(format!(
                "{} of pool {} {} used by two sidecar processes at once: each pod needs its own instance id, and \
                 until then such an instance counts as holding the lesser of what the two report: {}",
                if shared.len() == 1 { "one instance".to_string() } else { format!("{} instances", shared.len()) },
                pool.pool,
                if shared.len() == 1 { "is" } else { "are" },
                some_of(&shared)
            ));
        }
    }
    let live: Vec<u64> = ring.versions.iter().filter(|v| v.verifies_at(t)).map(|v| v.number).collect();
    for entry in ring.history.iter().filter(|e| e.action == "commit-forced") {
        if entry.versions.iter().any(|n| live.contains(n)) {
            alerts.push(format!(
                "version {:?} was committed without every live pool holding it: {}",
                entry.versions, entry.detail
            ));
        }
    }
    alerts
}

/// Names in an alert: the first [`NAMED`], then how many more (the full
/// lists are in the answer's `pools` and `upcoming`), so that an alert
/// stays short however many instances there are.
fn some_of(names: &[String]) -> String {
    match names.len().checked_sub(NAMED) {
        Some(more) if more > 0 => format!("{} and {more} more", names[..NAMED].join(", ")),
        _ => names.join(", "),
    }
}

/// How many names an alert lists.
const NAMED: usize = 10;

/// One alert for every report that the fleet holds versions this
/// coordinator did not issue and that is not resolved yet (until a version
/// published after it is committed, the fleet may still sign with a key
/// this coordinator does not have): how many, from when to when, the
/// highest version named, and the latest report's words.
fn fleet_ahead(ring: &Keyring) -> Option<String> {
    let committed = |n: &u64| ring.versions.iter().any(|v| v.number == *n && v.is_committed());
    let unresolved: Vec<_> = ring
        .history
        .iter()
        .filter(|e| e.action == coordinator::FLEET_AHEAD)
        .filter(|e| {
            let published_after = ring.history.iter().filter(|p| p.action == "publish" && p.seq > e.seq);
            !published_after.flat_map(|p| p.versions.iter()).any(committed)
        })
        .collect();
    let last = unresolved.last()?;
    let first = unresolved.iter().map(|e| e.reports.as_ref().map_or(e.at, |r| r.first_at)).min().unwrap_or(last.at);
    let count: u64 = unresolved.iter().map(|e| e.reports.as_ref().map_or(1, |r| r.count)).sum();
    let highest = unresolved.iter().flat_map(|e| e.versions.iter()).max().copied().unwrap_or_default();
    // Each claimant's highest claim, highest first: an outlier stands out.
    let mut claims: Vec<(u64, String)> = unresolved
        .iter()
        .filter_map(|e| Some((*e.versions.iter().max()?, e.reports.as_ref()?.claimant.clone())))
        .collect();
    claims.sort_by(|a, b| b.cmp(a));
    let named: Vec<String> = claims.iter().map(|(n, c)| format!("{c} up to {n}")).collect();
    let bound = ring.latest.saturating_add(lockstep_model::schedule::FLEET_NUMBERING_BOUND);
    let within = claims.iter().map(|(n, _)| *n).filter(|n| *n <= bound).max();
    let accept = match within {
        Some(n) => format!(
            "if this server's storage was restored from an older copy, accept them with keys/{}/renumber \
             past_version={n} and a reason",
            ring.name
        ),
        None => format!(
            "if this server's storage was restored from an older copy, check what a sidecar holds \
             (lockstep-sidecar get <keyring>) and accept that with keys/{}/renumber past_version=<its version> and a \
             reason",
            ring.name
        ),
    };
    let beyond = if highest > bound {
        format!(
            ". Claims more than {} past the latest version ({}) are more than a recent copy explains: check a \
             sidecar of that pool before accepting them, and revoke the token if it holds no such version",
            lockstep_model::schedule::FLEET_NUMBERING_BOUND,
            ring.latest
        )
    } else {
        String::new()
    };
    Some(format!(
        "the fleet holds versions this coordinator did not issue: {count} report{} recorded from {} claimant{}, \
         {} to {}, naming versions up to {highest} ({}); the latest: {}. Reports decide nothing: {accept}; if it \
         was not restored, a sidecar token is in the wrong hands{beyond}",
        if count == 1 { "" } else { "s" },
        unresolved.len(),
        if unresolved.len() == 1 { "" } else { "s" },
        time_json(Some(first)).as_str().unwrap_or_default(),
        time_json(Some(last.at)).as_str().unwrap_or_default(),
        named.join(", "),
        last.detail,
    ))
}

/// Pools at 90 % or more of the instance cap: new instances will soon be
/// refused.
fn crowded(fleet: &[PoolView], cap: u64) -> impl Iterator<Item = String> + '_ {
    fleet.iter().filter(move |p| (p.instances.len() as u64).saturating_mul(10) >= cap.saturating_mul(9)).map(move |p| {
        format!(
            "pool {} has {} of the {cap} instances max_instances_per_pool allows; polls from new instances are \
                 refused beyond it",
            p.pool,
            p.instances.len()
        )
    })
}

const HELP_SYNOPSIS: &str = "Show, per pool and instance, which version of a keyring it holds.";
const HELP_DESCRIPTION: &str = "\
summary says in one line what signs, what comes next and how many live pools \
hold it, and next_rotation when the next version (upcoming, or the one after \
the signing version) is planned to sign (in the \
CLI's table format these read well; the nested details read best with \
-format=json). Lists every pool that may fetch the keyring, each sidecar instance that \
polled it, the highest version that instance holds, when it was last seen and \
whether it is live (seen within the mount's liveness_window). \"upcoming\" is \
the next version to activate and which live instances do not hold it yet. \
Alerts name live pools that lack a version about to activate, and versions \
committed without every live pool holding them (commit timeout).";
