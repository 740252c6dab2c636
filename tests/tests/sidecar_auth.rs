//! Sidecar authentication and timing against a real server with the plugin
//! mounted: a JWT auth login (a key pair and a signed JWT made here with the
//! `openssl` CLI, the server's `jwt` auth method configured with the public
//! key); a Kubernetes auth login with a token a real API server minted for
//! a pod (the server's `kubernetes` auth method reviewing it against that
//! API server, see `lockstep_tests::kubecp`), refused once the pod or its
//! service account is gone, with the token file re-read at every login; a token-file token with a short renewable TTL kept alive past that
//! TTL by renewal; and the socket watch returning when a committed
//! version's activation instant passes with no new bundle (Vault stopped).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockstep_tests::jwt::{rs256_jwt, rsa_key_pair};
use lockstep_tests::kubecp::{ControlPlane, ISSUER};
use lockstep_tests::server::Server;
use lockstep_tests::sidecar::{Sidecar, socket_request, sync_errors};
use lockstep_tests::workspace_root;
use serde_json::{Value, json};

/// A server with the engine mounted (config `activation_margin` as given),
/// a 1-hour ed25519 keyring `jwt` and a sign pool `web` with its
/// least-privilege policy `sidecar-web`.
fn server(activation_margin: &str) -> Server {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server
        .write(
            "lockstep/config",
            json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s",
                   "activation_margin": activation_margin}),
        )
        .expect_status(200);
    let policy = json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
                        "max_token_ttl": "10m", "commit_timeout": "30m"});
    let created = server.write("lockstep/keys/jwt", policy);
    assert!(created.status == 200 || created.status == 204, "{created:?}");
    let made = server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"}));
    assert!(made.status == 200 || made.status == 204, "{made:?}");
    let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
        .expect("policies/lockstep-sidecar-web.hcl");
    server.request("PUT", "sys/policies/acl/sidecar-web", Some(json!({"policy": hcl}))).expect_status(204);
    server
}

fn config(dir: &Path, server: &Server, auth: &str, wait_secs: u64) -> String {
    std::fs::create_dir_all(dir.join("cache")).expect("cache dir");
    std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
    std::fs::write(dir.join("keys/web.key"), [7u8; 32]).expect("cache key");
    let d = dir.display();
    format!(
        "pool = \"web\"\ninstance = \"web-1\"\n[vault]\naddr = \"{addr}\"\nwait_secs = {wait_secs}\npoll_interval_secs = 2\n\
         backoff_min_ms = 100\nbackoff_max_secs = 2\nmax_clock_skew_secs = 2\n[auth]\n{auth}\n[socket]\npath = \"{d}/web.sock\"\n\
         [cache]\nfile = \"{d}/cache/web.bin\"\nkey_file = \"{d}/keys/web.key\"\nmax_age_secs = 600\n[log]\nlevel = \"debug\"\n",
        addr = server.address(),
    )
}

/// Wall-clock seconds: JWT claims and activation instants are wall-clock
/// times, and the test stands outside the code whose clock is injected.
#[allow(clippy::disallowed_methods)]
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("time after 1970").as_secs()
}

fn verifying_versions(sidecar: &Sidecar) -> Vec<Value> {
    let body = sidecar.get("/v1/keys/jwt").body;
    body["verifying"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect()
}

fn signing_version(sidecar: &Sidecar) -> Value {
    sidecar.get("/v1/keys/jwt").body["signing"]["version"].clone()
}

/// Enables the `jwt` auth method with a fresh RSA public key, a role
/// `lockstep-web` (`role_type=jwt`, audience `lockstep`, the pool's policy,
/// plus `role_extra`), and writes a JWT for it to `dir/web.jwt`; returns the
/// sidecar's `[auth]` settings.
fn jwt_auth(server: &Server, dir: &Path, role_extra: &Value) -> String {
    server.write("sys/auth/jwt", json!({"type": "jwt"})).expect_status(204);
    let public = rsa_key_pair(dir);
    server.write("auth/jwt/config", json!({"jwt_validation_pubkeys": [public]})).expect_status(204);
    let mut role = json!({"role_type": "jwt", "bound_audiences": ["lockstep"], "user_claim": "sub",
                          "token_policies": ["sidecar-web"], "token_no_default_policy": true});
    for (key, value) in role_extra.as_object().into_iter().flatten() {
        role[key] = value.clone();
    }
    server.write("auth/jwt/role/lockstep-web", role).expect_status(204);
    let jwt_file = dir.join("web.jwt");
    std::fs::write(&jwt_file, rs256_jwt(dir, &claims())).expect("jwt file");
    format!("method = \"jwt\"\nrole = \"lockstep-web\"\njwt_file = \"{}\"", jwt_file.display())
}

/// Claims the role accepts, valid for 10 minutes.
fn claims() -> Value {
    let now = now_secs();
    json!({"sub": "system:serviceaccount:web:web", "aud": "lockstep", "iat": now, "nbf": now - 5, "exp": now + 600})
}

#[test]
fn a_jwt_auth_login_gets_the_pools_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server("1s");
    let auth = jwt_auth(&server, dir.path(), &json!({"token_ttl": "2m"}));
    let jwt_file = dir.path().join("web.jwt");

    // A JWT signed by another key is refused: the login is really checked.
    let other = tempfile::tempdir().expect("tempdir");
    rsa_key_pair(other.path());
    let forged = rs256_jwt(other.path(), &claims());
    let refused = server.write("auth/jwt/login", json!({"role": "lockstep-web", "jwt": forged}));
    assert_eq!(refused.status, 400, "{refused:?}");

    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, &auth, 5));
    web.wait_ready();
    web.wait_until("a signing version", 30, |s| signing_version(s) == 1);
    let reply = web.get("/v1/keys/jwt");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["signing"]["kid"], reply.body["verifying"][0]["kid"], "{reply:?}");
    assert!(web.log().contains("logged in to vault"), "{}", web.log());

    // The login's token is what fetches: a rotation reaches the sidecar.
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "test"})).expect_status(200);
    web.wait_until("version 2 fetched", 30, |s| verifying_versions(s).contains(&json!(2)));
    // Vault logged a jwt login with the role's policy (the token accessor list).
    let accessors = server.list("auth/token/accessors").body["data"]["keys"].clone();
    let jwt_tokens = accessors
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| server.write("auth/token/lookup-accessor", json!({"accessor": a})).body["data"].clone())
        .filter(|d| d["path"] == "auth/jwt/login")
        .collect::<Vec<_>>();
    assert_eq!(jwt_tokens.len(), 1, "one jwt login: {jwt_tokens:?}");
    assert_eq!(jwt_tokens[0]["policies"], json!(["sidecar-web"]), "{jwt_tokens:?}");
    // The JWT does not reach the (debug-level) log.
    let jwt = std::fs::read_to_string(&jwt_file).expect("jwt");
    assert!(!web.log().contains(jwt.trim()), "the JWT leaked into the log");
}

#[test]
fn a_token_with_a_short_ttl_is_renewed_and_keeps_syncing_past_it() {
    const TTL: u64 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server("1s");
    let reply = server.write(
        "auth/token/create",
        json!({"policies": ["sidecar-web"], "ttl": format!("{TTL}s"), "explicit_max_ttl": "10m",
               "renewable": true, "no_default_policy": true}),
    );
    let created = Instant::now();
    let token = reply.body["auth"]["client_token"].as_str().expect("a token").to_string();
    assert_eq!(reply.body["auth"]["lease_duration"], TTL, "{reply:?}");
    let file = dir.path().join("web.token");
    std::fs::write(&file, &token).expect("token file");
    let auth = format!("method = \"token\"\ntoken_file = \"{}\"", file.display());
    // A 2 s long-poll: the sync loop asks for the token at least every ~4 s.
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, &auth, 2));
    web.wait_ready();
    assert_eq!(signing_version(&web), 1);

    // Past the original TTL (with a margin), the token must still be valid.
    let past = Duration::from_secs(TTL + 5);
    std::thread::sleep(past.saturating_sub(created.elapsed()));
    let lookup = server.write("auth/token/lookup", json!({"token": token}));
    assert_eq!(lookup.status, 200, "the token expired: it was not renewed; {lookup:?}\n{}", web.log());
    assert!(lookup.body["data"]["last_renewal_time"].as_u64().is_some_and(|t| t > 0), "{lookup:?}");
    assert!(lookup.body["data"]["ttl"].as_u64().is_some_and(|t| t > 0), "{lookup:?}");
    assert!(web.log().contains("token renewed"), "{}", web.log());

    // And the sidecar still fetches with it: a rotation after the original TTL arrives.
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "after the ttl"})).expect_status(200);
    web.wait_until("version 2 fetched with the renewed token", 20, |s| verifying_versions(s).contains(&json!(2)));
    let metrics = web.get("/metrics").body;
    let metrics = metrics.as_str().unwrap_or_default();
    assert_eq!(sync_errors(metrics, "denied"), 0, "a sync was refused: {metrics}");
    assert!(!web.log().contains(&token), "the token leaked into the log");
}

#[test]
fn the_watch_returns_at_an_activation_instant_without_a_new_bundle() {
    const MARGIN: i64 = 15;
    let dir = tempfile::tempdir().expect("tempdir");
    // A commit activates the new version MARGIN seconds later.
    let server = server(&format!("{MARGIN}s"));
    let token =
        server.write("auth/token/create", json!({"policies": ["sidecar-web"], "ttl": "1h", "no_default_policy": true}));
    let file = dir.path().join("web.token");
    std::fs::write(&file, token.body["auth"]["client_token"].as_str().expect("a token")).expect("token file");
    let auth = format!("method = \"token\"\ntoken_file = \"{}\"", file.display());
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, &auth, 2));
    web.wait_ready();
    web.wait_until("a signing version", 30, |s| signing_version(s) == 1);
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "test"})).expect_status(200);

    // The sidecar acknowledges, the coordinator commits: version 2 gets an
    // activation instant, still in the future.
    let committed = |s: &Sidecar| {
        let body = s.get("/v1/keys/jwt").body;
        body["verifying"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["version"] == 2)
            .and_then(|v| v["not_before"].as_i64())
    };
    web.wait_until("version 2 committed", 40, |s| committed(s).is_some());
    let not_before = committed(&web).expect("committed");
    let view = web.get("/v1/keys/jwt").body;
    assert_eq!(view["signing"]["version"], 1, "{view}");
    let state = view["state"].as_str().expect("state").to_string();

    // No bundle can arrive any more.
    drop(server);
    let now = i64::try_from(now_secs()).expect("now");
    assert!(not_before - now >= 2, "too little time left before the activation ({} s) to test", not_before - now);
    let started = Instant::now();
    let reply = socket_request(web.socket(), "GET", &format!("/v1/keys/jwt/watch?after={state}&timeout=60"), None);
    let took = started.elapsed();
    let finished = i64::try_from(now_secs()).expect("now");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["changed"], true, "{reply:?}");
    assert_eq!(reply.body["signing"]["version"], 2, "{reply:?}");
    assert_ne!(reply.body["state"], json!(state));
    assert!(finished >= not_before, "returned before the activation ({finished} < {not_before})");
    assert!(finished <= not_before + 3, "returned {} s after the activation", finished - not_before);
    assert!(took >= Duration::from_secs(1), "returned at once ({took:?}): not waiting for the activation");
}

#[test]
fn an_expiring_jwt_login_token_is_replaced_by_a_new_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server("1s");
    // The token expires unless renewed, and renewals cannot go past 12 s:
    // then only a new login gives a token. (Whether a renewal happens first
    // depends on when the sync loop next asks for the token: it is asked
    // only at each sync, so a 6 s TTL may pass between two asks.)
    let auth = jwt_auth(&server, dir.path(), &json!({"token_ttl": "6s", "token_max_ttl": "12s"}));
    let started = Instant::now();
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, &auth, 2));
    web.wait_ready();
    assert_eq!(signing_version(&web), 1);
    web.wait_until("a second jwt login", 40, |s| s.log().matches("logged in to vault").count() >= 2);
    // Past the first token's max TTL, it is dead whatever was renewed.
    std::thread::sleep(Duration::from_secs(14).saturating_sub(started.elapsed()));
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "after the max ttl"})).expect_status(200);
    web.wait_until("version 2 fetched after the new login", 20, |s| verifying_versions(s).contains(&json!(2)));
}

#[test]
fn a_pod_token_the_cluster_minted_logs_in_until_its_pod_or_account_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server("1s");
    let cluster = ControlPlane::start();
    // The server reviews tokens as a service account of its own allowed to
    // (what the Vault and OpenBao charts set up), with a token minted for
    // the API server's own audience.
    cluster.pod("secrets", "openbao", "openbao-0");
    cluster.allow_token_review("secrets", "openbao");
    let reviewer = cluster.token("secrets", "openbao", None, ISSUER);
    server.write("sys/auth/kubernetes", json!({"type": "kubernetes"})).expect_status(204);
    server
        .write(
            "auth/kubernetes/config",
            json!({"kubernetes_host": cluster.url(), "kubernetes_ca_cert": cluster.ca_pem(),
                   "token_reviewer_jwt": reviewer, "disable_local_ca_jwt": true}),
        )
        .expect_status(204);
    let role = json!({"bound_service_account_names": ["lockstep-sidecar"], "bound_service_account_namespaces": ["payments"],
                      "audience": "vault", "token_policies": ["sidecar-web"], "token_no_default_policy": true,
                      "token_ttl": "1h"});
    let made = server.write("auth/kubernetes/role/lockstep-web", role);
    assert!(made.status == 200 || made.status == 204, "{made:?}");
    let login = |jwt: &str| server.write("auth/kubernetes/login", json!({"role": "lockstep-web", "jwt": jwt})).status;

    let uid = cluster.pod("payments", "lockstep-sidecar", "web-1");
    let first = cluster.token("payments", "lockstep-sidecar", Some(("web-1", &uid)), "vault");
    // Minted for another audience, or for another account: refused.
    let other_audience = cluster.token("payments", "lockstep-sidecar", Some(("web-1", &uid)), "other");
    assert_eq!(login(&other_audience), 403, "a token for another audience logged in");
    let other_uid = cluster.pod("payments", "other", "other-1");
    let other_account = cluster.token("payments", "other", Some(("other-1", &other_uid)), "vault");
    assert_eq!(login(&other_account), 403, "another service account's token logged in");

    let jwt_file = dir.path().join("web.sa-token");
    std::fs::write(&jwt_file, &first).expect("token file");
    let auth = format!("method = \"kubernetes\"\nrole = \"lockstep-web\"\njwt_file = \"{}\"", jwt_file.display());
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, &auth, 5));
    web.wait_until("a signing version", 30, |s| signing_version(s) == 1);
    assert!(web.log().contains("logged in to vault"), "{}", web.log());

    // The pod is deleted: its token no longer logs in. Once the server's
    // token is gone too, the sidecar cannot fetch the next version, and
    // keeps serving the bundle it holds.
    cluster.request("DELETE", "/api/v1/namespaces/payments/pods/web-1", None).expect(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while login(&first) != 403 {
        assert!(Instant::now() < deadline, "the deleted pod's token still logs in");
        std::thread::sleep(Duration::from_millis(200));
    }
    // (A long-poll the server admitted before its token was revoked may
    // still answer: the rotation waits for two refused logins.)
    server.request("PUT", "sys/leases/revoke-prefix/auth/kubernetes", None).expect_status(204);
    let refused = |s: &Sidecar| s.log().matches("sync failed; serving the last good bundle error=auth").count();
    web.wait_until("two refused logins", 60, |s| refused(s) >= 2);
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "after the pod was deleted"})).expect_status(200);
    web.wait_until("two more refused logins", 60, |s| refused(s) >= 4);
    assert_eq!(signing_version(&web), 1, "the sidecar stopped serving its last bundle");
    assert!(
        !verifying_versions(&web).contains(&json!(2)),
        "version 2 reached the sidecar without a login:\n{}",
        web.log()
    );

    // The pod is back under the same name (a new object): the kubelet
    // writes its new token to the file, and the next login reads it.
    let uid = cluster.pod("payments", "lockstep-sidecar", "web-1");
    let second = cluster.token("payments", "lockstep-sidecar", Some(("web-1", &uid)), "vault");
    std::fs::write(&jwt_file, &second).expect("rotated token file");
    web.wait_until("version 2 fetched after a new login", 60, |s| verifying_versions(s).contains(&json!(2)));

    // The service account is deleted: none of its tokens logs in.
    cluster.request("DELETE", "/api/v1/namespaces/payments/serviceaccounts/lockstep-sidecar", None).expect(200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while login(&second) != 403 {
        assert!(Instant::now() < deadline, "the deleted service account's token still logs in");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = web.log();
    for token in [&first, &second, &reviewer] {
        assert!(!log.contains(token.as_str()), "a service-account token leaked into the log");
    }
}
