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

/// Whether the sidecar is ready, why, and the age of its last sync: ready
/// once a valid bundle is held, signing has not stopped, and the last
/// successful sync is no older than `cache.max_age_secs`.
fn readiness(state: &ApiState) -> (bool, &'static str, Option<i64>) {
    let now = state.ctx.clock.now();
    let (max_age, skew) = {
        let config = state.configs.borrow();
        (config.cache.max_age_secs, config.vault.max_clock_skew_secs)
    };
    let snapshot = state.ctx.store.snapshot();
    let stopped = snapshot.as_ref().map(|s| state.ctx.store.signing_stopped(s, now, skew)).unwrap_or_default();
    let age = state.ctx.store.last_sync().map(|t| now - t);
    let (ready, reason) = match age {
        _ if snapshot.is_none() => (false, "no valid bundle yet"),
        // Cut off for so long that it no longer signs: send traffic elsewhere.
        _ if !stopped.is_empty() => (false, "signing stopped: no bundle from the coordinator for too long"),
        Some(age) if age <= i64::try_from(max_age).unwrap_or(i64::MAX) => (true, "ok"),
        _ => (false, "cache older than cache.max_age_secs"),
    };
    (ready, reason, age)
}

/// `GET /readyz`: 200 when ready, else 503, with the reason.
pub fn readyz(state: &ApiState) -> Response<Full<Bytes>> {
    let (ready, reason, age) = readiness(state);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json_response(status, &json!({"ready": ready, "reason": reason, "cache_age_seconds": age}))
}

/// The metrics, OpenMetrics text.
pub fn metrics(state: &ApiState, accept: Option<&str>) -> Response<Full<Bytes>> {
    // Readiness borrows the configuration itself: never while a borrow is
    // held here (a reload waiting to write would deadlock the nested read).
    let ready = readiness(state).0;
    let (max_clock_skew, cache_max_age) = {
        let config = state.configs.borrow();
        (config.vault.max_clock_skew_secs, config.cache.max_age_secs)
    };
    let scrape = crate::metrics::Scrape { now: state.ctx.clock.now(), max_clock_skew, cache_max_age, ready };
    let text = state.ctx.metrics.render(&state.ctx.store, &scrape);
    let (text, content_type) = if crate::metrics::wants_openmetrics(accept) {
        (text, crate::metrics::CONTENT_TYPE)
    } else {
        (crate::metrics::to_classic(&text), crate::metrics::CLASSIC_CONTENT_TYPE)
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}
