//! A keyring's rotation policy.

use serde::{Deserialize, Serialize};

/// Longest duration any policy field accepts: ten years.
pub const MAX_DURATION: u64 = 10 * 365 * 86_400;

/// When versions of a keyring are published, activated and destroyed.
/// All durations are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long a version signs before the next one takes over.
    pub rotation_period: u64,
    /// How long a version stays valid for verification after it stops
    /// signing.
    pub grace_period: u64,
    /// How long before its planned activation a version is published.
    pub prepublish: u64,
    /// The longest lifetime of anything signed or encrypted with the
    /// keyring (token TTL); the grace period must cover it.
    pub max_token_ttl: u64,
    /// How long a published version waits for every live pool to hold it
    /// before it is committed anyway (with an alert).
    pub commit_timeout: u64,
    /// How long an expired version's record (never its material) stays
    /// listed before it is forgotten.
    pub retention: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            rotation_period: 30 * 86_400,
            grace_period: 2 * 86_400,
            prepublish: 86_400,
            max_token_ttl: 3_600,
            commit_timeout: 6 * 3_600,
            retention: 7 * 86_400,
        }
    }
}

/// Fleet-wide timings the policy must be consistent with (mount config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTimings {
    /// The longest interval at which sidecars poll.
    pub poll_interval: u64,
    /// The largest clock difference tolerated between pools.
    pub max_clock_skew: u64,
    /// The least time between a commit and the activation it fixes.
    pub activation_margin: u64,
}

/// A policy field with an unacceptable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {message}")]
pub struct PolicyError {
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

fn fail(field: &'static str, message: String) -> Result<(), PolicyError> {
    Err(PolicyError { field, message })
}

impl Policy {
    /// Checks every field and their relations; the error names the field.
    pub fn validate(&self, fleet: &FleetTimings) -> Result<(), PolicyError> {
        let fields = [
            ("rotation_period", self.rotation_period),
            ("grace_period", self.grace_period),
            ("prepublish", self.prepublish),
            ("max_token_ttl", self.max_token_ttl),
            ("commit_timeout", self.commit_timeout),
            ("retention", self.retention),
        ];
        for (field, value) in fields {
            if value == 0 {
                return fail(field, "must be greater than zero".into());
            }
            if value > MAX_DURATION {
                return fail(field, format!("{value}s is longer than the maximum of {MAX_DURATION}s (10 years)"));
            }
        }
        if self.prepublish >= self.rotation_period {
            return fail(
                "prepublish",
                format!(
                    "{}s must be shorter than rotation_period ({}s): a version is published before the previous one \
                     has finished signing",
                    self.prepublish, self.rotation_period
                ),
            );
        }
        if self.commit_timeout > self.rotation_period {
            return fail(
                "commit_timeout",
                format!("{}s must not exceed rotation_period ({}s)", self.commit_timeout, self.rotation_period),
            );
        }
        // Versions in their grace period, the signer and one pending must
        // all fit in one bundle.
        let in_grace = self.grace_period.div_ceil(self.rotation_period);
        let most = crate::bundle::MAX_VERSIONS as u64;
        if in_grace + 2 > most {
            return fail(
                "grace_period",
                format!(
                    "{}s keeps {in_grace} versions in their grace period at a rotation_period of {}s; with the signing \
                     and the next version that is more than the {most} versions a bundle carries",
                    self.grace_period, self.rotation_period
                ),
            );
        }
        // A margin as long as the rotation itself would keep the signer in
        // place past its successor's turn, rotation after rotation.
        if fleet.activation_margin >= self.rotation_period {
            return fail(
                "rotation_period",
                format!(
                    "{}s must be longer than the mount's activation_margin ({}s), or no version would sign for its \
                     whole period",
                    self.rotation_period, fleet.activation_margin
                ),
            );
        }
        let needed = self.max_token_ttl + fleet.poll_interval + fleet.max_clock_skew;
        if self.grace_period < needed {
            return fail(
                "grace_period",
                format!(
                    "{}s is too short: it must cover max_token_ttl ({}s) + the sidecar poll interval ({}s) + the \
                     allowed clock skew ({}s) = {needed}s, or tokens signed just before a switch stop verifying",
                    self.grace_period, self.max_token_ttl, fleet.poll_interval, fleet.max_clock_skew
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: FleetTimings = FleetTimings { poll_interval: 30, max_clock_skew: 30, activation_margin: 30 };

    #[test]
    fn the_activation_margin_is_shorter_than_the_rotation() {
        let policy = Policy {
            rotation_period: 3_600,
            prepublish: 600,
            commit_timeout: 600,
            grace_period: 7_200,
            ..Policy::default()
        };
        let long = FleetTimings { activation_margin: 3_600, ..FLEET };
        let error = policy.validate(&long).expect_err("margin as long as the rotation");
        assert_eq!(error.field, "rotation_period");
        assert!(error.message.contains("activation_margin (3600s)"), "{error}");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Policy::default().validate(&FLEET), Ok(()));
    }

    #[test]
    fn each_violation_names_its_field() {
        type Breaks = fn(&mut Policy);
        let cases: [(Breaks, &str); 7] = [
            (|p| p.rotation_period = 0, "rotation_period"),
            (|p| p.grace_period = 31 * p.rotation_period, "grace_period"),
            (|p| p.grace_period = MAX_DURATION + 1, "grace_period"),
            (|p| p.prepublish = p.rotation_period, "prepublish"),
            (|p| p.commit_timeout = p.rotation_period + 1, "commit_timeout"),
            (|p| p.grace_period = p.max_token_ttl, "grace_period"),
            (|p| p.retention = 0, "retention"),
        ];
        for (breaks, field) in cases {
            let mut policy = Policy::default();
            breaks(&mut policy);
            let error = policy.validate(&FLEET).expect_err(field);
            assert_eq!(error.field, field, "{error}");
            assert!(error.to_string().starts_with(&format!("field \"{field}\": ")), "{error}");
        }
    }
}
