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
    /// The keyring has no such version: numbered past every version this
    /// sidecar knows of it.
    #[error("version {0} is not in the verification set")]
    UnknownVersion(u64),
    /// A kid no version in the verification set has (not quoted back).
    #[error("no version in the verification set has that kid")]
    UnknownKid,
    /// The version no longer verifies: expired (listed still, or dropped
    /// from the bundle, as versions older than the oldest listed are).
    #[error("version {0} has expired")]
    Expired(u64),
    /// The version was revoked.
    #[error("version {0} was revoked")]
    Revoked(u64),
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
            Self::UnknownVersion(_) | Self::UnknownKid => "version_unknown",
            Self::Expired(_) => "version_expired",
            Self::Revoked(_) => "version_revoked",
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

/// A version that verifies at `now`, or why not: revoked (the bundle lists
/// it so), expired (listed but past its expiry, or numbered below a listed
/// version: versions are issued in order and leave by expiring or being
/// revoked; a number skipped when numbering went on past a restored
/// fleet's versions, never issued here, is reported so too), or unknown
/// (numbered past every version listed).
fn verifying(keyring: &Keyring, number: u64, now: UnixSeconds) -> Result<&crate::crypto::PreparedKey, OpError> {
    if !keyring.state_at(now).verifying.contains(&number) {
        let revoked = keyring.data.revoked_versions.as_ref().is_some_and(|r| r.contains(&number));
        let newest = keyring.data.versions.iter().map(|v| v.meta.number).max().unwrap_or(0);
        return Err(if revoked {
            OpError::Revoked(number)
        } else if (1..=newest).contains(&number) {
            OpError::Expired(number)
        } else {
            OpError::UnknownVersion(number)
        });
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
            vec![number.ok_or(OpError::UnknownKid)?]
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
    fn a_raw_signature_under_an_unknown_kid_is_refused_without_quoting_it() {
        let snap = handover(KeyType::Ed25519);
        let refused =
            verify(&snap.keyrings["api"], b"x", &[0; 64], Some("kid-from-elsewhere"), 250).expect_err("refused");
        assert_eq!((refused.code(), refused.to_string().contains("kid-from-elsewhere")), ("version_unknown", false));
    }

    #[test]
    fn a_version_stops_encrypting_at_its_bound_and_the_next_one_goes_on() {
        let snap = handover(KeyType::Aes256Gcm);
        let keyring = &snap.keyrings["api"];
        let counters = Counters::default();
        let first = encrypt(keyring, &counters, b"x", b"", 100).expect("encrypt");
        // As if this sidecar had made all but one of version 1's share.
        counters.0.lock().expect("counters").insert(first.kid.clone(), MAX_ENCRYPTIONS_PER_VERSION - 1);
        encrypt(keyring, &counters, b"x", b"", 100).expect("the last one");
        let refused = encrypt(keyring, &counters, b"x", b"", 100).expect_err("past the bound");
        assert_eq!((refused.clone(), refused.code()), (OpError::Exhausted(1), "encryption_limit"));
        assert_eq!(counters.count(&first.kid), MAX_ENCRYPTIONS_PER_VERSION);
        // What it made still opens; version 2, signing from 200, encrypts.
        assert!(decrypt(keyring, &first.value, b"", 150).is_ok());
        assert_eq!(encrypt(keyring, &counters, b"x", b"", 250).expect("version 2").version, 2);
    }

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
    fn a_version_gone_from_the_bundle_is_refused_as_revoked_expired_or_unknown() {
        use crate::store::testdata::{bundle, version};
        let aes = KeyType::Aes256Gcm;
        let old = handover(aes);
        let made = encrypt(&old.keyrings["api"], &Counters::default(), b"x", b"", 100).expect("encrypt");
        // Version 1 revoked, then 2 and 3 gone as well: 3 revoked, 2 expired.
        let mut b = bundle("web", vec![("api", aes, 5, vec![version(aes, 4, Some(300), None)])]);
        if let Some(ring) = b.keyrings.get_mut("api") {
            ring.revoked_versions = Some(vec![1, 3]);
        }
        let snap = crate::store::Snapshot::build("web", b, None, 300).expect("good");
        let keyring = &snap.keyrings["api"];
        let two = made.value.replacen("lockstep:v1:", "lockstep:v2:", 1);
        let three = made.value.replacen("lockstep:v1:", "lockstep:v3:", 1);
        assert_eq!(decrypt(keyring, &made.value, b"", 310), Err(OpError::Revoked(1)));
        assert_eq!(decrypt(keyring, &two, b"", 310), Err(OpError::Expired(2)));
        assert_eq!(decrypt(keyring, &three, b"", 310), Err(OpError::Revoked(3)));
        assert_eq!(decrypt(keyring, "lockstep:v5:AAAA", b"", 310), Err(OpError::UnknownVersion(5)));
        assert_eq!(decrypt(keyring, "lockstep:v0:AAAA", b"", 310), Err(OpError::UnknownVersion(0)));
        assert_eq!(OpError::Revoked(1).code(), "version_revoked");
    }

    #[test]
    fn raw_ed25519_signatures_are_rfc_8032s_test_vectors() {
        let hex = |text: &str| {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>()
        };
        // RFC 8032, section 7.1, tests 1 and 2: the key as PKCS#8 and SPKI.
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (secret, public, message, expected) in vectors {
            let pkcs8 = [hex("302e020100300506032b657004220420"), hex(secret)].concat();
            let spki = [hex("302a300506032b6570032100"), hex(public)].concat();
            let keyring = crate::store::testdata::one_version(KeyType::Ed25519, pkcs8, Some(spki));
            let signed = sign(&keyring, &hex(message), 10).expect("sign");
            assert_eq!(signed.value, hex(expected));
            assert_eq!(verify(&keyring, &hex(message), &hex(expected), None, 10).map(|d| d.version), Ok(1));
        }
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
