//! Public keys as JSON Web Keys (RFC 7517, 8037), from the
//! SubjectPublicKeyInfo DER that bundles carry: the same members for the
//! sidecar's `/v1/jwks` and the coordinator's public `jwks/<keyring>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::KeyType;

/// The public JWK members (`kty`, `crv`, `x`, `y`, `n`, `e`) of an SPKI.
pub fn public_jwk(key_type: KeyType, spki: &[u8]) -> Option<Value> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match key_type {
        // The raw key is the last 32 bytes of the 44-byte SPKI.
        KeyType::Ed25519 => {
            let raw = spki.get(spki.len().checked_sub(32)?..)?;
            Some(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}))
        }
        // The uncompressed point 04 || x || y ends the SPKI.
        KeyType::EcdsaP256 => {
            let point = spki.get(spki.len().checked_sub(65)?..)?;
            (point[0] == 4)
                .then(|| json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}))
        }
        KeyType::Rsa2048 => {
            let key = aws_lc_rs::rsa::PublicKey::from_der(spki).ok()?;
            let parts = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(&key);
            Some(json!({"kty": "RSA", "n": b64(&parts.n), "e": b64(&parts.e)}))
        }
        KeyType::HmacSha256 | KeyType::Aes256Gcm => None,
    }
}
