//! Key material parsed once per bundle, on aws-lc-rs (the workspace's one
//! crypto backend): signing keys from PKCS#8, verifying keys from
//! SubjectPublicKeyInfo, and public JWKs.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
};
use aws_lc_rs::{aead, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lockstep_model::KeyType;
use lockstep_model::bundle::BundleVersion;
use serde_json::Value;

/// Why material could not be used; the bundle carrying it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The private key does not parse as the keyring's type.
    #[error("version {0}: private key does not parse")]
    BadPrivateKey(u64),
    /// The public key does not parse as the keyring's type.
    #[error("version {0}: public key does not parse")]
    BadPublicKey(u64),
    /// The private and public halves do not belong together.
    #[error("version {0}: private and public keys do not match")]
    Mismatch(u64),
    /// Signing failed in the crypto library.
    #[error("signing failed")]
    SignFailed,
    /// The key has no private half here (verify-only pool).
    #[error("no private key for this version")]
    NoPrivateKey,
    /// The key type does not sign (AES).
    #[error("this key type does not sign")]
    NotSigning,
    /// The key type does not encrypt (only AES-256-GCM does).
    #[error("this key type does not encrypt")]
    NotSealing,
    /// Encryption failed in the crypto library.
    #[error("encryption failed")]
    SealFailed,
}

/// One version's material, ready to sign or verify.
pub enum PreparedKey {
    /// HMAC-SHA-256 key (boxed: aws-lc's HMAC state is large).
    Hmac(Box<hmac::Key>),
    /// AES-256-GCM key.
    Aes(Box<aead::LessSafeKey>),
    /// Asymmetric: an optional signer and a verifier.
    Asymmetric {
        /// Present in sign pools.
        signer: Option<Signer>,
        /// From the public key.
        verifier: ParsedPublicKey,
        /// The public key as a JWK (without kid/alg).
        jwk: Value,
    },
}

/// A private key that signs.
pub enum Signer {
    /// Ed25519.
    Ed25519(Ed25519KeyPair),
    /// ECDSA P-256, fixed-size (JWS) signatures.
    Ecdsa(EcdsaKeyPair),
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::Hmac(_) => "hmac",
            Self::Aes(_) => "aes",
            Self::Asymmetric { signer: Some(_), .. } => "key pair",
            Self::Asymmetric { signer: None, .. } => "public key",
        };
        write!(f, "PreparedKey({kind} …)")
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

impl PreparedKey {
    /// Parses a version's material for `key_type`.
    pub fn prepare(key_type: KeyType, version: &BundleVersion) -> Result<Self, CryptoError> {
        let n = version.meta.number;
        let private = version.private_key.as_ref().map(|k| k.expose());
        match key_type {
            KeyType::HmacSha256 => {
                let secret = private.ok_or(CryptoError::BadPrivateKey(n))?;
                Ok(Self::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))))
            }
            KeyType::Aes256Gcm => {
                let secret = private.ok_or(CryptoError::BadPrivateKey(n))?;
                let key =
                    aead::UnboundKey::new(&aead::AES_256_GCM, secret).map_err(|_| CryptoError::BadPrivateKey(n))?;
                Ok(Self::Aes(Box::new(aead::LessSafeKey::new(key))))
            }
            _ => {
                let public = version
                    .public_key
                    .as_deref()
                    .and_then(|p| STANDARD.decode(p).ok())
                    .ok_or(CryptoError::BadPublicKey(n))?;
                let verifier = ParsedPublicKey::new(verification_alg(key_type), &public)
                    .map_err(|_| CryptoError::BadPublicKey(n))?;
                let jwk = lockstep_model::jwk::public_jwk(key_type, &public).ok_or(CryptoError::BadPublicKey(n))?;
                let signer = private.map(|der| parse_signer(key_type, der, n)).transpose()?;
                if let Some(signer) = &signer {
                    check_pair(signer, &verifier, n)?;
                }
                Ok(Self::Asymmetric { signer, verifier, jwk })
            }
        }
    }

    /// Signs `message` (a JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self {
            Self::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
            Self::Aes(_) => Err(CryptoError::NotSigning),
            Self::Asymmetric { signer: None, .. } => Err(CryptoError::NoPrivateKey),
            Self::Asymmetric { signer: Some(signer), .. } => signer.sign(message),
        }
    }

    /// Whether `sig` is a valid signature of `message`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
            Self::Aes(_) => false,
            Self::Asymmetric { verifier, .. } => verifier.verify_sig(message, sig).is_ok(),
        }
    }

    /// Seals `plaintext` under a fresh random 96-bit nonce: nonce, then
    /// ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let Self::Aes(key) = self else {
            return Err(CryptoError::NotSealing);
        };
        let mut nonce = [0u8; aead::NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::SealFailed)?;
        let mut out = Vec::with_capacity(aead::NONCE_LEN + plaintext.len() + aead::AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), &mut body)
            .map_err(|_| CryptoError::SealFailed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`Self::seal`] made; `None` when it does not open (wrong
    /// key, associated data or tampering).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let Self::Aes(key) = self else {
            return None;
        };
        let (nonce, body) = sealed.split_at_checked(aead::NONCE_LEN)?;
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = zeroize::Zeroizing::new(body.to_vec());
        let plain = key.open_in_place(nonce, aead::Aad::from(aad), &mut body).ok()?.len();
        body.truncate(plain);
        Some(body)
    }

    /// Whether this version can sign here.
    pub fn can_sign(&self) -> bool {
        matches!(self, Self::Hmac(_) | Self::Asymmetric { signer: Some(_), .. })
    }

    /// The public JWK, for asymmetric keys.
    pub fn public_jwk(&self) -> Option<&Value> {
        match self {
            Self::Asymmetric { jwk, .. } => Some(jwk),
            _ => None,
        }
    }
}

impl Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rng = SystemRandom::new();
        match self {
            Self::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Self::Ecdsa(pair) => {
                pair.sign(&rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| CryptoError::SignFailed)
            }
            Self::Rsa(pair) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).map_err(|_| CryptoError::SignFailed)?;
                Ok(sig)
            }
        }
    }
}

fn verification_alg(key_type: KeyType) -> &'static dyn signature::VerificationAlgorithm {
    match key_type {
        KeyType::Ed25519 => &ED25519,
        KeyType::EcdsaP256 => &ECDSA_P256_SHA256_FIXED,
        _ => &RSA_PKCS1_2048_8192_SHA256,
    }
}

fn parse_signer(key_type: KeyType, der: &[u8], n: u64) -> Result<Signer, CryptoError> {
    let bad = |_| CryptoError::BadPrivateKey(n);
    match key_type {
        KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8(der).map(Signer::Ed25519).map_err(bad),
        KeyType::EcdsaP256 => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map(Signer::Ecdsa).map_err(bad)
        }
        _ => RsaKeyPair::from_pkcs8(der).map(Signer::Rsa).map_err(bad),
    }
}

/// A bundle whose halves do not match would sign tokens nobody verifies.
fn check_pair(signer: &Signer, verifier: &ParsedPublicKey, n: u64) -> Result<(), CryptoError> {
    let probe = b"lockstep-sidecar key pair check";
    let sig = signer.sign(probe)?;
    verifier.verify_sig(probe, &sig).map_err(|_| CryptoError::Mismatch(n))
}

/// PEM armour of DER.
pub fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Test material, generated the way the coordinator does.
#[cfg(test)]
pub(crate) mod testkeys {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::signature::KeyPair as _;
    use lockstep_model::secret::SecretBytes;

    use super::*;

    /// (private, public base64) for a type.
    pub fn material(key_type: KeyType) -> (SecretBytes, Option<String>) {
        let rng = SystemRandom::new();
        let spki = |der: PublicKeyX509Der<'static>| Some(STANDARD.encode(der.as_ref()));
        match key_type {
            KeyType::HmacSha256 | KeyType::Aes256Gcm => {
                let mut secret = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut secret).expect("random");
                (SecretBytes::new(secret), None)
            }
            KeyType::Ed25519 => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
                let public = pair.public_key().as_der().expect("der");
                (SecretBytes::new(pkcs8.as_ref().to_vec()), spki(public))
            }
            KeyType::EcdsaP256 => {
                let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("gen");
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("parse");
                let public = pair.public_key().as_der().expect("der");
                (SecretBytes::new(pkcs8.as_ref().to_vec()), spki(public))
            }
            KeyType::Rsa2048 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("gen");
                let pkcs8: Pkcs8V1Der<'static> = pair.as_der().expect("der");
                let public = pair.public_key().as_der().expect("der");
                (SecretBytes::new(pkcs8.as_ref().to_vec()), spki(public))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lockstep_model::version::VersionMeta;

    use super::*;

    pub(crate) fn meta(number: u64) -> VersionMeta {
        VersionMeta {
            number,
            kid: format!("k{number}"),
            created_at: 0,
            planned_activation: 0,
            not_before: Some(0),
            not_after: None,
            expires_at: None,
            emergency: false,
            revoked: None,
            destroyed: false,
        }
    }

    fn secret_version(secret: Vec<u8>) -> BundleVersion {
        BundleVersion {
            meta: meta(1),
            private_key: Some(lockstep_model::secret::SecretBytes::new(secret)),
            public_key: None,
        }
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_1() {
        let key = PreparedKey::prepare(KeyType::HmacSha256, &secret_version(vec![0x0b; 20])).expect("key");
        let tag = key.sign(b"Hi There").expect("mac");
        assert_eq!(tag, hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
        assert!(key.verify(b"Hi There", &tag) && !key.verify(b"Hi there", &tag));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_cases_2_to_4_and_6() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 4] = [
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            ((1..=25).collect(), vec![0xcd; 50], "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            // A key longer than the hash's block: hashed first.
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (secret, data, expected) in cases {
            let key = PreparedKey::prepare(KeyType::HmacSha256, &secret_version(secret)).expect("key");
            let tag = key.sign(&data).expect("mac");
            assert_eq!(tag, hex(expected), "{expected}");
            assert!(key.verify(&data, &tag));
        }
    }

    #[test]
    fn aes_gcm_opens_the_gcm_specifications_test_cases_13_and_14() {
        // AES-256, a zero key and a zero 96-bit IV: no plaintext (13), and
        // one zero block (14); IV, then ciphertext and tag, as seal writes.
        let key = PreparedKey::prepare(KeyType::Aes256Gcm, &secret_version(vec![0; 32])).expect("key");
        let empty = hex(concat!("000000000000000000000000", "530f8afbc74536b9a963b4f1c4cb738b"));
        assert_eq!(key.open(&empty, b"").expect("opens").as_slice(), b"");
        let block = hex(concat!(
            "000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919"
        ));
        assert_eq!(key.open(&block, b"").expect("opens").as_slice(), [0u8; 16].as_slice());
        let mut forged = block.clone();
        forged[31] ^= 0x80;
        assert!(key.open(&forged, b"").is_none(), "a forged tag");
    }

    #[test]
    fn aes_gcm_opens_the_gcm_specifications_test_case_16() {
        // AES-256, 96-bit IV, with associated data (McGrew and Viega, "The
        // Galois/Counter Mode of Operation", test case 16), in the layout
        // seal writes: IV, then ciphertext and tag.
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let key = PreparedKey::prepare(KeyType::Aes256Gcm, &secret_version(key)).expect("key");
        let plaintext = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let sealed = hex(concat!(
            "cafebabefacedbaddecaf888",
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b"
        ));
        assert_eq!(key.open(&sealed, &aad).expect("opens").as_slice(), plaintext.as_slice());
        assert!(key.open(&sealed, b"other").is_none(), "other associated data");
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert!(key.open(&altered, &aad).is_none(), "an altered ciphertext");
        // What seal makes opens again, under a fresh nonce each time.
        let (one, two) = (key.seal(b"x", b"a").expect("seal"), key.seal(b"x", b"a").expect("seal"));
        assert_ne!(one[..12], two[..12]);
        assert_eq!(key.open(&one, b"a").expect("opens").as_slice(), b"x");
    }

    #[test]
    fn ecdsa_p256_verifies_the_rfc_6979_signatures_of_its_key_and_nothing_else() {
        // RFC 6979, A.2.5: the P-256 key's public half (as the bundle
        // carries it, SubjectPublicKeyInfo), and its SHA-256 signatures of
        // "sample" and "test" as r || s, the fixed form JWS uses.
        let spki = hex(concat!(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6",
            "7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"
        ));
        let version = BundleVersion { meta: meta(1), private_key: None, public_key: Some(STANDARD.encode(spki)) };
        let key = PreparedKey::prepare(KeyType::EcdsaP256, &version).expect("the public key");
        let sample = hex(concat!(
            "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716",
            "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"
        ));
        let test = hex(concat!(
            "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367",
            "019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083"
        ));
        assert!(key.verify(b"sample", &sample) && key.verify(b"test", &test));
        assert!(!key.verify(b"test", &sample) && !key.verify(b"sample", &test), "each signs its own message");
        let mut altered = sample.clone();
        altered[63] ^= 1;
        assert!(!key.verify(b"sample", &altered));
    }

    #[test]
    fn every_signing_type_signs_and_verifies() {
        for key_type in [KeyType::HmacSha256, KeyType::Ed25519, KeyType::EcdsaP256, KeyType::Rsa2048] {
            let (private, public) = testkeys::material(key_type);
            let version = BundleVersion { meta: meta(1), private_key: Some(private), public_key: public.clone() };
            let key = PreparedKey::prepare(key_type, &version).expect("prepare");
            let sig = key.sign(b"hello").expect("sign");
            assert!(key.verify(b"hello", &sig), "{key_type}");
            assert!(!key.verify(b"hellO", &sig), "{key_type}");
            assert_eq!(key.public_jwk().is_some(), key_type.is_asymmetric());
            if key_type.is_asymmetric() {
                let public_only = BundleVersion { meta: meta(1), private_key: None, public_key: public };
                let verifier = PreparedKey::prepare(key_type, &public_only).expect("public");
                assert!(verifier.verify(b"hello", &sig));
                assert_eq!(verifier.sign(b"x").expect_err("no key"), CryptoError::NoPrivateKey);
            }
        }
    }

    #[test]
    fn mismatched_halves_are_refused() {
        let (private, _) = testkeys::material(KeyType::Ed25519);
        let (_, other_public) = testkeys::material(KeyType::Ed25519);
        let version = BundleVersion { meta: meta(4), private_key: Some(private), public_key: other_public };
        let error = PreparedKey::prepare(KeyType::Ed25519, &version).expect_err("mismatch");
        assert_eq!(error, CryptoError::Mismatch(4));
        assert!(!format!("{error} {error:?}").contains("BEGIN"));
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let text = pem("PUBLIC KEY", &[7u8; 100]);
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
    }
}
