//! The telemetry listener: plain HTTP on a TCP address, for kubelet's
//! probes and Prometheus, which cannot reach a Unix socket. It answers
//! `GET /healthz`, `/readyz` and `/metrics` and nothing else: no keys, no
//! signing, whoever connects. It listens on the pod's network: in a
//! cluster, a NetworkPolicy can keep it to kubelet and Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::error::ApiError;
use super::{ApiState, health};

/// Connections served at once; probes and scrapes need few.
const MAX_CONNECTIONS: usize = 32;

/// Why the telemetry listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.addr {addr}: {message}")]
pub struct TelemetryBindError {
    addr: SocketAddr,
    message: String,
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TelemetryBindError> {
    TcpListener::bind(addr).await.map_err(|e| TelemetryBindError { addr, message: e.to_string() })
}

/// Serves until shutdown.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = state.shutdown.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "telemetry accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::shutdown_signalled(&mut shutdown) => break,
        };
        // Past the cap a connection waits a moment for a slot rather than
        // being dropped at once, so a burst of scrapes and probes is served.
        let permit = match tokio::time::timeout(Duration::from_secs(1), connections.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                drop(stream);
                continue;
            }
        };
        let service_state = state.clone();
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let state = service_state.clone();
            async move {
                let response = match (request.method(), request.uri().path()) {
                    (&Method::GET, "/healthz") => health::healthz(),
                    (&Method::GET, "/readyz") => health::readyz(&state),
                    (&Method::GET, "/metrics") => {
                        let accept = request.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok());
                        health::metrics(&state, accept)
                    }
                    (_, "/healthz" | "/readyz" | "/metrics") => {
                        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only GET is served here")
                            .into_response()
                    }
                    _ => ApiError::new(
                        StatusCode::NOT_FOUND,
                        "route_not_found",
                        "the telemetry listener serves /healthz, /readyz and /metrics only",
                    )
                    .into_response(),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(5))
            .max_buf_size(16 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
}
