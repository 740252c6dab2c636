//! Generation of key material for each key type, on aws-lc-rs.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use lockstep_model::KeyType;
use lockstep_model::secret::SecretBytes;

/// A version's material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The secret (HMAC/AES) or the private key as PKCS#8 DER.
    pub private_key: SecretBytes,
    /// SubjectPublicKeyInfo DER, base64, for asymmetric types.
    pub public_key: Option<String>,
}

/// Key generation failed (the system's randomness or the crypto library).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("generating a {0} key failed")]
pub struct KeygenError(KeyType);

/// Generates fresh material of `key_type`.
pub fn generate(key_type: KeyType) -> Result<Material, KeygenError> {
    let fail = |_: aws_lc_rs::error::Unspecified| KeygenError(key_type);
    let rejected = |_: aws_lc_rs::error::KeyRejected| KeygenError(key_type);
    let rng = SystemRandom::new();
    match key_type {
        KeyType::HmacSha256 | KeyType::Aes256Gcm => {
            let mut secret = vec![0u8; 32];
            rng.fill(&mut secret).map_err(fail)?;
            Ok(Material { private_key: SecretBytes::new(secret), public_key: None })
        }
        KeyType::Ed25519 => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(fail)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(rejected)?;
            let public: PublicKeyX509Der<'static> = pair.public_key().as_der().map_err(fail)?;
            Ok(asymmetric(pkcs8.as_ref().to_vec(), public.as_ref()))
        }
        KeyType::EcdsaP256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(fail)?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).map_err(rejected)?;
            let public: PublicKeyX509Der<'static> = pair.public_key().as_der().map_err(fail)?;
            Ok(asymmetric(pkcs8.as_ref().to_vec(), public.as_ref()))
        }
        KeyType::Rsa2048 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(fail)?;
            let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = pair.as_der().map_err(fail)?;
            let public: PublicKeyX509Der<'static> = pair.public_key().as_der().map_err(fail)?;
            Ok(asymmetric(pkcs8.as_ref().to_vec(), public.as_ref()))
        }
    }
}

fn asymmetric(private: Vec<u8>, public: &[u8]) -> Material {
    Material {
        private_key: SecretBytes::new(private),
        public_key: Some(base64::engine::general_purpose::STANDARD.encode(public)),
    }
}

/// A fresh random hex string of `bytes` bytes, for key ids.
pub fn random_hex(bytes: usize) -> Result<String, KeygenError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).map_err(|_| KeygenError(KeyType::HmacSha256))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_model::bundle::{Bundle, BundleKeyring, BundleVersion, PoolMode, revision};
    use lockstep_model::version::VersionMeta;

    #[test]
    fn every_type_generates_material_the_sidecars_accept() {
        for key_type in lockstep_model::keytype::ALL {
            let material = generate(key_type).expect("generate");
            assert_eq!(material.public_key.is_some(), key_type.is_asymmetric());
            // The bundle checks lengths per type; generated keys must pass.
            let meta = VersionMeta {
                number: 1,
                kid: "k".into(),
                created_at: 0,
                planned_activation: 0,
                not_before: Some(0),
                not_after: None,
                expires_at: None,
                emergency: false,
                revoked: None,
                destroyed: false,
            };
            let version =
                BundleVersion { meta, private_key: Some(material.private_key), public_key: material.public_key };
            let keyring = BundleKeyring {
                key_type,
                generation: 1,
                versions: vec![version],
                limits: None,
                revoked: None,
                revoked_versions: None,
            };
            let keyrings = [("k".to_string(), keyring)].into_iter().collect();
            let bundle = Bundle {
                format: lockstep_model::bundle::FORMAT,
                pool: "p".into(),
                mode: PoolMode::Sign,
                revision: revision(PoolMode::Sign, &keyrings),
                server_time: 0,
                keyrings,
            };
            assert_eq!(bundle.validate("p", None), Ok(()), "{key_type}");
        }
    }

    #[test]
    fn secrets_differ_between_calls() {
        let a = generate(KeyType::HmacSha256).expect("a");
        let b = generate(KeyType::HmacSha256).expect("b");
        assert_ne!(a.private_key, b.private_key);
        assert_eq!(random_hex(4).expect("hex").len(), 8);
    }
}
