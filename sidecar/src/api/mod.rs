//! The local socket API: HTTP/1.1 over a Unix socket, with hyper.
//!
//! - this file: binding the socket (mode, group), accepting, the peer
//!   credential allow-list, bounded draining on shutdown;
//! - [`router`]: the request guard, caps, routing and request metrics;
//! - [`keys`]: keys, one version, watch; [`jwt`]: sign, verify, JWKS;
//!   [`ops`]: encrypt, decrypt, rewrap, MAC, raw signatures;
//!   [`health`]: liveness, readiness, metrics;
//! - [`telemetry`]: the same three on a TCP listener, for the platform;
//! - [`error`]: JSON errors with stable codes.

pub mod error;
pub mod health;
pub mod jwt;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod router;
pub mod telemetry;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;
use tokio::net::unix::UCred;
use tokio::sync::watch;

use crate::Context;
use crate::config::{Config, SocketConfig};

/// What every request handler shares.
#[derive(Debug)]
pub struct ApiState {
    /// Store, metrics, clock.
    pub ctx: Context,
    /// The live configuration (allow-lists and limits reload on SIGHUP).
    pub configs: watch::Receiver<Arc<Config>>,
    /// Turns true at shutdown; watches return early.
    pub shutdown: watch::Receiver<bool>,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the socket.
    #[error("socket.path {0}: another process is listening on it")]
    InUse(String),
    /// Binding or setting permissions failed.
    #[error("socket.path {path}: {message}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        message: String,
    },
}

/// What the staging directory adds to the socket's directory:
/// `/.l` + 8 hex digits + `/s`.
pub const STAGING_OVERHEAD: usize = 13;

/// Binds the socket with `config`'s mode and group, replacing a stale one.
pub fn bind(config: &SocketConfig) -> Result<UnixListener, BindError> {
    let path = &config.path;
    let shown = path.display().to_string();
    let io = |e: std::io::Error| BindError::Io { path: shown.clone(), message: e.to_string() };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt as _;
        // Never delete something that is not a socket.
        if !meta.file_type().is_socket() {
            return Err(BindError::Io { path: shown, message: "exists and is not a socket".into() });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    // Bound inside a private directory, given its mode and group there, and
    // only then renamed into place: nobody can connect while the socket
    // still has the permissions the umask gave it.
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Short (a socket path is at most 107 bytes; see STAGING_OVERHEAD) and
    // random, so no other sidecar or leftover directory gets in the way.
    let private = parent.join(format!(".l{:08x}", fastrand::u32(..)));
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(io)?;
    let staged = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        use std::os::unix::fs::PermissionsExt as _;
        let mode = config.mode_bits().unwrap_or(0o660);
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = config.group {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
        }
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(io)
}

/// Serves until shutdown, then stops accepting, removes the socket and
/// waits up to `socket.drain_timeout_secs` for requests in flight.
pub async fn serve(listener: UnixListener, state: Arc<ApiState>) {
    let graceful = GracefulShutdown::new();
    // Open connections hold memory and a file descriptor each: at most
    // `socket.max_connections` (read at start) are served at once.
    let max_connections = state.configs.borrow().socket.max_connections;
    let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut shutdown = state.shutdown.clone();
    // Where the socket was renamed to; its bound address is the staging one.
    let path = Some(state.configs.borrow().socket.path.clone());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::shutdown_signalled(&mut shutdown) => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            state.ctx.metrics.request("refused", 503);
            tracing::debug!(max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let socket = state.configs.borrow().socket.clone();
        let cred = stream.peer_cred().ok();
        let service_state = state.clone();
        let service = service_fn(move |request| {
            let state = service_state.clone();
            async move {
                // Judged at every request, so an allow-list reloaded on
                // SIGHUP applies to connections already open.
                if peer_allowed(cred.as_ref(), &state.configs.borrow().socket) {
                    Ok::<_, std::convert::Infallible>(router::handle(&state, request).await)
                } else {
                    state.ctx.metrics.request("refused", 403);
                    Ok(error::ApiError::new(
                        StatusCode::FORBIDDEN,
                        "peer_not_allowed",
                        "this caller's uid/gid is not on the allow-list",
                    )
                    .into_response())
                }
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(socket.max_header_bytes * 2)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
    let drain = Duration::from_secs(state.configs.borrow().socket.drain_timeout_secs);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(seconds = drain.as_secs(), "requests still in flight after the drain timeout");
    }
}

/// The kernel's word on who connected, against the allow-lists.
fn peer_allowed(cred: Option<&UCred>, socket: &SocketConfig) -> bool {
    if socket.allowed_uids.is_empty() && socket.allowed_gids.is_empty() {
        return true;
    }
    let Some(cred) = cred else {
        tracing::warn!("peer credentials unavailable; refusing the caller");
        return false;
    };
    let ok = socket.allowed_uids.contains(&cred.uid()) || socket.allowed_gids.contains(&cred.gid());
    if !ok {
        tracing::warn!(uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "caller not on the allow-list refused");
    }
    ok
}

/// A JSON object of the request's shape (serde would also read a struct
/// from an array, by position; the API takes named fields only).
fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, error::ApiError> {
    if !value.is_object() {
        return Err(error::ApiError::bad_request("body_invalid", "request body: expected a JSON object"));
    }
    let error = match <T as serde::Deserialize>::deserialize(&value) {
        Ok(parsed) => return Ok(parsed),
        Err(error) => error,
    };
    Err(error::ApiError::bad_request("body_invalid", format!("request body: {}", describe::<T>(&value, &error))))
}

/// What is wrong with a body serde refused, naming the field but never
/// quoting the value (which may be a plaintext or a secret): serde's own
/// text quotes a string it did not expect.
pub(crate) fn describe<T: serde::de::DeserializeOwned>(value: &serde_json::Value, error: &serde_json::Error) -> String {
    const MOST: usize = 200;
    let text = error.to_string();
    let text = text.rsplit_once(" at line ").map_or(text.as_str(), |(before, _)| before);
    let Some((kind, rest)) = ["invalid type: ", "invalid value: ", "invalid length "]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix).map(|rest| (prefix.trim_end(), rest)))
    else {
        // Missing or unknown fields: serde names the field, cut short.
        return text.chars().take(MOST).collect();
    };
    // `string "…", expected u64`: keep what was given, never its content
    // (quoted in "…" or `…`), and what was expected, which serde writes
    // last (a value may itself contain ", expected ").
    let (given, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "another value"));
    let given = given.split(['"', '`']).next().unwrap_or_default().trim();
    // The field whose removal makes this error go away is the culprit.
    let culprit = value.as_object().and_then(|fields| {
        fields.keys().find(|key| {
            let mut without = fields.clone();
            without.remove(*key);
            <T as serde::Deserialize>::deserialize(&serde_json::Value::Object(without)).map_err(|e| e.to_string()).err()
                != Some(error.to_string())
        })
    });
    match culprit {
        Some(field) => format!("field {field:?}: {kind} {given}, expected {expected}"),
        None => format!("{kind} {given}, expected {expected}"),
    }
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_body_names_the_field_and_never_quotes_its_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code, reason = "only parsed")]
        struct Body {
            ttl: Option<u64>,
            plaintext: String,
        }
        let cases = [
            (
                serde_json::json!({"ttl": "s3cr3t-value", "plaintext": "x"}),
                "field \"ttl\": invalid type: string, expected u64",
            ),
            (
                serde_json::json!({"ttl": "hunter2, expected s3cr3t", "plaintext": "x"}),
                "field \"ttl\": invalid type: string, expected u64",
            ),
            (serde_json::json!({"plaintext": 5}), "field \"plaintext\": invalid type: integer, expected a string"),
            (
                serde_json::json!({"plaintext": 1.5}),
                "field \"plaintext\": invalid type: floating point, expected a string",
            ),
            (serde_json::json!({"ttl": 1}), "missing field `plaintext`"),
        ];
        for (body, expected) in cases {
            let error = parse::<Body>(body).expect_err("refused");
            assert_eq!(error.message, format!("request body: {expected}"));
            assert!(!error.message.contains("s3cr3t"));
        }
    }

    #[tokio::test]
    async fn bind_sets_the_mode_replaces_a_stale_socket_and_spares_other_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SocketConfig { path: dir.path().join("s.sock"), mode: "0600".into(), ..SocketConfig::default() };
        let listener = bind(&config).expect("bind");
        let mode = std::fs::metadata(&config.path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&config), Err(BindError::InUse(_))));
        drop(listener);
        let listener = bind(&config).expect("a stale socket is replaced");
        // The group is set too: as root any group (one the file would not
        // get by itself), else the caller's own.
        drop(listener);
        use std::os::unix::fs::MetadataExt as _;
        let owner = std::fs::metadata(dir.path()).expect("meta");
        let gid = if owner.uid() == 0 { 4242 } else { owner.gid() };
        let grouped = SocketConfig { group: Some(gid), mode: "0660".into(), ..config.clone() };
        let listener = bind(&grouped).expect("bind with a group");
        let meta = std::fs::metadata(&grouped.path).expect("meta");
        assert_eq!((meta.gid(), meta.permissions().mode() & 0o777), (gid, 0o660));
        drop(listener);
        let entries: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").filter_map(Result::ok).map(|e| e.file_name()).collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("s.sock")], "no staging directory is left behind");
        let file = SocketConfig { path: dir.path().join("data"), ..SocketConfig::default() };
        std::fs::write(&file.path, "keep me").expect("write");
        assert!(bind(&file).is_err());
        assert_eq!(std::fs::read_to_string(&file.path).expect("kept"), "keep me");
    }
}
