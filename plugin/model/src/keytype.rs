//! Key types.

use serde::{Deserialize, Serialize};

/// The kind of key a keyring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// 32-byte HMAC-SHA-256 secret (JWT HS256).
    HmacSha256,
    /// 32-byte AES-256-GCM key (encryption; no JWT algorithm).
    Aes256Gcm,
    /// Ed25519 key pair (JWT EdDSA).
    Ed25519,
    /// ECDSA P-256 key pair (JWT ES256).
    EcdsaP256,
    /// RSA 2048-bit key pair (JWT RS256).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

/// Every type, in the order help lists them.
pub const ALL: [KeyType; 5] =
    [KeyType::HmacSha256, KeyType::Aes256Gcm, KeyType::Ed25519, KeyType::EcdsaP256, KeyType::Rsa2048];

impl KeyType {
    /// Parses the API name (`hmac-sha256`, `aes256-gcm`, `ed25519`,
    /// `ecdsa-p256`, `rsa-2048`).
    pub fn parse(name: &str) -> Option<Self> {
        ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::Aes256Gcm => "aes256-gcm",
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa2048 => "rsa-2048",
        }
    }

    /// Whether the key splits into a private and a public half.
    pub fn is_asymmetric(self) -> bool {
        matches!(self, Self::Ed25519 | Self::EcdsaP256 | Self::Rsa2048)
    }

    /// The JWT `alg` for signing with this type, if any.
    pub fn jwt_alg(self) -> Option<&'static str> {
        match self {
            Self::HmacSha256 => Some("HS256"),
            Self::Aes256Gcm => None,
            Self::Ed25519 => Some("EdDSA"),
            Self::EcdsaP256 => Some("ES256"),
            Self::Rsa2048 => Some("RS256"),
        }
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in ALL {
            assert_eq!(KeyType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).expect("serialize");
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(KeyType::parse("rsa-1024"), None);
        assert_eq!(KeyType::Aes256Gcm.jwt_alg(), None);
        assert!(!KeyType::HmacSha256.is_asymmetric() && KeyType::Rsa2048.is_asymmetric());
    }
}
