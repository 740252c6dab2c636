//! Key bytes that never show in logs and are wiped when dropped.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret bytes: `Debug` prints `…`, memory is zeroized on drop, and the
/// serialized form is standard base64.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes …)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = base64::engine::general_purpose::STANDARD.encode(&self.0);
        let result = serializer.serialize_str(&text);
        text.zeroize();
        result
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut text = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("key material is not valid base64"));
        text.zeroize();
        bytes.map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_bytes_and_serde_uses_base64() {
        let secret = SecretBytes::new(vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(format!("{secret:?}"), "SecretBytes(4 bytes …)");
        let json = serde_json::to_string(&secret).expect("serialize");
        assert_eq!(json, "\"3q2+7w==\"");
        let back: SecretBytes = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, secret);
        let error = serde_json::from_str::<SecretBytes>("\"not base64!\"").expect_err("bad");
        assert!(!error.to_string().contains("not base64!"), "the value must not be echoed: {error}");
    }
}
