//! `GET /healthz`, `/readyz` and `/metrics`; no guard header, no secrets.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::ApiState;
use super::json_response;

/// Alive as long as it answers.
pub fn healthz() -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready once a valid bundle is held and the last successful sync is no
/// older than `cache.max_age_secs`.
pub fn readyz(state: &ApiState) -> Response<Full<Bytes>> {
    let now = state.ctx.clock.now();
    let max_age = state.configs.borrow().cache.max_age_secs;
    let snapshot = state.ctx.store.snapshot();
    let skew = state.configs.borrow().vault.max_clock_skew_secs;
    let stopped = snapshot.as_ref().map(|s| state.ctx.store.signing_stopped(s, now, skew)).unwrap_or_default();
    let age = state.ctx.store.last_sync().map(|t| now - t);
    let (ready, reason) = match age {
        _ if snapshot.is_none() => (false, "no valid bundle yet"),
        // Cut off for so long that it no longer signs: send traffic elsewhere.
        _ if !stopped.is_empty() => (false, "signing stopped: no bundle from the coordinator for too long"),
        Some(age) if age <= i64::try_from(max_age).unwrap_or(i64::MAX) => (true, "ok"),
        _ => (false, "cache older than cache.max_age_secs"),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &json!({"ready": ready, "reason": reason, "cache_age_seconds": age}))
}

/// Prometheus text.
pub fn metrics(state: &ApiState) -> Response<Full<Bytes>> {
    let skew = state.configs.borrow().vault.max_clock_skew_secs;
    let text = state.ctx.metrics.render(&state.ctx.store, state.ctx.clock.now(), skew);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    response
}
