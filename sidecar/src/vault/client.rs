//! The HTTP client for Vault.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lockstep_model::UnixSeconds;
use lockstep_model::bundle::Bundle;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::VaultConfig;

/// How long a bundle request that does not long-poll may take before the
/// node counts as not answering.
const NO_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read from Vault (a bundle of 64 keyrings × 32 RSA
/// versions stays well below).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why a Vault request failed. Messages carry no token.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Could not build the HTTP client (bad CA bundle).
    #[error("vault client setup: {0}")]
    Setup(String),
    /// Vault did not answer (connection, TLS, timeout).
    #[error("vault unreachable: {0}")]
    Unreachable(String),
    /// 403: the token is invalid or the policy denies the path.
    #[error("permission denied by vault: {0}")]
    Denied(String),
    /// 404: unknown pool (or engine not mounted).
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other error status.
    #[error("vault answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Vault's `errors`, joined.
        message: String,
    },
    /// The answer is not what the API promises.
    #[error("unexpected answer from vault: {0}")]
    Decode(String),
}

impl VaultError {
    /// A short label for metrics (`sync_errors_total{kind=…}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Setup(_) => "setup",
            Self::Unreachable(_) => "unreachable",
            Self::Denied(_) => "denied",
            Self::NotFound(_) => "not_found",
            Self::Status { .. } => "status",
            Self::Decode(_) => "decode",
        }
    }
}

/// What the sidecar tells Vault when it asks for its bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleQuery {
    /// This sidecar's id.
    pub instance: String,
    /// This process's random boot id, so that the coordinator can tell two
    /// processes that share an instance id.
    pub boot: String,
    /// The revision held, if any.
    pub revision: Option<String>,
    /// Highest version held per keyring, with its kid: the acknowledgement.
    pub held: Vec<crate::store::Held>,
    /// Long-poll seconds (0: answer at once).
    pub wait: u64,
    /// A standby asked for a heartbeat (its last answer had
    /// `heartbeat_due`): this poll carries it to the active node.
    pub heartbeat: bool,
}

impl BundleQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("instance", self.instance.clone())];
        if !self.boot.is_empty() {
            pairs.push(("boot", self.boot.clone()));
        }
        if let Some(revision) = &self.revision {
            pairs.push(("revision", revision.clone()));
        }
        if !self.held.is_empty() {
            let held: Vec<String> = self.held.iter().map(ToString::to_string).collect();
            pairs.push(("held", held.join(",")));
        }
        if self.wait > 0 {
            pairs.push(("wait", self.wait.to_string()));
        }
        // Always sent: a standby runs polls without it on the active node.
        pairs.push(("heartbeat", self.heartbeat.to_string()));
        pairs
    }
}

/// Vault's answer to a bundle request, and whether the node that answered
/// asks for a heartbeat with the next poll.
#[derive(Debug)]
pub struct BundleAnswer {
    /// The bundle or "not modified".
    pub reply: BundleReply,
    /// A standby answered and wants the next poll to carry a heartbeat.
    pub heartbeat_due: bool,
}

/// Vault's answer to a bundle request.
#[derive(Debug)]
pub enum BundleReply {
    /// A bundle (not yet validated).
    Bundle(Box<Bundle>),
    /// The revision held is current.
    NotModified {
        /// The current revision.
        revision: String,
        /// Vault's clock.
        server_time: UnixSeconds,
    },
}

/// A login's or renewal's result.
#[derive(Debug)]
pub struct Lease {
    /// The token.
    pub token: Zeroizing<String>,
    /// Seconds it lives (0: no expiry, e.g. a root token).
    pub ttl: u64,
    /// Whether renew-self can extend it.
    pub renewable: bool,
}

/// The client; cheap to clone.
#[derive(Debug, Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    /// Every node's address (one, or several to fail over between).
    addrs: Arc<Vec<String>>,
    /// The address in use, as an index into `addrs`.
    current: Arc<AtomicUsize>,
    /// Whether the engine knows the `heartbeat` field (an older one refuses
    /// it as unknown: then polls go without it).
    heartbeats: Arc<AtomicBool>,
    namespace: Option<String>,
    mount: String,
}

impl VaultClient {
    /// A client for `config`: rustls on aws-lc-rs, the built-in web roots
    /// or only the CAs of `ca_bundle`.
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        // reqwest is built without a provider of its own; use the
        // workspace's one backend. Installing twice is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("lockstep-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| VaultError::Setup(format!("reading {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| VaultError::Setup(format!("{}: {e}", path.display())))?;
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| VaultError::Setup(e.to_string()))?;
        let addrs: Vec<String> = config.addrs().iter().map(|a| a.trim_end_matches('/').to_string()).collect();
        if addrs.is_empty() {
            return Err(VaultError::Setup("vault.addr names no address".into()));
        }
        Ok(Self {
            http,
            addrs: Arc::new(addrs),
            current: Arc::new(AtomicUsize::new(0)),
            heartbeats: Arc::new(AtomicBool::new(true)),
            namespace: config.namespace.clone(),
            mount: config.mount.clone(),
        })
    }

    /// The address requests go to now.
    pub fn addr(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.addrs.len();
        &self.addrs[i]
    }

    /// After a failure that another node may not have (no answer, sealed,
    /// no active node, overloaded), the next request goes to the next
    /// address; with one address, nothing changes.
    fn fail_over(&self, error: &VaultError) {
        let node_down = match error {
            VaultError::Unreachable(_) => true,
            VaultError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            _ => false,
        };
        if node_down && self.addrs.len() > 1 {
            let from = self.addr().to_string();
            let next = self.current.fetch_add(1, Ordering::Relaxed).wrapping_add(1) % self.addrs.len();
            tracing::warn!(from = %from, to = %self.addrs[next], %error, "vault node failed; trying the next address");
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}/v1/{path}", self.addr()));
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token)
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        request
    }

    /// Fetches the pool's bundle, telling Vault what is held.
    pub async fn bundle(&self, token: &str, pool: &str, query: &BundleQuery) -> Result<BundleAnswer, VaultError> {
        let path = format!("{}/bundle/{pool}", self.mount);
        // The server may hold the request for `wait` seconds; one that
        // does not wait answers at once, or the node is not answering.
        let timeout = if query.wait == 0 { NO_WAIT_TIMEOUT } else { Duration::from_secs(query.wait + 15) };
        let mut pairs = query.pairs();
        if !self.heartbeats.load(Ordering::Relaxed) {
            pairs.retain(|(name, _)| *name != "heartbeat");
        }
        let request = self.request(reqwest::Method::GET, &path, Some(token)).query(&pairs).timeout(timeout);
        let body = match send(request).await {
            // An engine older than heartbeats: ask again without the field,
            // from now on.
            Err(VaultError::Status { status: 400, message }) if message.contains("\"heartbeat\"") => {
                tracing::info!("the engine does not know heartbeats; polling without them");
                self.heartbeats.store(false, Ordering::Relaxed);
                pairs.retain(|(name, _)| *name != "heartbeat");
                let again = self.request(reqwest::Method::GET, &path, Some(token)).query(&pairs).timeout(timeout);
                send(again).await
            }
            other => other,
        }
        .inspect_err(|e| self.fail_over(e))?;
        // The coordinator's warnings are for this sidecar's operator (two
        // processes under one instance id, say).
        for warning in body.get("warnings").and_then(Value::as_array).into_iter().flatten().take(8) {
            let text: String = warning.as_str().unwrap_or_default().chars().take(500).collect();
            tracing::warn!(warning = %text, "the coordinator warns about this sidecar");
        }
        let data = body.get("data").ok_or_else(|| VaultError::Decode("no data in bundle answer".into()))?;
        let heartbeat_due = data.get("heartbeat_due").and_then(Value::as_bool) == Some(true);
        let reply = if data.get("not_modified").and_then(Value::as_bool) == Some(true) {
            let revision = data.get("revision").and_then(Value::as_str).unwrap_or_default().to_string();
            let server_time = data.get("server_time").and_then(Value::as_i64).unwrap_or_default();
            BundleReply::NotModified { revision, server_time }
        } else {
            BundleReply::Bundle(Box::new(decode_bundle(data)?))
        };
        Ok(BundleAnswer { reply, heartbeat_due })
    }

    /// Logs in at `auth/<mount>/login` with `body`.
    pub async fn login(&self, mount: &str, body: &Value) -> Result<Lease, VaultError> {
        let request = self.request(reqwest::Method::POST, &format!("auth/{mount}/login"), None).json(body);
        lease(&send(request.timeout(Duration::from_secs(30))).await.inspect_err(|e| self.fail_over(e))?)
    }

    /// Renews the token for `increment` seconds.
    pub async fn renew_self(&self, token: &str, increment: u64) -> Result<Lease, VaultError> {
        let body = serde_json::json!({ "increment": format!("{increment}s") });
        let request = self.request(reqwest::Method::POST, "auth/token/renew-self", Some(token)).json(&body);
        lease(&send(request.timeout(Duration::from_secs(30))).await.inspect_err(|e| self.fail_over(e))?)
    }

    /// The token's remaining ttl and renewability.
    pub async fn lookup_self(&self, token: &str) -> Result<(u64, bool), VaultError> {
        let request = self.request(reqwest::Method::GET, "auth/token/lookup-self", Some(token));
        let body = send(request.timeout(Duration::from_secs(30))).await.inspect_err(|e| self.fail_over(e))?;
        let data = &body["data"];
        Ok((data["ttl"].as_u64().unwrap_or(0), data["renewable"].as_bool().unwrap_or(false)))
    }
}

fn lease(body: &Value) -> Result<Lease, VaultError> {
    let auth = &body["auth"];
    let token = auth["client_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| VaultError::Decode("no auth.client_token in login answer".into()))?;
    Ok(Lease {
        token: Zeroizing::new(token.to_string()),
        ttl: auth["lease_duration"].as_u64().unwrap_or(0),
        renewable: auth["renewable"].as_bool().unwrap_or(false),
    })
}

/// Reads a bundle in place (no copy of its material); an error says what
/// was wrong without quoting a value from it.
fn decode_bundle(data: &Value) -> Result<Bundle, VaultError> {
    <Bundle as serde::Deserialize>::deserialize(data)
        .map_err(|e| VaultError::Decode(format!("bundle: {}", crate::api::describe::<Bundle>(data, &e))))
}

/// Sends, reads at most [`MAX_RESPONSE_BYTES`], and maps statuses.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, VaultError> {
    let mut response = request.send().await.map_err(|e| VaultError::Unreachable(without_url(&e)))?;
    let status = response.status().as_u16();
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| VaultError::Unreachable(without_url(&e)))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(VaultError::Decode(format!("answer larger than {MAX_RESPONSE_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let json: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|_| VaultError::Decode(format!("status {status}: body is not JSON")))?
    };
    if (200..300).contains(&status) {
        return Ok(json);
    }
    let message = json["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        .unwrap_or_default();
    Err(match status {
        403 => VaultError::Denied(message),
        404 => VaultError::NotFound(message),
        _ => VaultError::Status { status, message },
    })
}

/// reqwest's messages include the URL; ours has no secret in it, but keep
/// the messages short and stable.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(inner) = source {
        detail = inner.to_string();
        source = inner.source();
    }
    if detail.is_empty() { kind.into() } else { format!("{kind}: {detail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_of_the_wrong_shape_is_refused_naming_the_field_never_its_value() {
        let data = serde_json::json!({"pool": "web", "format": "s3cret-looking-value"});
        let Err(VaultError::Decode(message)) = decode_bundle(&data) else {
            panic!("a text format must be refused");
        };
        assert!(message.contains("\"format\"") && message.contains("string"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}
