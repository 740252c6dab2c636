//! What one mount keeps in memory between requests.

use std::sync::Arc;
use std::sync::Mutex;
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
}

/// When the host's periodic call last reached this mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Periodic {
    /// Time of the last call.
    pub last: Option<SystemTime>,
    /// Calls since the mount was set up.
    pub count: u64,
}

impl MountState {
    /// Fresh state.
    pub fn new(clock: Arc<dyn Clock>, system: SystemView) -> Self {
        Self {
            clock,
            system,
            periodic: Mutex::new(Periodic::default()),
        }
    }

    /// Notes a periodic call at the current time.
    pub fn record_periodic(&self) {
        let now = self.clock.now();
        let mut periodic = self.periodic.lock().unwrap_or_else(|p| p.into_inner());
        periodic.last = Some(now);
        periodic.count += 1;
    }

    /// The periodic record.
    pub fn periodic(&self) -> Periodic {
        *self.periodic.lock().unwrap_or_else(|p| p.into_inner())
    }
}
