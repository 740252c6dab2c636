//! What one mount keeps in memory between requests. Nothing here is
//! authoritative: keyrings and pools are read from storage on every
//! request, so a standby or a reloaded plugin never serves stale state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use vault_plugin_sdk::system::SystemView;

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
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped whenever something a bundle shows may have changed; bundle
    /// long-polls wait on it.
    changes: tokio::sync::watch::Sender<u64>,
    /// When each sidecar instance was last seen, by (pool, instance).
    seen: Mutex<HashMap<(String, String), i64>>,
    /// When this state was made, in seconds since the epoch.
    started: i64,
    /// Config writes take it exclusively, keyring creates and policy
    /// updates shared, so each is validated against the other.
    config: tokio::sync::RwLock<()>,
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
            locks: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
            seen: Mutex::default(),
        }
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
        locked(&self.locks).entry(name.to_string()).or_default().clone()
    }

    /// Tells bundle long-polls that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on the next change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Notes that an instance polled at `t`; returns when it was seen before.
    pub fn saw(&self, pool: &str, instance: &str, t: i64) -> Option<i64> {
        locked(&self.seen).insert((pool.to_string(), instance.to_string()), t)
    }

    /// Forgets instances last seen before `t`.
    pub fn forget_seen_before(&self, t: i64) {
        locked(&self.seen).retain(|_, seen| *seen >= t);
    }

    /// When an instance was last seen by this node.
    pub fn last_seen(&self, pool: &str, instance: &str) -> Option<i64> {
        locked(&self.seen).get(&(pool.to_string(), instance.to_string())).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[tokio::test]
    async fn sightings_are_kept_until_forgotten() {
        let state = MountState::new(Arc::new(SystemClock), SystemView::unavailable());
        assert_eq!(state.saw("web", "a", 100), None);
        assert_eq!(state.saw("web", "a", 160), Some(100));
        state.saw("web", "b", 50);
        state.forget_seen_before(100);
        assert_eq!((state.last_seen("web", "a"), state.last_seen("web", "b")), (Some(160), None));
        assert!(state.started() > 0);
    }
}
