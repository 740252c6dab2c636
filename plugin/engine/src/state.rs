//! What one mount keeps in memory between requests: locks, the cache of
//! storage ([`crate::cache`]), and the fleet of sidecar instances
//! ([`crate::acks`]). Storage stays authoritative; all of it is rebuilt on
//! every reload.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use vault_plugin_sdk::system::SystemView;

use crate::acks::Fleet;
use crate::cache::Cache;
use crate::clock::Clock;

/// In-memory state of one mount; rebuilt on every reload.
#[derive(Debug)]
pub struct MountState {
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// The host's system view.
    pub system: SystemView,
    periodic: Mutex<Periodic>,
    /// One lock per keyring: rotations, revocations, commits and the
    /// scheduler's work on a keyring never interleave.
    locks: Locks,
    /// One lock per pool around building its answer, so that the
    /// long-polls a change wakes build it once, not once each.
    builds: Locks,
    /// What this node keeps of storage.
    pub cache: Cache,
    /// Every sidecar instance, loaded from storage at the first need.
    fleet: Mutex<FleetSlot>,
    /// Held while the fleet is read from storage.
    fleet_loading: tokio::sync::Mutex<()>,
    /// When this state was made, in seconds since the epoch.
    started: i64,
    /// Config writes take it exclusively, keyring creates and policy
    /// updates shared, so each is validated against the other.
    config: tokio::sync::RwLock<()>,
    /// Whether this node is a standby serving reads, and when that was
    /// last asked of the host.
    role: Mutex<Option<(bool, std::time::Instant)>>,
    /// Bundle polls this node answered, and polls it sent on to the
    /// active node (a standby's), since the mount was set up.
    pub polls: PollCounts,
}

/// Counts of bundle polls on this node.
#[derive(Debug, Default)]
pub struct PollCounts {
    /// Answered here.
    pub answered: std::sync::atomic::AtomicU64,
    /// Sent on to the active node.
    pub sent_to_active: std::sync::atomic::AtomicU64,
    /// Of those, the ones sent on before any write, by reason (see
    /// [`SENT_BECAUSE`]); the rest failed a write.
    pub sent_because: [std::sync::atomic::AtomicU64; SENT_BECAUSE.len()],
}

/// Why a standby sends a poll on before trying to write: a heartbeat, no
/// `heartbeat` field (an older sidecar), a caller ahead of this node, a
/// heartbeat overdue.
pub const SENT_BECAUSE: [&str; 4] = ["heartbeat", "no_heartbeat_field", "behind", "overdue"];

impl PollCounts {
    /// Counts a poll sent on before any write, for `reason` (one of
    /// [`SENT_BECAUSE`]).
    pub fn sent_because(&self, reason: &str) {
        if let Some(i) = SENT_BECAUSE.iter().position(|r| *r == reason) {
            self.sent_because[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How long the host's answer to "is this node a standby" is trusted: a
/// node that changes role sets its mounts up again, so this only bounds
/// the cost of asking.
const ROLE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Named locks, made on first use.
#[derive(Debug, Default)]
struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        locked(&self.0).entry(name.to_string()).or_default().clone()
    }
}

/// The fleet, and what of it storage must be read for.
#[derive(Debug, Default)]
struct FleetSlot {
    fleet: Fleet,
    loaded: bool,
    /// Instance records another node changed, as storage keys.
    stale: BTreeSet<String>,
}

/// What of the fleet must be read from storage before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetLoad {
    /// Nothing.
    Ready,
    /// Every record.
    All,
    /// These records (storage keys).
    Records(Vec<String>),
}

/// When the host's periodic call last reached this mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Periodic {
    /// Time of the last call.
    pub last: Option<SystemTime>,
    /// Calls since the mount was set up.
    pub count: u64,
}

fn seconds(t: SystemTime) -> i64 {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here leaves the data consistent, so a panic
    // elsewhere while holding the lock does not poison it for good.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl MountState {
    /// Fresh state.
    pub fn new(clock: Arc<dyn Clock>, system: SystemView) -> Self {
        let started = seconds(clock.now());
        Self {
            started,
            config: tokio::sync::RwLock::new(()),
            clock,
            system,
            periodic: Mutex::new(Periodic::default()),
            locks: Locks::default(),
            builds: Locks::default(),
            cache: Cache::default(),
            fleet: Mutex::default(),
            fleet_loading: tokio::sync::Mutex::new(()),
            role: Mutex::new(None),
            polls: PollCounts::default(),
        }
    }

    /// Whether this node is a standby serving reads (its storage takes no
    /// writes; requests that must write run on the active node).
    pub async fn is_standby(&self) -> bool {
        if let Some((standby, at)) = *locked(&self.role)
            && at.elapsed() < ROLE_TTL
        {
            return standby;
        }
        let standby = self.system.is_read_standby().await;
        *locked(&self.role) = Some((standby, std::time::Instant::now()));
        standby
    }

    /// Now, in seconds since the epoch.
    pub fn now(&self) -> i64 {
        seconds(self.clock.now())
    }

    /// The lock between config writes and keyring policy writes.
    pub fn config_lock(&self) -> &tokio::sync::RwLock<()> {
        &self.config
    }

    /// When this state was made (the mount set up or reloaded).
    pub fn started(&self) -> i64 {
        self.started
    }

    /// Notes a periodic call at the current time.
    pub fn record_periodic(&self) {
        let now = self.clock.now();
        let mut periodic = locked(&self.periodic);
        periodic.last = Some(now);
        periodic.count += 1;
    }

    /// The periodic record.
    pub fn periodic(&self) -> Periodic {
        *locked(&self.periodic)
    }

    /// The lock of one keyring.
    pub fn keyring_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.get(name)
    }

    /// The lock around building one pool's answer.
    pub fn build_lock(&self, pool: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.builds.get(pool)
    }

    /// After this engine wrote `key`.
    pub fn written(&self, key: &str) {
        self.cache.drop_key(key);
    }

    /// The host's word that `key` changed elsewhere (a write through
    /// another node, replication).
    pub fn invalidated(&self, key: &str) {
        self.cache.drop_key(key);
        if key.starts_with("acks/") {
            locked(&self.fleet).stale.insert(key.to_string());
        }
    }

    /// What of the fleet must be read before it is used.
    pub fn fleet_load(&self) -> FleetLoad {
        let slot = locked(&self.fleet);
        if !slot.loaded {
            FleetLoad::All
        } else if slot.stale.is_empty() {
            FleetLoad::Ready
        } else {
            FleetLoad::Records(slot.stale.iter().cloned().collect())
        }
    }

    /// Held while the fleet is read from storage.
    pub fn fleet_loading(&self) -> &tokio::sync::Mutex<()> {
        &self.fleet_loading
    }

    /// Notes that what [`Self::fleet_load`] asked for was read: `all` for
    /// every record, or the records named.
    pub fn fleet_loaded(&self, all: bool, records: &[String]) {
        let mut slot = locked(&self.fleet);
        slot.loaded |= all;
        for key in records {
            slot.stale.remove(key);
        }
    }

    /// Works on the fleet (read from storage first, by the caller).
    pub fn with_fleet<R>(&self, f: impl FnOnce(&mut Fleet) -> R) -> R {
        f(&mut locked(&self.fleet).fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[tokio::test]
    async fn the_fleet_is_read_once_and_records_changed_elsewhere_again() {
        let state = MountState::new(Arc::new(SystemClock), SystemView::unavailable());
        assert_eq!(state.fleet_load(), FleetLoad::All);
        state.fleet_loaded(true, &[]);
        assert_eq!(state.fleet_load(), FleetLoad::Ready);
        state.invalidated("acks/web/a");
        state.invalidated("keyring/jwt");
        assert_eq!(state.fleet_load(), FleetLoad::Records(vec!["acks/web/a".into()]));
        state.fleet_loaded(false, &["acks/web/a".into()]);
        assert_eq!(state.fleet_load(), FleetLoad::Ready);
        assert!(state.started() > 0);
    }
}
