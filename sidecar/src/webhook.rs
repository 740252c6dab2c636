//! Webhooks in the Standard Webhooks format: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature`, the last a space-separated
//! list of `v1,<base64>` (HMAC-SHA-256) or `v1a,<base64>` (Ed25519)
//! signatures of `<id>.<timestamp>.<payload>`.
//!
//! A sender signs with every version a receiver may hold during a
//! rotation (the signing version and the published next one), so a
//! receiver that has either verifies: this is how webhook secrets rotate
//! without downtime, and Lockstep schedules it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lockstep_model::{KeyType, UnixSeconds};

use crate::store::Keyring;

/// Most signatures one header may carry, and most bytes it may have.
pub const MAX_SIGNATURES: usize = 16;
/// Longest `webhook-id`.
pub const MAX_ID: usize = 256;

/// Why a webhook was not signed or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Only HMAC-SHA-256 and Ed25519 keyrings sign webhooks.
    #[error("keyring type {0} does not sign webhooks (hmac-sha256 and ed25519 do)")]
    WrongType(String),
    /// No version signs now.
    #[error("no version of this keyring signs now")]
    NoSigningKey,
    /// A header is missing, too long or malformed.
    #[error("header {0:?} is missing or malformed")]
    Header(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("webhook-timestamp {0} is more than the tolerance away from now")]
    Timestamp(i64),
    /// No signature matches any version in the verification set.
    #[error("no signature matches a version in the verification set")]
    NoMatch,
    /// The crypto library failed.
    #[error("signing failed")]
    Failed,
}

impl WebhookError {
    /// Stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongType(_) => "keyring_wrong_type",
            Self::NoSigningKey => "no_signing_key",
            Self::Header(_) => "webhook_header_invalid",
            Self::Timestamp(_) => "webhook_timestamp",
            Self::NoMatch => "webhook_signature_invalid",
            Self::Failed => "sign_failed",
        }
    }
}

/// The three headers of a signed webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, seconds.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: String,
}

fn scheme(key_type: KeyType) -> Result<&'static str, WebhookError> {
    match key_type {
        KeyType::HmacSha256 => Ok("v1"),
        KeyType::Ed25519 => Ok("v1a"),
        other => Err(WebhookError::WrongType(other.to_string())),
    }
}

fn content(id: &str, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(payload);
    signed
}

fn check_id(id: &str) -> Result<(), WebhookError> {
    let ok = !id.is_empty() && id.len() <= MAX_ID && id.chars().all(|c| c.is_ascii_graphic() && c != ',');
    if ok { Ok(()) } else { Err(WebhookError::Header("webhook-id")) }
}

/// Signs with the signing version and every newer version that verifies
/// (published ahead of its activation), newest last.
pub fn sign(
    keyring: &Keyring,
    id: &str,
    timestamp: i64,
    payload: &[u8],
    now: UnixSeconds,
) -> Result<Headers, WebhookError> {
    let scheme = scheme(keyring.data.key_type)?;
    check_id(id)?;
    let state = keyring.state_at(now);
    let signing = state.signing.ok_or(WebhookError::NoSigningKey)?;
    let signed = content(id, timestamp, payload);
    let mut parts = Vec::new();
    for number in state.verifying.iter().filter(|n| **n >= signing) {
        let key = keyring.keys.get(number).ok_or(WebhookError::NoSigningKey)?;
        let signature = key.sign(&signed).map_err(|_| WebhookError::Failed)?;
        parts.push(format!("{scheme},{}", STANDARD.encode(signature)));
    }
    Ok(Headers { id: id.to_string(), timestamp, signature: parts.join(" ") })
}

/// Verifies against every version in the verification set; returns the
/// version whose signature matched.
pub fn verify(
    keyring: &Keyring,
    headers: &Headers,
    payload: &[u8],
    tolerance: u64,
    now: UnixSeconds,
) -> Result<u64, WebhookError> {
    let scheme = scheme(keyring.data.key_type)?;
    check_id(&headers.id)?;
    let tolerance = i64::try_from(tolerance).unwrap_or(i64::MAX);
    if now.saturating_sub(headers.timestamp).abs() > tolerance {
        return Err(WebhookError::Timestamp(headers.timestamp));
    }
    if headers.signature.len() > MAX_SIGNATURES * 100 {
        return Err(WebhookError::Header("webhook-signature"));
    }
    let signatures: Vec<Vec<u8>> = headers
        .signature
        .split(' ')
        .filter_map(|part| {
            part.split_once(',').filter(|(s, _)| *s == scheme).and_then(|(_, b)| STANDARD.decode(b).ok())
        })
        .take(MAX_SIGNATURES)
        .collect();
    let signed = content(&headers.id, headers.timestamp, payload);
    for number in keyring.state_at(now).verifying {
        let Some(key) = keyring.keys.get(&number) else {
            continue;
        };
        // HMAC verification is constant-time in aws-lc.
        if signatures.iter().any(|signature| key.verify(&signed, signature)) {
            return Ok(number);
        }
    }
    Err(WebhookError::NoMatch)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hmac;

    use super::*;
    use crate::store::testdata::handover;

    #[test]
    fn the_standard_webhooks_example_reproduces() {
        // The specification's published example: the secret is the base64
        // after "whsec_".
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("base64");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let signed = content("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        let signature = STANDARD.encode(hmac::sign(&key, &signed).as_ref());
        assert_eq!(format!("v1,{signature}"), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // And through this module's own sign and verify, with that secret
        // as a keyring's only version.
        let keyring = crate::store::testdata::one_version(KeyType::HmacSha256, secret, None);
        let (id, timestamp, payload) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        let headers = sign(&keyring, id, timestamp, payload, timestamp).expect("sign");
        assert_eq!(headers.signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let received = Headers { id: id.into(), timestamp, signature: headers.signature.clone() };
        assert_eq!(verify(&keyring, &received, payload, 300, timestamp + 10), Ok(1));
        let tampered = Headers { signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=".into(), ..received };
        assert_eq!(verify(&keyring, &tampered, payload, 300, timestamp + 10), Err(WebhookError::NoMatch));
    }

    #[test]
    fn during_a_rotation_a_webhook_carries_both_versions_and_either_receiver_verifies() {
        // Version 1 signs from 0 until 200, version 2 is published (it
        // verifies) and signs from 200; version 1 verifies until 300.
        for key_type in [KeyType::HmacSha256, KeyType::Ed25519] {
            let snap = handover(key_type);
            let keyring = &snap.keyrings["api"];
            let headers = sign(keyring, "msg_1", 100, b"{}", 100).expect("sign");
            let parts: Vec<&str> = headers.signature.split(' ').collect();
            assert_eq!(parts.len(), 2, "{key_type}: {headers:?}");
            assert!(parts.iter().all(|p| p.starts_with(scheme(key_type).expect("scheme"))));
            assert_eq!(verify(keyring, &headers, b"{}", 300, 100), Ok(1));
            // Once version 1 has expired, version 2's signature still matches.
            assert_eq!(verify(keyring, &headers, b"{}", 300, 300), Ok(2));
            assert_eq!(verify(keyring, &headers, b"{!}", 300, 100), Err(WebhookError::NoMatch));
            assert_eq!(verify(keyring, &headers, b"{}", 60, 200), Err(WebhookError::Timestamp(100)));
        }
        let snap = handover(KeyType::EcdsaP256);
        assert!(matches!(sign(&snap.keyrings["api"], "m", 0, b"", 0), Err(WebhookError::WrongType(_))));
    }

    /// What docs/sidecar.md tells a receiver outside Lockstep: the `v1a`
    /// key is the raw Ed25519 public key, the last 32 bytes of the version's
    /// `public_key` (DER SubjectPublicKeyInfo), and the signature is over
    /// `<id>.<timestamp>.<payload>`.
    #[test]
    fn an_outside_receiver_verifies_v1a_with_the_raw_public_key() {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let spki = pair.public_key().as_der().expect("der").as_ref().to_vec();
        let keyring =
            crate::store::testdata::one_version(KeyType::Ed25519, pkcs8.as_ref().to_vec(), Some(spki.clone()));
        let headers = sign(&keyring, "msg_1", 1_700_000_000, b"{\"a\":1}", 1_700_000_000).expect("sign");
        let signature = headers.signature.strip_prefix("v1a,").map(|b| STANDARD.decode(b).expect("base64"));
        let raw = &spki[spki.len() - 32..];
        assert_eq!(raw, pair.public_key().as_ref(), "the DER ends with the raw key");
        let receiver = UnparsedPublicKey::new(&ED25519, raw);
        assert!(receiver.verify(b"msg_1.1700000000.{\"a\":1}", &signature.expect("a v1a signature")).is_ok());
    }
}
