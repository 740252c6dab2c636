//! The coordinator's decisions, as pure functions over a keyring.
//!
//! A keyring moves through publish → acknowledge → commit → switch:
//! a new version is published (pools can verify with it) well before it
//! may sign; once every live pool holds it, or the commit timeout has
//! passed, it is committed and its `not_before` becomes final; pools switch
//! to it by their own clocks at that instant. The caller (the plugin) reads
//! the clock, generates material, gathers acknowledgements, and stores the
//! keyring in one write after each change.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::version::{Revocation, VersionMeta};
use crate::{KeyType, Policy, UnixSeconds};

/// Who made a decision, as history records it: a display name for people,
/// and the ids that audit logs and the token store know the caller by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actor<'a> {
    /// The display name (or `scheduler`).
    pub name: &'a str,
    /// The identity entity, or empty.
    pub entity_id: &'a str,
    /// The token's accessor, or empty.
    pub accessor: &'a str,
}

impl<'a> From<&'a str> for Actor<'a> {
    /// An actor known by name only: the scheduler.
    fn from(name: &'a str) -> Self {
        Self { name, ..Self::default() }
    }
}

/// The history action of a version the fleet holds that the keyring's
/// record did not issue.
pub const FLEET_AHEAD: &str = "fleet-ahead";

/// The history action of a version that began to sign.
pub const ACTIVATE: &str = "activate";

/// History entries kept per keyring besides fleet reports (oldest dropped
/// first), unless the mount's `history_entries` says otherwise.
pub const HISTORY_LIMIT: usize = 256;
/// The most history entries a keyring may keep besides fleet reports: the
/// largest `history_entries` accepted.
pub const HISTORY_MAX: usize = 2_000;
/// How far past a keyring's latest number the fleet's reports alone may
/// move its numbering: a new version is numbered past a reported version
/// at most this far ahead, never past one further. A restore that left
/// the fleet further ahead waits for an operator's `renumber`.
pub const FLEET_NUMBERING_BOUND: u64 = 16;
/// `fleet-ahead` entries kept per keyring, one per claimant: reports of
/// versions the fleet holds are coalesced and bounded on their own, so no
/// number of them pushes other entries out of the history.
pub const FLEET_REPORTS_KEPT: usize = 16;
/// `fleet-ahead` entries kept per pool: one pool's callers, however many
/// instance ids they use, cannot push other pools' reports out.
pub const FLEET_REPORTS_PER_POOL: usize = 4;
/// Version numbers one claimant's entry keeps (the highest).
pub const FLEET_NUMBERS_KEPT: usize = 16;
/// Idempotency keys remembered per keyring.
pub const IDEMPOTENCY_LIMIT: usize = 64;
/// Records of destroyed versions kept per keyring, whatever the retention.
pub const RETAINED_LIMIT: usize = 64;

/// Why something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The periodic scheduler.
    Scheduled,
    /// An operator's request.
    Manual,
    /// An emergency revocation.
    Emergency,
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the keyring's history; increases by one per entry.
    pub seq: u64,
    /// When.
    pub at: UnixSeconds,
    /// What: `create`, `publish`, `commit`, `revoke`, `policy`, `expire`.
    pub action: String,
    /// Why.
    pub cause: Cause,
    /// Who: the request's display name or entity, or `scheduler`.
    pub actor: String,
    /// The caller's identity entity, when its token has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entity_id: String,
    /// The accessor of the caller's token, when the server sent it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accessor: String,
    /// Free text: the operator's reason, or what the scheduler saw.
    pub detail: String,
    /// The versions affected.
    pub versions: Vec<u64>,
    /// For a `fleet-ahead` entry, every report its claimant made: it is
    /// one entry however often the claimant reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<FleetReports>,
}

/// The reports one claimant (`pool/instance`) made of versions the fleet
/// holds that the keyring did not issue, coalesced into one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReports {
    /// Who reported: `pool/instance`.
    pub claimant: String,
    /// How many reports were recorded.
    pub count: u64,
    /// When the first was.
    pub first_at: UnixSeconds,
}

/// A remembered idempotency key and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The caller's key.
    pub key: String,
    /// The version its rotation created.
    pub version: u64,
    /// When.
    pub at: UnixSeconds,
}

/// A keyring: its type, policy, versions (metadata only) and records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    /// Name.
    pub name: String,
    /// Key type; fixed at creation.
    pub key_type: KeyType,
    /// Rotation policy.
    pub policy: Policy,
    /// Whether `delete` is allowed.
    pub deletion_allowed: bool,
    /// Highest version number ever issued; never decreases.
    pub latest: u64,
    /// Increases whenever what pools receive changes; sidecars refuse a
    /// bundle whose generation goes backwards.
    pub generation: u64,
    /// Versions still verifying, or expired within the retention period.
    pub versions: Vec<VersionMeta>,
    /// Recent decisions.
    pub history: VecDeque<HistoryEntry>,
    /// Next history sequence number.
    pub history_seq: u64,
    /// Recent idempotency keys.
    pub idempotency: VecDeque<IdempotencyRecord>,
    /// Whether anyone may read the public keys of the verification set
    /// (`jwks/<name>`, without a token). Asymmetric types only.
    #[serde(default)]
    pub public_jwks: bool,
    /// Longer timings a policy change shortened, still honoured: sidecars
    /// cut off since before the change bound their signing by the timings
    /// they last received (see [`crate::bundle::BundleKeyring::sign_until`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honoured: Option<Honoured>,
}

/// The `prepublish` and `grace_period` a keyring goes on using after a
/// policy change shortened them, until `until`: by then every sidecar
/// that synced before the change has passed its signing bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Honoured {
    /// The longest `prepublish` sidecars may still assume, in seconds.
    pub prepublish: u64,
    /// The longest `grace_period` sidecars may still assume, in seconds.
    pub grace_period: u64,
    /// When no sidecar can rely on them any more.
    pub until: UnixSeconds,
}

/// A rotation request that cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    /// The caller expected another latest version.
    #[error("expected_version {expected} is not the latest version; the latest is {latest}")]
    Conflict {
        /// What the caller sent.
        expected: u64,
        /// What is current.
        latest: u64,
    },
    /// A version is already published and waiting to activate.
    #[error(
        "version {pending} is already published and waits to activate (planned at {}); rotate again after it activates, or revoke",
        crate::rfc3339(*.planned)
    )]
    AlreadyPending {
        /// The pending version.
        pending: u64,
        /// Its planned activation.
        planned: UnixSeconds,
    },
    /// As many versions verify as a bundle can carry.
    #[error(
        "{live} versions still verify; a bundle carries at most 32, with room kept for the scheduler's next one; rotate again when the oldest leaves its grace period"
    )]
    TooManyLive {
        /// How many verify now.
        live: usize,
    },
}

/// A revocation that cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No such live version.
    #[error("version {0} does not exist or has already expired")]
    NoSuchVersion(u64),
    /// Already revoked.
    #[error("version {0} is already revoked")]
    AlreadyRevoked(u64),
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The revoked version did not sign; nothing else changed.
    Revoked,
    /// The revoked version was signing; this version now signs.
    Replaced(u64),
    /// The revoked version was signing and a new version is needed: the
    /// caller publishes one with [`Keyring::emergency_version`].
    NeedsNewVersion,
}

impl Keyring {
    /// A keyring with no versions yet.
    pub fn new(name: String, key_type: KeyType, policy: Policy, deletion_allowed: bool) -> Self {
        Self {
            name,
            key_type,
            policy,
            deletion_allowed,
            latest: 0,
            generation: 0,
            versions: Vec::new(),
            history: VecDeque::new(),
            history_seq: 0,
            idempotency: VecDeque::new(),
            public_jwks: false,
            honoured: None,
        }
    }

    /// Sets a new policy at `t`. When it shortens `prepublish` or
    /// `grace_period`, the longer values go on applying until every sidecar
    /// that received them could have passed its signing bound (their sum
    /// after `t`): a pool cut off meanwhile signs, by its bound, with what
    /// the rest of the fleet goes on verifying.
    pub fn set_policy(&mut self, policy: Policy, t: UnixSeconds) {
        let before = (self.prepublish(t), self.grace(t));
        if policy.prepublish < before.0 || policy.grace_period < before.1 {
            let until = t.saturating_add(secs(before.0)).saturating_add(secs(before.1));
            let until = self.honoured.filter(|h| t < h.until).map_or(until, |h| h.until.max(until));
            self.honoured = Some(Honoured { prepublish: before.0, grace_period: before.1, until });
        }
        self.policy = policy;
    }

    /// The `prepublish` in force at `t`: the policy's, or a longer one a
    /// change shortened that is still honoured.
    pub fn prepublish(&self, t: UnixSeconds) -> u64 {
        let honoured = self.honoured.filter(|h| t < h.until).map_or(0, |h| h.prepublish);
        self.policy.prepublish.max(honoured)
    }

    /// The `grace_period` in force at `t` (see [`Keyring::prepublish`]).
    pub fn grace(&self, t: UnixSeconds) -> u64 {
        let honoured = self.honoured.filter(|h| t < h.until).map_or(0, |h| h.grace_period);
        self.policy.grace_period.max(honoured)
    }

    /// Records a decision.
    pub fn record<'a>(
        &mut self,
        at: UnixSeconds,
        action: &str,
        cause: Cause,
        actor: impl Into<Actor<'a>>,
        detail: String,
        versions: Vec<u64>,
    ) {
        let actor = actor.into();
        self.history_seq += 1;
        let entry = HistoryEntry {
            seq: self.history_seq,
            at,
            action: action.into(),
            cause,
            actor: actor.name.into(),
            entity_id: actor.entity_id.into(),
            accessor: actor.accessor.into(),
            detail,
            versions,
            reports: None,
        };
        self.history.push_back(entry);
        self.trim_history();
    }

    /// Keeps [`HISTORY_MAX`] entries besides the fleet reports, which
    /// are bounded on their own: a report never pushes another entry out.
    /// The mount's setting trims further when the keyring is stored (see
    /// [`Keyring::keep_history`]).
    fn trim_history(&mut self) {
        self.drop_oldest_while(|e| e.action != FLEET_AHEAD, HISTORY_MAX);
    }

    /// Whether more than `keep` entries besides the fleet reports are held.
    pub fn history_beyond(&self, keep: usize) -> bool {
        self.history.iter().filter(|e| e.action != FLEET_AHEAD).count() > keep
    }

    /// Drops the oldest entries besides the fleet reports until `keep` are
    /// left.
    pub fn keep_history(&mut self, keep: usize) {
        self.drop_oldest_while(|e| e.action != FLEET_AHEAD, keep);
    }

    /// Records that `claimant` (`pool/instance`) reports holding version
    /// `number`, which this keyring did not issue: its earlier entry, if
    /// any, is replaced by one at the end of the history that counts the
    /// reports recorded and keeps the numbers claimed (the highest
    /// [`FLEET_NUMBERS_KEPT`]). At most [`FLEET_REPORTS_PER_POOL`] claimants
    /// of one pool and [`FLEET_REPORTS_KEPT`] in all are kept (those heard
    /// from longest ago go first), and they go before any other entry, so
    /// reports never push other entries out of the history.
    pub fn record_fleet_report(&mut self, at: UnixSeconds, claimant: &str, detail: String, number: u64) {
        let mine = |e: &HistoryEntry| e.reports.as_ref().is_some_and(|r| r.claimant == claimant);
        let earlier = self.history.iter().position(mine).and_then(|i| self.history.remove(i));
        let (count, first_at, mut numbers) = match earlier.and_then(|e| Some((e.reports?, e.versions))) {
            Some((r, numbers)) => (r.count.saturating_add(1), r.first_at, numbers),
            None => (1, at, Vec::new()),
        };
        if !numbers.contains(&number) {
            numbers.push(number);
            numbers.sort_unstable();
        }
        let excess = numbers.len().saturating_sub(FLEET_NUMBERS_KEPT);
        numbers.drain(..excess);
        // A fleet report never counts towards the limit `record` trims to.
        self.record(at, FLEET_AHEAD, Cause::Scheduled, "scheduler", detail, numbers);
        if let Some(entry) = self.history.back_mut() {
            entry.reports = Some(FleetReports { claimant: claimant.into(), count, first_at });
        }
        let pool = claimant.split_once('/').map_or(claimant, |(pool, _)| pool);
        let of_pool = |e: &HistoryEntry| {
            e.reports.as_ref().is_some_and(|r| r.claimant.split_once('/').is_some_and(|(p, _)| p == pool))
        };
        self.drop_oldest_while(of_pool, FLEET_REPORTS_PER_POOL);
        self.drop_oldest_while(|e| e.action == FLEET_AHEAD, FLEET_REPORTS_KEPT);
        self.trim_history();
    }

    /// Drops the oldest entries that `which` selects until at most `keep`
    /// are left.
    fn drop_oldest_while(&mut self, which: impl Fn(&HistoryEntry) -> bool, keep: usize) {
        while self.history.iter().filter(|e| which(e)).count() > keep {
            match self.history.iter().position(&which) {
                Some(oldest) => drop(self.history.remove(oldest)),
                None => break,
            }
        }
    }

    /// Numbering goes on past `number`, leaving the generation as it is.
    /// Returns whether the latest number moved.
    pub fn continue_numbering_past(&mut self, number: u64) -> bool {
        let moved = number > self.latest;
        self.latest = self.latest.max(number);
        moved
    }

    /// The generation goes past `generation`, one the fleet holds, so the
    /// next bundle is newer than what it holds. Returns whether it moved.
    pub fn continue_generation_past(&mut self, generation: u64) -> bool {
        if generation < self.generation {
            return false;
        }
        self.generation = generation.saturating_add(1);
        true
    }

    /// Numbering goes on past `number`, a version the fleet holds that this
    /// keyring did not issue (its storage was restored from an older copy),
    /// and the generation past `generation`, the one the fleet holds: no
    /// number is ever given to two versions, and the next bundle is newer
    /// than what the fleet holds, so sidecars take it. Returns whether
    /// anything changed.
    pub fn continue_past(&mut self, number: u64, generation: u64) -> bool {
        if number <= self.latest && generation < self.generation {
            return false;
        }
        self.latest = self.latest.max(number);
        self.generation = self.generation.max(generation).saturating_add(1);
        true
    }

    /// Gives up the pending version when the fleet holds `number`, a version
    /// past it or under its number, that this record did not issue: the
    /// fleet reports its newest, so it will never acknowledge the pending
    /// one, which would block every rotation until its commit timeout.
    /// The superseded version never signs. One numbered below the fleet's
    /// and published before `since` (the copy's) is the one the fleet went
    /// on from, which may have signed: it goes on verifying for as long as
    /// anything can still be signing with it (until a version published
    /// now, committed at its timeout, has taken over and its grace has
    /// run). One under the fleet's own number, or published since (by this
    /// coordinator, after the restore, under a number the fleet may hold
    /// as another key), never signed anything: it leaves at once. Returns
    /// the superseded number.
    pub fn supersede_pending(&mut self, number: u64, t: UnixSeconds, since: UnixSeconds) -> Option<u64> {
        let pending = self.pending()?;
        let (made_here, pending) = (pending.created_at >= since, pending.number);
        if pending > number {
            return None;
        }
        let until = if pending < number && !made_here {
            t.saturating_add(secs(self.prepublish(t)))
                .saturating_add(secs(self.policy.commit_timeout))
                .saturating_add(secs(self.grace(t)))
        } else {
            t
        };
        for version in self.versions.iter_mut().filter(|v| v.number == pending) {
            version.expires_at = Some(until);
        }
        self.generation += 1;
        Some(pending)
    }

    /// The version that signs at `t`, if its activation is not in the
    /// history yet: the caller records it (once per version).
    pub fn unrecorded_activation(&self, t: UnixSeconds) -> Option<&VersionMeta> {
        let signing = crate::key_state(&self.versions, t).signing?;
        let recorded = self.history.iter().any(|e| e.action == ACTIVATE && e.versions.contains(&signing));
        if recorded {
            return None;
        }
        self.versions.iter().find(|v| v.number == signing)
    }

    /// The published version that is not committed yet, if any (at most one).
    pub fn pending(&self) -> Option<&VersionMeta> {
        self.versions.iter().find(|v| v.is_pending())
    }

    /// The newest version that verifies but does not sign yet at `t`:
    /// waiting for its commit, or committed with a future `not_before`.
    pub fn upcoming(&self, t: UnixSeconds) -> Option<&VersionMeta> {
        self.versions
            .iter()
            .filter(|v| v.verifies_at(t) && !v.is_superseded() && v.not_before.is_none_or(|start| start > t))
            .max_by_key(|v| v.number)
    }

    /// The highest committed, unrevoked version.
    pub fn current(&self) -> Option<&VersionMeta> {
        self.versions.iter().filter(|v| v.is_committed() && v.revoked.is_none()).max_by_key(|v| v.number)
    }

    /// When the scheduler should publish the next version, if it should at
    /// `t`: its planned activation. A keyring overdue after downtime gets
    /// one version planned from now, never one per missed period.
    pub fn due_publication(&self, t: UnixSeconds) -> Option<UnixSeconds> {
        // A bundle carries at most MAX_VERSIONS of a keyring: with that many
        // still verifying (after a policy change shortened the rotation,
        // say), the signer goes on until the oldest expire.
        if self.pending().is_some() || self.live(t) >= crate::bundle::MAX_VERSIONS {
            return None;
        }
        let Some(current) = self.current() else {
            // Nothing signs yet: the first version is due at once.
            return Some(t);
        };
        let rotation = secs(self.policy.rotation_period);
        let start = current.not_before.unwrap_or(t);
        let prepublish = secs(self.prepublish(t));
        let due = start.saturating_add(rotation).saturating_sub(prepublish);
        (t >= due).then(|| start.saturating_add(rotation).max(t.saturating_add(prepublish)))
    }

    /// Whether the fleet was heard holding a version this record did not
    /// issue, and no version numbered past it has been issued since (a
    /// revocation that only commits the pending version does not count).
    pub fn fleet_ahead(&self) -> bool {
        let Some(last) = self.history.iter().rposition(|e| e.action == FLEET_AHEAD) else {
            return false;
        };
        let ahead = self.history.iter().filter(|e| e.action == FLEET_AHEAD).flat_map(|e| e.versions.iter()).max();
        let past = |e: &HistoryEntry| {
            (e.action == "publish" || e.action == "revoke") && e.versions.iter().any(|n| Some(n) > ahead)
        };
        !self.history.iter().skip(last + 1).any(past)
    }

    /// Publishes a new version planned to activate at `planned`; returns
    /// its number. The first version of a keyring is committed at once:
    /// no pool can sign with anything before it anyway.
    pub fn publish(&mut self, kid: String, t: UnixSeconds, planned: UnixSeconds) -> u64 {
        self.latest += 1;
        self.generation += 1;
        let first = self.current().is_none();
        self.versions.push(VersionMeta {
            number: self.latest,
            kid,
            created_at: t,
            planned_activation: planned,
            not_before: first.then_some(planned.max(t)),
            not_after: None,
            expires_at: None,
            emergency: false,
            revoked: None,
            destroyed: false,
        });
        self.latest
    }

    /// How many versions verify at `t` (pending ones included): what a
    /// bundle carries of this keyring.
    fn live(&self, t: UnixSeconds) -> usize {
        self.versions.iter().filter(|v| v.verifies_at(t)).count()
    }

    /// Checks a manual rotation at `t` against the caller's expectation.
    /// Only one version may wait for activation at a time.
    pub fn check_rotation(&self, expected: Option<u64>, t: UnixSeconds) -> Result<(), RotateError> {
        if let Some(expected) = expected
            && expected != self.latest
        {
            return Err(RotateError::Conflict { expected, latest: self.latest });
        }
        if let Some(p) = self.upcoming(t) {
            return Err(RotateError::AlreadyPending {
                pending: p.number,
                planned: p.not_before.unwrap_or(p.planned_activation),
            });
        }
        // Room for this version and for the scheduler's next one.
        let live = self.live(t);
        if live + 2 > crate::bundle::MAX_VERSIONS {
            return Err(RotateError::TooManyLive { live });
        }
        Ok(())
    }

    /// The version an idempotency key already produced, if remembered.
    pub fn idempotent_result(&self, key: &str) -> Option<u64> {
        self.idempotency.iter().find(|r| r.key == key).map(|r| r.version)
    }

    /// Remembers an idempotency key.
    pub fn remember(&mut self, key: String, version: u64, at: UnixSeconds) {
        self.idempotency.push_back(IdempotencyRecord { key, version, at });
        while self.idempotency.len() > IDEMPOTENCY_LIMIT {
            self.idempotency.pop_front();
        }
    }

    /// Commits the pending version: its `not_before` becomes final, no
    /// earlier than its planned activation and no earlier than
    /// `t + margin`; the previous version stops signing then and verifies
    /// for the grace period after. Returns the committed number.
    pub fn commit(&mut self, t: UnixSeconds, margin: u64) -> Option<u64> {
        let pending = self.pending()?.number;
        let grace = secs(self.grace(t));
        let previous = self.current().map(|v| v.number);
        let mut activates = t.saturating_add(secs(margin));
        for version in &mut self.versions {
            if version.number == pending {
                activates = activates.max(version.planned_activation);
                version.not_before = Some(activates);
            }
        }
        if let Some(previous) = previous {
            self.end_signing(previous, activates, activates.saturating_add(grace));
        }
        self.generation += 1;
        Some(pending)
    }

    fn end_signing(&mut self, number: u64, not_after: UnixSeconds, expires_at: UnixSeconds) {
        for version in self.versions.iter_mut().filter(|v| v.number == number) {
            version.not_after = Some(not_after);
            version.expires_at = Some(version.expires_at.map_or(expires_at, |e| e.min(expires_at)));
        }
    }

    /// Revokes a compromised version at `t`. It leaves every bundle at once.
    /// If it was signing, the version already published to pools (waiting
    /// for its commit or its activation) takes over immediately, or else the
    /// caller must publish an emergency version.
    pub fn revoke(&mut self, number: u64, t: UnixSeconds, reason: String) -> Result<RevokeOutcome, RevokeError> {
        let signing = crate::key_state(&self.versions, t).signing;
        let version = self
            .versions
            .iter_mut()
            .find(|v| v.number == number && (v.revoked.is_some() || v.verifies_at(t)))
            .ok_or(RevokeError::NoSuchVersion(number))?;
        if version.revoked.is_some() {
            return Err(RevokeError::AlreadyRevoked(number));
        }
        // A committed version that has not activated yet: its predecessor
        // was told to stop signing at its activation, and must not.
        let cancelled_start = version.not_before.filter(|start| *start > t);
        version.revoked = Some(Revocation { at: t, reason });
        version.expires_at = Some(t);
        if version.is_committed() && version.not_after.is_none_or(|end| end > t) {
            version.not_after = Some(t);
        }
        if let Some(start) = cancelled_start {
            for previous in self.versions.iter_mut().filter(|v| v.revoked.is_none() && v.not_after == Some(start)) {
                previous.not_after = None;
                previous.expires_at = None;
            }
        }
        self.generation += 1;
        if signing != Some(number) {
            return Ok(RevokeOutcome::Revoked);
        }
        // The signer is gone: a version pools already hold takes over now.
        match self.upcoming(t).map(|p| p.number) {
            Some(next) => {
                self.activate_now(next, t);
                Ok(RevokeOutcome::Replaced(next))
            }
            None => Ok(RevokeOutcome::NeedsNewVersion),
        }
    }

    /// Publishes and commits a version that signs at once (after revoking
    /// the signer, when no published version could take over).
    pub fn emergency_version(&mut self, kid: String, t: UnixSeconds) -> u64 {
        let number = self.publish(kid, t, t);
        self.activate_now(number, t);
        number
    }

    fn activate_now(&mut self, number: u64, t: UnixSeconds) {
        for version in self.versions.iter_mut().filter(|v| v.number == number) {
            version.not_before = Some(t);
            version.planned_activation = version.planned_activation.min(t);
            version.emergency = true;
        }
        self.generation += 1;
    }

    /// Versions whose material must be destroyed at `t` (expired or
    /// revoked, not destroyed yet); marks them destroyed. The caller
    /// deletes the material before storing the keyring.
    pub fn expire(&mut self, t: UnixSeconds) -> Vec<u64> {
        let mut destroyed = Vec::new();
        for version in self.versions.iter_mut().filter(|v| !v.destroyed && !v.verifies_at(t)) {
            version.destroyed = true;
            destroyed.push(version.number);
        }
        if !destroyed.is_empty() {
            self.generation += 1;
        }
        // Records of long-expired versions are forgotten after retention,
        // and beyond the newest RETAINED_LIMIT, so the record stays small.
        let retention = secs(self.policy.retention);
        self.versions.retain(|v| !v.destroyed || v.expires_at.is_none_or(|end| t < end.saturating_add(retention)));
        let destroyed_kept = self.versions.iter().filter(|v| v.destroyed).count();
        let mut excess = destroyed_kept.saturating_sub(RETAINED_LIMIT);
        self.versions.retain(|v| {
            let forget = v.destroyed && excess > 0;
            excess -= usize::from(forget);
            !forget
        });
        destroyed
    }
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
