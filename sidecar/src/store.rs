//! The in-memory key store: one immutable snapshot of the last good bundle,
//! swapped atomically, and a change counter that wakes watchers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwapOption;
use lockstep_model::bundle::{Bundle, BundleError, BundleKeyring, BundleVersion, held_activation};
use lockstep_model::version::VersionMeta;
use lockstep_model::{KeyState, UnixSeconds, key_state};
use tokio::sync::watch;

use crate::crypto::{CryptoError, PreparedKey};

/// Why a bundle was not swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The model's checks refused it (pool, revision, sizes, rollback…).
    #[error("bundle refused: {0}")]
    Invalid(#[from] BundleError),
    /// Its material does not parse or its halves do not match.
    #[error("bundle refused: keyring {keyring:?}: {source}")]
    Material {
        /// The keyring.
        keyring: String,
        /// What is wrong.
        source: CryptoError,
    },
}

/// One keyring, its material parsed.
#[derive(Debug)]
pub struct Keyring {
    /// As received.
    pub data: BundleKeyring,
    /// Parsed material by version number.
    pub keys: BTreeMap<u64, PreparedKey>,
    /// The versions' metadata, for `key_state` without a copy per request.
    metas: Vec<VersionMeta>,
    /// Hex digest of the generation and metadata: the part of the state
    /// token that only a new bundle changes.
    content_hash: String,
    /// Versions kept from the previous bundle for verification only (see
    /// [`carry_over`]).
    pub carried: std::collections::BTreeSet<u64>,
}

impl Keyring {
    /// Key state at `t`, from the versions' own times.
    pub fn state_at(&self, t: UnixSeconds) -> KeyState {
        key_state(&self.metas, t)
    }

    /// A token that changes whenever what a caller sees of the keyring
    /// changes: its content, or which versions sign and verify at `t`.
    pub fn state_token(&self, t: UnixSeconds) -> String {
        let state = self.state_at(t);
        let verifying: Vec<String> = state.verifying.iter().map(u64::to_string).collect();
        format!("{}.{}.{}", self.content_hash, state.signing.unwrap_or(0), verifying.join("-"))
    }

    fn new(data: BundleKeyring, keys: BTreeMap<u64, PreparedKey>) -> Self {
        let metas: Vec<VersionMeta> = data.versions.iter().map(|v| v.meta.clone()).collect();
        let text = serde_json::to_vec(&(data.generation, &metas)).unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &text);
        let content_hash = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self { data, keys, metas, content_hash, carried: std::collections::BTreeSet::new() }
    }

    /// The next instant after `t` at which the state may change (an
    /// activation or an expiry), if any.
    pub fn next_change_after(&self, t: UnixSeconds) -> Option<UnixSeconds> {
        self.data
            .versions
            .iter()
            .flat_map(|v| [v.meta.not_before, v.meta.expires_at])
            .flatten()
            .filter(|at| *at > t)
            .min()
    }
}

/// Keeps the versions of `old` that the new bundle drops although they
/// have not expired and are not listed as revoked: a coordinator restored
/// from an older copy of its storage no longer knows versions the fleet
/// holds, and tokens signed with them must go on verifying until they
/// expire. A kept version keeps the state it had. A committed one keeps its
/// activation, so the signing version never goes back to a lower number
/// because a bundle forgot the newer ones: the one that signed goes on
/// signing (every pod that held it keeps it too) until a newer version
/// activates, the way every version takes over, in step across the fleet.
/// A pending one goes on verifying and never signs, so a pool that had not
/// yet seen its commit still verifies what the others sign with it. A kept
/// version that had stopped signing, or never signed, lasts until its
/// grace would have ended (`grace_period` from now, or its own expiry if
/// sooner); one still signing lasts until `grace_period` after a newer
/// version the bundle lists activates, so it never stops verifying, or
/// signing, before another version takes over. A committed version that a newer
/// bundle lists committed later, or not at all, keeps the activation held
/// (see [`held_activation`]). Bundles without a revocation list (older
/// plugins) keep nothing. Answers the numbers kept.
fn carry_over(old: &Keyring, new: &mut BundleKeyring, now: UnixSeconds) -> std::collections::BTreeSet<u64> {
    let mut kept = std::collections::BTreeSet::new();
    let (Some(revoked), Some(limits)) = (new.revoked.as_ref(), new.limits.or(old.data.limits)) else {
        return kept;
    };
    let grace = i64::try_from(limits.grace_period).unwrap_or(i64::MAX);
    let until = now.saturating_add(grace);
    let newer = new.generation > old.data.generation;
    // When the first listed version numbered past `number` activates.
    let successor = |new: &BundleKeyring, number: u64| {
        new.versions.iter().filter(|v| v.meta.number > number).filter_map(|v| v.meta.not_before).min()
    };
    for version in &old.data.versions {
        let meta = &version.meta;
        let listed = new.versions.iter_mut().find(|v| v.meta.number == meta.number && v.meta.kid == meta.kid);
        if let Some(listed) = listed
            && newer
            && held_activation(meta, &listed.meta)
        {
            // Listed again later or uncommitted: the activation held stands,
            // and the version verifies no longer than either says.
            let expires_at = match (meta.expires_at, listed.meta.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            listed.meta = VersionMeta { expires_at, ..meta.clone() };
            kept.insert(meta.number);
            continue;
        }
        let known = new.versions.iter().any(|v| v.meta.number == meta.number || v.meta.kid == meta.kid);
        if known || revoked.contains(&meta.kid) || !meta.verifies_at(now) {
            continue;
        }
        let mut version = version.clone();
        let bound = if meta.is_committed() && meta.not_after.is_none() {
            successor(new, meta.number).map(|start| start.saturating_add(grace))
        } else {
            Some(until)
        };
        // Kept again by a later bundle, it keeps the bound it was given.
        version.meta.expires_at = match (meta.expires_at, bound) {
            (Some(own), Some(bound)) => Some(own.min(bound)),
            (own, bound) => own.or(bound),
        };
        kept.insert(meta.number);
        new.versions.push(version);
    }
    new.versions.sort_by_key(|v| v.meta.number);
    kept
}

/// Parses the material of every version of `data`; `carried` names the
/// versions kept beyond the bundle.
fn prepare(name: &str, data: BundleKeyring, carried: std::collections::BTreeSet<u64>) -> Result<Keyring, PublishError> {
    let mut keys = BTreeMap::new();
    for version in &data.versions {
        let key = PreparedKey::prepare(data.key_type, version)
            .map_err(|source| PublishError::Material { keyring: name.to_string(), source })?;
        keys.insert(version.meta.number, key);
    }
    let mut keyring = Keyring::new(data, keys);
    keyring.carried = carried;
    Ok(keyring)
}

/// An immutable view of one good bundle.
#[derive(Debug)]
pub struct Snapshot {
    /// The bundle as received (material included).
    pub bundle: Bundle,
    /// Its keyrings with parsed material.
    pub keyrings: BTreeMap<String, Keyring>,
    /// Local time it was swapped in.
    pub received_at: UnixSeconds,
}

impl Snapshot {
    /// Checks `bundle` against `previous` and parses its material.
    pub fn build(
        pool: &str,
        bundle: Bundle,
        previous: Option<&Snapshot>,
        now: UnixSeconds,
    ) -> Result<Self, PublishError> {
        bundle.validate(pool, previous.map(|p| &p.bundle))?;
        let mut keyrings = BTreeMap::new();
        for (name, data) in &bundle.keyrings {
            let mut data = data.clone();
            let carried = previous
                .and_then(|p| p.keyrings.get(name))
                .map(|old| carry_over(old, &mut data, now))
                .unwrap_or_default();
            keyrings.insert(name.clone(), prepare(name, data, carried)?);
        }
        Ok(Self { bundle, keyrings, received_at: now })
    }

    /// The versions kept beyond the bundle, by keyring, for the cache.
    pub fn kept(&self) -> crate::cachefile::Kept {
        self.keyrings
            .iter()
            .filter(|(_, k)| !k.carried.is_empty())
            .map(|(name, k)| {
                let versions = k.data.versions.iter().filter(|v| k.carried.contains(&v.meta.number)).cloned().collect();
                (name.clone(), versions)
            })
            .collect()
    }

    /// Adds versions kept beyond the bundle (from the cache) that still
    /// verify at `now`.
    fn keep(mut self, kept: crate::cachefile::Kept, now: UnixSeconds) -> Result<Self, PublishError> {
        for (name, versions) in kept {
            let Some(old) = self.keyrings.remove(&name) else { continue };
            let mut data = old.data.clone();
            let mut carried = old.carried.clone();
            for version in versions {
                if !version.meta.verifies_at(now) {
                    continue;
                }
                let same =
                    |v: &&mut BundleVersion| v.meta.number == version.meta.number && v.meta.kid == version.meta.kid;
                if let Some(listed) = data.versions.iter_mut().find(same) {
                    // An activation held against the bundle's.
                    if held_activation(&version.meta, &listed.meta) {
                        listed.meta = version.meta;
                        carried.insert(listed.meta.number);
                    }
                    continue;
                }
                let known = data
                    .versions
                    .iter()
                    .any(|v| v.meta.number == version.meta.number || v.meta.kid == version.meta.kid);
                if known {
                    continue;
                }
                carried.insert(version.meta.number);
                data.versions.push(version);
            }
            data.versions.sort_by_key(|v| v.meta.number);
            let keyring = prepare(&name, data, carried)?;
            self.keyrings.insert(name, keyring);
        }
        Ok(self)
    }

    /// The acknowledgement: the highest version held per keyring, with its
    /// kid, so that a coordinator that issued another version under that
    /// number (restored from an older copy of its storage) can tell.
    pub fn held(&self) -> Vec<Held> {
        // What the coordinator sent, not what this sidecar carries over.
        self.bundle
            .keyrings
            .iter()
            .filter_map(|(name, k)| {
                let meta = &k.versions.last()?.meta;
                Some(Held {
                    keyring: name.clone(),
                    number: meta.number,
                    kid: meta.kid.clone(),
                    generation: k.generation,
                })
            })
            .collect()
    }
}

/// What the sidecar holds of one keyring: its highest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The keyring.
    pub keyring: String,
    /// The version's number.
    pub number: u64,
    /// The version's kid.
    pub kid: String,
    /// The keyring's generation in the bundle held.
    pub generation: u64,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}:{}", self.keyring, self.number, self.kid, self.generation)
    }
}

/// The store shared by the sync loop (one writer) and the socket API.
#[derive(Debug)]
pub struct Store {
    pool: String,
    current: ArcSwapOption<Snapshot>,
    changes: watch::Sender<u64>,
    /// Local time of the last successful sync (0: never).
    last_sync: AtomicI64,
}

impl Store {
    /// An empty store for `pool`.
    pub fn new(pool: &str) -> Self {
        Self {
            pool: pool.into(),
            current: ArcSwapOption::empty(),
            changes: watch::Sender::new(0),
            last_sync: AtomicI64::new(0),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// The current snapshot, if a good bundle has arrived.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    /// Validates `bundle` against the current one and swaps it in.
    pub fn publish(&self, bundle: Bundle, now: UnixSeconds) -> Result<Arc<Snapshot>, PublishError> {
        let previous = self.snapshot();
        let snapshot = Arc::new(Snapshot::build(&self.pool, bundle, previous.as_deref(), now)?);
        self.current.store(Some(snapshot.clone()));
        self.changes.send_modify(|n| *n += 1);
        Ok(snapshot)
    }

    /// Publishes a bundle from the cache with the versions kept beyond it.
    pub fn publish_kept(
        &self,
        bundle: Bundle,
        kept: crate::cachefile::Kept,
        received_at: UnixSeconds,
        now: UnixSeconds,
    ) -> Result<Arc<Snapshot>, PublishError> {
        let previous = self.snapshot();
        let snapshot = Snapshot::build(&self.pool, bundle, previous.as_deref(), received_at)?.keep(kept, now)?;
        let snapshot = Arc::new(snapshot);
        self.current.store(Some(snapshot.clone()));
        self.changes.send_modify(|n| *n += 1);
        Ok(snapshot)
    }

    /// Records a successful sync (changed or not).
    pub fn mark_synced(&self, now: UnixSeconds) {
        self.last_sync.store(now, Ordering::SeqCst);
    }

    /// Local time of the last successful sync, or the server's time when
    /// the bundle was made.
    pub fn last_sync_or_made(&self, snapshot: &Snapshot) -> UnixSeconds {
        self.last_sync().unwrap_or(snapshot.bundle.server_time)
    }

    /// The latest instant this sidecar may sign with keyring `name` if it
    /// hears nothing more, from its last successful sync (or, before one,
    /// when its bundle was made); `None` without limits in the bundle.
    pub fn sign_until(&self, snapshot: &Snapshot, name: &str, skew: u64) -> Option<UnixSeconds> {
        snapshot.bundle.keyrings.get(name)?.sign_until(self.last_sync_or_made(snapshot), skew)
    }

    /// Keyrings this sidecar may no longer sign with at `now` (sign-mode
    /// pools only).
    pub fn signing_stopped(&self, snapshot: &Snapshot, now: UnixSeconds, skew: u64) -> Vec<String> {
        if snapshot.bundle.mode != lockstep_model::bundle::PoolMode::Sign {
            return Vec::new();
        }
        let keyrings = snapshot.bundle.keyrings.keys();
        keyrings.filter(|k| self.sign_until(snapshot, k, skew).is_some_and(|until| now > until)).cloned().collect()
    }

    /// Local time of the last successful sync.
    pub fn last_sync(&self) -> Option<UnixSeconds> {
        Some(self.last_sync.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    /// A receiver woken at every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// Bundles for tests.
#[cfg(test)]
pub(crate) mod testdata {
    use lockstep_model::KeyType;
    use lockstep_model::bundle::{BundleVersion, PoolMode, revision};
    use lockstep_model::version::VersionMeta;

    use super::*;
    use crate::crypto::testkeys;

    /// A version with its times.
    pub fn version(key_type: KeyType, number: u64, not_before: Option<i64>, expires_at: Option<i64>) -> BundleVersion {
        let (private, public) = testkeys::material(key_type);
        BundleVersion {
            meta: VersionMeta {
                number,
                kid: format!("kid-{number}-{}", key_type.as_str()),
                created_at: 0,
                planned_activation: not_before.unwrap_or(0),
                not_before,
                not_after: None,
                expires_at,
                emergency: false,
                revoked: None,
                destroyed: false,
            },
            private_key: Some(private),
            public_key: public,
        }
    }

    /// Pool `web`, keyring `api` of `key_type`: version 1 signs from 0
    /// and expires at 300, version 2 signs from 200.
    pub fn handover(key_type: KeyType) -> Snapshot {
        let versions = vec![version(key_type, 1, Some(0), Some(300)), version(key_type, 2, Some(200), None)];
        Snapshot::build("web", bundle("web", vec![("api", key_type, 1, versions)]), None, 0).expect("good")
    }

    /// A keyring of one version (signing from 0) with the given material,
    /// not checked the way bundles are: for known-answer tests whose
    /// published keys have other sizes than Lockstep issues.
    pub fn one_version(key_type: KeyType, private: Vec<u8>, public: Option<Vec<u8>>) -> Keyring {
        use base64::Engine as _;
        let mut v = version(key_type, 1, Some(0), None);
        v.private_key = Some(lockstep_model::secret::SecretBytes::new(private));
        v.public_key = public.map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        let data = BundleKeyring {
            key_type,
            generation: 1,
            versions: vec![v],
            limits: None,
            revoked: None,
            revoked_versions: None,
        };
        prepare("kat", data, std::collections::BTreeSet::new()).expect("material")
    }

    /// A sign-mode bundle for `pool` with the given keyrings.
    pub fn bundle(pool: &str, keyrings: Vec<(&str, KeyType, u64, Vec<BundleVersion>)>) -> Bundle {
        let keyrings: BTreeMap<_, _> = keyrings
            .into_iter()
            .map(|(name, key_type, generation, versions)| {
                (
                    name.to_string(),
                    BundleKeyring {
                        key_type,
                        generation,
                        versions,
                        limits: None,
                        revoked: None,
                        revoked_versions: None,
                    },
                )
            })
            .collect();
        Bundle {
            format: lockstep_model::bundle::FORMAT,
            pool: pool.into(),
            mode: PoolMode::Sign,
            revision: revision(PoolMode::Sign, &keyrings),
            server_time: 1_000,
            keyrings,
        }
    }
}

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;
    use lockstep_model::bundle::{BundleVersion, Limits};

    use super::testdata::{bundle, version};
    use super::*;

    /// A bundle whose keyring has limits and a revocation list.
    fn listing(generation: u64, versions: Vec<BundleVersion>, revoked: &[&str]) -> Bundle {
        let mut b = bundle("web", vec![("api", KeyType::Ed25519, generation, versions)]);
        for ring in b.keyrings.values_mut() {
            ring.limits = Some(Limits { max_token_ttl: 60, prepublish: 30, grace_period: 120 });
            ring.revoked = Some(revoked.iter().map(|k| (*k).to_string()).collect());
        }
        b.revision = lockstep_model::bundle::revision(b.mode, &b.keyrings);
        b
    }

    #[test]
    fn a_version_that_vanishes_unexplained_keeps_signing_until_a_newer_one_activates_and_verifying_for_its_grace() {
        let ed = KeyType::Ed25519;
        let store = Store::new("web");
        // Versions 1 and 3 signed; 3 signs now.
        store
            .publish(listing(5, vec![version(ed, 1, Some(0), Some(900)), version(ed, 3, Some(100), None)], &[]), 200)
            .expect("good");
        // A restored coordinator: version 1 again, and a new 4 pending.
        let restored = listing(6, vec![version(ed, 1, Some(0), None), version(ed, 4, None, None)], &[]);
        let snapshot = store.publish(restored, 300).expect("accepted");
        let ring = &snapshot.keyrings["api"];
        assert_eq!(ring.carried.iter().copied().collect::<Vec<_>>(), vec![3]);
        let state = ring.state_at(300);
        assert_eq!(
            (state.signing, state.verifying.clone()),
            (Some(3), vec![1, 3, 4]),
            "the signing version does not go back to 1"
        );
        assert!(ring.keys.contains_key(&3), "with its material");
        // It signs on, however long, until a newer version takes over.
        assert_eq!(ring.state_at(300 + 1_000).verifying, vec![1, 3, 4], "no newer version has activated");
        assert_eq!(ring.state_at(300 + 1_000).signing, Some(3));
        // What it acknowledges is what the coordinator sent.
        assert_eq!(snapshot.held().iter().map(|h| h.number).collect::<Vec<_>>(), vec![4]);
        // Through a restart from the cache: the kept version comes back.
        let kept = snapshot.kept();
        assert_eq!(kept["api"].iter().map(|v| v.meta.number).collect::<Vec<_>>(), vec![3]);
        let restarted = Store::new("web");
        let cached = snapshot.bundle.clone();
        let again = restarted.publish_kept(cached, kept, 300, 310).expect("restored");
        assert_eq!(again.keyrings["api"].state_at(310).verifying, vec![1, 3, 4]);
        assert_eq!(again.keyrings["api"].state_at(310).signing, Some(3));
        // Version 4 committed to activate at 350: 3 verifies for its grace
        // after that, and that bound is carried by the next bundles.
        let next = listing(7, vec![version(ed, 1, Some(0), None), version(ed, 4, Some(350), None)], &[]);
        let later = store.publish(next, 360).expect("accepted");
        let bound = |s: &Snapshot| {
            s.keyrings["api"].data.versions.iter().find(|v| v.meta.number == 3).and_then(|v| v.meta.expires_at)
        };
        assert_eq!(bound(&later), Some(350 + 120));
        let again = listing(8, vec![version(ed, 1, Some(0), None), version(ed, 4, Some(350), None)], &[]);
        assert_eq!(bound(&store.publish(again, 370).expect("accepted")), Some(470));
        // The newer version takes over at its activation, as any does.
        assert_eq!(later.keyrings["api"].state_at(349).signing, Some(3));
        assert_eq!(later.keyrings["api"].state_at(360).signing, Some(4));
        // Not once its bound has passed, after a restart either.
        let late = Store::new("web").publish_kept(later.bundle.clone(), later.kept(), 360, 471).expect("restored");
        assert!(late.keyrings["api"].carried.is_empty());
    }

    #[test]
    fn a_pending_version_a_bundle_forgets_goes_on_verifying_and_never_signs() {
        let ed = KeyType::Ed25519;
        let store = Store::new("web");
        // 3 signs; 4 is published, its commit not seen here yet.
        store
            .publish(listing(5, vec![version(ed, 3, Some(100), None), version(ed, 4, None, None)], &[]), 200)
            .expect("good");
        // Restored to a copy that knew version 3 only, then numbered past.
        let restored = listing(6, vec![version(ed, 3, Some(100), None), version(ed, 5, None, None)], &[]);
        let snapshot = store.publish(restored, 300).expect("accepted");
        let ring = &snapshot.keyrings["api"];
        assert_eq!(ring.carried.iter().copied().collect::<Vec<_>>(), vec![4]);
        let state = ring.state_at(300);
        assert_eq!((state.signing, state.verifying.clone()), (Some(3), vec![3, 4, 5]), "4 verifies what others sign");
        assert_eq!(ring.state_at(300 + 120).verifying, vec![3, 5], "until its grace would have ended");
    }

    #[test]
    fn a_restored_bundle_that_commits_a_held_version_later_or_not_at_all_keeps_its_activation() {
        let ed = KeyType::Ed25519;
        let store = Store::new("web");
        // 2 signed from 100, 3 signs from 200.
        let held = vec![
            version(ed, 1, Some(0), Some(220)),
            version(ed, 2, Some(100), Some(900)),
            version(ed, 3, Some(200), None),
        ];
        store.publish(listing(8, held, &[]), 250).expect("good");
        // Restored to a copy that had 2 pending: it supersedes 2 (verifying
        // until 1000), numbers past the fleet's 3, and publishes 4.
        let mut superseded = version(ed, 2, None, Some(1_000));
        superseded.meta.planned_activation = 100;
        let mut four = version(ed, 4, None, None);
        four.meta.planned_activation = 400;
        let restored = listing(9, vec![version(ed, 1, Some(0), None), superseded, four], &[]);
        let snapshot = store.publish(restored, 300).expect("taken, not refused");
        let ring = &snapshot.keyrings["api"];
        assert_eq!(ring.carried.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
        let v2 = ring.data.versions.iter().find(|v| v.meta.number == 2).expect("2");
        assert_eq!((v2.meta.not_before, v2.meta.expires_at), (Some(100), Some(900)), "held activation, earlier expiry");
        let state = ring.state_at(300);
        assert_eq!((state.signing, state.verifying.clone()), (Some(3), vec![1, 2, 3, 4]), "never back to 1 or 2");
        assert_eq!(snapshot.held().iter().map(|h| h.number).collect::<Vec<_>>(), vec![4]);
        // The signing bound ignores the superseded version's plan.
        let limits = snapshot.bundle.keyrings["api"].sign_until(300, 0);
        // (2's plan at 100 would bound it to 300 + 120 - 60.)
        assert_eq!(limits, Some(300 + 30 + 120 - 60), "a version not yet known is what bounds it");
        // Through a restart from the cache, 2 keeps what it held.
        let again = Store::new("web").publish_kept(snapshot.bundle.clone(), snapshot.kept(), 300, 310).expect("cache");
        let v2 = again.keyrings["api"].data.versions.iter().find(|v| v.meta.number == 2).expect("2");
        assert_eq!(v2.meta.not_before, Some(100));
        // The coordinator then commits 4: it takes over as usual.
        let next = listing(10, vec![version(ed, 1, Some(0), None), version(ed, 4, Some(400), None)], &[]);
        let later = store.publish(next, 360).expect("accepted");
        assert_eq!(later.keyrings["api"].state_at(399).signing, Some(3));
        assert_eq!(later.keyrings["api"].state_at(400).signing, Some(4));
        // Within one generation the move is still refused.
        let mut moved = version(ed, 4, Some(500), None);
        moved.meta.planned_activation = 400;
        let same = listing(10, vec![version(ed, 1, Some(0), None), moved], &[]);
        assert!(matches!(store.publish(same, 370), Err(PublishError::Invalid(_))));
    }

    #[test]
    fn a_revoked_version_or_an_older_plugin_keeps_nothing() {
        let ed = KeyType::Ed25519;
        let store = Store::new("web");
        let kid3 = version(ed, 3, Some(100), None).meta.kid;
        store
            .publish(listing(5, vec![version(ed, 1, Some(0), Some(900)), version(ed, 3, Some(100), None)], &[]), 200)
            .expect("good");
        let revoked = listing(6, vec![version(ed, 1, Some(0), None), version(ed, 4, Some(300), None)], &[&kid3]);
        let snapshot = store.publish(revoked, 300).expect("accepted");
        assert!(snapshot.keyrings["api"].carried.is_empty());
        assert!(!snapshot.keyrings["api"].state_at(300).verifying.contains(&3));
        // Without a revocation list the sidecar cannot tell: nothing is kept.
        let store = Store::new("web");
        store
            .publish(listing(5, vec![version(ed, 1, Some(0), Some(900)), version(ed, 3, Some(100), None)], &[]), 200)
            .expect("good");
        let mut old_plugin = listing(6, vec![version(ed, 1, Some(0), None), version(ed, 4, Some(300), None)], &[]);
        for ring in old_plugin.keyrings.values_mut() {
            ring.revoked = None;
        }
        let snapshot = store.publish(old_plugin, 300).expect("accepted");
        assert!(snapshot.keyrings["api"].carried.is_empty());
    }

    #[test]
    fn publish_swaps_and_wakes_watchers() {
        let store = Store::new("web");
        let changes = store.subscribe();
        assert!(store.snapshot().is_none());
        let b =
            bundle("web", vec![("api", KeyType::HmacSha256, 1, vec![version(KeyType::HmacSha256, 1, Some(0), None)])]);
        store.publish(b, 10).expect("good");
        assert!(changes.has_changed().expect("open"));
        let snap = store.snapshot().expect("snapshot");
        let held = snap.held();
        assert_eq!(held.iter().map(ToString::to_string).collect::<Vec<_>>(), vec!["api:1:kid-1-hmac-sha256:1"]);
        assert_eq!(snap.keyrings["api"].state_at(10).signing, Some(1));
    }

    #[test]
    fn rollback_and_wrong_pool_are_refused_and_the_old_bundle_kept() {
        let store = Store::new("web");
        let v1 = version(KeyType::Ed25519, 1, Some(0), Some(500));
        let v2 = version(KeyType::Ed25519, 2, Some(100), None);
        let newer = bundle("web", vec![("api", KeyType::Ed25519, 2, vec![v1.clone(), v2])]);
        let revision = newer.revision.clone();
        store.publish(newer, 10).expect("good");
        let older = bundle("web", vec![("api", KeyType::Ed25519, 1, vec![v1.clone()])]);
        assert!(matches!(store.publish(older, 11), Err(PublishError::Invalid(_))));
        let other = bundle("db", vec![("api", KeyType::Ed25519, 3, vec![v1])]);
        assert!(matches!(store.publish(other, 12), Err(PublishError::Invalid(_))));
        assert_eq!(store.snapshot().expect("kept").bundle.revision, revision);
    }

    #[test]
    fn corrupted_material_is_refused() {
        let store = Store::new("web");
        let mut v1 = version(KeyType::Ed25519, 1, Some(0), None);
        let (_, other) = crate::crypto::testkeys::material(KeyType::Ed25519);
        v1.public_key = other;
        let b = bundle("web", vec![("api", KeyType::Ed25519, 1, vec![v1])]);
        assert!(matches!(store.publish(b, 1), Err(PublishError::Material { .. })));
        assert!(store.snapshot().is_none());
    }

    #[test]
    fn next_change_is_the_nearest_future_time() {
        let snap = super::testdata::handover(KeyType::HmacSha256);
        assert_eq!(snap.keyrings["api"].next_change_after(100), Some(200));
        assert_eq!(snap.keyrings["api"].next_change_after(250), Some(300));
        assert_eq!(snap.keyrings["api"].next_change_after(300), None);
    }
}
