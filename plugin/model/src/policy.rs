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
        // A token of a second, a poll and the skew must fit in the grace
        // periods of the versions one bundle keeps; a shorter rotation
        // leaves no grace_period that is both long and short enough.
        let most_grace = (crate::bundle::MAX_VERSIONS as u64 - 2).saturating_mul(self.rotation_period);
        let least_grace = fleet.poll_interval.saturating_add(fleet.max_clock_skew).saturating_add(1);
        if least_grace > most_grace {
            return fail(
                "rotation_period",
                format!(
                    "{}s is too short for the mount's poll_interval ({}s) and max_clock_skew ({}s): a grace period \
                     covering them is longer than the {most_grace}s of versions a bundle keeps",
                    self.rotation_period, fleet.poll_interval, fleet.max_clock_skew
                ),
            );
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

/// The policy fields a request sets; `None` for each it leaves out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyInput {
    /// `rotation_period`, if given.
    pub rotation_period: Option<u64>,
    /// `grace_period`, if given.
    pub grace_period: Option<u64>,
    /// `prepublish`, if given.
    pub prepublish: Option<u64>,
    /// `max_token_ttl`, if given.
    pub max_token_ttl: Option<u64>,
    /// `commit_timeout`, if given.
    pub commit_timeout: Option<u64>,
    /// `retention`, if given.
    pub retention: Option<u64>,
}

/// A field the request left out whose inherited value did not fit the
/// fields it gave, and the value chosen instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The field.
    pub field: &'static str,
    /// What it would have inherited.
    pub inherited: u64,
    /// What it got.
    pub value: u64,
    /// The rule that chose the value, for the answer's warning.
    pub rule: &'static str,
}

impl std::fmt::Display for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was not given and {}s would not fit: set to {}s ({})",
            self.field, self.inherited, self.value, self.rule
        )
    }
}

impl Policy {
    /// `base` (the mount's default policy, or a keyring's current one) with
    /// `input` applied, where each field `input` leaves out keeps its
    /// `base` value if that fits the others and is derived otherwise
    /// (docs/key-lifecycle.md, "Fields left out"). Given values are kept
    /// exactly, right or wrong: [`Policy::validate`] judges the result.
    pub fn fit(base: &Policy, input: &PolicyInput, fleet: &FleetTimings) -> (Policy, Vec<Derived>) {
        let mut p = *base;
        let given = [
            (&mut p.rotation_period, input.rotation_period),
            (&mut p.grace_period, input.grace_period),
            (&mut p.prepublish, input.prepublish),
            (&mut p.max_token_ttl, input.max_token_ttl),
            (&mut p.commit_timeout, input.commit_timeout),
            (&mut p.retention, input.retention),
        ];
        for (slot, value) in given {
            if let Some(value) = value {
                *slot = value;
            }
        }
        let mut derived = Vec::new();
        let mut derive = |field, slot: &mut u64, value: u64, rule| {
            derived.push(Derived { field, inherited: *slot, value, rule });
            *slot = value;
        };
        let r = p.rotation_period;
        let wait = fleet.poll_interval.saturating_add(fleet.max_clock_skew);
        if input.prepublish.is_none() && p.prepublish >= r {
            derive("prepublish", &mut p.prepublish, (r / 4).max(1), "a quarter of rotation_period");
        }
        if input.commit_timeout.is_none() && p.commit_timeout > r {
            // The forced commit comes no later than the planned activation,
            // but leaves every sidecar two polls and the margin first.
            let floor = fleet.poll_interval.saturating_mul(2).saturating_add(fleet.activation_margin);
            let value = p.prepublish.max(floor).min(r);
            derive(
                "commit_timeout",
                &mut p.commit_timeout,
                value,
                "prepublish, at least two poll intervals and the activation margin, at most rotation_period",
            );
        }
        // A bundle holds the signer, the next version and at most this many
        // rotation periods of versions in their grace period.
        let most_grace = (crate::bundle::MAX_VERSIONS as u64 - 2).saturating_mul(r);
        if input.max_token_ttl.is_none() && p.max_token_ttl.saturating_add(wait) > most_grace {
            let value = p.max_token_ttl.min(r);
            derive("max_token_ttl", &mut p.max_token_ttl, value, "rotation_period");
        }
        let least_grace = p.max_token_ttl.saturating_add(wait);
        if input.grace_period.is_none() && !(least_grace..=most_grace).contains(&p.grace_period) {
            let value = least_grace.max(r).min(most_grace);
            derive(
                "grace_period",
                &mut p.grace_period,
                value,
                "the longer of rotation_period and max_token_ttl + poll_interval + max_clock_skew",
            );
        }
        (p, derived)
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

    fn only_rotation(r: u64) -> PolicyInput {
        PolicyInput { rotation_period: Some(r), ..PolicyInput::default() }
    }

    #[test]
    fn an_hourly_rotation_alone_gets_fields_that_fit_it() {
        let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(3_600), &FLEET);
        assert_eq!(policy.validate(&FLEET), Ok(()));
        let fields: Vec<_> = derived.iter().map(|d| (d.field, d.inherited, d.value)).collect();
        // A quarter of an hour ahead, the forced commit no later, a grace
        // period that covers an hour's tokens plus a poll and the skew.
        assert_eq!(
            fields,
            [("prepublish", 86_400, 900), ("commit_timeout", 21_600, 900), ("grace_period", 172_800, 3_660)]
        );
        assert_eq!((policy.max_token_ttl, policy.retention), (3_600, Policy::default().retention));
        assert!(
            derived[1].to_string().starts_with("commit_timeout was not given and 21600s would not fit: set to 900s")
        );
    }

    #[test]
    fn a_ten_minute_rotation_keeps_an_hour_of_tokens_in_grace() {
        let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(600), &FLEET);
        assert_eq!(policy.validate(&FLEET), Ok(()));
        assert_eq!((policy.prepublish, policy.commit_timeout, policy.grace_period), (150, 150, 3_660));
        assert_eq!(derived.len(), 3, "{derived:?}");
    }

    #[test]
    fn a_one_minute_rotation_shortens_the_token_lifetime_too() {
        let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(60), &FLEET);
        assert_eq!(policy.validate(&FLEET), Ok(()));
        assert!(derived.iter().any(|d| d.field == "max_token_ttl" && d.value == 60), "{derived:?}");
        // Two polls and the margin come before a forced commit, capped by the period.
        assert_eq!((policy.commit_timeout, policy.grace_period), (60, 120));
    }

    #[test]
    fn given_fields_are_kept_exactly_and_judged_as_they_are() {
        let input = PolicyInput { commit_timeout: Some(7_200), ..only_rotation(3_600) };
        let (policy, derived) = Policy::fit(&Policy::default(), &input, &FLEET);
        assert_eq!(policy.commit_timeout, 7_200);
        assert!(derived.iter().all(|d| d.field != "commit_timeout"), "{derived:?}");
        assert_eq!(policy.validate(&FLEET).expect_err("too long").field, "commit_timeout");
        let input = PolicyInput { grace_period: Some(60), ..only_rotation(3_600) };
        let (policy, _) = Policy::fit(&Policy::default(), &input, &FLEET);
        assert_eq!(policy.validate(&FLEET).expect_err("too short").field, "grace_period");
    }

    #[test]
    fn fields_that_fit_are_inherited_unchanged() {
        let (policy, derived) = Policy::fit(&Policy::default(), &PolicyInput::default(), &FLEET);
        assert_eq!((policy, derived), (Policy::default(), vec![]));
        let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(7 * 86_400), &FLEET);
        assert_eq!(derived, vec![]);
        assert_eq!(policy, Policy { rotation_period: 7 * 86_400, ..Policy::default() });
    }

    #[test]
    fn fitted_policies_are_valid_over_the_whole_range() {
        for r in [2, 10, 59, 60, 61, 119, 600, 3_599, 3_600, 86_400, 30 * 86_400, MAX_DURATION] {
            for fleet in [FLEET, FleetTimings { poll_interval: 1, max_clock_skew: 0, activation_margin: 1 }] {
                let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(r), &fleet);
                // A period within the activation margin is the given field's fault.
                let expected = if r <= fleet.activation_margin { Err("rotation_period") } else { Ok(()) };
                assert_eq!(policy.validate(&fleet).map_err(|e| e.field), expected, "r={r} {fleet:?} {derived:?}");
            }
        }
    }

    #[test]
    fn a_rotation_too_short_for_the_fleet_timings_is_the_rotations_fault() {
        let slow = FleetTimings { poll_interval: 600, max_clock_skew: 60, activation_margin: 1 };
        let (policy, derived) = Policy::fit(&Policy::default(), &only_rotation(20), &slow);
        let error = policy.validate(&slow).expect_err("no grace fits");
        assert_eq!(error.field, "rotation_period", "{error} {derived:?}");
        assert!(error.message.contains("poll_interval (600s)"), "{error}");
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
