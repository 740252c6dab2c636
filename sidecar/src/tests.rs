//! Scenario tests of the whole sidecar (`run_with`) against the fake Vault
//! of [`crate::fakevault`], on sockets in temporary directories, with a
//! manual clock for key state.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lockstep_model::KeyType;
use lockstep_model::bundle::Bundle;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::client::SocketClient;
use crate::clock::ManualClock;
use crate::config::{AuthConfig, AuthMethod, CacheConfig, Config, SocketConfig, VaultConfig};
use crate::fakevault::FakeVault;
use crate::store::testdata::{bundle, version};

const T0: i64 = 1_000_000;

struct Sidecar {
    socket: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), crate::RunError>>,
}

impl Sidecar {
    fn start(config: Config, clock: &Arc<ManualClock>) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let socket = config.socket.path.clone();
        let clock: crate::clock::SharedClock = clock.clone();
        let task = tokio::spawn(crate::run_with(config, clock, None, shutdown));
        Self { socket, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let result = tokio::time::timeout(Duration::from_secs(20), self.task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "sidecar did not stop cleanly: {result:?}");
        assert!(!self.socket.exists(), "socket left behind");
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut client = SocketClient::connect(&self.socket).await.expect("connect");
        let (status, bytes) = client.send(method, path, body.as_ref()).await.expect("request");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    async fn metrics(&self) -> String {
        let mut client = SocketClient::connect(&self.socket).await.expect("connect");
        let (_, bytes) = client.send("GET", "/metrics", None).await.expect("metrics");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Waits (real time, at most 30 s) for an asynchronous condition.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Generous: CI runs these beside real servers on two cores.
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn config(dir: &Path, vault: &FakeVault) -> Config {
    std::fs::write(dir.join("secret-id"), "s3cret\n").expect("secret id");
    std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
    std::fs::create_dir_all(dir.join("cache")).expect("cache dir");
    std::fs::write(dir.join("keys/cache.key"), [9u8; 32]).expect("cache key");
    Config {
        pool: "web".into(),
        instance: "pod-1".into(),
        vault: VaultConfig {
            addr: vault.addr.clone(),
            wait_secs: 2,
            poll_interval_secs: 1,
            backoff_min_ms: 20,
            backoff_max_secs: 1,
            ..VaultConfig::default()
        },
        auth: AuthConfig {
            method: AuthMethod::Approle,
            role_id: Some("role".into()),
            secret_id_file: Some(dir.join("secret-id")),
            ..AuthConfig::default()
        },
        socket: SocketConfig { path: dir.join("s.sock"), ..SocketConfig::default() },
        cache: CacheConfig {
            file: Some(dir.join("cache/bundle.bin")),
            key_file: Some(dir.join("keys/cache.key")),
            max_age_secs: 600,
        },
        ..Config::default()
    }
}

fn two_versions(key_type: KeyType) -> Bundle {
    let mut bundle = bundle(
        "web",
        vec![(
            "api",
            key_type,
            1,
            vec![version(key_type, 1, Some(0), Some(T0 + 5_000)), version(key_type, 2, Some(T0 + 2_000), None)],
        )],
    );
    let limits = lockstep_model::bundle::Limits { max_token_ttl: 300, prepublish: 600, grace_period: 1_200 };
    bundle.keyrings.values_mut().for_each(|k| k.limits = Some(limits));
    bundle
}

fn json_of(bundle: &Bundle) -> Value {
    let mut value = serde_json::to_value(bundle).expect("bundle json");
    value["server_time"] = json!(T0);
    value
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lockstep_sidecar_")?.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn ready(sidecar: &Sidecar) {
    until("the socket", || async { sidecar.socket.exists() }).await;
    until("readiness", || async { sidecar.get("/readyz").await.0 == 200 }).await;
}

#[tokio::test]
async fn serves_keys_after_the_first_sync_and_acknowledges_what_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let b = two_versions(KeyType::HmacSha256);
    vault.set_bundle(json_of(&b));
    let clock = ManualClock::at(T0);
    let mut config = config(dir.path(), &vault);
    config.vault.namespace = Some("team-a".into());
    let sidecar = Sidecar::start(config, &clock);
    ready(&sidecar).await;
    assert_eq!(vault.state().namespace.as_deref(), Some("team-a"));
    let (status, keys) = sidecar.get("/v1/keys/api").await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["signing"]["version"], 1);
    assert_eq!(keys["verifying"][1]["state"], "scheduled");
    let ack = "held=api%3A2%3Akid-2-";
    until("an acknowledging long-poll", || async {
        vault.state().queries.iter().any(|q| q.contains(ack) && q.contains("wait=2") && q.contains(&b.revision))
    })
    .await;
    let queries = vault.state().queries.clone();
    assert!(queries[0].starts_with("instance=pod-1&boot="), "{queries:?}");
    // One boot id per process, in every poll.
    let boot = |q: &String| q.split('&').find(|p| p.starts_with("boot=")).map(str::to_string);
    assert!(boot(&queries[0]).is_some_and(|b| b.len() == "boot=".len() + 16), "{queries:?}");
    assert!(queries.iter().all(|q| boot(q) == boot(&queries[0])), "{queries:?}");
    // After the activation instant, version 2 signs; after v1's expiry it is gone.
    // (The clock jumps: the next sync, within the long-poll's 2 s, keeps
    // the sidecar inside its signing bound.)
    clock.set(T0 + 2_000);
    until("version 2 signing", || async { sidecar.get("/v1/keys/api").await.1["signing"]["version"] == 2 }).await;
    clock.set(T0 + 5_000);
    let (_, later) = sidecar.get("/v1/keys/api").await;
    assert_eq!(later["verifying"].as_array().map(Vec::len), Some(1));
    assert_eq!(sidecar.get("/v1/keys/api/versions/1").await.1["error"]["code"], "version_expired");
    assert_eq!(sidecar.get("/v1/keys/nope").await.0, 404);
    assert_eq!(sidecar.get("/v1/keys/api?format=xml").await.1["error"]["code"], "format_invalid");
    sidecar.stop().await;
}

#[tokio::test]
async fn several_addresses_fail_over_and_a_heartbeat_asked_for_rides_on_the_next_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let clock = ManualClock::at(T0);
    let mut config = config(dir.path(), &vault);
    // The first node refuses connections: the sidecar moves to the next.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    config.vault.addr = format!("{dead_addr}, {}", vault.addr);
    let sidecar = Sidecar::start(config, &clock);
    ready(&sidecar).await;
    let heartbeat = |q: &String| q.split('&').find(|p| p.starts_with("heartbeat=")).map(str::to_string);
    assert!(vault.state().queries.iter().all(|q| heartbeat(q).as_deref() == Some("heartbeat=false")));
    vault.state().ask_heartbeat = true;
    // Wakes the waiting long-poll with the same bundle: its answer asks.
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    until("a poll carrying the heartbeat", || async {
        vault.state().queries.iter().any(|q| heartbeat(q).as_deref() == Some("heartbeat=true"))
    })
    .await;
    // Once: the polls after it carry none.
    until("a poll after the heartbeat", || async {
        let queries = vault.state().queries.clone();
        let at = queries.iter().position(|q| heartbeat(q).as_deref() == Some("heartbeat=true"));
        at.is_some_and(|at| queries[at + 1..].iter().any(|q| heartbeat(q).as_deref() == Some("heartbeat=false")))
    })
    .await;
    sidecar.stop().await;
}

#[tokio::test]
async fn an_engine_older_than_heartbeats_is_polled_without_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    vault.state().old_engine = true;
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    until("a few polls", || async { vault.state().queries.len() >= 4 }).await;
    let queries = vault.state().queries.clone();
    assert!(queries[0].contains("heartbeat="), "the first poll offers it: {queries:?}");
    assert!(queries[1..].iter().all(|q| !q.contains("heartbeat=")), "{queries:?}");
    sidecar.stop().await;
}

#[tokio::test]
async fn requests_without_the_guard_header_or_with_big_headers_or_bodies_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0));
    ready(&sidecar).await;
    let mut stream = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    stream.write_all(b"GET /v1/keys/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("request_header_missing"), "{answer}");
    // Headers over `socket.max_header_bytes` (8 KiB here) get a JSON 431;
    // far over it, the connection's read buffer cuts them off first.
    for (size, json_error) in [(10_000, true), (40_000, false)] {
        let mut stream = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
        let request = format!(
            "GET /v1/keys/api HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(size)
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        if json_error {
            assert!(read.is_ok() && answer.starts_with("HTTP/1.1 431"), "{size}: {read:?} {answer}");
            assert!(answer.contains("\"code\":\"headers_too_large\""), "{size}: {answer}");
        } else {
            // Closed with the request unread: a bare 431, or a reset that
            // overtakes it.
            assert!(answer.starts_with("HTTP/1.1 431") || read.is_err(), "{size}: {read:?} {answer}");
            assert!(!answer.contains("HTTP/1.1 200"), "{size}: {answer}");
        }
    }
    let (status, _) = sidecar.get("/v1/keys/api").await;
    assert_eq!(status, 200, "requests of ordinary size are served");
    let big = json!({"claims": {"pad": "x".repeat(70_000)}});
    let (status, error) = sidecar.call("POST", "/v1/jwt/api/sign", Some(big)).await;
    assert_eq!((status, error["error"]["code"].clone()), (413, json!("body_too_large")));
    // Refused, the connection is not used again (a body past the drain
    // bound is left unread and cannot be told from a next request): the
    // answer says it ends, so a client's keep-alive pool does not send its
    // next request into a closed socket.
    let answer = post_whole(&sidecar.socket, "/v1/mac/api", 70_000).await.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 413") && answer.contains("connection: close"), "{answer}");
    // A body several socket buffers long is read to its end before the 413
    // goes out: the client finishes writing it, then reads the answer,
    // rather than meeting a closed socket mid-write.
    let answer = post_whole(&sidecar.socket, "/v1/mac/api", 900_000).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A client that waits for "100 Continue" is refused before it sends.
    let mut stream = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    let head = "POST /v1/mac/api HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\nExpect: 100-continue\r\n\
                Content-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write the head");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413") && !answer.contains("100 Continue"), "{answer}");
    sidecar.stop().await;
}

/// Writes a POST with a body of `size` bytes whole (failing if the sidecar
/// stops reading it first), then reads the answer to its end.
async fn post_whole(socket: &std::path::Path, path: &str, size: usize) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.expect("connect");
    let body = "x".repeat(size);
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {size}\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes()).await.expect("the whole request is taken");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("the answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn half_sent_bodies_time_out_hang_ups_are_not_413_and_connections_are_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let mut config = config(dir.path(), &vault);
    config.socket.body_timeout_secs = 1;
    config.socket.max_connections = 4;
    let sidecar = Sidecar::start(config, &ManualClock::at(T0));
    ready(&sidecar).await;
    let head = "POST /v1/jwt/api/sign HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\nContent-Length: 100\r\n\r\n{";
    // A body that never finishes: 408 after body_timeout_secs.
    let mut slow = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    slow.write_all(head.as_bytes()).await.expect("write");
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut answer)).await;
    assert!(read.is_ok() && answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"), "{answer}");
    // A caller that hangs up mid-body is not answered or counted as 413.
    let mut gone = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    gone.write_all(head.as_bytes()).await.expect("write");
    gone.shutdown().await.expect("hang up");
    until("the hang-up counted", || async {
        sidecar.metrics().await.contains("requests_total{route=\"jwt_sign\",status=\"400\"} 1")
    })
    .await;
    assert!(!sidecar.metrics().await.contains("status=\"413\""));
    // Four idle connections fill the cap; a fifth is closed at once.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect"));
    }
    let mut fifth = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), fifth.read_to_end(&mut rest)).await;
    assert!(closed.is_ok() && rest.is_empty(), "the fifth connection is closed unanswered: {closed:?} {rest:?}");
    drop(idle);
    until("room again", || async {
        match SocketClient::connect(&sidecar.socket).await {
            Ok(mut client) => client.send("GET", "/healthz", None).await.is_ok_and(|(s, _)| s == 200),
            Err(_) => false,
        }
    })
    .await;
    sidecar.stop().await;
}

#[tokio::test]
async fn vault_down_keeps_serving_and_readiness_follows_the_cache_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::Ed25519)));
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    vault.state().down = true;
    until("a counted sync error", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"status\"}") > 0
    })
    .await;
    assert_eq!(sidecar.get("/v1/keys/api").await.0, 200);
    clock.advance(601);
    assert_eq!(sidecar.get("/readyz").await.0, 503);
    let (status, keys) = sidecar.get("/v1/keys/api").await;
    assert_eq!((status, keys["signing"]["version"].clone()), (200, json!(1)));
    vault.state().down = false;
    ready(&sidecar).await;
    sidecar.stop().await;
}

#[tokio::test]
async fn rolled_back_or_corrupted_bundles_are_refused_and_the_old_one_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let v1 = version(KeyType::HmacSha256, 1, Some(0), None);
    let v2 = version(KeyType::HmacSha256, 2, Some(T0 + 100), None);
    let newer = bundle("web", vec![("api", KeyType::HmacSha256, 2, vec![v1.clone(), v2])]);
    vault.set_bundle(json_of(&newer));
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0));
    ready(&sidecar).await;
    let older = bundle("web", vec![("api", KeyType::HmacSha256, 1, vec![v1])]);
    vault.set_bundle(json_of(&older));
    until("the rollback refused", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"invalid\"}") > 0
    })
    .await;
    assert_eq!(sidecar.get("/v1/keyrings").await.1["revision"], json!(newer.revision));
    // Back to the good bundle (unchanged for the sidecar), then a corrupted one.
    vault.set_bundle(json_of(&newer));
    let queries = vault.state().queries.len();
    until("two quiet syncs", || async { vault.state().queries.len() >= queries + 2 }).await;
    let refused = counter(&sidecar.metrics().await, "sync_errors_total{kind=\"invalid\"}");
    let mut corrupted = json_of(&newer);
    corrupted["keyrings"]["api"]["versions"][1]["kid"] = json!("forged");
    corrupted["revision"] = json!("00000000000000000000000000000bad");
    vault.set_bundle(corrupted);
    until("the corruption refused", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"invalid\"}") > refused
    })
    .await;
    let (_, keys) = sidecar.get("/v1/keys/api").await;
    assert_eq!(keys["revision"], json!(newer.revision));
    assert_eq!(keys["verifying"][1]["kid"], json!("kid-2-hmac-sha256"));
    sidecar.stop().await;
}

#[tokio::test]
async fn a_refused_token_leads_to_a_new_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0));
    ready(&sidecar).await;
    assert_eq!(vault.state().logins, 1);
    vault.state().tokens.clear();
    until("a second login", || async { vault.state().logins == 2 }).await;
    let before = vault.state().queries.len();
    until("syncing again", || async { vault.state().queries.len() > before + 1 }).await;
    assert!(counter(&sidecar.metrics().await, "sync_errors_total{kind=\"denied\"}") > 0);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_changed_token_file_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    vault.state().tokens.insert("hvs.first".into());
    let mut config = config(dir.path(), &vault);
    std::fs::write(dir.path().join("token"), "hvs.first\n").expect("token");
    config.auth =
        AuthConfig { method: AuthMethod::Token, token_file: Some(dir.path().join("token")), ..AuthConfig::default() };
    let sidecar = Sidecar::start(config, &ManualClock::at(T0));
    ready(&sidecar).await;
    vault.state().tokens = ["hvs.second".to_string()].into();
    std::fs::write(dir.path().join("token"), "hvs.second\n").expect("token");
    // The fake records only requests with an accepted token.
    let before = vault.state().queries.len();
    until("syncing with the new token", || async { vault.state().queries.len() > before + 1 }).await;
    assert_eq!(sidecar.get("/v1/keys/api").await.0, 200);
    sidecar.stop().await;
}

#[tokio::test]
async fn watch_returns_promptly_after_a_new_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let v1 = version(KeyType::Ed25519, 1, Some(0), None);
    vault.set_bundle(json_of(&bundle("web", vec![("api", KeyType::Ed25519, 1, vec![v1.clone()])])));
    let sidecar = Arc::new(Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0)));
    ready(&sidecar).await;
    let state = sidecar.get("/v1/keys/api").await.1["state"].as_str().unwrap_or_default().to_string();
    let (_, unchanged) = sidecar.get(&format!("/v1/keys/api/watch?after={state}&timeout=0")).await;
    assert_eq!(unchanged["changed"], false);
    let watcher = {
        let sidecar = sidecar.clone();
        tokio::spawn(async move { sidecar.get(&format!("/v1/keys/api/watch?after={state}&timeout=60")).await })
    };
    let started = std::time::Instant::now();
    let v2 = version(KeyType::Ed25519, 2, Some(T0 + 600), None);
    vault.set_bundle(json_of(&bundle("web", vec![("api", KeyType::Ed25519, 1, vec![v1, v2])])));
    let (status, changed) =
        tokio::time::timeout(Duration::from_secs(20), watcher).await.expect("prompt").expect("join");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!((status, changed["changed"].clone()), (200, json!(true)));
    assert_eq!(changed["verifying"][1]["version"], 2);
    let Ok(sidecar) = Arc::try_unwrap(sidecar) else { panic!("the watcher still holds the sidecar") };
    sidecar.stop().await;
}

#[tokio::test]
async fn a_restarted_sidecar_serves_from_its_cache_while_vault_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::EcdsaP256)));
    let clock = ManualClock::at(T0);
    let first = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&first).await;
    first.stop().await;
    let mode = std::fs::metadata(dir.path().join("cache/bundle.bin")).expect("cache written").mode() & 0o777;
    assert_eq!(mode, 0o600);
    vault.state().down = true;
    let second = Sidecar::start(config(dir.path(), &vault), &clock);
    until("the socket", || async { second.socket.exists() }).await;
    let (status, keys) = second.get("/v1/keys/api").await;
    assert_eq!((status, keys["signing"]["version"].clone()), (200, json!(1)));
    assert_eq!(second.get("/readyz").await.0, 200);
    second.stop().await;
}

#[tokio::test]
async fn callers_off_the_allow_list_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let me = std::fs::metadata(dir.path()).expect("meta").uid();
    let mut config = config(dir.path(), &vault);
    config.socket.allowed_uids = vec![me.wrapping_add(1)];
    let refused = Sidecar::start(config.clone(), &ManualClock::at(T0));
    until("the socket", || async { refused.socket.exists() }).await;
    let (status, error) = refused.get("/v1/keys/api").await;
    assert_eq!((status, error["error"]["code"].clone()), (403, json!("peer_not_allowed")));
    refused.stop().await;
    config.socket.allowed_uids = vec![me];
    let allowed = Sidecar::start(config, &ManualClock::at(T0));
    ready(&allowed).await;
    assert_eq!(allowed.get("/v1/keys/api").await.0, 200);
    allowed.stop().await;
}

#[tokio::test]
async fn jwts_sign_verify_and_publish_a_jwks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::Rsa2048)));
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    let (status, signed) = sidecar
        .call("POST", "/v1/jwt/api/sign", Some(json!({"claims": {"sub": "u1", "aud": "svc"}, "ttl": 300})))
        .await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(signed["alg"], "RS256");
    let token = signed["token"].clone();
    let (status, verified) =
        sidecar.call("POST", "/v1/jwt/api/verify", Some(json!({"token": token, "audience": "svc"}))).await;
    assert_eq!((status, verified["claims"]["sub"].clone()), (200, json!("u1")), "{verified}");
    let (status, wrong) =
        sidecar.call("POST", "/v1/jwt/api/verify", Some(json!({"token": token, "audience": "other"}))).await;
    assert_eq!((status, wrong["error"]["code"].clone()), (401, json!("token_audience")));
    clock.advance(400);
    let (_, expired) = sidecar.call("POST", "/v1/jwt/api/verify", Some(json!({"token": token, "leeway": 0}))).await;
    assert_eq!(expired["error"]["code"], "token_expired");
    let (_, jwks) = sidecar.get("/v1/jwks/api").await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let metrics = sidecar.metrics().await;
    assert!(metrics.contains("requests_total{route=\"jwt_sign\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("keyring_signing_version{keyring=\"api\"} 1"), "{metrics}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_newer_plugins_extra_fields_are_accepted_and_a_newer_format_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let good = two_versions(KeyType::Ed25519);
    // As a newer plugin would send it: fields this sidecar does not know,
    // at every level, under the same revision.
    let mut newer = json_of(&good);
    newer["future_top"] = json!({"x": 1});
    newer["keyrings"]["api"]["future_keyring"] = json!([1, 2]);
    newer["keyrings"]["api"]["limits"]["future_limit"] = json!(true);
    newer["keyrings"]["api"]["versions"][0]["future_version"] = json!("v");
    vault.set_bundle(newer);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0));
    ready(&sidecar).await;
    assert_eq!(sidecar.get("/v1/keys/api").await.1["revision"], json!(good.revision));
    // An incompatible format: refused, with a clear reason; the last good
    // bundle stays.
    let mut incompatible = json_of(&good);
    incompatible["format"] = json!(lockstep_model::bundle::FORMAT + 1);
    incompatible["revision"] = json!("another");
    vault.set_bundle(incompatible);
    until("the newer format refused", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"invalid\"}") > 0
    })
    .await;
    let (status, keys) = sidecar.get("/v1/keys/api").await;
    assert_eq!((status, keys["revision"].clone()), (200, json!(good.revision)));
    sidecar.stop().await;
}

#[tokio::test]
async fn tokens_live_no_longer_than_max_token_ttl_and_a_cut_off_sidecar_stops_signing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::Ed25519)));
    let clock = ManualClock::at(T0);
    let mut config = config(dir.path(), &vault);
    config.cache.max_age_secs = 100_000;
    let sidecar = Sidecar::start(config, &clock);
    ready(&sidecar).await;
    let sign = |body: Value| sidecar.call("POST", "/v1/jwt/api/sign", Some(body));
    // No ttl: the token lives max_token_ttl (300 s).
    let (status, signed) = sign(json!({"claims": {"sub": "u"}})).await;
    assert_eq!(status, 200, "{signed}");
    let claims = decode_claims(signed["token"].as_str().unwrap_or_default());
    assert_eq!(claims["exp"].as_i64().zip(claims["iat"].as_i64()).map(|(e, i)| e - i), Some(300), "{claims}");
    for (body, code, field) in [
        (json!({"claims": {}, "ttl": 301}), "ttl_too_long", "\"ttl\""),
        (json!({"claims": {"exp": T0 + 1_000}}), "ttl_too_long", "\"exp\""),
        // An `iat` in the future never stretches a token past the limit.
        (json!({"claims": {"iat": T0 + 100_000_000}, "ttl": 300}), "ttl_too_long", "\"ttl\""),
        (json!({"claims": {"iat": T0 + 100_000_000}}), "ttl_too_long", "\"iat\""),
        (json!({"claims": {"iat": T0 + 100_000_000, "exp": T0 + 100_000_100}}), "ttl_too_long", "\"exp\""),
        (json!({"claims": {"exp": "tomorrow"}}), "claim_not_numeric", "\"exp\""),
        (json!({"claims": {"nbf": "now"}}), "claim_not_numeric", "\"nbf\""),
        // Lifetimes no token is valid in, and a caller's exp beside a ttl.
        (json!({"claims": {}, "ttl": 0}), "lifetime_invalid", "\"ttl\""),
        (json!({"claims": {"exp": T0 - 1}}), "lifetime_invalid", "\"exp\""),
        (json!({"claims": {"exp": T0}}), "lifetime_invalid", "\"exp\""),
        (json!({"claims": {"iat": T0 - 1_000}, "ttl": 300}), "lifetime_invalid", "\"iat\""),
        (json!({"claims": {"nbf": T0 + 200}, "ttl": 100}), "lifetime_invalid", "\"nbf\""),
        (json!({"claims": {"iat": -1}}), "lifetime_invalid", "\"iat\""),
        (json!({"claims": {"exp": T0 + 100}, "ttl": 100}), "lifetime_invalid", "\"exp\""),
        (json!({"claims": {"pad": "x".repeat(20_000)}}), "token_too_large", "bytes"),
    ] {
        let (status, refused) = sign(body).await;
        assert_eq!((status, refused["error"]["code"].clone()), (400, json!(code)), "{refused}");
        assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{refused}");
    }

    // Cut off from the coordinator: signing goes on until the bound
    // (last sync + prepublish 600 + grace 1200 - max_token_ttl 300 - skew 5),
    // then stops; verification goes on.
    vault.state().down = true;
    until("a counted sync error", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"status\"}") > 0
    })
    .await;
    clock.advance(1_494);
    let (status, last) = sign(json!({"claims": {"sub": "u"}})).await;
    assert_eq!(status, 200, "still within the bound: {last}");
    let token = last["token"].clone();
    let (_, keys) = sidecar.get("/v1/keys/api?private=true").await;
    assert!(keys["signing"]["material"]["private_key"].is_string(), "{keys}");
    let bound = keys["sign_until"].as_i64().expect("the bound is shown");
    assert_eq!(bound, T0 + 1_495, "{keys}");
    clock.advance(2);
    let (status, stopped) = sign(json!({"claims": {}})).await;
    assert_eq!((status, stopped["error"]["code"].clone()), (503, json!("signing_bound_passed")), "{stopped}");
    // Apps that sign with the keys themselves are told to stop too: no
    // signing version, no private key; the verification set stays, and a
    // watch that held the earlier state hears of it.
    let (status, keys) = sidecar.get("/v1/keys/api?private=true").await;
    assert_eq!((status, keys["signing"].clone()), (200, Value::Null), "{keys}");
    let verifying = keys["verifying"].as_array().cloned().unwrap_or_default();
    assert!(!verifying.is_empty() && verifying.iter().all(|v| v["material"]["private_key"].is_null()), "{keys}");
    let (_, one) = sidecar.get(&format!("/v1/keys/api/versions/{}?private=true", last["version"])).await;
    assert!(one["material"]["public_key"].is_string() && one["material"]["private_key"].is_null(), "{one}");
    let earlier = keys["state"].as_str().unwrap_or_default().trim_end_matches(".stopped").to_string();
    let (_, watched) = sidecar.get(&format!("/v1/keys/api/watch?after={earlier}&timeout=5")).await;
    assert_eq!((watched["changed"].clone(), watched["signing"].clone()), (json!(true), Value::Null), "{watched}");
    assert_eq!(sidecar.get("/readyz").await.0, 503);
    assert!(sidecar.metrics().await.contains("lockstep_sidecar_signing_stopped{keyring=\"api\"} 1"));
    let (status, verified) = sidecar.call("POST", "/v1/jwt/api/verify", Some(json!({"token": token}))).await;
    assert_eq!(status, 200, "verification goes on: {verified}");
    // Back in touch: it signs again.
    vault.state().down = false;
    until("signing again", || async { sign(json!({"claims": {}})).await.0 == 200 }).await;
    sidecar.stop().await;
}

fn decode_claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[tokio::test]
async fn encrypt_decrypt_rewrap_mac_and_raw_signatures_through_the_socket() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let mut both = two_versions(KeyType::Aes256Gcm);
    let hmac = two_versions(KeyType::HmacSha256).keyrings.remove("api").expect("hmac");
    let ed = two_versions(KeyType::Ed25519).keyrings.remove("api").expect("ed25519");
    both.keyrings.insert("mac".into(), hmac);
    both.keyrings.insert("ed".into(), ed);
    both.revision = lockstep_model::bundle::revision(both.mode, &both.keyrings);
    vault.set_bundle(json_of(&both));
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    let call = |path: &'static str, body: Value| sidecar.call("POST", path, Some(body));

    let secret = b64(b"4111 1111 1111 1111");
    let (status, sealed) =
        call("/v1/encrypt/api", json!({"plaintext": secret, "associated_data": b64(b"order-7")})).await;
    assert_eq!(status, 200, "{sealed}");
    let ciphertext = sealed["ciphertext"].as_str().unwrap_or_default().to_string();
    assert!(ciphertext.starts_with("lockstep:v1:") && !ciphertext.contains(&secret), "{sealed}");
    let (status, opened) =
        call("/v1/decrypt/api", json!({"ciphertext": ciphertext, "associated_data": b64(b"order-7")})).await;
    assert_eq!((status, opened["plaintext"].clone(), opened["version"].clone()), (200, json!(secret), json!(1)));
    let (status, wrong) = call("/v1/decrypt/api", json!({"ciphertext": ciphertext})).await;
    assert_eq!((status, wrong["error"]["code"].clone()), (400, json!("ciphertext_invalid")), "{wrong}");
    assert!(!wrong.to_string().contains(&secret));
    // After the handover, a rewrap moves the ciphertext to version 2.
    // (The clock jumps past the signing bound of the last sync: the next
    // sync, seconds later, lifts it.)
    clock.set(T0 + 2_000);
    let rewrap = || call("/v1/rewrap/api", json!({"ciphertext": ciphertext, "associated_data": b64(b"order-7")}));
    until("a sync after the jump", || async { rewrap().await.0 == 200 }).await;
    let (_, rewrapped) = rewrap().await;
    assert!(rewrapped["ciphertext"].as_str().is_some_and(|c| c.starts_with("lockstep:v2:")), "{rewrapped}");
    let (status, batch) = call(
        "/v1/decrypt/api",
        json!({"batch": [{"ciphertext": ciphertext, "associated_data": b64(b"order-7")}, {"ciphertext": "lockstep:v7:AAAA"}]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["batch"][0]["plaintext"], json!(secret));
    assert_eq!(batch["batch"][1]["error"]["code"], "version_unknown");

    let (status, tagged) = call("/v1/mac/mac", json!({"data": b64(b"webhook body")})).await;
    assert_eq!(status, 200, "{tagged}");
    let (status, checked) =
        call("/v1/mac/mac/verify", json!({"data": b64(b"webhook body"), "mac": tagged["mac"]})).await;
    assert_eq!((status, checked["valid"].clone()), (200, json!(true)), "{checked}");
    let (status, forged) =
        call("/v1/mac/mac/verify", json!({"data": b64(b"webhook bodY"), "mac": tagged["mac"]})).await;
    assert_eq!((status, forged["error"]["code"].clone()), (401, json!("mac_invalid")));

    let (status, signed) = call("/v1/sign/ed", json!({"data": b64(b"artifact digest")})).await;
    assert_eq!((status, signed["alg"].clone()), (200, json!("EdDSA")), "{signed}");
    let (status, verified) =
        call("/v1/sign/ed/verify", json!({"data": b64(b"artifact digest"), "signature": signed["signature"]})).await;
    assert_eq!((status, verified["kid"].clone()), (200, signed["kid"].clone()), "{verified}");
    let (status, refused) = call("/v1/encrypt/ed", json!({"plaintext": b64(b"x")})).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("keyring_wrong_type")));
    // Refused as a whole, whatever the items (schemathesis found a batch on
    // an HMAC keyring answered 200 with per-item errors).
    let (status, refused) = call("/v1/encrypt/mac", json!({"batch": [{"plaintext": b64(b"x")}, {}]})).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("keyring_wrong_type")), "{refused}");
    // Named fields only: an array is not read as a struct by position.
    let (status, refused) = call("/v1/encrypt/api", json!({"batch": [{"plaintext": b64(b"x")}, [null]]})).await;
    assert_eq!(
        (status, refused["error"]["code"].clone(), refused["error"]["message"].clone()),
        (400, json!("batch_invalid"), json!("batch item 1: expected a JSON object"))
    );
    let (status, refused) =
        call("/v1/encrypt/api", json!({"batch": [{"plaintext": b64(b"x")}], "plaintext": "eA=="})).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("batch_invalid")), "{refused}");
    let (status, refused) = call("/v1/mac/mac", json!([b64(b"x")])).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("body_invalid")), "{refused}");
    let (status, missing) = call("/v1/encrypt/api", json!({"associated_data": b64(b"x")})).await;
    assert_eq!((status, missing["error"]["message"].clone()), (400, json!("field \"plaintext\" is required")));
    let metrics = sidecar.metrics().await;
    assert!(metrics.contains("requests_total{route=\"encrypt\",status=\"200\"} 1"), "{metrics}");
    assert!(metrics.contains("requests_total{route=\"mac_verify\",status=\"401\"} 1"), "{metrics}");
    // By operation and result: the error code, and each item of a batch.
    for series in [
        "results_total{route=\"mac_verify\",result=\"mac_invalid\"} 1",
        "results_total{route=\"mac_verify\",result=\"ok\"} 1",
        "results_total{route=\"encrypt\",result=\"keyring_wrong_type\"} 2",
        "results_total{route=\"decrypt_item\",result=\"version_unknown\"} 1",
        "results_total{route=\"decrypt_item\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing in\n{metrics}");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn webhooks_are_signed_with_every_version_a_receiver_may_hold_and_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    let payload = "eyJldmVudCI6InBhaWQifQ==";
    let (status, signed) =
        sidecar.call("POST", "/v1/webhook/api/sign", Some(json!({"payload": payload, "id": "msg_42"}))).await;
    assert_eq!(status, 200, "{signed}");
    assert_eq!(
        (signed["webhook-id"].clone(), signed["webhook-timestamp"].clone()),
        (json!("msg_42"), json!(T0.to_string()))
    );
    // Version 1 signs and version 2 is published: one signature each.
    let signatures = signed["webhook-signature"].as_str().unwrap_or_default().to_string();
    assert_eq!(signatures.split(' ').filter(|s| s.starts_with("v1,")).count(), 2, "{signed}");
    let headers = json!({"Webhook-Id": "msg_42", "Webhook-Timestamp": T0.to_string(), "Webhook-Signature": signatures});
    let verify = |headers: Value, payload: &str| {
        sidecar.call("POST", "/v1/webhook/api/verify", Some(json!({"payload": payload, "headers": headers})))
    };
    let (status, checked) = verify(headers.clone(), payload).await;
    assert_eq!((status, checked["version"].clone()), (200, json!(1)), "{checked}");
    let (status, forged) = verify(headers.clone(), "eyJldmVudCI6InJlZnVuZCJ9").await;
    assert_eq!((status, forged["error"]["code"].clone()), (401, json!("webhook_signature_invalid")));
    clock.advance(301);
    let (status, late) = verify(headers, payload).await;
    assert_eq!((status, late["error"]["code"].clone()), (401, json!("webhook_timestamp")));
    let body = json!({"payload": payload, "timestamp": -1});
    let (status, refused) = sidecar.call("POST", "/v1/webhook/api/sign", Some(body)).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("timestamp_invalid")), "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("\"timestamp\"")), "{refused}");
    sidecar.stop().await;
}

#[tokio::test]
async fn the_socket_api_describes_itself_and_every_described_route_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0));
    ready(&sidecar).await;
    let (status, doc) = sidecar.get("/v1/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    assert!(paths.contains_key("/v1/webhook/{keyring}/verify"), "{doc}");
    for (path, item) in &paths {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m.to_uppercase()) {
            let concrete = path.replace("{keyring}", "nope").replace("{version}", "1").replace("{kid}", "k");
            let body = (method == "POST").then(|| json!({}));
            let (_, answer) = sidecar.call(&method, &concrete, body).await;
            assert_ne!(answer["error"]["code"], "route_not_found", "{method} {path}");
            assert_ne!(answer["error"]["code"], "method_not_allowed", "{method} {path}");
        }
    }
    // A path that names no route is a 404, dot segments included; a route
    // asked with a method it does not take is a 405.
    for path in ["/v1/keys/../../etc/passwd", "/v1/keys/./hooks", "/v1/keys/hooks/versions/1/x", "/v1/jwks/a/b"] {
        let (status, answer) = sidecar.get(path).await;
        assert_eq!((status, answer["error"]["code"].clone()), (404, json!("route_not_found")), "{path}");
    }
    let (status, answer) = sidecar.call("POST", "/v1/keys/hooks", Some(json!({}))).await;
    assert_eq!((status, answer["error"]["code"].clone()), (405, json!("method_not_allowed")));
    sidecar.stop().await;
}

#[tokio::test]
async fn a_verify_only_pool_never_signs_even_with_an_hmac_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let mut verify_only = two_versions(KeyType::HmacSha256);
    verify_only.mode = lockstep_model::bundle::PoolMode::Verify;
    verify_only.revision = lockstep_model::bundle::revision(verify_only.mode, &verify_only.keyrings);
    vault.set_bundle(json_of(&verify_only));
    let clock = ManualClock::at(T0);
    let sidecar = Sidecar::start(config(dir.path(), &vault), &clock);
    ready(&sidecar).await;
    let (status, refused) =
        sidecar.call("POST", "/v1/jwt/api/sign", Some(json!({"claims": {"sub": "u1"}, "ttl": 60}))).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("verify_only")), "{refused}");
    let (status, refused) = sidecar.call("POST", "/v1/mac/api", Some(json!({"data": "eA=="}))).await;
    assert_eq!((status, refused["error"]["code"].clone()), (400, json!("verify_only")), "{refused}");
    // Verification is still open to it: a bad token is judged, not refused.
    let (status, judged) = sidecar.call("POST", "/v1/jwt/api/verify", Some(json!({"token": "a.b.c"}))).await;
    assert_eq!((status, judged["error"]["code"].clone()), (401, json!("token_malformed")), "{judged}");
    sidecar.stop().await;
}

#[tokio::test]
async fn clock_skew_is_measured_against_the_server_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let sidecar = Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0 + 42));
    ready(&sidecar).await;
    let metrics = sidecar.metrics().await;
    assert!(metrics.contains("lockstep_sidecar_clock_skew_seconds 42"), "{metrics}");
    sidecar.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_stuck_request_no_longer_than_the_drain_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let mut config = config(dir.path(), &vault);
    config.socket.drain_timeout_secs = 2;
    let sidecar = Sidecar::start(config, &ManualClock::at(T0));
    ready(&sidecar).await;
    // A caller that sends half a request and then nothing.
    let mut stuck = tokio::net::UnixStream::connect(&sidecar.socket).await.expect("connect");
    stuck
        .write_all(
            b"POST /v1/jwt/api/sign HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    sidecar.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "shutdown took {took:?} with a 2 s drain timeout");
    drop(stuck);
}

#[tokio::test]
async fn shutdown_ends_watches_at_once_and_removes_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let sidecar = Arc::new(Sidecar::start(config(dir.path(), &vault), &ManualClock::at(T0)));
    ready(&sidecar).await;
    let state = sidecar.get("/v1/keys/api").await.1["state"].as_str().unwrap_or_default().to_string();
    let watcher = {
        let sidecar = sidecar.clone();
        tokio::spawn(async move { sidecar.get(&format!("/v1/keys/api/watch?after={state}&timeout=300")).await })
    };
    until("the watch in flight", || async { sidecar.metrics().await.contains("watches_in_flight 1") }).await;
    let _ = sidecar.stop.send(true);
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), watcher).await.expect("prompt").expect("join");
    assert_eq!((status, body["changed"].clone()), (200, json!(false)));
    let Ok(sidecar) = Arc::try_unwrap(sidecar) else { panic!("the watcher still holds the sidecar") };
    sidecar.stop().await;
}

#[tokio::test]
async fn the_file_sink_follows_key_state_while_vault_is_down_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    vault.set_bundle(json_of(&two_versions(KeyType::HmacSha256)));
    let clock = ManualClock::at(T0);
    let mut config = config(dir.path(), &vault);
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("sink dir");
    config.sink = Some(crate::config::SinkConfig { dir: files.clone(), ..crate::config::SinkConfig::default() });
    let file = files.join("api.json");
    let read = |file: &Path| -> Value {
        std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    };
    let verifying = |view: &Value| -> Vec<Value> {
        view["verifying"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect()
    };
    let sidecar = Sidecar::start(config.clone(), &clock);
    ready(&sidecar).await;
    until("the file with version 1 signing", || async { read(&file)["signing"]["version"] == 1 }).await;
    assert_eq!(verifying(&read(&file)), vec![json!(1), json!(2)], "the next version is there ahead of time");

    // Vault goes away; the files still follow each version's own times.
    vault.state().down = true;
    until("a counted sync error", || async {
        counter(&sidecar.metrics().await, "sync_errors_total{kind=\"status\"}") > 0
    })
    .await;
    clock.advance(2_000);
    until("version 2 signing in the file", || async { read(&file)["signing"]["version"] == 2 }).await;
    clock.advance(3_001);
    until("version 1 gone from the file after its expiry", || async { verifying(&read(&file)) == vec![json!(2)] })
        .await;
    sidecar.stop().await;

    // Restarted while Vault is still down: the files come from the cache.
    std::fs::remove_file(&file).expect("remove the file");
    let restarted = Sidecar::start(config, &clock);
    until("the file written from the cache", || async { read(&file)["signing"]["version"] == 2 }).await;
    restarted.stop().await;
}

#[tokio::test]
async fn socket_settings_set_when_the_socket_is_made_change_only_with_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = FakeVault::start().await;
    let old = config(dir.path(), &vault);
    let changed = |edit: fn(&mut Config)| {
        let mut new = old.clone();
        edit(&mut new);
        crate::restart_only_changed(&old, &new)
    };
    assert!(changed(|c| c.socket.mode = "0600".into()));
    assert!(changed(|c| c.socket.group = Some(4242)));
    assert!(changed(|c| c.socket.max_connections += 1));
    // What every request reads afresh is applied by a reload.
    assert!(!changed(|c| c.socket.allowed_uids = vec![4242]));
    assert!(!changed(|c| c.socket.max_body_bytes += 1));
}
