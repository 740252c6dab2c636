//! Compact JWS tokens (RFC 7515/7519), signed with a keyring's active
//! version and verified against its verification set.
//!
//! Written on aws-lc-rs rather than with `jsonwebtoken`: bundles carry
//! PKCS#8 private keys and SubjectPublicKeyInfo public keys for every type,
//! which aws-lc-rs parses directly, and the keys are parsed once per bundle
//! (see [`crate::crypto`]) instead of at every request.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lockstep_model::UnixSeconds;
use serde_json::{Map, Value, json};

use crate::store::Keyring;

/// Longest token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was not signed or not accepted. Messages never contain key
/// material, and name the claim at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The keyring's type does not sign JWTs (AES).
    #[error("keyring type {0} does not sign JWTs")]
    NotSigning(String),
    /// No version signs now (none committed and active yet).
    #[error("no version of this keyring signs now")]
    NoSigningKey,
    /// This pool holds no private key (verify-only).
    #[error("this pool is verify-only for this keyring")]
    VerifyOnly,
    /// Signing failed in the crypto library.
    #[error("signing failed")]
    SignFailed,
    /// Not three base64url parts of JSON, or too long.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not the keyring's algorithm (named: the token's own is
    /// the caller's input, never quoted back).
    #[error("token alg is not this keyring's algorithm ({0})")]
    WrongAlg(&'static str),
    /// `kid` names no version that verifies now (not quoted: caller input).
    #[error("token kid is not in the verification set")]
    UnknownKid,
    /// `kid` names a version revoked in an emergency: what it signed is
    /// refused everywhere.
    #[error("token kid names a revoked version")]
    Revoked,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is missing.
    #[error("token has no exp claim")]
    MissingExp,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired at {0}")]
    Expired(i64),
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid before {0}")]
    NotYetValid(i64),
    /// `aud` does not contain the expected audience (not quoted: an app's
    /// middleware may pass the message on to whoever sent the token).
    #[error("token audience does not include the expected one")]
    Audience,
    /// The token names an audience and the caller named none: it is
    /// refused unless the caller opts out (`ignore_audience`).
    #[error("token names an audience: give this service's (audience), or set ignore_audience to accept any")]
    AudienceUnnamed,
    /// `iss` is not the expected issuer (not quoted, likewise).
    #[error("token issuer is not the expected one")]
    Issuer,
    /// A lifetime (`ttl`, or `exp` after `iat`) beyond the keyring's
    /// `max_token_ttl`, whose grace period is what makes it verify.
    #[error("field {field:?}: a lifetime of {asked}s is longer than the keyring's max_token_ttl ({max}s)")]
    TooLong {
        /// `ttl` or `exp`, or `iat` when neither was given (the
        /// lifetime then runs from `iat`, and only `iat` can stretch it).
        field: &'static str,
        /// The lifetime asked for.
        asked: i64,
        /// The keyring's maximum.
        max: u64,
    },
    /// A time claim that is not a number.
    #[error("claim {0:?} must be a number of seconds since the epoch")]
    NotNumeric(&'static str),
    /// A lifetime no token could be valid in (already expired, never
    /// valid, before 1970), or `exp` and `ttl` both given.
    #[error("field {field:?}: {why}")]
    Lifetime {
        /// `ttl`, `exp`, `nbf` or `iat`.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The token would be larger than this sidecar verifies.
    #[error("the signed token would be larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Cut off from the coordinator for so long that the rest of the fleet
    /// may no longer verify what this version signs.
    #[error("signing stopped at {0}: no bundle from the coordinator for too long (verification goes on)")]
    BoundPassed(i64),
}

impl JwtError {
    /// Stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSigning(_) => "keyring_not_signing",
            Self::NoSigningKey => "no_signing_key",
            Self::VerifyOnly => "verify_only",
            Self::SignFailed => "sign_failed",
            Self::Malformed(_) => "token_malformed",
            Self::WrongAlg(_) => "token_alg",
            Self::UnknownKid => "token_kid_unknown",
            Self::Revoked => "token_revoked",
            Self::BadSignature => "token_signature",
            Self::MissingExp => "token_exp_missing",
            Self::Expired(_) => "token_expired",
            Self::NotYetValid(_) => "token_not_yet_valid",
            Self::Audience | Self::AudienceUnnamed => "token_audience",
            Self::Issuer => "token_issuer",
            Self::TooLong { .. } => "ttl_too_long",
            Self::NotNumeric(_) => "claim_not_numeric",
            Self::Lifetime { .. } => "lifetime_invalid",
            Self::TooLarge => "token_too_large",
            Self::BoundPassed(_) => "signing_bound_passed",
        }
    }
}

/// A signed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The compact JWS.
    pub token: String,
    /// The signing version's kid.
    pub kid: String,
    /// Its number.
    pub version: u64,
    /// The algorithm.
    pub alg: &'static str,
}

/// Signs `claims` with the version that signs at `now`; sets `iat` when
/// absent, and `exp = iat + ttl` when `ttl` is given. When the bundle
/// carries the keyring's limits, a token always gets an `exp`: `ttl`
/// defaults to `max_token_ttl`, and a longer one is refused.
pub fn sign(
    keyring: &Keyring,
    mut claims: Map<String, Value>,
    ttl: Option<u64>,
    now: UnixSeconds,
) -> Result<Signed, JwtError> {
    let key_type = keyring.data.key_type;
    let alg = key_type.jwt_alg().ok_or_else(|| JwtError::NotSigning(key_type.to_string()))?;
    let number = keyring.state_at(now).signing.ok_or(JwtError::NoSigningKey)?;
    let (meta, key) = keyring
        .data
        .versions
        .iter()
        .find(|v| v.meta.number == number)
        .and_then(|v| Some((&v.meta, keyring.keys.get(&number)?)))
        .ok_or(JwtError::NoSigningKey)?;
    if !key.can_sign() {
        return Err(JwtError::VerifyOnly);
    }
    lifetime(keyring, &mut claims, ttl, now)?;
    let header = json!({"alg": alg, "typ": "JWT", "kid": meta.kid});
    let input = format!("{}.{}", encode_json(&header), encode_json(&Value::Object(claims)));
    // Room for the largest signature (RSA-2048: 342 characters).
    if input.len() + 400 > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let signature = key.sign(input.as_bytes()).map_err(|_| JwtError::SignFailed)?;
    Ok(Signed {
        token: format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)),
        kid: meta.kid.clone(),
        version: number,
        alg,
    })
}

/// Sets `iat`, and `exp` from `ttl` (or `max_token_ttl`), and checks the
/// lifetime against the keyring's limit.
fn lifetime(
    keyring: &Keyring,
    claims: &mut Map<String, Value>,
    ttl: Option<u64>,
    now: UnixSeconds,
) -> Result<(), JwtError> {
    let number = |claims: &Map<String, Value>, name: &'static str| match claims.get(name) {
        None => Ok(None),
        // NumericDate may have a fraction (RFC 7519, section 2).
        Some(value) => value.as_f64().map(|f| Some(f.floor() as i64)).ok_or(JwtError::NotNumeric(name)),
    };
    let invalid = |field, why| Err(JwtError::Lifetime { field, why });
    let iat = number(claims, "iat")?.unwrap_or(now);
    if iat < 0 {
        return invalid("iat", "a time before 1970");
    }
    claims.insert("iat".into(), json!(iat));
    let nbf = number(claims, "nbf")?;
    if ttl == Some(0) {
        return invalid("ttl", "must be at least one second");
    }
    if ttl.is_some() && claims.contains_key("exp") {
        return invalid("exp", "give exp or ttl, not both");
    }
    let max = keyring.data.limits.map(|l| l.max_token_ttl);
    let too_long = |field, asked: i64| match max {
        Some(max) if asked > i64::try_from(max).unwrap_or(i64::MAX) => Err(JwtError::TooLong { field, asked, max }),
        _ => Ok(()),
    };
    let (field, exp) = match (ttl, number(claims, "exp")?) {
        (Some(ttl), _) => {
            let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
            too_long("ttl", ttl)?;
            ("ttl", iat.saturating_add(ttl))
        }
        (None, Some(exp)) => ("exp", exp),
        (None, None) => match max {
            Some(max) => ("iat", iat.saturating_add(i64::try_from(max).unwrap_or(i64::MAX))),
            None => return Ok(()),
        },
    };
    // Measured from now, whatever `iat` says: an `iat` in the future must
    // not stretch a token past the keyring's limit.
    too_long(field, exp.saturating_sub(now))?;
    if exp <= now {
        // `field` is what set `exp`: the claim, or `iat` when a lifetime
        // ran from an `iat` so far back that it has already ended.
        return invalid(if field == "exp" { "exp" } else { "iat" }, "the token would already be expired");
    }
    if nbf.is_some_and(|nbf| nbf >= exp) {
        return invalid("nbf", "not before exp: the token would never be valid");
    }
    claims.insert("exp".into(), json!(exp));
    Ok(())
}

/// What a verification checks besides the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Leeway on `exp` and `nbf`, seconds.
    pub leeway: u64,
    /// Required audience, if any.
    pub audience: Option<String>,
    /// Whether a token's `aud` is accepted unchecked when no audience is
    /// given; otherwise a token that names an audience is refused then
    /// (RFC 7519, section 4.1.3: a verifier not among the token's audiences
    /// must reject it).
    pub ignore_audience: bool,
    /// Required issuer, if any.
    pub issuer: Option<String>,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Its claims.
    pub claims: Map<String, Value>,
    /// The kid that verified it.
    pub kid: String,
    /// That version's number.
    pub version: u64,
}

/// Verifies `token` against the keyring's verification set at `now`.
pub fn verify(keyring: &Keyring, token: &str, expect: &Expectations, now: UnixSeconds) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header = decode_json(header).ok_or(JwtError::Malformed("header is not base64url JSON"))?;
    // No extension is understood here, so none that must be may appear.
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("header has crit extensions, none of which are supported"));
    }
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let expected = keyring.data.key_type.jwt_alg();
    if Some(alg) != expected {
        return Err(JwtError::WrongAlg(expected.unwrap_or("none")));
    }
    let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
    let state = keyring.state_at(now);
    let (meta, key) = keyring
        .data
        .versions
        .iter()
        .filter(|v| v.meta.kid == kid && state.verifying.contains(&v.meta.number))
        .find_map(|v| Some((&v.meta, keyring.keys.get(&v.meta.number)?)))
        .ok_or_else(|| {
            let revoked = keyring.data.revoked.as_ref().is_some_and(|kids| kids.iter().any(|k| k == kid));
            if revoked { JwtError::Revoked } else { JwtError::UnknownKid }
        })?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let input_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
    if !key.verify(&token.as_bytes()[..input_len], &sig) {
        return Err(JwtError::BadSignature);
    }
    let claims = decode_json(body).ok_or(JwtError::Malformed("claims are not base64url JSON"))?;
    check_claims(&claims, expect, now)?;
    Ok(Verified { claims, kid: meta.kid.clone(), version: meta.number })
}

/// The most leeway on `exp` and `nbf` a caller or the configuration may set.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// A NumericDate: seconds, possibly with a fraction (rounded down, which
/// errs towards expiry for `exp` by less than a second).
fn numeric_date(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let f = value.as_f64().filter(|f| f.is_finite())?.floor();
        // In range for i64 (2^63 is exactly representable as f64).
        (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f).then_some(f as i64)
    })
}

fn check_claims(claims: &Map<String, Value>, expect: &Expectations, now: UnixSeconds) -> Result<(), JwtError> {
    let leeway = i64::try_from(expect.leeway).unwrap_or(i64::MAX);
    let exp = match claims.get("exp") {
        None => return Err(JwtError::MissingExp),
        Some(value) => numeric_date(value).ok_or(JwtError::Malformed("exp is not a number of seconds"))?,
    };
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired(exp));
    }
    let nbf = claims.get("nbf").map(|v| numeric_date(v).ok_or(JwtError::Malformed("nbf is not a number of seconds")));
    if let Some(nbf) = nbf.transpose()?
        && now.saturating_add(leeway) < nbf
    {
        return Err(JwtError::NotYetValid(nbf));
    }
    match (&expect.audience, claims.get("aud")) {
        (Some(audience), aud) => {
            let ok = match aud {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(JwtError::Audience);
            }
        }
        (None, Some(_)) if !expect.ignore_audience => return Err(JwtError::AudienceUnnamed),
        (None, _) => {}
    }
    if let Some(issuer) = &expect.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(JwtError::Issuer);
    }
    Ok(())
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;

    use super::*;
    use crate::store::Snapshot;
    use crate::store::testdata::{bundle, handover, version};

    const TYPES: [KeyType; 4] = [KeyType::HmacSha256, KeyType::Ed25519, KeyType::EcdsaP256, KeyType::Rsa2048];

    fn snapshot(key_type: KeyType) -> Snapshot {
        handover(key_type)
    }

    fn claims(pairs: Value) -> Map<String, Value> {
        pairs.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn tokens_verify_across_a_rotation_until_the_old_version_expires() {
        for key_type in TYPES {
            let snap = snapshot(key_type);
            let keyring = &snap.keyrings["api"];
            let old = sign(keyring, claims(json!({"sub": "a"})), Some(1000), 100).expect("sign");
            assert_eq!(old.version, 1);
            assert_eq!(old.alg, key_type.jwt_alg().unwrap_or_default());
            let new = sign(keyring, claims(json!({"sub": "b"})), Some(1000), 250).expect("sign");
            assert_eq!(new.version, 2);
            let expect = Expectations::default();
            assert_eq!(verify(keyring, &old.token, &expect, 250).expect("old verifies in grace").version, 1);
            assert_eq!(verify(keyring, &new.token, &expect, 250).expect("new").claims["sub"], "b");
            assert_eq!(verify(keyring, &old.token, &expect, 300), Err(JwtError::UnknownKid));
        }
    }

    #[test]
    fn a_token_of_a_revoked_version_is_refused_as_revoked() {
        use crate::store::testdata::{bundle, version};
        let ed = KeyType::Ed25519;
        let old = sign(&snapshot(ed).keyrings["api"], claims(json!({"sub": "a"})), Some(100), 100).expect("sign");
        // Version 1 revoked: gone from the bundle, its kid listed as revoked.
        let mut b = bundle("web", vec![("api", ed, 5, vec![version(ed, 2, Some(100), None)])]);
        if let Some(ring) = b.keyrings.get_mut("api") {
            ring.revoked = Some(vec![old.kid.clone()]);
        }
        let snap = crate::store::Snapshot::build("web", b, None, 150).expect("good");
        let expect = Expectations::default();
        assert_eq!(verify(&snap.keyrings["api"], &old.token, &expect, 150), Err(JwtError::Revoked));
        assert_eq!(JwtError::Revoked.code(), "token_revoked");
        // A kid nobody issued is still unknown, not revoked.
        let forged = old.token.replacen(
            &old.token[..old.token.find('.').unwrap_or(0)],
            &encode_json(&json!({"alg": "EdDSA", "typ": "JWT", "kid": "api-v9-00000000"})),
            1,
        );
        assert_eq!(verify(&snap.keyrings["api"], &forged, &expect, 150), Err(JwtError::UnknownKid));
    }

    #[test]
    fn a_token_that_names_an_audience_needs_the_caller_to_name_one_or_opt_out() {
        let snap = snapshot(KeyType::Ed25519);
        let keyring = &snap.keyrings["api"];
        let token = sign(keyring, claims(json!({"sub": "a", "aud": ["svc", "other"]})), Some(100), 100).expect("sign");
        let check = |audience: Option<&str>, ignore_audience| {
            let expect =
                Expectations { audience: audience.map(Into::into), ignore_audience, ..Expectations::default() };
            verify(keyring, &token.token, &expect, 100).map(|v| v.version)
        };
        assert_eq!(check(None, false), Err(JwtError::AudienceUnnamed));
        assert_eq!(JwtError::AudienceUnnamed.code(), "token_audience");
        assert_eq!(check(Some("svc"), false), Ok(1));
        assert_eq!(check(Some("nobody"), false), Err(JwtError::Audience));
        assert_eq!(check(None, true), Ok(1));
        // A token without an audience needs nothing named.
        let plain = sign(keyring, claims(json!({"sub": "a"})), Some(100), 100).expect("sign");
        assert!(verify(keyring, &plain.token, &Expectations::default(), 100).is_ok());
    }

    #[test]
    fn claims_are_checked_with_leeway() {
        let snap = snapshot(KeyType::Ed25519);
        let keyring = &snap.keyrings["api"];
        let token = |c: Value| sign(keyring, claims(c), None, 100).expect("sign").token;
        let expect = Expectations {
            leeway: 10,
            audience: Some("svc".into()),
            issuer: Some("me".into()),
            ignore_audience: false,
        };
        let good = token(json!({"exp": 150, "nbf": 105, "aud": ["x", "svc"], "iss": "me"}));
        assert!(verify(keyring, &good, &expect, 100).is_ok());
        assert_eq!(verify(keyring, &good, &expect, 161), Err(JwtError::Expired(150)));
        assert_eq!(verify(keyring, &good, &expect, 94), Err(JwtError::NotYetValid(105)));
        let aud = token(json!({"exp": 150, "aud": "other", "iss": "me"}));
        assert_eq!(verify(keyring, &aud, &expect, 100), Err(JwtError::Audience));
        let no_exp = token(json!({"aud": "svc", "iss": "me"}));
        assert_eq!(verify(keyring, &no_exp, &expect, 100), Err(JwtError::MissingExp));
    }

    #[test]
    fn numeric_dates_may_have_fractions_and_must_be_numbers() {
        let snap = snapshot(KeyType::Ed25519);
        let keyring = &snap.keyrings["api"];
        let expect = Expectations::default();
        let fractional = sign(keyring, claims(json!({"exp": 200.7, "nbf": 99.5})), None, 100).expect("sign").token;
        assert!(verify(keyring, &fractional, &expect, 100).is_ok());
        assert_eq!(verify(keyring, &fractional, &expect, 201), Err(JwtError::Expired(200)));
        // Signing refuses time claims that are not numbers, which
        // verification would refuse too.
        for (bad, claim) in [(json!({"exp": "500"}), "exp"), (json!({"exp": 500, "nbf": "soon"}), "nbf")] {
            assert_eq!(sign(keyring, claims(bad.clone()), None, 100), Err(JwtError::NotNumeric(claim)), "{bad}");
        }
    }

    #[test]
    fn tampering_alg_confusion_and_garbage_are_refused() {
        let snap = snapshot(KeyType::Ed25519);
        let keyring = &snap.keyrings["api"];
        let token = sign(keyring, claims(json!({"exp": 500, "admin": false})), None, 100).expect("sign").token;
        let parts: Vec<&str> = token.split('.').collect();
        let forged_body = encode_json(&json!({"exp": 500, "admin": true}));
        let forged = format!("{}.{forged_body}.{}", parts[0], parts[2]);
        let expect = Expectations::default();
        assert_eq!(verify(keyring, &forged, &expect, 100), Err(JwtError::BadSignature));
        let none = format!("{}.{}.", encode_json(&json!({"alg": "none", "kid": "kid-1-ed25519"})), parts[1]);
        let refused = verify(keyring, &none, &expect, 100);
        assert_eq!(refused, Err(JwtError::WrongAlg("EdDSA")));
        // The keyring's algorithm is named; the token's own never is.
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("EdDSA") && !message.contains("none"), "{message}");
        assert!(matches!(verify(keyring, "a.b", &expect, 100), Err(JwtError::Malformed(_))));
        let crit = format!(
            "{}.{}.{}",
            encode_json(&json!({"alg": "EdDSA", "kid": "kid-1-ed25519", "crit": ["exp"]})),
            parts[1],
            parts[2]
        );
        assert!(matches!(verify(keyring, &crit, &expect, 100), Err(JwtError::Malformed(m)) if m.contains("crit")));
        let aes = Snapshot::build(
            "web",
            bundle("web", vec![("enc", KeyType::Aes256Gcm, 1, vec![version(KeyType::Aes256Gcm, 1, Some(0), None)])]),
            None,
            0,
        )
        .expect("aes");
        assert!(matches!(sign(&aes.keyrings["enc"], Map::new(), None, 1), Err(JwtError::NotSigning(_))));
    }
}
