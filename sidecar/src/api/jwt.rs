//! `POST /v1/jwt/{keyring}/sign`, `POST /v1/jwt/{keyring}/verify` and
//! `GET /v1/jwks/{keyring}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use lockstep_model::bundle::PoolMode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::ApiError;
use super::keys::snapshot;
use super::router::Call;
use super::{json_response, parse};
use crate::jwt::{self, Expectations};
use crate::view;

type Reply = Result<Response<Full<Bytes>>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    claims: Map<String, Value>,
    #[serde(default)]
    ttl: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    token: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    leeway: Option<u64>,
    #[serde(default)]
    ignore_audience: bool,
}

/// Signs `claims` with the active version (`kid` in the header).
pub fn sign(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: SignRequest = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = view::keyring(&snapshot, name)?;
    // A verify-only pool holds the secret of symmetric keyrings (it needs
    // it to verify) but must never sign with it.
    if snapshot.bundle.mode == PoolMode::Verify {
        return Err(jwt::JwtError::VerifyOnly.into());
    }
    let now = state.ctx.clock.now();
    let skew = state.configs.borrow().vault.max_clock_skew_secs;
    if let Some(until) = state.ctx.store.sign_until(&snapshot, name, skew)
        && now > until
    {
        return Err(jwt::JwtError::BoundPassed(until).into());
    }
    let signed = jwt::sign(keyring, request.claims, request.ttl, state.ctx.clock.now())?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"token": signed.token, "kid": signed.kid, "version": signed.version, "alg": signed.alg}),
    ))
}

/// Verifies a token against the verification set.
pub fn verify(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: VerifyRequest = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = view::keyring(&snapshot, name)?;
    let default_leeway = state.configs.borrow().socket.jwt_leeway_secs;
    let leeway = request.leeway.unwrap_or(default_leeway);
    if leeway > jwt::MAX_LEEWAY_SECS {
        return Err(ApiError::bad_request(
            "leeway_invalid",
            format!("leeway {leeway} is over {} seconds", jwt::MAX_LEEWAY_SECS),
        ));
    }
    if request.ignore_audience && request.audience.is_some() {
        return Err(ApiError::bad_request("audience_invalid", "give audience or ignore_audience, not both"));
    }
    let expect = Expectations {
        leeway,
        audience: request.audience,
        issuer: request.issuer,
        ignore_audience: request.ignore_audience,
    };
    let verified = jwt::verify(keyring, &request.token, &expect, state.ctx.clock.now())?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"valid": true, "claims": verified.claims, "kid": verified.kid, "version": verified.version}),
    ))
}

/// The public keys of the verification set.
pub fn jwks(state: &ApiState, name: &str) -> Reply {
    let snapshot = snapshot(state)?;
    Ok(json_response(StatusCode::OK, &view::jwks(&snapshot, name, state.ctx.clock.now())?))
}
