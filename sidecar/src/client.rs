//! A small client of the socket API, for `lockstep-sidecar get`, the
//! benchmark and tests.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why a request to the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error("cannot connect to {path}: {message}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        message: String,
    },
    /// The HTTP exchange failed.
    #[error("request failed: {0}")]
    Http(String),
}

/// One HTTP/1.1 connection to the sidecar; reusable for many requests.
#[derive(Debug)]
pub struct SocketClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl SocketClient {
    /// Connects to `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| ClientError::Connect { path: socket.display().to_string(), message: e.to_string() })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Sends a request (with the guard header) and returns status and body.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Bytes), ClientError> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "lockstep-sidecar")
            .header("x-lockstep-request", "1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        self.sender.ready().await.map_err(|e| ClientError::Http(e.to_string()))?;
        let response = self.sender.send_request(request).await.map_err(|e| ClientError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| ClientError::Http(e.to_string()))?.to_bytes();
        Ok((status, body))
    }
}

/// One GET on a fresh connection.
pub async fn get(socket: &Path, path: &str) -> Result<(u16, Bytes), ClientError> {
    SocketClient::connect(socket).await?.send("GET", path, None).await
}
