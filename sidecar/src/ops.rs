//! Operations with a keyring's versions that keep the keys in the sidecar:
//! encrypt, decrypt and rewrap (AES-256-GCM), MAC and MAC verification
//! (HMAC-SHA-256), and raw signatures over bytes (asymmetric types).
//!
//! Ciphertexts and MACs name the version that made them, as
//! `lockstep:v<n>:<base64>` (the way Transit writes `vault:v<n>:`), so
//! any version in the verification set opens or checks them, and a
//! rotation needs nothing from the caller. Errors never carry plaintext,
//! ciphertext or key material.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lockstep_model::UnixSeconds;
use zeroize::Zeroizing;

use crate::store::Keyring;

/// What every version-tagged value starts with.
pub const PREFIX: &str = "lockstep:v";

/// Most encryptions one sidecar makes with one version. Random 96-bit
/// nonces stay safe for 2^32 encryptions per key (NIST SP 800-38D,
/// 8.3); one sidecar may use an eighth of that, and the rotation period
/// keeps the fleet's total under it (docs/sidecar.md).
pub const MAX_ENCRYPTIONS_PER_VERSION: u64 = 1 << 29;

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The keyring's type does not do this.
    #[error("keyring type {0} does not {1}")]
    WrongType(String, &'static str),
    /// No version signs (encrypts, MACs) now.
    #[error("no version of this keyring signs now")]
    NoSigningKey,
    /// A field the operation needs is absent.
    #[error("field {0:?} is required")]
    Missing(&'static str),
    /// Not of the form `lockstep:v<n>:<base64>`.
    #[error("field {0:?} is not of the form lockstep:v<version>:<base64>")]
    Malformed(&'static str),
    /// A field is not base64.
    #[error("field {0:?} is not base64")]
    NotBase64(&'static str),
    /// The version is not in the verification set (never issued, expired
    /// and dropped, or revoked).
    #[error("version {0} is not in the verification set")]
    UnknownVersion(u64),
    /// The version is in the bundle but no longer verifies.
    #[error("version {0} has expired")]
    Expired(u64),
    /// The ciphertext does not open (wrong associated data, or altered).
    #[error("the ciphertext does not open with version {0}")]
    DoesNotOpen(u64),
    /// The MAC or signature does not match.
    #[error("the {0} does not match")]
    Mismatch(&'static str),
    /// The version made its share of encryptions; the next rotation helps.
    #[error("version {0} has made the most encryptions one sidecar may make with it")]
    Exhausted(u64),
    /// The crypto library failed.
    #[error("{0} failed")]
    Failed(&'static str),
}

impl OpError {
    /// Stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongType(..) => "keyring_wrong_type",
            Self::NoSigningKey => "no_signing_key",
            Self::Missing(_) => "field_missing",
            Self::Malformed(_) => "value_malformed",
            Self::NotBase64(_) => "value_not_base64",
            Self::UnknownVersion(_) => "version_unknown",
            Self::Expired(_) => "version_expired",
            Self::DoesNotOpen(_) => "ciphertext_invalid",
            Self::Mismatch("MAC") => "mac_invalid",
            Self::Mismatch(_) => "signature_invalid",
            Self::Exhausted(_) => "encryption_limit",
            Self::Failed(_) => "operation_failed",
        }
    }
}

/// Encryptions made per version (by kid), for the nonce bound.
#[derive(Debug, Default)]
pub struct Counters(Mutex<HashMap<String, u64>>);

impl Counters {
    fn take(&self, kid: &str, version: u64) -> Result<(), OpError> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(kid.to_string()).or_default();
        if *count >= MAX_ENCRYPTIONS_PER_VERSION {
            return Err(OpError::Exhausted(version));
        }
        *count += 1;
        Ok(())
    }

    /// Encryptions made with `kid` so far.
    pub fn count(&self, kid: &str) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(kid).copied().unwrap_or(0)
    }
}

/// Decodes base64 field `field`.
pub fn base64(field: &'static str, text: &str) -> Result<Zeroizing<Vec<u8>>, OpError> {
    STANDARD.decode(text).map(Zeroizing::new).map_err(|_| OpError::NotBase64(field))
}

/// The version that signs at `now`, with its kid.
fn signing(keyring: &Keyring, now: UnixSeconds) -> Result<(u64, &str), OpError> {
    let number = keyring.state_at(now).signing.ok_or(OpError::NoSigningKey)?;
    let meta = keyring.data.versions.iter().find(|v| v.meta.number == number).ok_or(OpError::NoSigningKey)?;
    Ok((number, &meta.meta.kid))
}

/// A version that verifies at `now`, or why not.
fn verifying(keyring: &Keyring, number: u64, now: UnixSeconds) -> Result<&crate::crypto::PreparedKey, OpError> {
    let listed = keyring.data.versions.iter().any(|v| v.meta.number == number);
    if !keyring.state_at(now).verifying.contains(&number) {
        return Err(if listed { OpError::Expired(number) } else { OpError::UnknownVersion(number) });
    }
    keyring.keys.get(&number).ok_or(OpError::UnknownVersion(number))
}

fn tagged(number: u64, bytes: &[u8]) -> String {
    format!("{PREFIX}{number}:{}", STANDARD.encode(bytes))
}

fn untag(field: &'static str, text: &str) -> Result<(u64, Zeroizing<Vec<u8>>), OpError> {
    let rest = text.strip_prefix(PREFIX).ok_or(OpError::Malformed(field))?;
    let (number, body) = rest.split_once(':').ok_or(OpError::Malformed(field))?;
    let number = number.parse::<u64>().map_err(|_| OpError::Malformed(field))?;
    Ok((number, base64(field, body)?))
}

/// An operation's result with the version that made or checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done<T> {
    /// The result.
    pub value: T,
    /// The version's number.
    pub version: u64,
    /// Its kid.
    pub kid: String,
}

/// Encrypts with the signing version.
pub fn encrypt(
    keyring: &Keyring,
    counters: &Counters,
    plaintext: &[u8],
    aad: &[u8],
    now: UnixSeconds,
) -> Result<Done<String>, OpError> {
    let (number, kid) = signing(keyring, now)?;
    let key = keyring.keys.get(&number).ok_or(OpError::NoSigningKey)?;
    counters.take(kid, number)?;
    let sealed = key.seal(plaintext, aad).map_err(|e| match e {
        crate::crypto::CryptoError::NotSealing => OpError::WrongType(keyring.data.key_type.to_string(), "encrypt"),
        _ => OpError::Failed("encryption"),
    })?;
    Ok(Done { value: tagged(number, &sealed), version: number, kid: kid.to_string() })
}

/// Decrypts with the version the ciphertext names.
pub fn decrypt(
    keyring: &Keyring,
    ciphertext: &str,
    aad: &[u8],
    now: UnixSeconds,
) -> Result<Done<Zeroizing<Vec<u8>>>, OpError> {
    if keyring.data.key_type != lockstep_model::KeyType::Aes256Gcm {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "decrypt"));
    }
    let (number, sealed) = untag("ciphertext", ciphertext)?;
    let key = verifying(keyring, number, now)?;
    let value = key.open(&sealed, aad).ok_or(OpError::DoesNotOpen(number))?;
    Ok(Done { value, version: number, kid: kid_of(keyring, number) })
}

fn kid_of(keyring: &Keyring, number: u64) -> String {
    keyring.data.versions.iter().find(|v| v.meta.number == number).map(|v| v.meta.kid.clone()).unwrap_or_default()
}

/// MACs `data` with the signing version.
pub fn mac(keyring: &Keyring, data: &[u8], now: UnixSeconds) -> Result<Done<String>, OpError> {
    if keyring.data.key_type != lockstep_model::KeyType::HmacSha256 {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "MAC"));
    }
    let (number, kid) = signing(keyring, now)?;
    let key = keyring.keys.get(&number).ok_or(OpError::NoSigningKey)?;
    let tag = key.sign(data).map_err(|_| OpError::Failed("MAC"))?;
    Ok(Done { value: tagged(number, &tag), version: number, kid: kid.to_string() })
}

/// Checks a MAC of `data` with the version it names (in constant time).
pub fn mac_verify(keyring: &Keyring, data: &[u8], mac: &str, now: UnixSeconds) -> Result<Done<()>, OpError> {
    if keyring.data.key_type != lockstep_model::KeyType::HmacSha256 {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "MAC"));
    }
    let (number, tag) = untag("mac", mac)?;
    let key = verifying(keyring, number, now)?;
    if !key.verify(data, &tag) {
        return Err(OpError::Mismatch("MAC"));
    }
    Ok(Done { value: (), version: number, kid: kid_of(keyring, number) })
}

/// Signs `data` with the signing version of an asymmetric keyring.
pub fn sign(keyring: &Keyring, data: &[u8], now: UnixSeconds) -> Result<Done<Vec<u8>>, OpError> {
    if !keyring.data.key_type.is_asymmetric() {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "sign bytes; use MAC"));
    }
    let (number, kid) = signing(keyring, now)?;
    let key = keyring.keys.get(&number).ok_or(OpError::NoSigningKey)?;
    let signature = key.sign(data).map_err(|_| OpError::Failed("signing"))?;
    Ok(Done { value: signature, version: number, kid: kid.to_string() })
}

/// Checks a signature of `data`: with the version `kid` names, or else
/// with each version in the verification set.
pub fn verify(
    keyring: &Keyring,
    data: &[u8],
    signature: &[u8],
    kid: Option<&str>,
    now: UnixSeconds,
) -> Result<Done<()>, OpError> {
    if !keyring.data.key_type.is_asymmetric() {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "verify signatures over bytes"));
    }
    let candidates: Vec<u64> = match kid {
        Some(kid) => {
            let number = keyring.data.versions.iter().find(|v| v.meta.kid == kid).map(|v| v.meta.number);
            vec![number.ok_or(OpError::UnknownVersion(0))?]
        }
        None => keyring.state_at(now).verifying,
    };
    for number in candidates {
        let key = verifying(keyring, number, now)?;
        if key.verify(data, signature) {
            return Ok(Done { value: (), version: number, kid: kid_of(keyring, number) });
        }
    }
    Err(OpError::Mismatch("signature"))
}

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;

    use super::*;
    use crate::store::testdata::handover;

    #[test]
    fn ciphertexts_name_their_version_and_open_until_it_expires() {
        // Version 1 signs from 0 and expires at 300; version 2 signs from 200.
        let snap = handover(KeyType::Aes256Gcm);
        let keyring = &snap.keyrings["api"];
        let counters = Counters::default();
        let made = encrypt(keyring, &counters, b"card 4111", b"order-7", 100).expect("encrypt");
        assert!(made.value.starts_with("lockstep:v1:") && made.version == 1, "{made:?}");
        assert_eq!(counters.count(&made.kid), 1);
        let opened = decrypt(keyring, &made.value, b"order-7", 250).expect("decrypt during the grace");
        assert_eq!((opened.value.as_slice(), opened.version), (&b"card 4111"[..], 1));
        assert_eq!(decrypt(keyring, &made.value, b"order-8", 250), Err(OpError::DoesNotOpen(1)));
        assert_eq!(decrypt(keyring, &made.value, b"order-7", 300), Err(OpError::Expired(1)));
        let later = encrypt(keyring, &counters, b"x", b"", 250).expect("encrypt");
        assert!(later.value.starts_with("lockstep:v2:"));
        assert_eq!(decrypt(keyring, "lockstep:v9:AAAA", b"", 250), Err(OpError::UnknownVersion(9)));
        assert_eq!(decrypt(keyring, "vault:v1:AAAA", b"", 250), Err(OpError::Malformed("ciphertext")));
        // Two encryptions of one plaintext differ (random nonces).
        let again = encrypt(keyring, &counters, b"card 4111", b"order-7", 100).expect("encrypt");
        assert_ne!(again.value, made.value);
    }

    #[test]
    fn macs_and_signatures_check_against_every_version_that_verifies() {
        let snap = handover(KeyType::HmacSha256);
        let keyring = &snap.keyrings["api"];
        let tag = mac(keyring, b"payload", 100).expect("mac");
        assert_eq!(mac_verify(keyring, b"payload", &tag.value, 250).map(|d| d.version), Ok(1));
        assert_eq!(mac_verify(keyring, b"payloaD", &tag.value, 250), Err(OpError::Mismatch("MAC")));
        assert_eq!(sign(keyring, b"x", 100).map_err(|e| e.code()), Err("keyring_wrong_type"));

        let snap = handover(KeyType::Ed25519);
        let keyring = &snap.keyrings["api"];
        let signed = sign(keyring, b"bytes", 100).expect("sign");
        let found = verify(keyring, b"bytes", &signed.value, None, 250).expect("verify");
        assert_eq!((found.version, found.kid.as_str()), (1, signed.kid.as_str()));
        assert!(verify(keyring, b"bytes", &signed.value, Some(&signed.kid), 250).is_ok());
        assert_eq!(verify(keyring, b"other", &signed.value, None, 250), Err(OpError::Mismatch("signature")));
        assert_eq!(
            encrypt(keyring, &Counters::default(), b"x", b"", 100).map_err(|e| e.code()),
            Err("keyring_wrong_type")
        );
    }
}
