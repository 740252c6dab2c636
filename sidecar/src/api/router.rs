//! Routing, the request guard and caps, and per-route request metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::ApiState;
use super::error::ApiError;
use super::{health, jwt, keys, ops};

/// The header every `/v1` request must carry, so that a request smuggled
/// from another protocol (a browser form, a proxied URL) is refused.
pub const GUARD_HEADER: &str = "x-lockstep-request";

/// A parsed request.
#[derive(Debug)]
pub struct Call {
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// The JSON body (`null` for GET).
    pub body: Value,
}

/// Handles one request and counts it.
pub async fn handle(state: &ApiState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (route, result) = match check_header_size(state, &request) {
        Ok(()) => dispatch(state, request).await,
        Err(error) => ("other", Err(error)),
    };
    state.ctx.metrics.result(route, result.as_ref().map_or_else(|e| e.code, |_| "ok"));
    let response = result.unwrap_or_else(ApiError::into_response);
    state.ctx.metrics.request(route, response.status().as_u16());
    response
}

/// Refuses a request whose request line and headers exceed
/// `socket.max_header_bytes`, with a JSON error. (The connection's read
/// buffer is twice that size, so a request far beyond it is cut off by
/// hyper's own bare 431 before it is buffered whole.)
fn check_header_size(state: &ApiState, request: &Request<Incoming>) -> Result<(), ApiError> {
    let max = state.configs.borrow().socket.max_header_bytes;
    let target = request.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if line + headers > max {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request line and headers are larger than {max} bytes"),
        ));
    }
    Ok(())
}

async fn dispatch(
    state: &ApiState,
    request: Request<Incoming>,
) -> (&'static str, Result<Response<Full<Bytes>>, ApiError>) {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segments.as_slice() {
        // Dot segments name nothing here: no route resolves them, and a
        // request that uses them is probing, not calling.
        segments if segments.iter().any(|s| matches!(*s, "." | "..")) => ("other", Err(no_route(&path))),
        ["healthz"] if get => ("healthz", Ok(health::healthz())),
        ["readyz"] if get => ("readyz", Ok(health::readyz(state))),
        ["metrics"] if get => ("metrics", Ok(health::metrics(state, accept(&request)))),
        ["v1", "keyrings"] if get => guarded("keyrings", state, request, |s, _| keys::list(s)).await,
        ["v1", "openapi.json"] if get => {
            guarded("openapi", state, request, |_, _| {
                Ok(super::json_response(StatusCode::OK, &super::openapi::document()))
            })
            .await
        }
        ["v1", "keys", name] if get => guarded("keys", state, request, |s, c| keys::keys(s, name, &c)).await,
        ["v1", "keys", name, "versions", n] if get => {
            guarded("version", state, request, |s, c| keys::version_by_number(s, name, n, &c)).await
        }
        ["v1", "keys", name, "kids", kid] if get => {
            guarded("kid", state, request, |s, c| keys::version_by_kid(s, name, kid, &c)).await
        }
        ["v1", "keys", name, "watch"] if get => {
            let name = (*name).to_string();
            match prepare(state, request).await {
                Ok(call) => ("watch", keys::watch(state, &name, &call).await),
                Err(e) => ("watch", Err(e)),
            }
        }
        ["v1", "jwt", name, "sign"] if post => guarded("jwt_sign", state, request, |s, c| jwt::sign(s, name, &c)).await,
        ["v1", "jwt", name, "verify"] if post => {
            guarded("jwt_verify", state, request, |s, c| jwt::verify(s, name, &c)).await
        }
        ["v1", "jwks", name] if get => guarded("jwks", state, request, |s, _| jwt::jwks(s, name)).await,
        ["v1", "encrypt", name] if post => guarded("encrypt", state, request, |s, c| ops::encrypt(s, name, &c)).await,
        ["v1", "decrypt", name] if post => guarded("decrypt", state, request, |s, c| ops::decrypt(s, name, &c)).await,
        ["v1", "rewrap", name] if post => guarded("rewrap", state, request, |s, c| ops::rewrap(s, name, &c)).await,
        ["v1", "mac", name] if post => guarded("mac", state, request, |s, c| ops::mac(s, name, &c)).await,
        ["v1", "mac", name, "verify"] if post => {
            guarded("mac_verify", state, request, |s, c| ops::mac_verify(s, name, &c)).await
        }
        ["v1", "sign", name] if post => guarded("sign", state, request, |s, c| ops::sign(s, name, &c)).await,
        ["v1", "sign", name, "verify"] if post => {
            guarded("sign_verify", state, request, |s, c| ops::verify(s, name, &c)).await
        }
        ["v1", "webhook", name, "sign"] if post => {
            guarded("webhook_sign", state, request, |s, c| ops::webhook_sign(s, name, &c)).await
        }
        ["v1", "webhook", name, "verify"] if post => {
            guarded("webhook_verify", state, request, |s, c| ops::webhook_verify(s, name, &c)).await
        }
        ["healthz" | "readyz" | "metrics"]
        | ["v1", "keyrings" | "openapi.json"]
        | ["v1", "jwks", _]
        | ["v1", "keys", _]
        | ["v1", "keys", _, "versions" | "kids", _]
        | ["v1", "keys", _, "watch"]
        | ["v1", "jwt", _, "sign" | "verify"]
        | ["v1", "encrypt" | "decrypt" | "rewrap" | "mac" | "sign", _]
        | ["v1", "mac" | "sign", _, "verify"]
        | ["v1", "webhook", _, "sign" | "verify"] => (
            "other",
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
        ),
        _ => ("other", Err(no_route(&path))),
    }
}

fn accept(request: &Request<Incoming>) -> Option<&str> {
    request.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok())
}

fn no_route(path: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no route {path}"))
}

async fn guarded<F>(
    route: &'static str,
    state: &ApiState,
    request: Request<Incoming>,
    handler: F,
) -> (&'static str, Result<Response<Full<Bytes>>, ApiError>)
where
    F: FnOnce(&ApiState, Call) -> Result<Response<Full<Bytes>>, ApiError>,
{
    (route, prepare(state, request).await.and_then(|call| handler(state, call)))
}

/// How much of a body over the cap is read and thrown away before the 413
/// goes out: a client still writing it would otherwise meet a closed
/// socket mid-write and report that instead of the answer. Bigger bodies
/// (by their declared length, or once this much has come) are cut off.
const DRAIN_MAX: usize = 1024 * 1024;

/// Reads a body of at most `max` bytes; `seen` counts every byte that came,
/// so a caller can tell an over-long body from a broken one. One over `max`
/// is drained up to [`DRAIN_MAX`] and answers `Err`, as does a broken one.
async fn read_body(mut body: Incoming, max: usize, seen: &mut usize) -> Result<Bytes, ()> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ())?.into_data() else { continue };
        *seen = seen.saturating_add(data.len());
        if *seen <= max {
            kept.extend_from_slice(&data);
        } else if *seen > max.max(DRAIN_MAX) {
            return Err(());
        }
    }
    if *seen > max { Err(()) } else { Ok(Bytes::from(kept)) }
}

/// Checks the guard header, parses the query, reads a capped JSON body.
async fn prepare(state: &ApiState, request: Request<Incoming>) -> Result<Call, ApiError> {
    if request.headers().get(GUARD_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(ApiError::bad_request("request_header_missing", "header X-Lockstep-Request: 1 is required"));
    }
    let query =
        request.uri().query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    if request.method() != Method::POST {
        return Ok(Call { query, body: Value::Null });
    }
    let max = state.configs.borrow().socket.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than {max} bytes"),
        )
        .closing()
    };
    let declared =
        request.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    // A client that waits for "100 Continue" sends nothing more when
    // refused at once, so nothing needs draining.
    let expects_continue = request
        .headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if declared.is_some_and(|n| n > max && (n > DRAIN_MAX || expects_continue)) {
        return Err(too_large());
    }
    let timeout = Duration::from_secs(state.configs.borrow().socket.body_timeout_secs);
    let mut seen = 0;
    let read = tokio::time::timeout(timeout, read_body(request.into_body(), max, &mut seen)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        // Over the cap, by what came or by what it declared: a 413 whether
        // the rest came, stalled or was cut off.
        _ if seen > max || declared.is_some_and(|n| n > max) => return Err(too_large()),
        // The caller hung up (or broke the framing) before the body ended.
        Ok(Err(())) => return Err(ApiError::bad_request("body_incomplete", "request body ended early").closing()),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("request body not received within {}s", timeout.as_secs()),
            )
            .closing());
        }
    };
    let body = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("body_invalid", format!("request body is not JSON: {e}")))?;
    Ok(Call { query, body })
}
