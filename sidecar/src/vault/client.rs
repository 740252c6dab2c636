//! The HTTP client for Vault.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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

/// The shortest pause between two moves off an active node.
const LEAVE_PAUSE: Duration = Duration::from_secs(60);
/// The longest: one an hour, for a balancer that always answers with the
/// active node, or a list whose other addresses do not answer.
const LEAVE_PAUSE_MAX: Duration = Duration::from_secs(3_600);

/// When the sidecar may next move off an active node that answers
/// `prefer_standby`. The pause doubles each time it lands on one again and
/// starts over once a node without the hint (a standby) answers.
#[derive(Debug)]
struct Leaving {
    next: Option<Instant>,
    pause: Duration,
}

impl Leaving {
    fn new() -> Self {
        Self { next: None, pause: LEAVE_PAUSE }
    }

    /// An answer came, with the hint or without; whether to move now.
    fn answered(&mut self, prefer_standby: bool, now: Instant) -> bool {
        if !prefer_standby {
            self.pause = LEAVE_PAUSE;
            self.next = None;
            return false;
        }
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        self.next = Some(now + self.pause);
        self.pause = (self.pause * 2).min(LEAVE_PAUSE_MAX);
        true
    }
}

/// The client; cheap to clone.
#[derive(Debug, Clone)]
pub struct VaultClient {
    /// Replaced to drop its connections (see [`VaultClient::leave_active`]).
    http: Arc<RwLock<reqwest::Client>>,
    /// The CAs of `ca_bundle`, to build a replacement.
    cas: Arc<Option<Vec<reqwest::Certificate>>>,
    /// Whether to move off an active node that says standbys serve.
    prefer_standby: bool,
    leaving: Arc<Mutex<Leaving>>,
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
        let cas = match &config.ca_bundle {
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| VaultError::Setup(format!("reading {}: {e}", path.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| VaultError::Setup(format!("{}: {e}", path.display())))?;
                Some(certs)
            }
            None => None,
        };
        let http = http_client(cas.as_deref())?;
        let addrs: Vec<String> = config.addrs().iter().map(|a| a.trim_end_matches('/').to_string()).collect();
        if addrs.is_empty() {
            return Err(VaultError::Setup("vault.addr names no address".into()));
        }
        Ok(Self {
            http: Arc::new(RwLock::new(http)),
            cas: Arc::new(cas),
            prefer_standby: config.prefer_standby,
            leaving: Arc::new(Mutex::new(Leaving::new())),
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

    /// The active node answered `prefer_standby` (its cluster's standbys
    /// answer polls): poll elsewhere, at most once per pause. With several
    /// addresses, the next one; with one (a balancer in front of every
    /// node), a new connection, which the balancer may send to a standby.
    fn leave_active(&self, prefer_standby: bool) {
        if !self.prefer_standby {
            return;
        }
        let now = Instant::now();
        let moving =
            self.leaving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).answered(prefer_standby, now);
        if !moving {
            return;
        }
        let from = self.addr().to_string();
        if self.addrs.len() > 1 {
            let next = self.current.fetch_add(1, Ordering::Relaxed).wrapping_add(1) % self.addrs.len();
            tracing::info!(from = %from, to = %self.addrs[next], "the active node says its standbys answer polls; polling the next address");
            return;
        }
        match http_client((*self.cas).as_deref()) {
            Ok(http) => {
                *self.http.write().unwrap_or_else(std::sync::PoisonError::into_inner) = http;
                tracing::info!(addr = %from, "the active node says its standbys answer polls; reconnecting to reach one");
            }
            Err(error) => tracing::warn!(%error, "could not set up a new connection to leave the active node"),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let http = self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut request = http.request(method, format!("{}/v1/{path}", self.addr()));
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
        self.leave_active(data.get("prefer_standby").and_then(Value::as_bool) == Some(true));
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

/// The HTTP client: rustls on aws-lc-rs, the built-in web roots or only
/// `cas`.
fn http_client(cas: Option<&[reqwest::Certificate]>) -> Result<reqwest::Client, VaultError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("lockstep-sidecar/", env!("CARGO_PKG_VERSION")));
    if let Some(cas) = cas {
        builder = builder.tls_built_in_root_certs(false);
        for cert in cas {
            builder = builder.add_root_certificate(cert.clone());
        }
    }
    builder.build().map_err(|e| VaultError::Setup(e.to_string()))
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

    #[test]
    fn moves_off_an_active_node_at_once_then_at_most_once_per_doubling_pause() {
        let mut leaving = Leaving::new();
        let t = Instant::now();
        assert!(!leaving.answered(false, t), "no hint, no move");
        assert!(leaving.answered(true, t), "the first hint moves at once");
        assert!(!leaving.answered(true, t + Duration::from_secs(59)));
        assert!(leaving.answered(true, t + Duration::from_secs(60)), "landed on the active node again");
        assert!(!leaving.answered(true, t + Duration::from_secs(60 + 119)), "the pause doubled");
        assert!(leaving.answered(true, t + Duration::from_secs(180)));
        for _ in 0..10 {
            leaving.pause = (leaving.pause * 2).min(LEAVE_PAUSE_MAX);
        }
        assert_eq!(leaving.pause, LEAVE_PAUSE_MAX, "at most an hour");
        assert!(!leaving.answered(false, t + Duration::from_secs(200)), "a standby answered");
        assert!(leaving.answered(true, t + Duration::from_secs(201)), "which starts it over");
        assert_eq!(leaving.pause, LEAVE_PAUSE * 2);
    }

    fn config(addr: &str, prefer_standby: bool) -> VaultConfig {
        VaultConfig { addr: addr.into(), prefer_standby, ..VaultConfig::default() }
    }

    async fn fake(prefer_standby: bool) -> crate::fakevault::FakeVault {
        let vault = crate::fakevault::FakeVault::start().await;
        vault.set_bundle(serde_json::json!({"pool": "web", "revision": "r1", "server_time": 1}));
        vault.state().tokens.insert("t".into());
        vault.state().prefer_standby = prefer_standby;
        vault
    }

    fn current(revision: &str) -> BundleQuery {
        BundleQuery { instance: "web-1".into(), revision: Some(revision.into()), ..BundleQuery::default() }
    }

    #[tokio::test]
    async fn an_active_node_that_prefers_standbys_sends_the_next_poll_to_the_next_address() {
        let (active, standby) = (fake(true).await, fake(false).await);
        let client = VaultClient::new(&config(&format!("{},{}", active.addr, standby.addr), true)).expect("client");
        for _ in 0..3 {
            client.bundle("t", "web", &current("r1")).await.expect("answer");
        }
        assert_eq!((active.state().queries.len(), standby.state().queries.len()), (1, 2));
        // Turned off, it stays where it is.
        let (active, standby) = (fake(true).await, fake(false).await);
        let client = VaultClient::new(&config(&format!("{},{}", active.addr, standby.addr), false)).expect("client");
        for _ in 0..3 {
            client.bundle("t", "web", &current("r1")).await.expect("answer");
        }
        assert_eq!((active.state().queries.len(), standby.state().queries.len()), (3, 0));
    }

    #[tokio::test]
    async fn with_one_address_it_reconnects_once_per_pause() {
        let active = fake(true).await;
        let client = VaultClient::new(&config(&active.addr, true)).expect("client");
        for _ in 0..4 {
            client.bundle("t", "web", &current("r1")).await.expect("answer");
        }
        // The first answer's hint dropped the connection; the pause keeps
        // the new one (a balancer that always picks the active node).
        let seen = {
            let state = active.state();
            (state.queries.len(), state.connections)
        };
        assert_eq!(seen, (4, 2));
        let plain = fake(false).await;
        let client = VaultClient::new(&config(&plain.addr, true)).expect("client");
        for _ in 0..3 {
            client.bundle("t", "web", &current("r1")).await.expect("answer");
        }
        assert_eq!(plain.state().connections, 1, "a node without the hint keeps its connection");
    }
}
