//! `GET /v1/keyrings`, `/v1/keys/{keyring}`, `/v1/keys/{keyring}/versions/{n}`,
//! `/v1/keys/{keyring}/kids/{kid}` and the long-poll
//! `/v1/keys/{keyring}/watch?after={state}&timeout={seconds}`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use lockstep_model::bundle::PoolMode;
use serde_json::json;
use tokio::time::Instant;

use super::ApiState;
use super::error::ApiError;
use super::json_response;
use super::router::Call;
use crate::config::Format;
use crate::store::Snapshot;
use crate::view::{self, Selector, ViewOptions};

/// Default watch timeout when the caller names none.
const DEFAULT_WATCH_SECS: u64 = 30;

type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// The current snapshot, or 503.
pub fn snapshot(state: &ApiState) -> Result<Arc<Snapshot>, ApiError> {
    state.ctx.store.snapshot().ok_or_else(ApiError::not_ready)
}

/// `format` and `private` from the query.
pub fn options(call: &Call) -> Result<ViewOptions, ApiError> {
    let format = match call.query.get("format") {
        None => Format::Base64,
        Some(text) => Format::parse(text).ok_or_else(|| {
            ApiError::bad_request("format_invalid", format!("format {text:?} is not base64, jwk or pem"))
        })?,
    };
    let private = match call.query.get("private").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request("private_invalid", format!("private {other:?} is not true or false")));
        }
    };
    Ok(ViewOptions { format, private, sign_until: None })
}

/// `options` with the keyring's signing bound, when this pool signs.
fn bounded(state: &ApiState, snapshot: &Snapshot, name: &str, mut options: ViewOptions) -> ViewOptions {
    if snapshot.bundle.mode == PoolMode::Sign {
        let skew = state.configs.borrow().vault.max_clock_skew_secs;
        options.sign_until = state.ctx.store.sign_until(snapshot, name, skew);
    }
    options
}

/// The keyrings of the pool.
pub fn list(state: &ApiState) -> Reply {
    let snapshot = snapshot(state)?;
    let names: Vec<&String> = snapshot.keyrings.keys().collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"pool": snapshot.bundle.pool, "revision": snapshot.bundle.revision, "keyrings": names}),
    ))
}

/// Signing version and verification set.
pub fn keys(state: &ApiState, name: &str, call: &Call) -> Reply {
    let snapshot = snapshot(state)?;
    let options = bounded(state, &snapshot, name, options(call)?);
    let view = view::keyring_view(&snapshot, name, state.ctx.clock.now(), options)?;
    Ok(json_response(StatusCode::OK, &view))
}

/// One version by number.
pub fn version_by_number(state: &ApiState, name: &str, number: &str, call: &Call) -> Reply {
    let number = number
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("version_invalid", format!("version {number:?} is not a number")))?;
    version(state, name, &Selector::Number(number), call)
}

/// One version by kid.
pub fn version_by_kid(state: &ApiState, name: &str, kid: &str, call: &Call) -> Reply {
    version(state, name, &Selector::Kid(kid.into()), call)
}

fn version(state: &ApiState, name: &str, selector: &Selector, call: &Call) -> Reply {
    let snapshot = snapshot(state)?;
    let options = bounded(state, &snapshot, name, options(call)?);
    let view = view::version_view(&snapshot, name, selector, state.ctx.clock.now(), options)?;
    Ok(json_response(StatusCode::OK, &view))
}

/// Returns the keyring's view as soon as its state token differs from
/// `after` (a new bundle, an activation or expiry instant passing, or the
/// signing bound passing), or after `timeout` seconds with
/// `"changed": false`.
pub async fn watch(state: &ApiState, name: &str, call: &Call) -> Reply {
    let options = options(call)?;
    let max = state.configs.borrow().socket.max_watch_secs;
    let timeout =
        match call.query.get("timeout") {
            None => DEFAULT_WATCH_SECS.min(max),
            Some(text) => text.parse::<u64>().ok().filter(|t| *t <= max).ok_or_else(|| {
                ApiError::bad_request("timeout_invalid", format!("timeout must be 0 to {max} seconds"))
            })?,
        };
    let after = call.query.get("after").cloned();
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let _in_flight = state.ctx.metrics.watch_started();
    let mut changes = state.ctx.store.subscribe();
    let mut shutdown = state.shutdown.clone();
    loop {
        changes.borrow_and_update();
        let snapshot = snapshot(state)?;
        let now = state.ctx.clock.now();
        let keyring = view::keyring(&snapshot, name)?;
        let options = bounded(state, &snapshot, name, options);
        let token = view::state_token(keyring, now, options);
        let timed_out = Instant::now() >= deadline;
        if after.as_deref() != Some(token.as_str()) || timed_out {
            let mut body = view::keyring_view(&snapshot, name, now, options)?;
            body["changed"] = json!(after.as_deref() != Some(token.as_str()));
            return Ok(json_response(StatusCode::OK, &body));
        }
        let bound = options.sign_until.filter(|until| now <= *until).map(|until| until + 1);
        let wake = [keyring.next_change_after(now), bound]
            .into_iter()
            .flatten()
            .min()
            .map(|at| Instant::now() + Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
            .map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep_until(wake) => {}
            () = crate::shutdown_signalled(&mut shutdown) => {
                let mut body = view::keyring_view(&snapshot, name, now, options)?;
                body["changed"] = json!(false);
                return Ok(json_response(StatusCode::OK, &body));
            }
        }
    }
}
