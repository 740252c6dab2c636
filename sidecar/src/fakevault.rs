//! A tiny fake of Vault's HTTP API for unit tests of the client, the token
//! handling and the sync loop: the bundle endpoint (with revision,
//! acknowledgement and long-poll), AppRole login, lookup-self, renew-self.
//! The end-to-end tests in `tests/` use a real server instead.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the fake holds and records.
#[derive(Debug, Default)]
pub struct State {
    /// The bundle's JSON (may be made invalid on purpose).
    pub bundle: Option<Value>,
    /// Tokens accepted.
    pub tokens: BTreeSet<String>,
    /// Logins so far.
    pub logins: u32,
    /// Renewals so far.
    pub renewals: u32,
    /// The JWT of the last Kubernetes or JWT login.
    pub last_jwt: String,
    /// Query strings of bundle requests.
    pub queries: Vec<String>,
    /// `X-Vault-Namespace` of the last request.
    pub namespace: Option<String>,
    /// Answer 503 to everything.
    pub down: bool,
    /// Ask for a heartbeat in the next bundle answer, as a standby does.
    pub ask_heartbeat: bool,
    /// Refuse the `heartbeat` field as unknown, as an older engine does.
    pub old_engine: bool,
    /// Answer bundle requests with `prefer_standby`, as the active node of
    /// a cluster whose standbys answer polls does.
    pub prefer_standby: bool,
    /// Connections accepted so far.
    pub connections: u32,
}

/// A running fake.
#[derive(Debug)]
pub struct FakeVault {
    /// `http://127.0.0.1:port`.
    pub addr: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeVault {
    /// Starts on a free 127.0.0.1 port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.lock().expect("fake state").connections += 1;
                let (s, c) = (s.clone(), c.clone());
                let service = service_fn(move |req| handle(s.clone(), c.clone(), req));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self { addr, state, changed, task }
    }

    /// The recorded state.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state")
    }

    /// Replaces the bundle and wakes long-polls.
    pub fn set_bundle(&self, bundle: Value) {
        self.state().bundle = Some(bundle);
        self.changed.notify_waiters();
    }
}

fn reply(status: u16, body: Value) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    Ok(response)
}

async fn handle(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let token = req.headers().get("x-vault-token").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let namespace = req.headers().get("x-vault-namespace").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let lock = || state.lock().expect("fake state");
    lock().namespace = namespace;
    if lock().down {
        return reply(503, json!({"errors": ["Vault is sealed"]}));
    }
    let authorised = lock().tokens.contains(&token);
    match path.as_str() {
        "/v1/auth/approle/login" => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            if request["secret_id"] != "s3cret" {
                return reply(400, json!({"errors": ["invalid secret id"]}));
            }
            let mut s = lock();
            s.logins += 1;
            let token = format!("hvs.login{}", s.logins);
            s.tokens.insert(token.clone());
            reply(200, json!({"auth": {"client_token": token, "lease_duration": 3600, "renewable": true}}))
        }
        "/v1/auth/kubernetes/login" | "/v1/auth/jwt/login" => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            if request["role"] != "web" {
                return reply(400, json!({"errors": ["unknown role"]}));
            }
            let mut s = lock();
            s.logins += 1;
            s.last_jwt = request["jwt"].as_str().unwrap_or_default().to_string();
            let token = format!("hvs.jwt{}", s.logins);
            s.tokens.insert(token.clone());
            reply(200, json!({"auth": {"client_token": token, "lease_duration": 600, "renewable": false}}))
        }
        _ if !authorised => reply(403, json!({"errors": ["permission denied"]})),
        "/v1/auth/token/lookup-self" => reply(200, json!({"data": {"ttl": 0, "renewable": false}})),
        "/v1/auth/token/renew-self" => {
            lock().renewals += 1;
            reply(200, json!({"auth": {"client_token": token, "lease_duration": 3600, "renewable": true}}))
        }
        p if p.starts_with("/v1/lockstep/bundle/") => bundle(state, changed, query).await,
        _ => reply(404, json!({"errors": []})),
    }
}

async fn bundle(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    query: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    state.lock().expect("fake state").queries.push(query.clone());
    if state.lock().expect("fake state").old_engine && param("heartbeat").is_some() {
        return reply(400, json!({"errors": ["unknown parameter \"heartbeat\""]}));
    }
    let wait = param("wait").and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
    let current = || state.lock().expect("fake state").bundle.clone().unwrap_or(Value::Null);
    let same = |b: &Value| param("revision").is_some_and(|r| b["revision"] == r.as_str());
    let mut bundle = current();
    if same(&bundle) && wait > 0 {
        let notified = changed.notified();
        let _ = tokio::time::timeout(Duration::from_secs(wait), notified).await;
        bundle = current();
    }
    if bundle.is_null() {
        return reply(404, json!({"errors": ["unknown pool"]}));
    }
    let ask = std::mem::take(&mut state.lock().expect("fake state").ask_heartbeat);
    let prefer = state.lock().expect("fake state").prefer_standby;
    if same(&bundle) {
        let data = json!({"pool": bundle["pool"], "revision": bundle["revision"], "server_time": bundle["server_time"],
                          "not_modified": true, "heartbeat_due": ask, "prefer_standby": prefer});
        return reply(200, json!({ "data": data }));
    }
    bundle["not_modified"] = json!(false);
    bundle["heartbeat_due"] = json!(ask);
    bundle["prefer_standby"] = json!(prefer);
    reply(200, json!({ "data": bundle }))
}
