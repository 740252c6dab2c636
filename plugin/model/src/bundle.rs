//! What a sidecar fetches for its pool, and the checks it makes before
//! using a bundle.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::secret::SecretBytes;
use crate::version::VersionMeta;
use crate::{KeyType, UnixSeconds};

/// The bundle wire format this code reads and writes. It changes only
/// for a change that older sidecars could not read correctly; fields a
/// newer plugin adds within one format are ignored by older sidecars (see
/// [`revision`]).
pub const FORMAT: u32 = 1;

/// Most keyrings one bundle may carry.
pub const MAX_KEYRINGS: usize = 64;
/// Most versions one keyring in a bundle may carry.
pub const MAX_VERSIONS: usize = 32;

/// What a pool may do with its keyrings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// Gets private material; signs and verifies.
    Sign,
    /// Gets public keys of asymmetric keyrings (and, unavoidably, the
    /// secret of symmetric ones); verifies.
    Verify,
}

/// One version as a pool receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleVersion {
    /// Number, kid and times.
    #[serde(flatten)]
    pub meta: VersionMeta,
    /// Secret (HMAC/AES: raw bytes) or private key (PKCS#8 DER); absent
    /// for verify-only pools of asymmetric keyrings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<SecretBytes>,
    /// Public key (SubjectPublicKeyInfo DER, base64) of asymmetric types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// One keyring as a pool receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleKeyring {
    /// Key type.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// Never decreases; see [`crate::schedule::Keyring::generation`].
    pub generation: u64,
    /// Every version that still verifies, ascending.
    pub versions: Vec<BundleVersion>,
    /// The keyring's timings a sidecar needs to bound what it signs; absent
    /// from older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// The kids of every revoked version the coordinator still records:
    /// a version leaves the verification set by expiring or by being
    /// listed here. A committed, unexpired version that vanishes otherwise
    /// (the coordinator restored from an older copy of its storage) is kept
    /// by sidecars for verification until its grace would have ended.
    /// Absent from older plugins (then nothing is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Vec<String>>,
    /// The numbers of those revoked versions, so that a value naming its
    /// version by number (a ciphertext, a MAC) is refused as revoked, not
    /// as unknown. Absent from older plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_versions: Option<Vec<u64>>,
}

/// What bounds signing with a keyring, carried in the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The longest lifetime of anything signed: a sidecar signs no token
    /// that lives longer.
    pub max_token_ttl: u64,
    /// How long before its activation a version is published.
    pub prepublish: u64,
    /// How long a version verifies after it stops signing.
    pub grace_period: u64,
}

impl BundleKeyring {
    /// The latest instant a sidecar that last synced at `synced` (by its
    /// clock, off by at most `skew`) may sign, if it hears nothing more.
    ///
    /// A version it does not know yet is published after `synced`, so it
    /// activates no sooner than `prepublish` later; one it knows but that
    /// is not committed activates no sooner than its planned instant. Until
    /// then the version it signs with keeps signing everywhere, and every
    /// pool verifies it for `grace_period` more. A token signed by then
    /// lives at most `max_token_ttl`, so it verifies everywhere until it
    /// expires. Emergency revocations are the exception, as everywhere.
    pub fn sign_until(&self, synced: UnixSeconds, skew: u64) -> Option<UnixSeconds> {
        let limits = self.limits?;
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let unknown = synced.saturating_add(secs(limits.prepublish));
        let pending =
            self.versions.iter().filter(|v| v.meta.is_pending()).map(|v| v.meta.planned_activation.max(synced));
        let earliest = pending.fold(unknown, i64::min);
        let margin = secs(limits.grace_period).saturating_sub(secs(limits.max_token_ttl)).saturating_sub(secs(skew));
        Some(earliest.saturating_add(margin))
    }
}

/// The whole bundle of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The wire format ([`FORMAT`]); bundles of older plugins carry none.
    #[serde(default = "first_format")]
    pub format: u32,
    /// The pool it was made for.
    pub pool: String,
    /// What the pool may do.
    pub mode: PoolMode,
    /// Changes whenever the content changes.
    pub revision: String,
    /// The server's clock when it answered.
    pub server_time: UnixSeconds,
    /// Keyrings by name.
    pub keyrings: BTreeMap<String, BundleKeyring>,
}

fn first_format() -> u32 {
    1
}

/// The version metadata the revision covers: the fields of the first wire
/// format, in their order, whatever fields later plugins add.
#[derive(Serialize)]
struct RevisedMeta<'a> {
    number: u64,
    kid: &'a str,
    created_at: UnixSeconds,
    planned_activation: UnixSeconds,
    not_before: Option<UnixSeconds>,
    not_after: Option<UnixSeconds>,
    expires_at: Option<UnixSeconds>,
    emergency: bool,
    revoked: &'a Option<crate::version::Revocation>,
    destroyed: bool,
}

impl<'a> From<&'a VersionMeta> for RevisedMeta<'a> {
    fn from(m: &'a VersionMeta) -> Self {
        Self {
            number: m.number,
            kid: &m.kid,
            created_at: m.created_at,
            planned_activation: m.planned_activation,
            not_before: m.not_before,
            not_after: m.not_after,
            expires_at: m.expires_at,
            emergency: m.emergency,
            revoked: &m.revoked,
            destroyed: m.destroyed,
        }
    }
}

/// The revision of a bundle's content: a hash of the mode and of every
/// keyring's generation and version metadata. Material is not hashed: a
/// version's material never changes, its kid identifies it, and whether
/// private keys are included follows from the mode and the key type. So
/// the coordinator can answer "not modified" without reading material.
///
/// Only the first format's fields are hashed, so a sidecar checks the
/// revision of a bundle from a newer plugin that adds fields (a rolling
/// upgrade) just as well. A plugin that adds a field bumps the keyring's
/// generation whenever that field changes, so the revision still changes
/// with the content.
pub fn revision(mode: PoolMode, keyrings: &BTreeMap<String, BundleKeyring>) -> String {
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(&mode).unwrap_or_default());
    for (name, keyring) in keyrings {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(keyring.key_type.as_str().as_bytes());
        hash.update(keyring.generation.to_be_bytes());
        for version in &keyring.versions {
            hash.update(serde_json::to_vec(&RevisedMeta::from(&version.meta)).unwrap_or_default());
        }
    }
    let digest = hash.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Its wire format is newer than this code reads.
    #[error("bundle format {0} is newer than this sidecar reads (format {FORMAT}); upgrade the sidecar")]
    Format(u32),
    /// It was made for another pool.
    #[error("bundle is for pool {got:?}, expected {expected:?}")]
    WrongPool {
        /// Expected pool.
        expected: String,
        /// Pool in the bundle.
        got: String,
    },
    /// A keyring's name breaks the naming rule.
    #[error("keyring name {0:?} is not valid ({rule})", rule = crate::name::NAME_RULE)]
    BadName(String),
    /// Its revision does not match its content.
    #[error("bundle revision {0:?} does not match its content")]
    BadRevision(String),
    /// Too many keyrings or versions.
    #[error("bundle is too large: {0}")]
    TooLarge(String),
    /// A keyring or version is malformed.
    #[error("keyring {keyring:?}: {message}")]
    Malformed {
        /// The keyring.
        keyring: String,
        /// What is wrong.
        message: String,
    },
    /// It would move a keyring backwards.
    #[error("keyring {keyring:?}: {message}")]
    RolledBack {
        /// The keyring.
        keyring: String,
        /// What went backwards.
        message: String,
    },
}

impl Bundle {
    /// Checks the bundle as a whole before it replaces `previous`: pool,
    /// revision, sizes, key lengths, times, and that nothing moves
    /// backwards. Nothing of a refused bundle may be used.
    pub fn validate(&self, expected_pool: &str, previous: Option<&Bundle>) -> Result<(), BundleError> {
        if self.format > FORMAT {
            return Err(BundleError::Format(self.format));
        }
        if self.pool != expected_pool {
            return Err(BundleError::WrongPool { expected: expected_pool.into(), got: self.pool.clone() });
        }
        if self.keyrings.len() > MAX_KEYRINGS {
            return Err(BundleError::TooLarge(format!("{} keyrings (at most {MAX_KEYRINGS})", self.keyrings.len())));
        }
        if revision(self.mode, &self.keyrings) != self.revision {
            return Err(BundleError::BadRevision(self.revision.clone()));
        }
        for (name, keyring) in &self.keyrings {
            if !crate::name::is_valid(name) {
                return Err(BundleError::BadName(name.clone()));
            }
            let malformed = |message: String| BundleError::Malformed { keyring: name.clone(), message };
            check_keyring(self.mode, keyring).map_err(malformed)?;
            if let Some(old) = previous.and_then(|p| p.keyrings.get(name)) {
                check_forward(old, keyring, self.server_time)
                    .map_err(|message| BundleError::RolledBack { keyring: name.clone(), message })?;
            }
        }
        Ok(())
    }
}

fn check_keyring(mode: PoolMode, keyring: &BundleKeyring) -> Result<(), String> {
    if keyring.versions.len() > MAX_VERSIONS {
        return Err(format!("{} versions (at most {MAX_VERSIONS})", keyring.versions.len()));
    }
    let mut last = 0;
    for version in &keyring.versions {
        let meta = &version.meta;
        if meta.number <= last {
            return Err(format!("version {} is out of order or repeated", meta.number));
        }
        last = meta.number;
        if meta.kid.is_empty() || meta.kid.len() > 128 {
            return Err(format!("version {} has an empty or oversized kid", meta.number));
        }
        if meta.revoked.is_some() {
            return Err(format!("version {} is revoked and must not be distributed", meta.number));
        }
        check_times(meta)?;
        check_material(mode, keyring.key_type, version)?;
    }
    Ok(())
}

fn check_times(meta: &VersionMeta) -> Result<(), String> {
    let n = meta.number;
    if meta.planned_activation < meta.created_at && !meta.emergency {
        return Err(format!("version {n} is planned to activate before it was created"));
    }
    if let (Some(start), Some(end)) = (meta.not_before, meta.not_after)
        && end < start
    {
        return Err(format!("version {n} stops signing before it starts"));
    }
    if let (Some(end), Some(expiry)) = (meta.not_after, meta.expires_at)
        && expiry < end
    {
        return Err(format!("version {n} expires before it stops signing"));
    }
    Ok(())
}

/// Expected lengths of material, by type: (private range, public range).
fn material_lengths(key_type: KeyType) -> (std::ops::RangeInclusive<usize>, std::ops::RangeInclusive<usize>) {
    match key_type {
        KeyType::HmacSha256 | KeyType::Aes256Gcm => (32..=32, 0..=0),
        KeyType::Ed25519 => (48..=85, 44..=44),
        KeyType::EcdsaP256 => (64..=160, 91..=91),
        KeyType::Rsa2048 => (1100..=1300, 270..=300),
    }
}

fn check_material(mode: PoolMode, key_type: KeyType, version: &BundleVersion) -> Result<(), String> {
    let n = version.meta.number;
    let (private_len, public_len) = material_lengths(key_type);
    let needs_private = mode == PoolMode::Sign || !key_type.is_asymmetric();
    match &version.private_key {
        Some(key) if !needs_private => {
            return Err(format!("version {n} carries a private key for a verify-only pool"));
        }
        Some(key) if !private_len.contains(&key.len()) => {
            return Err(format!("version {n} has a {}-byte key; {key_type} expects {private_len:?}", key.len()));
        }
        None if needs_private => return Err(format!("version {n} has no key material")),
        _ => {}
    }
    if key_type.is_asymmetric() {
        use base64::Engine as _;
        let public = version.public_key.as_deref().ok_or_else(|| format!("version {n} has no public key"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(public)
            .map_err(|_| format!("version {n} has a public key that is not base64"))?;
        if !public_len.contains(&bytes.len()) {
            return Err(format!(
                "version {n} has a {}-byte public key; {key_type} expects {public_len:?}",
                bytes.len()
            ));
        }
    }
    Ok(())
}

fn check_forward(old: &BundleKeyring, new: &BundleKeyring, now: UnixSeconds) -> Result<(), String> {
    // A keyring deleted and made again (numbers go on, generation up) may
    // have another type; a keyring that goes on may not.
    let newest_old = old.versions.iter().map(|v| v.meta.number).max().unwrap_or(0);
    let made_again = new.generation > old.generation && new.versions.iter().all(|v| v.meta.number > newest_old);
    if new.key_type != old.key_type && !made_again {
        return Err(format!("type changed from {} to {}", old.key_type, new.key_type));
    }
    if new.generation < old.generation {
        return Err(format!("generation went back from {} to {}", old.generation, new.generation));
    }
    // A newer generation may drop the newest versions (revoked, or a
    // coordinator restored from an older copy): the sidecar keeps what was
    // not revoked (see `Keyring::carry_over` there).
    let newer = new.generation > old.generation;
    let newest = |k: &BundleKeyring| k.versions.iter().map(|v| v.meta.number).max().unwrap_or(0);
    if newest(new) < newest(old) && !newer {
        return Err(format!("newest version went back from {} to {}", newest(old), newest(new)));
    }
    for old_version in old.versions.iter().filter(|v| v.meta.is_committed()) {
        let same = new.versions.iter().find(|v| v.meta.number == old_version.meta.number);
        match same {
            // A committed activation instant is final, except that an
            // emergency (the signer revoked) brings it forward. A newer
            // generation that commits it later, or not at all (a restored
            // coordinator), is taken with the activation the sidecar holds
            // kept: see `held_activation`.
            Some(v)
                if v.meta.not_before != old_version.meta.not_before
                    && !brought_forward(old, new, &v.meta)
                    && !(newer
                        && v.meta.kid == old_version.meta.kid
                        && held_activation(&old_version.meta, &v.meta)) =>
            {
                return Err(format!("version {} changed its activation time", old_version.meta.number));
            }
            Some(v) if v.meta.kid != old_version.meta.kid => {
                return Err(format!("version {} changed its kid", old_version.meta.number));
            }
            // A committed version may only leave once expired, or with a
            // new generation (revocation, or expiry recorded).
            None if new.generation == old.generation && old_version.meta.expires_at.is_none_or(|e| e > now) => {
                return Err(format!("committed version {} vanished", old_version.meta.number));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether a sidecar that holds `held` committed keeps its activation when
/// a newer bundle lists the same key as `listed`: committed later or not
/// at all. Only a coordinator restored from an older copy of its storage
/// does that, for a version the fleet committed after the copy was made.
/// The activation the fleet agreed on stands: the version goes on signing
/// (or having signed) at the pods that hold it, never later and never
/// from a second instant, so no pool signs with it where another does not
/// expect it. An activation moved earlier is an emergency's alone.
pub fn held_activation(held: &VersionMeta, listed: &VersionMeta) -> bool {
    match (held.not_before, listed.not_before) {
        (Some(_), None) => true,
        (Some(ours), Some(theirs)) => theirs > ours,
        (None, _) => false,
    }
}

/// Whether a committed version's activation moved earlier by an emergency
/// handover, in a newer generation.
fn brought_forward(old: &BundleKeyring, new: &BundleKeyring, meta: &VersionMeta) -> bool {
    let earlier = old
        .versions
        .iter()
        .find(|v| v.meta.number == meta.number)
        .and_then(|v| v.meta.not_before)
        .zip(meta.not_before)
        .is_some_and(|(before, now)| now < before);
    meta.emergency && new.generation > old.generation && earlier
}

#[cfg(test)]
mod tests;
