//! Mount-wide settings: fleet timings and the default keyring policy.

use lockstep_model::Policy;
use lockstep_model::policy::{FleetTimings, PolicyError};
use serde::{Deserialize, Serialize};
use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::Storage;

use crate::storage;

/// Storage key of the config record.
pub const KEY: &str = "config";

/// Mount-wide settings. Durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// The longest interval at which sidecars poll their bundle.
    pub poll_interval: u64,
    /// The largest clock difference tolerated between pools.
    pub max_clock_skew: u64,
    /// A sidecar instance seen within this window is live; a pool with a
    /// live instance must hold a version before it activates.
    pub liveness_window: u64,
    /// A committed version activates no sooner than this after its commit,
    /// so that polling sidecars learn of it before the instant.
    pub activation_margin: u64,
    /// The policy new keyrings get for fields they do not set.
    pub default_policy: Policy,
    /// The most sidecar instances one pool may have, so that a
    /// misconfigured fleet cannot grow the server's memory without bound.
    #[serde(default = "default_max_instances")]
    pub max_instances_per_pool: u64,
    /// History entries each keyring keeps besides the coalesced reports of
    /// versions this coordinator did not issue (oldest dropped first).
    #[serde(default = "default_history_entries")]
    pub history_entries: u64,
}

/// The default of [`Config::max_instances_per_pool`].
pub const DEFAULT_MAX_INSTANCES: u64 = 10_000;
/// The largest [`Config::max_instances_per_pool`] accepted.
pub const MAX_INSTANCES_LIMIT: u64 = 1_000_000;

/// The longest liveness window: a day. A sidecar silent for longer is gone;
/// a longer window would let pods long deleted hold commits and fill their
/// pool's room for instances.
pub const MAX_LIVENESS_WINDOW: u64 = 86_400;

fn default_max_instances() -> u64 {
    DEFAULT_MAX_INSTANCES
}

/// The fewest [`Config::history_entries`] accepted: enough for a keyring's
/// last few rotations with their commits, expiries and revocations.
pub const MIN_HISTORY_ENTRIES: u64 = 32;

fn default_history_entries() -> u64 {
    lockstep_model::schedule::HISTORY_LIMIT as u64
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_interval: 30,
            max_clock_skew: 30,
            liveness_window: 600,
            activation_margin: 30,
            default_policy: Policy::default(),
            max_instances_per_pool: DEFAULT_MAX_INSTANCES,
            history_entries: default_history_entries(),
        }
    }
}

impl Config {
    /// The fleet timings policies are checked against.
    pub fn fleet(&self) -> FleetTimings {
        FleetTimings {
            poll_interval: self.poll_interval,
            max_clock_skew: self.max_clock_skew,
            activation_margin: self.activation_margin,
        }
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let positive = [
            ("poll_interval", self.poll_interval),
            ("max_clock_skew", self.max_clock_skew),
            ("liveness_window", self.liveness_window),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(PolicyError { field, message: "must be greater than zero".into() });
            }
        }
        if self.activation_margin >= self.default_policy.rotation_period {
            return Err(PolicyError {
                field: "activation_margin",
                message: format!(
                    "{}s must be shorter than the default rotation_period ({}s), or no version would sign for its \
                     whole period",
                    self.activation_margin, self.default_policy.rotation_period
                ),
            });
        }
        if !(1..=MAX_INSTANCES_LIMIT).contains(&self.max_instances_per_pool) {
            return Err(PolicyError {
                field: "max_instances_per_pool",
                message: format!("{} is not between 1 and {MAX_INSTANCES_LIMIT}", self.max_instances_per_pool),
            });
        }
        let most = lockstep_model::schedule::HISTORY_MAX as u64;
        if !(MIN_HISTORY_ENTRIES..=most).contains(&self.history_entries) {
            return Err(PolicyError {
                field: "history_entries",
                message: format!("{} is not between {MIN_HISTORY_ENTRIES} and {most}", self.history_entries),
            });
        }
        if self.liveness_window < 2 * self.poll_interval {
            return Err(PolicyError {
                field: "liveness_window",
                message: format!(
                    "{}s must be at least twice poll_interval ({}s), or polling sidecars look dead",
                    self.liveness_window, self.poll_interval
                ),
            });
        }
        if self.liveness_window > MAX_LIVENESS_WINDOW {
            return Err(PolicyError {
                field: "liveness_window",
                message: format!(
                    "{}s is longer than a day ({MAX_LIVENESS_WINDOW}s): pods long gone would still hold commits and \
                     their pool's room",
                    self.liveness_window
                ),
            });
        }
        self.default_policy.validate(&self.fleet())
    }

    /// How many history entries a keyring keeps besides fleet reports.
    pub fn history_kept(&self) -> usize {
        usize::try_from(self.history_entries).unwrap_or(usize::MAX)
    }

    /// The stored config, or the defaults.
    pub async fn load(storage: &dyn Storage) -> Result<Self, LogicalError> {
        Ok(storage::load(storage, KEY).await?.unwrap_or_default())
    }
}
