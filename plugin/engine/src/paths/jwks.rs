//! `jwks/<name>`: the public keys of a keyring's verification set, for
//! verifiers outside the fleet, readable without a token when the keyring
//! opts in (`public_jwks=true`), as the server's identity store publishes
//! `.well-known/keys`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lockstep_model::schedule::Keyring;
use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::keys::name;
use crate::coordinator;
use crate::state::MountState;

/// Longest time a verifier may cache the keys, seconds.
const MAX_AGE_CAP: i64 = 3_600;

/// The `jwks/<name>` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("jwks/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the keyring."))
        .operation(
            Operation::Read,
            "The public keys of the verification set as a JWK Set, including the published next version.",
            stateful(&state, |state, req, data| async move { read(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    // Anyone may ask: one answer for a keyring that is missing and one that
    // is not public, and no storage read once the keyring is cached.
    let hidden = || LogicalError::NotFound(format!("no public JWKS for keyring {name:?}"));
    let cached = coordinator::cached_ring(state, req.storage.as_ref(), name).await?.ok_or_else(hidden)?;
    let ring = &cached.ring;
    if !ring.public_jwks {
        return Err(hidden());
    }
    let t = state.now();
    let alg = ring.key_type.jwt_alg().unwrap_or_default();
    let mut keys = Vec::new();
    for version in ring.versions.iter().filter(|v| v.verifies_at(t) && !v.destroyed) {
        let spki = cached.material.get(&version.number).and_then(|m| m.public_key.as_deref());
        let jwk = spki
            .and_then(|p| STANDARD.decode(p).ok())
            .and_then(|der| lockstep_model::jwk::public_jwk(ring.key_type, &der));
        let Some(Value::Object(mut jwk)) = jwk else {
            return Err(LogicalError::Internal(format!("public key of {name} version {} is unusable", version.number)));
        };
        jwk.insert("kid".into(), json!(version.kid));
        jwk.insert("alg".into(), json!(alg));
        jwk.insert("use".into(), json!("sig"));
        keys.push(Value::Object(jwk));
    }
    let body = serde_json::to_vec(&json!({"keys": keys}))
        .map_err(|e| LogicalError::Internal(format!("encoding a JWKS: {:?} error", e.classify())))?;
    // A raw answer, so that the server sends the JWK Set itself with its
    // cache lifetime.
    let mut data = Map::new();
    data.insert("http_content_type".into(), json!("application/json"));
    data.insert("http_raw_body".into(), json!(STANDARD.encode(body)));
    data.insert("http_status_code".into(), json!(200));
    data.insert("http_raw_cache_control".into(), json!(format!("public, max-age={}", max_age(ring, t))));
    Ok(Some(Response::with_data(data)))
}

/// Seconds until the set may change without a revocation: the next
/// publication or the next expiry, whichever is sooner, at most an hour,
/// and never longer than `prepublish`: a manual rotation publishes at any
/// moment and signs `prepublish` later, so a copy cached before it has
/// expired by then.
fn max_age(ring: &Keyring, t: i64) -> i64 {
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    let base = ring.pending().map(|p| p.planned_activation).or_else(|| ring.current().and_then(|c| c.not_before));
    let publication = base.map(|b| b.saturating_add(secs(ring.policy.rotation_period)) - secs(ring.prepublish(t)));
    let expiry = ring.versions.iter().filter_map(|v| v.expires_at).filter(|e| *e > t).min();
    let next = [publication, expiry].into_iter().flatten().min().unwrap_or(t + MAX_AGE_CAP);
    let notice = i64::try_from(ring.prepublish(t)).unwrap_or(MAX_AGE_CAP);
    next.saturating_sub(t).clamp(0, MAX_AGE_CAP.min(notice))
}

const HELP_SYNOPSIS: &str = "The public keys of a keyring as a JWK Set, readable without a token when enabled.";
const HELP_DESCRIPTION: &str = "\
For verifiers outside the fleet: the public keys of every version that \
verifies now, including the version published ahead of its activation, as a \
JWK Set (kid, alg, use). Only for asymmetric keyrings created or updated with \
public_jwks=true; any other name answers 404. The answer may be cached until \
the keyring's next publication or expiry (Cache-Control max-age), at most an \
hour and at most the keyring's prepublish time, so that a copy cached before \
a manual rotation has expired when the new version starts signing; a \
revocation takes effect for cached copies when they expire.";

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;
    use lockstep_model::policy::Policy;

    use super::*;

    #[test]
    fn a_cached_set_lives_until_the_next_publication_or_expiry_and_an_hour_at_most() {
        let policy = Policy {
            rotation_period: 7_200,
            grace_period: 1_800,
            prepublish: 3_600,
            max_token_ttl: 600,
            commit_timeout: 600,
            retention: 86_400,
        };
        let mut ring = Keyring::new("jwt".into(), KeyType::Ed25519, policy, false);
        ring.publish("jwt-1".into(), 0, 0);
        // The next version is published at 7 200 - 3 600.
        assert_eq!(max_age(&ring, 0), MAX_AGE_CAP, "an hour at most");
        assert_eq!(max_age(&ring, 3_000), 600, "the next publication");
        assert_eq!(max_age(&ring, 3_600), 0, "due now");
        // Version 2 published for 7 200, committed: version 1 expires at
        // 7 200 + 1 800, the next publication is at 7 200 + 7 200 - 3 600.
        ring.publish("jwt-2".into(), 3_600, 7_200);
        ring.commit(3_600, 30);
        assert_eq!(max_age(&ring, 8_500), 500, "version 1's expiry comes first");
        assert_eq!(max_age(&ring, 9_500), 1_300, "then the next publication");
    }

    #[test]
    fn a_cached_set_never_outlives_the_notice_a_manual_rotation_gives() {
        let policy = Policy { rotation_period: 7_200, grace_period: 1_800, prepublish: 300, ..Policy::default() };
        let mut ring = Keyring::new("jwt".into(), KeyType::Ed25519, policy, false);
        ring.publish("jwt-1".into(), 0, 0);
        // The scheduled publication is at 6 900, but a rotation asked for
        // at any moment signs 300 s after it publishes.
        assert_eq!(max_age(&ring, 0), 300);
        assert_eq!(max_age(&ring, 6_700), 200, "the scheduled publication comes first");
    }
}
