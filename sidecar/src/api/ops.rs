//! `POST /v1/encrypt/{k}`, `/v1/decrypt/{k}`, `/v1/rewrap/{k}` (single or
//! `batch`), `/v1/mac/{k}`, `/v1/mac/{k}/verify`, `/v1/sign/{k}` and
//! `/v1/sign/{k}/verify`, `/v1/webhook/{k}/sign` and
//! `/v1/webhook/{k}/verify`: the keys stay in the sidecar ([`crate::ops`],
//! [`crate::webhook`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use lockstep_model::bundle::PoolMode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::error::ApiError;
use super::keys::snapshot;
use super::router::Call;
use super::{json_response, parse};
use crate::ops::{self, OpError};
use crate::store::{Keyring, Snapshot};
use crate::webhook::{self, WebhookError};

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Most items in one batch.
pub const MAX_BATCH: usize = 256;

impl From<OpError> for ApiError {
    fn from(error: OpError) -> Self {
        let status = match &error {
            OpError::Mismatch(_) => StatusCode::UNAUTHORIZED,
            OpError::NoSigningKey => StatusCode::CONFLICT,
            OpError::Exhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        let status = match &error {
            WebhookError::NoMatch | WebhookError::Timestamp(_) => StatusCode::UNAUTHORIZED,
            WebhookError::NoSigningKey => StatusCode::CONFLICT,
            WebhookError::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

/// Default tolerance on `webhook-timestamp`, seconds (the format's usual
/// five minutes), and the most a caller may ask for.
const WEBHOOK_TOLERANCE: u64 = 300;
const MAX_WEBHOOK_TOLERANCE: u64 = 3_600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSign {
    payload: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookVerify {
    payload: String,
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    tolerance: Option<u64>,
}

/// `POST /v1/webhook/{k}/sign`: the three headers for an outgoing webhook.
pub fn webhook_sign(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: WebhookSign = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = producing(state, &snapshot, name)?;
    let payload = ops::base64("payload", &request.payload)?;
    let now = state.ctx.clock.now();
    let id = request.id.unwrap_or_else(|| format!("msg_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
    let timestamp = request.timestamp.unwrap_or(now);
    if timestamp < 0 {
        return Err(ApiError::bad_request("timestamp_invalid", "field \"timestamp\": a time before 1970"));
    }
    let headers = webhook::sign(keyring, &id, timestamp, &payload, now)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"webhook-id": headers.id, "webhook-timestamp": headers.timestamp.to_string(),
                "webhook-signature": headers.signature}),
    ))
}

/// `POST /v1/webhook/{k}/verify`: checks an incoming webhook's headers.
pub fn webhook_verify(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: WebhookVerify = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = crate::view::keyring(&snapshot, name)?;
    let payload = ops::base64("payload", &request.payload)?;
    let tolerance = request.tolerance.unwrap_or(WEBHOOK_TOLERANCE);
    if tolerance > MAX_WEBHOOK_TOLERANCE {
        return Err(ApiError::bad_request("tolerance_invalid", format!("tolerance is over {MAX_WEBHOOK_TOLERANCE}s")));
    }
    // Header names are case-insensitive.
    let header =
        |name: &'static str| request.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let id = header("webhook-id").ok_or(WebhookError::Header("webhook-id"))?;
    let timestamp = header("webhook-timestamp")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .ok_or(WebhookError::Header("webhook-timestamp"))?;
    let signature = header("webhook-signature").ok_or(WebhookError::Header("webhook-signature"))?;
    let headers = webhook::Headers { id, timestamp, signature };
    let version = webhook::verify(keyring, &headers, &payload, tolerance, state.ctx.clock.now())?;
    let kid = keyring.data.versions.iter().find(|v| v.meta.number == version).map(|v| v.meta.kid.clone());
    Ok(json_response(StatusCode::OK, &json!({"valid": true, "version": version, "kid": kid})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    plaintext: Option<String>,
    #[serde(default)]
    ciphertext: Option<String>,
    #[serde(default)]
    associated_data: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bytes64 {
    data: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// What a call produces: an encryption, decryption or rewrap.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Aead {
    Encrypt,
    Decrypt,
    Rewrap,
}

/// The keyring, for an operation that makes something new with it: never in
/// a verify-only pool, never past the signing bound.
fn producing<'a>(state: &ApiState, snapshot: &'a Snapshot, name: &str) -> Result<&'a Keyring, ApiError> {
    let keyring = crate::view::keyring(snapshot, name)?;
    if snapshot.bundle.mode == PoolMode::Verify {
        return Err(crate::jwt::JwtError::VerifyOnly.into());
    }
    let skew = state.configs.borrow().vault.max_clock_skew_secs;
    if let Some(until) = state.ctx.store.sign_until(snapshot, name, skew)
        && state.ctx.clock.now() > until
    {
        return Err(crate::jwt::JwtError::BoundPassed(until).into());
    }
    Ok(keyring)
}

fn aead(state: &ApiState, name: &str, call: &Call, op: Aead) -> Reply {
    let snapshot = snapshot(state)?;
    let keyring = match op {
        Aead::Decrypt => crate::view::keyring(&snapshot, name)?,
        Aead::Encrypt | Aead::Rewrap => producing(state, &snapshot, name)?,
    };
    // Refused as a whole, before any item is read.
    if keyring.data.key_type != lockstep_model::KeyType::Aes256Gcm {
        return Err(OpError::WrongType(keyring.data.key_type.to_string(), "encrypt or decrypt").into());
    }
    let now = state.ctx.clock.now();
    let one = |item: Item| -> Result<Value, OpError> {
        let aad = item.associated_data.as_deref().map(|a| ops::base64("associated_data", a)).transpose()?;
        let aad = aad.as_deref().map_or(&[][..], |a| a.as_slice());
        let field = |v: Option<String>, name: &'static str| v.ok_or(OpError::Missing(name));
        match op {
            Aead::Encrypt => {
                let plain = ops::base64("plaintext", &field(item.plaintext, "plaintext")?)?;
                let done = ops::encrypt(keyring, &state.ctx.ops, &plain, aad, now)?;
                Ok(json!({"ciphertext": done.value, "version": done.version, "kid": done.kid}))
            }
            Aead::Decrypt => {
                let done = ops::decrypt(keyring, &field(item.ciphertext, "ciphertext")?, aad, now)?;
                let plaintext = zeroize::Zeroizing::new(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    done.value.as_slice(),
                ));
                Ok(json!({"plaintext": plaintext.as_str(), "version": done.version, "kid": done.kid}))
            }
            Aead::Rewrap => {
                let opened = ops::decrypt(keyring, &field(item.ciphertext, "ciphertext")?, aad, now)?;
                let done = ops::encrypt(keyring, &state.ctx.ops, &opened.value, aad, now)?;
                Ok(json!({"ciphertext": done.value, "version": done.version, "kid": done.kid}))
            }
        }
    };
    let body = call.body.clone();
    if let Some(batch) = body.get("batch") {
        if body.as_object().is_some_and(|o| o.len() > 1) {
            return Err(ApiError::bad_request("batch_invalid", "a batch goes alone: its items carry the fields"));
        }
        let items = match batch {
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_BATCH => items,
            _ => {
                return Err(ApiError::bad_request(
                    "batch_invalid",
                    format!("batch: an array of 1 to {MAX_BATCH} items"),
                ));
            }
        };
        let items: Vec<Item> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                parse(item.clone()).map_err(|e| {
                    let detail = e.message.strip_prefix("request body: ").unwrap_or(&e.message).to_string();
                    ApiError::bad_request("batch_invalid", format!("batch item {i}: {detail}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let route = match op {
            Aead::Encrypt => "encrypt_item",
            Aead::Decrypt => "decrypt_item",
            Aead::Rewrap => "rewrap_item",
        };
        let results: Vec<Value> = items
            .into_iter()
            .map(|item| {
                let done = one(item);
                state.ctx.metrics.result(route, done.as_ref().map_or_else(OpError::code, |_| "ok"));
                done.unwrap_or_else(|e| json!({"error": {"code": e.code(), "message": e.to_string()}}))
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &json!({"batch": results})));
    }
    let value = one(parse(body)?)?;
    Ok(json_response(StatusCode::OK, &value))
}

/// `POST /v1/encrypt/{k}`.
pub fn encrypt(state: &ApiState, name: &str, call: &Call) -> Reply {
    aead(state, name, call, Aead::Encrypt)
}

/// `POST /v1/decrypt/{k}`.
pub fn decrypt(state: &ApiState, name: &str, call: &Call) -> Reply {
    aead(state, name, call, Aead::Decrypt)
}

/// `POST /v1/rewrap/{k}`: decrypts and encrypts again with the signing
/// version.
pub fn rewrap(state: &ApiState, name: &str, call: &Call) -> Reply {
    aead(state, name, call, Aead::Rewrap)
}

/// `POST /v1/mac/{k}`.
pub fn mac(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: Bytes64 = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = producing(state, &snapshot, name)?;
    let data = ops::base64("data", &request.data)?;
    let done = ops::mac(keyring, &data, state.ctx.clock.now())?;
    Ok(json_response(StatusCode::OK, &json!({"mac": done.value, "version": done.version, "kid": done.kid})))
}

/// `POST /v1/mac/{k}/verify`.
pub fn mac_verify(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: Bytes64 = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = crate::view::keyring(&snapshot, name)?;
    let data = ops::base64("data", &request.data)?;
    let mac = request.mac.ok_or(OpError::Missing("mac"))?;
    let done = ops::mac_verify(keyring, &data, &mac, state.ctx.clock.now())?;
    Ok(json_response(StatusCode::OK, &json!({"valid": true, "version": done.version, "kid": done.kid})))
}

/// `POST /v1/sign/{k}`: a raw signature over bytes.
pub fn sign(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: Bytes64 = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = producing(state, &snapshot, name)?;
    let data = ops::base64("data", &request.data)?;
    let done = ops::sign(keyring, &data, state.ctx.clock.now())?;
    let signature = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &done.value);
    let alg = keyring.data.key_type.jwt_alg();
    Ok(json_response(
        StatusCode::OK,
        &json!({"signature": signature, "version": done.version, "kid": done.kid, "alg": alg}),
    ))
}

/// `POST /v1/sign/{k}/verify`.
pub fn verify(state: &ApiState, name: &str, call: &Call) -> Reply {
    let request: Bytes64 = parse(call.body.clone())?;
    let snapshot = snapshot(state)?;
    let keyring = crate::view::keyring(&snapshot, name)?;
    let data = ops::base64("data", &request.data)?;
    let signature = ops::base64("signature", request.signature.as_deref().ok_or(OpError::Missing("signature"))?)?;
    let done = ops::verify(keyring, &data, &signature, request.kid.as_deref(), state.ctx.clock.now())?;
    Ok(json_response(StatusCode::OK, &json!({"valid": true, "version": done.version, "kid": done.kid})))
}
