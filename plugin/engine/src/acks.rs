//! Acknowledgements: which version of each keyring every sidecar instance
//! holds, and when it was last seen. They gate activation: a version is
//! committed only once every live pool holds it.
//!
//! A record is written only when what an instance holds changes; polls in
//! between write nothing. When an instance was last seen lives in memory.
//! A mount that has just started (a reload, a restart, a new active node)
//! has seen nobody yet, so until one liveness window has passed it counts
//! every instance with a record as seen at its start: it waits for them
//! rather than forget them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::Storage;

use crate::config::Config;
use crate::paths::pools::{self, Pool};
use crate::paths::storage_error;
use crate::state::MountState;
use crate::storage::{self, Write, encode};

/// What an instance reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {
    /// When it was seen (as stored; memory may know a later time).
    pub last_seen: i64,
    /// Highest version held, per keyring.
    pub held: BTreeMap<String, u64>,
}

/// One instance as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Instance id.
    pub instance: String,
    /// Last poll.
    pub last_seen: i64,
    /// Seen within the liveness window.
    pub live: bool,
    /// Highest version held of the keyring asked about.
    pub held: Option<u64>,
}

/// One pool that may fetch a keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Pool name.
    pub pool: String,
    /// Its instances.
    pub instances: Vec<InstanceView>,
}

impl PoolView {
    /// Whether any instance is live.
    pub fn live(&self) -> bool {
        self.instances.iter().any(|i| i.live)
    }

    /// Live instances that do not hold `version`, as `pool/instance`.
    pub fn lacking(&self, version: u64) -> impl Iterator<Item = String> + '_ {
        self.instances
            .iter()
            .filter(move |i| i.live && i.held.is_none_or(|h| h < version))
            .map(|i| format!("{}/{}", self.pool, i.instance))
    }
}

fn key(pool: &str, instance: &str) -> String {
    format!("acks/{pool}/{instance}")
}

/// Parses `held` entries of the form `keyring:version`.
pub fn parse_held(entries: &[String]) -> Result<BTreeMap<String, u64>, LogicalError> {
    let mut held = BTreeMap::new();
    for entry in entries {
        let parsed = entry.split_once(':').and_then(|(name, n)| Some((name, n.parse::<u64>().ok()?)));
        let Some((name, number)) = parsed else {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"held\": {entry:?} is not of the form keyring:version"
            )));
        };
        crate::paths::check_name("held", name)?;
        held.insert(name.to_string(), number);
    }
    Ok(held)
}

/// Records a poll; returns whether what the instance holds changed.
pub async fn record(
    state: &MountState,
    storage: &dyn Storage,
    pool: &str,
    instance: &str,
    held: BTreeMap<String, u64>,
    t: i64,
) -> Result<bool, LogicalError> {
    state.saw(pool, instance, t);
    let stored: Option<Ack> = storage::load(storage, &key(pool, instance)).await?;
    let changed = stored.as_ref().is_none_or(|a| a.held != held);
    if changed {
        let ack = Ack { last_seen: t, held };
        storage::apply(storage, vec![Write::Put(key(pool, instance), encode(&ack)?)]).await?;
    }
    Ok(changed)
}

/// Every pool that may fetch `keyring`, with its instances.
pub async fn fleet(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    keyring: &str,
    t: i64,
) -> Result<Vec<PoolView>, LogicalError> {
    let window = i64::try_from(config.liveness_window).unwrap_or(i64::MAX);
    let mut views = Vec::new();
    for name in storage.list("pools/").await.map_err(storage_error)? {
        let Some(pool) = pools::load(storage, &name).await? else {
            continue;
        };
        if !pool_has(&pool, keyring) {
            continue;
        }
        let mut instances = Vec::new();
        for instance in storage.list(&format!("acks/{name}/")).await.map_err(storage_error)? {
            let Some(ack) = storage::load::<Ack>(storage, &key(&name, &instance)).await? else {
                continue;
            };
            let seen = state.last_seen(&name, &instance);
            let last_seen = seen.unwrap_or(ack.last_seen).max(ack.last_seen);
            let live = t - assumed_seen(state, seen, &ack) <= window;
            instances.push(InstanceView { held: ack.held.get(keyring).copied(), instance, last_seen, live });
        }
        views.push(PoolView { pool: name, instances });
    }
    Ok(views)
}

/// When an instance counts as last seen: when this mount saw it, or, if it
/// has not yet, no earlier than the mount's start.
fn assumed_seen(state: &MountState, seen: Option<i64>, ack: &Ack) -> i64 {
    seen.unwrap_or_else(|| ack.last_seen.max(state.started())).max(ack.last_seen)
}

fn pool_has(pool: &Pool, keyring: &str) -> bool {
    pool.keyrings.iter().any(|k| k == keyring)
}

/// Deletes records of instances unseen for twice the liveness window.
pub async fn forget_stale(
    state: &MountState,
    storage: &dyn Storage,
    config: &Config,
    t: i64,
) -> Result<(), LogicalError> {
    let horizon = i64::try_from(config.liveness_window.saturating_mul(2)).unwrap_or(i64::MAX);
    state.forget_seen_before(t.saturating_sub(horizon));
    for pool in storage.list("acks/").await.map_err(storage_error)? {
        let pool = pool.trim_end_matches('/');
        for instance in storage.list(&format!("acks/{pool}/")).await.map_err(storage_error)? {
            let Some(ack) = storage::load::<Ack>(storage, &key(pool, &instance)).await? else {
                continue;
            };
            if t - assumed_seen(state, state.last_seen(pool, &instance), &ack) > horizon {
                storage.delete(&key(pool, &instance)).await.map_err(storage_error)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_entries_are_parsed_and_checked() {
        let held = parse_held(&["jwt:3".into(), "session:12".into()]).expect("valid");
        assert_eq!(held.get("jwt"), Some(&3));
        let error = parse_held(&["jwt".into()]).expect_err("no version");
        assert_eq!(error.to_string(), "field \"held\": \"jwt\" is not of the form keyring:version");
        assert!(parse_held(&["../x:1".into()]).is_err());
    }

    #[test]
    fn lacking_lists_live_instances_below_the_version() {
        let view = PoolView {
            pool: "web".into(),
            instances: vec![
                InstanceView { instance: "a".into(), last_seen: 0, live: true, held: Some(3) },
                InstanceView { instance: "b".into(), last_seen: 0, live: true, held: Some(2) },
                InstanceView { instance: "c".into(), last_seen: 0, live: false, held: None },
            ],
        };
        assert_eq!(view.lacking(3).collect::<Vec<_>>(), vec!["web/b"]);
        assert!(view.live());
    }
}
