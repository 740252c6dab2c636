//! What the socket API and the file sink show of a keyring: computed at
//! the instant asked, from each version's own times, so nothing past its
//! `expires_at` is ever shown, whatever the age of the bundle.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use lockstep_model::bundle::{BundleVersion, PoolMode};
use lockstep_model::version::version_state;
use lockstep_model::{KeyType, UnixSeconds};
use serde_json::{Map, Value, json};

use crate::config::Format;
use crate::crypto::pem;
use crate::store::{Keyring, Snapshot};

/// Why a view could not be given; each maps to a stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// No keyring of that name in this pool's bundle.
    #[error("keyring {0:?} is not in this pool's bundle")]
    UnknownKeyring(String),
    /// No version with that number or kid.
    #[error("keyring {keyring:?} has no version {selector}")]
    UnknownVersion {
        /// The keyring.
        keyring: String,
        /// The number or kid asked for.
        selector: String,
    },
    /// The version exists but verifies nothing any more.
    #[error("version {selector} of keyring {keyring:?} has expired")]
    Expired {
        /// The keyring.
        keyring: String,
        /// The number or kid asked for.
        selector: String,
    },
    /// The format or private material asked for does not exist here.
    #[error("{0}")]
    Unsupported(String),
}

/// How to show material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewOptions {
    /// Base64, JWK or PEM.
    pub format: Format,
    /// Include private keys of asymmetric keyrings.
    pub private: bool,
    /// The keyring's signing bound in a sign-mode pool (see
    /// `Store::sign_until`): past it the view names no signing version and
    /// gives no private key, as the sidecar's own operations refuse to sign.
    /// Symmetric secrets stay: they are what verifies.
    pub sign_until: Option<UnixSeconds>,
}

impl ViewOptions {
    /// Whether signing has stopped at `now`.
    fn stopped(&self, now: UnixSeconds) -> bool {
        self.sign_until.is_some_and(|until| now > until)
    }
}

/// A version, by number or kid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Version number.
    Number(u64),
    /// Key id.
    Kid(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Kid(kid) => write!(f, "with kid {kid:?}"),
        }
    }
}

/// Looks a keyring up.
pub fn keyring<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a Keyring, ViewError> {
    snapshot.keyrings.get(name).ok_or_else(|| ViewError::UnknownKeyring(name.into()))
}

/// The keyring's state token at `now` (see [`Keyring::state_token`]),
/// marked once signing has stopped at its bound: the view changes then.
pub fn state_token(keyring: &Keyring, now: UnixSeconds, options: ViewOptions) -> String {
    let token = keyring.state_token(now);
    if options.stopped(now) { format!("{token}.stopped") } else { token }
}

/// The keyring's signing version and verification set at `now`.
pub fn keyring_view(
    snapshot: &Snapshot,
    name: &str,
    now: UnixSeconds,
    options: ViewOptions,
) -> Result<Value, ViewError> {
    let keyring = keyring(snapshot, name)?;
    let state = keyring.state_at(now);
    let find = |n: u64| keyring.data.versions.iter().find(|v| v.meta.number == n);
    let show = Shown::new(snapshot, options, now);
    let signing = state
        .signing
        .filter(|_| !show.stopped)
        .and_then(find)
        .map(|v| version_json(keyring, v, state.signing, now, show))
        .transpose()?;
    let verifying = state
        .verifying
        .iter()
        .filter_map(|n| find(*n))
        .map(|v| version_json(keyring, v, state.signing, now, show))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "keyring": name,
        "type": keyring.data.key_type,
        "alg": keyring.data.key_type.jwt_alg(),
        "pool": snapshot.bundle.pool,
        "revision": snapshot.bundle.revision,
        "state": state_token(keyring, now, options),
        "now": now,
        "signing": signing,
        "sign_until": options.sign_until,
        "verifying": verifying,
    }))
}

/// One version, if it still verifies at `now`.
pub fn version_view(
    snapshot: &Snapshot,
    name: &str,
    selector: &Selector,
    now: UnixSeconds,
    options: ViewOptions,
) -> Result<Value, ViewError> {
    let keyring = keyring(snapshot, name)?;
    let version = keyring
        .data
        .versions
        .iter()
        .find(|v| match selector {
            Selector::Number(n) => v.meta.number == *n,
            Selector::Kid(kid) => v.meta.kid == *kid,
        })
        .ok_or_else(|| ViewError::UnknownVersion { keyring: name.into(), selector: selector.to_string() })?;
    if !version.meta.verifies_at(now) {
        return Err(ViewError::Expired { keyring: name.into(), selector: selector.to_string() });
    }
    let signing = keyring.state_at(now).signing;
    let show = Shown::new(snapshot, options, now);
    let mut view = version_json(keyring, version, signing, now, show)?;
    view["keyring"] = json!(name);
    view["type"] = json!(keyring.data.key_type);
    Ok(view)
}

/// The JWKS of an asymmetric keyring's verification set at `now`.
pub fn jwks(snapshot: &Snapshot, name: &str, now: UnixSeconds) -> Result<Value, ViewError> {
    let keyring = keyring(snapshot, name)?;
    let key_type = keyring.data.key_type;
    if !key_type.is_asymmetric() {
        return Err(ViewError::Unsupported(format!(
            "keyring {name:?} is {key_type}: symmetric keys are never published in a JWKS"
        )));
    }
    let keys: Vec<Value> = keyring
        .state_at(now)
        .verifying
        .iter()
        .filter_map(|n| keyring.data.versions.iter().find(|v| v.meta.number == *n))
        .filter_map(|v| jwk(keyring, v))
        .collect();
    Ok(json!({ "keys": keys }))
}

/// How material is shown: the caller's options, whether the pool is
/// verify-only, and whether signing has stopped at its bound.
#[derive(Debug, Clone, Copy)]
struct Shown {
    options: ViewOptions,
    verify_only: bool,
    stopped: bool,
}

impl Shown {
    fn new(snapshot: &Snapshot, options: ViewOptions, now: UnixSeconds) -> Self {
        Self { options, verify_only: snapshot.bundle.mode == PoolMode::Verify, stopped: options.stopped(now) }
    }
}

fn version_json(
    keyring: &Keyring,
    version: &BundleVersion,
    signing: Option<u64>,
    now: UnixSeconds,
    show: Shown,
) -> Result<Value, ViewError> {
    let meta = &version.meta;
    Ok(json!({
        "version": meta.number,
        "kid": meta.kid,
        "state": version_state(meta, signing, now),
        "created_at": meta.created_at,
        "not_before": meta.not_before,
        "not_after": meta.not_after,
        "expires_at": meta.expires_at,
        "material": material(keyring, version, show)?,
    }))
}

fn material(keyring: &Keyring, version: &BundleVersion, show: Shown) -> Result<Value, ViewError> {
    let (options, key_type) = (show.options, keyring.data.key_type);
    let private = version.private_key.as_ref().map(|k| k.expose());
    if !key_type.is_asymmetric() && show.verify_only {
        // The sidecar holds the secret to verify, MAC-verify and decrypt
        // for the pool; handed to apps it would let them sign and encrypt,
        // which a verify-only pool must not.
        return Ok(json!({}));
    }
    if !key_type.is_asymmetric() {
        let secret = private.unwrap_or_default();
        return match options.format {
            Format::Base64 => Ok(json!({ "secret": STANDARD.encode(secret) })),
            Format::Jwk => Ok(json!({ "jwk": oct_jwk(key_type, &version.meta.kid, secret) })),
            Format::Pem => Err(ViewError::Unsupported(format!(
                "format pem is not available for {key_type} keys; use base64 or jwk"
            ))),
        };
    }
    if options.private && private.is_none() {
        return Err(ViewError::Unsupported("this pool is verify-only: it holds no private keys".into()));
    }
    // Past the signing bound the key is not handed out to sign with either.
    let private = private.filter(|_| !show.stopped);
    let public = version.public_key.as_deref().and_then(|p| STANDARD.decode(p).ok()).unwrap_or_default();
    let mut out = Map::new();
    match options.format {
        Format::Base64 => {
            out.insert("public_key".into(), json!(STANDARD.encode(&public)));
            if let Some(der) = private.filter(|_| options.private) {
                out.insert("private_key".into(), json!(STANDARD.encode(der)));
            }
        }
        Format::Pem => {
            out.insert("public_key".into(), json!(pem("PUBLIC KEY", &public)));
            if let Some(der) = private.filter(|_| options.private) {
                out.insert("private_key".into(), json!(pem("PRIVATE KEY", der)));
            }
        }
        Format::Jwk => {
            if options.private {
                return Err(ViewError::Unsupported("private keys are given as base64 or pem, not jwk".into()));
            }
            out.insert("jwk".into(), jwk(keyring, version).unwrap_or(Value::Null));
        }
    }
    Ok(Value::Object(out))
}

/// The public JWK of an asymmetric version, with `kid`, `alg` and `use`.
fn jwk(keyring: &Keyring, version: &BundleVersion) -> Option<Value> {
    let mut jwk = keyring.keys.get(&version.meta.number)?.public_jwk()?.clone();
    jwk["kid"] = json!(version.meta.kid);
    jwk["alg"] = json!(keyring.data.key_type.jwt_alg());
    jwk["use"] = json!("sig");
    Some(jwk)
}

fn oct_jwk(key_type: KeyType, kid: &str, secret: &[u8]) -> Value {
    let (alg, usage) = match key_type {
        KeyType::Aes256Gcm => ("A256GCM", "enc"),
        _ => ("HS256", "sig"),
    };
    json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret), "kid": kid, "alg": alg, "use": usage})
}

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;

    use super::*;
    use crate::store::testdata::{bundle, version};

    fn snapshot(key_type: KeyType) -> Snapshot {
        let b = bundle(
            "web",
            vec![(
                "api",
                key_type,
                1,
                vec![
                    version(key_type, 1, Some(0), Some(300)),
                    version(key_type, 2, Some(200), None),
                    version(key_type, 3, None, None),
                ],
            )],
        );
        Snapshot::build("web", b, None, 0).expect("good")
    }

    #[test]
    fn the_view_follows_the_clock_and_never_shows_an_expired_version() {
        let snap = snapshot(KeyType::Ed25519);
        let at = |t| keyring_view(&snap, "api", t, ViewOptions::default()).expect("view");
        let early = at(100);
        assert_eq!(early["signing"]["version"], 1);
        assert_eq!(early["verifying"].as_array().map(Vec::len), Some(3));
        assert_eq!(early["verifying"][2]["state"], "pending");
        let late = at(300);
        assert_eq!(late["signing"]["version"], 2);
        let versions: Vec<_> =
            late["verifying"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect();
        assert_eq!(versions, vec![json!(2), json!(3)]);
        assert_ne!(early["state"], late["state"]);
        let gone = version_view(&snap, "api", &Selector::Number(1), 300, ViewOptions::default());
        assert!(matches!(gone, Err(ViewError::Expired { .. })));
        let by_kid = version_view(&snap, "api", &Selector::Kid("kid-2-ed25519".into()), 300, ViewOptions::default())
            .expect("kid");
        assert_eq!(by_kid["version"], 2);
    }

    #[test]
    fn formats_and_private_material() {
        let snap = snapshot(KeyType::EcdsaP256);
        let pem_view = keyring_view(
            &snap,
            "api",
            100,
            ViewOptions { format: Format::Pem, private: true, ..ViewOptions::default() },
        )
        .expect("pem");
        let material = &pem_view["signing"]["material"];
        assert!(material["public_key"].as_str().is_some_and(|p| p.starts_with("-----BEGIN PUBLIC KEY-----")));
        assert!(material["private_key"].as_str().is_some_and(|p| p.starts_with("-----BEGIN PRIVATE KEY-----")));
        let public_only = keyring_view(&snap, "api", 100, ViewOptions::default()).expect("b64");
        assert!(public_only["signing"]["material"].get("private_key").is_none());
        let jwk_view = keyring_view(&snap, "api", 100, ViewOptions { format: Format::Jwk, ..ViewOptions::default() })
            .expect("jwk");
        assert_eq!(jwk_view["signing"]["material"]["jwk"]["crv"], "P-256");
        let set = jwks(&snap, "api", 100).expect("jwks");
        assert_eq!(set["keys"].as_array().map(Vec::len), Some(3));
        let hmac = snapshot(KeyType::HmacSha256);
        assert!(matches!(jwks(&hmac, "api", 100), Err(ViewError::Unsupported(_))));
        assert!(
            keyring_view(&hmac, "api", 100, ViewOptions { format: Format::Pem, ..ViewOptions::default() }).is_err()
        );
        assert!(matches!(keyring_view(&hmac, "nope", 1, ViewOptions::default()), Err(ViewError::UnknownKeyring(_))));
        assert!(
            keyring_view(&hmac, "api", 100, ViewOptions::default()).expect("b64")["signing"]["material"]["secret"]
                .is_string()
        );
    }

    #[test]
    fn a_verify_only_pool_hands_apps_no_symmetric_secret() {
        for key_type in [KeyType::HmacSha256, KeyType::Aes256Gcm] {
            let mut snap = snapshot(key_type);
            snap.bundle.mode = PoolMode::Verify;
            for format in [Format::Base64, Format::Jwk, Format::Pem] {
                let view =
                    keyring_view(&snap, "api", 100, ViewOptions { format, private: true, ..ViewOptions::default() })
                        .expect("view");
                assert_eq!(view["signing"]["material"], json!({}), "{key_type} {format:?}");
                let one = version_view(
                    &snap,
                    "api",
                    &Selector::Number(2),
                    100,
                    ViewOptions { format, private: true, ..ViewOptions::default() },
                )
                .expect("version");
                assert_eq!(one["material"], json!({}));
            }
        }
    }
}
