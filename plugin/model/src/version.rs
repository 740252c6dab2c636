//! Versions and the pure function that gives key state at an instant.

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

/// Why and when a version was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When.
    pub at: UnixSeconds,
    /// The operator's reason.
    pub reason: String,
}

/// One version of a keyring, without its material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// Monotonic, never reused.
    pub number: u64,
    /// Key id, unique across keyrings and versions.
    pub kid: String,
    /// When it was created and published to pools.
    pub created_at: UnixSeconds,
    /// When it was planned to start signing.
    pub planned_activation: UnixSeconds,
    /// When it starts (or started) signing. Set once, at commit, when every
    /// live pool holds the version; never changes afterwards.
    pub not_before: Option<UnixSeconds>,
    /// When it stops signing: the next version's `not_before`.
    pub not_after: Option<UnixSeconds>,
    /// When it stops verifying: `not_after` + grace period, or the
    /// revocation time. Set on a version that is not committed, it marks
    /// one superseded before its commit (see [`VersionMeta::is_superseded`]).
    pub expires_at: Option<UnixSeconds>,
    /// Activated without the normal publication lead, by an emergency
    /// revocation.
    pub emergency: bool,
    /// Set when the version was revoked as compromised.
    pub revoked: Option<Revocation>,
    /// Whether its material has been destroyed (after expiry).
    #[serde(default)]
    pub destroyed: bool,
}

/// Where a version is in its life at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// Published, verifies, waits for its commit (for every live pool to
    /// hold it): its activation instant is not final yet.
    Pending,
    /// Committed: verifies, and signs from its `not_before`, which is
    /// final and still ahead.
    Scheduled,
    /// Signs.
    Active,
    /// No longer signs (or, superseded before its commit, never will);
    /// still verifies.
    Grace,
    /// Past `expires_at`; verifies nothing.
    Expired,
    /// Revoked as compromised; verifies nothing.
    Revoked,
}

impl VersionMeta {
    /// Whether it is committed (its `not_before` is final).
    pub fn is_committed(&self) -> bool {
        self.not_before.is_some()
    }

    /// Whether it was given up before its commit: it never signs, and
    /// verifies until `expires_at` (a coordinator restored from an older
    /// copy of its storage supersedes the version its copy left pending
    /// once it hears that the fleet went on past it).
    pub fn is_superseded(&self) -> bool {
        !self.is_committed() && self.revoked.is_none() && self.expires_at.is_some()
    }

    /// Whether it waits for its commit.
    pub fn is_pending(&self) -> bool {
        !self.is_committed() && self.revoked.is_none() && self.expires_at.is_none()
    }

    /// Whether it may verify at `t`.
    pub fn verifies_at(&self, t: UnixSeconds) -> bool {
        self.revoked.is_none() && self.expires_at.is_none_or(|end| t < end)
    }

    fn may_sign_at(&self, t: UnixSeconds) -> bool {
        self.verifies_at(t) && self.not_before.is_some_and(|start| start <= t)
    }
}

/// Key state of a keyring at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyState {
    /// The one version that signs, if any has been activated.
    pub signing: Option<u64>,
    /// Every version that verifies: pending, active and in grace, ascending.
    pub verifying: Vec<u64>,
    /// Versions that verify nothing any more (expired or revoked), ascending.
    pub expired: Vec<u64>,
}

/// Which version signs at `t`, which verify, and which have expired.
///
/// The signing version is the highest-numbered committed version whose
/// `not_before` has passed and which still verifies. Every pool computes
/// this from the same published data, so they agree.
pub fn key_state(versions: &[VersionMeta], t: UnixSeconds) -> KeyState {
    let mut state = KeyState::default();
    for version in versions {
        if version.verifies_at(t) {
            state.verifying.push(version.number);
            if version.may_sign_at(t) && state.signing.is_none_or(|s| s < version.number) {
                state.signing = Some(version.number);
            }
        } else {
            state.expired.push(version.number);
        }
    }
    state.verifying.sort_unstable();
    state.expired.sort_unstable();
    state
}

/// The state of one version at `t`, given the keyring's signing version.
pub fn version_state(version: &VersionMeta, signing: Option<u64>, t: UnixSeconds) -> VersionState {
    if version.revoked.is_some() {
        VersionState::Revoked
    } else if !version.verifies_at(t) {
        VersionState::Expired
    } else if signing == Some(version.number) {
        VersionState::Active
    } else if version.not_before.is_some_and(|start| start <= t) || version.is_superseded() {
        VersionState::Grace
    } else if version.is_committed() {
        VersionState::Scheduled
    } else {
        VersionState::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn version(number: u64, not_before: Option<i64>, expires_at: Option<i64>) -> VersionMeta {
        VersionMeta {
            number,
            kid: format!("k{number}"),
            created_at: 0,
            planned_activation: not_before.unwrap_or(0),
            not_before,
            not_after: None,
            expires_at,
            emergency: false,
            revoked: None,
            destroyed: false,
        }
    }

    #[test]
    fn state_across_a_handover() {
        // v1 signs from 0, v2 from 100; v1 verifies until 150.
        let versions = [version(1, Some(0), Some(150)), version(2, Some(100), None), version(3, None, None)];
        let at = |t| key_state(&versions, t);
        assert_eq!(at(50), KeyState { signing: Some(1), verifying: vec![1, 2, 3], expired: vec![] });
        assert_eq!(at(100), KeyState { signing: Some(2), verifying: vec![1, 2, 3], expired: vec![] });
        assert_eq!(at(150), KeyState { signing: Some(2), verifying: vec![2, 3], expired: vec![1] });
        assert_eq!(version_state(&versions[0], Some(2), 120), VersionState::Grace);
        assert_eq!(version_state(&versions[2], Some(2), 120), VersionState::Pending);
        assert_eq!(version_state(&versions[1], Some(1), 50), VersionState::Scheduled, "committed, not yet signing");
    }

    #[test]
    fn revoked_versions_neither_sign_nor_verify() {
        let mut v1 = version(1, Some(0), None);
        v1.revoked = Some(Revocation { at: 10, reason: "leaked".into() });
        let versions = [v1, version(2, Some(10), None)];
        assert_eq!(key_state(&versions, 5), KeyState { signing: None, verifying: vec![2], expired: vec![1] });
        assert_eq!(key_state(&versions, 10).signing, Some(2));
    }
}
