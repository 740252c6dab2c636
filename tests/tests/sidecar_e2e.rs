//! Sidecars against a real server with the plugin mounted: two pools'
//! sidecars converge on a rotation and verify each other's tokens; the
//! watch returns promptly; Vault stopped → keys still served; restart from
//! the encrypted cache while Vault is down; a revoked token leads to a new
//! AppRole login; callers off the allow-list are refused, and SIGHUP
//! reloads that list; a server restored from an old copy of its storage
//! offers a rolled-back bundle, which is refused while the newer one is
//! kept; over TLS a sidecar trusts its CA bundle and nothing else; in a
//! two-node raft cluster a standby forwards, and after a step-down the
//! other node carries on with nothing stale; JSON logs are one object per
//! line; the file sink holds the next version before it activates.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_tests::server::Server;
use lockstep_tests::sidecar::{Sidecar, sync_errors};
use lockstep_tests::workspace_root;
use serde_json::{Value, json};

/// A server with the engine mounted, a 1-hour ed25519 keyring `jwt` that
/// activates 2 s after publication once acknowledged, and sign pools.
fn server(pools: &[&str]) -> Server {
    prepare(Server::dev_with_mounts(&["lockstep"]), pools)
}

/// Configures a server with the engine mounted as [`server`] does.
fn prepare(server: Server, pools: &[&str]) -> Server {
    server
        .write(
            "lockstep/config",
            json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"}),
        )
        .expect_status(200);
    let policy = json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
                        "max_token_ttl": "10m", "commit_timeout": "30m"});
    let created = server.write("lockstep/keys/jwt", policy);
    assert!(created.status == 200 || created.status == 204, "{created:?}");
    for pool in pools {
        let made = server.write(&format!("lockstep/pools/{pool}"), json!({"keyrings": "jwt", "mode": "sign"}));
        assert!(made.status == 200 || made.status == 204, "{made:?}");
        // The project's least-privilege policy for a pool's sidecars.
        let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
            .expect("policies/lockstep-sidecar-web.hcl")
            .replace("lockstep/bundle/web", &format!("lockstep/bundle/{pool}"));
        server
            .request("PUT", &format!("sys/policies/acl/sidecar-{pool}"), Some(json!({"policy": hcl})))
            .expect_status(204);
    }
    server
}

/// A token limited to the pool's policy.
fn pool_token(server: &Server, pool: &str) -> String {
    let reply = server.write(
        "auth/token/create",
        json!({"policies": [format!("sidecar-{pool}")], "ttl": "1h", "no_default_policy": true}),
    );
    reply.body["auth"]["client_token"].as_str().expect("a token").to_string()
}

fn config(dir: &Path, server: &Server, pool: &str, auth: &str, extra: &str) -> String {
    std::fs::create_dir_all(dir.join("cache")).expect("cache dir");
    std::fs::create_dir_all(dir.join("keys")).expect("keys dir");
    std::fs::write(dir.join(format!("keys/{pool}.key")), [7u8; 32]).expect("cache key");
    let d = dir.display();
    format!(
        "pool = \"{pool}\"\ninstance = \"{pool}-1\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\npoll_interval_secs = 2\n\
         backoff_min_ms = 100\nbackoff_max_secs = 2\nmax_clock_skew_secs = 2\n[auth]\n{auth}\n[socket]\npath = \"{d}/{pool}.sock\"\n{extra}\n\
         [cache]\nfile = \"{d}/cache/{pool}.bin\"\nkey_file = \"{d}/keys/{pool}.key\"\nmax_age_secs = 600\n[log]\nlevel = \"debug\"\n",
        addr = server.address(),
    )
}

fn token_auth(dir: &Path, server: &Server, pool: &str) -> String {
    let file = dir.join(format!("{pool}.token"));
    std::fs::write(&file, pool_token(server, pool)).expect("token file");
    format!("method = \"token\"\ntoken_file = \"{}\"", file.display())
}

fn signing_version(sidecar: &Sidecar) -> Value {
    sidecar.get("/v1/keys/jwt").body["signing"]["version"].clone()
}

fn sign(sidecar: &Sidecar, sub: &str) -> Value {
    let reply =
        sidecar.request("POST", "/v1/jwt/jwt/sign", Some(&json!({"claims": {"sub": sub, "aud": "fleet"}, "ttl": 300})));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

fn verify(sidecar: &Sidecar, token: &Value) -> Value {
    let reply = sidecar.request("POST", "/v1/jwt/jwt/verify", Some(&json!({"token": token, "audience": "fleet"})));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

#[test]
fn two_pools_converge_on_a_rotation_and_verify_each_others_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web", "api"]);
    let web = Sidecar::start(
        dir.path(),
        "web",
        &config(dir.path(), &server, "web", &token_auth(dir.path(), &server, "web"), ""),
    );
    let api = Sidecar::start(
        dir.path(),
        "api",
        &config(dir.path(), &server, "api", &token_auth(dir.path(), &server, "api"), ""),
    );
    web.wait_ready();
    api.wait_ready();
    web.wait_until("a signing version", 30, |s| signing_version(s) == 1);
    let first = sign(&web, "before");
    assert_eq!(verify(&api, &first["token"])["version"], 1);

    // The watch returns as soon as the rotation's bundle arrives.
    let state = web.get("/v1/keys/jwt").body["state"].as_str().expect("state").to_string();
    let socket = web.socket().to_path_buf();
    let watcher = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = lockstep_tests::sidecar::socket_request(
            &socket,
            "GET",
            &format!("/v1/keys/jwt/watch?after={state}&timeout=60"),
            None,
        );
        (reply, started.elapsed())
    });
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "test"})).expect_status(200);
    let (changed, took) = watcher.join().expect("watcher");
    assert_eq!(changed.status, 200, "{changed:?}");
    assert_eq!(changed.body["changed"], true);
    assert!(took < Duration::from_secs(15), "the watch took {took:?}");
    let versions: Vec<Value> =
        changed.body["verifying"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect();
    assert!(versions.contains(&json!(2)), "{versions:?}");

    // Both pools acknowledge, the coordinator commits, both switch.
    web.wait_until("version 2 signing at web", 60, |s| signing_version(s) == 2);
    api.wait_until("version 2 signing at api", 60, |s| signing_version(s) == 2);
    let second = sign(&web, "after");
    assert_eq!(second["version"], 2);
    assert_eq!(verify(&api, &second["token"])["version"], 2);
    assert_eq!(verify(&api, &first["token"])["version"], 1, "the old version verifies through its grace period");
    let back = sign(&api, "other way");
    assert_eq!(verify(&web, &back["token"])["claims"]["sub"], "other way");
    assert_eq!(api.get("/v1/jwks/jwt").body["keys"].as_array().map(Vec::len), Some(2));
    // `lockstep-sidecar get` asks the running sidecar.
    let out = std::process::Command::new(lockstep_tests::sidecar::sidecar_binary())
        .args(["get", "jwt", "--format", "jwk", "--socket"])
        .arg(web.socket())
        .output()
        .expect("run get");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("get prints JSON");
    assert_eq!(printed["signing"]["material"]["jwk"]["kty"], "OKP");
    // Debug-level logs carry neither the token nor key material.
    for (sidecar, pool) in [(&web, "web"), (&api, "api")] {
        let token = std::fs::read_to_string(dir.path().join(format!("{pool}.token"))).expect("token");
        let log = sidecar.log();
        assert!(!log.contains(token.trim()), "the {pool} token leaked into the log");
        let private = sidecar.get("/v1/keys/jwt?private=true").body["signing"]["material"]["private_key"].clone();
        let private = private.as_str().expect("a private key for a sign pool");
        assert!(!log.contains(private), "key material leaked into the log");
    }
}

#[test]
fn vault_stopped_keeps_keys_served_and_a_restart_serves_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    let text = config(dir.path(), &server, "web", &token_auth(dir.path(), &server, "web"), "");
    let mut web = Sidecar::start(dir.path(), "web", &text);
    web.wait_ready();
    let kid = web.get("/v1/keys/jwt").body["signing"]["kid"].clone();
    drop(server);
    web.wait_until("a counted unreachable sync", 30, |s| {
        s.get("/metrics").body.as_str().is_some_and(|m| sync_errors(m, "unreachable") > 0)
    });
    for _ in 0..20 {
        let reply = web.get("/v1/keys/jwt");
        assert_eq!((reply.status, reply.body["signing"]["kid"].clone()), (200, kid.clone()));
    }
    assert!(web.stop(), "SIGTERM ends the sidecar with status 0");
    assert!(!web.socket().exists(), "the socket is removed at shutdown");
    let restarted = Sidecar::start(dir.path(), "web", &text);
    let reply = restarted.get("/v1/keys/jwt");
    assert_eq!((reply.status, reply.body["signing"]["kid"].clone()), (200, kid), "served from the cache at once");
    assert_eq!(restarted.get("/readyz").status, 200);
    drop(restarted);
    // An altered cache file is ignored, never served.
    let cache = dir.path().join("cache/web.bin");
    let mut bytes = std::fs::read(&cache).expect("cache");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&cache, bytes).expect("alter");
    let third = Sidecar::start(dir.path(), "web", &text);
    assert_eq!(third.get("/v1/keys/jwt").body["error"]["code"], "not_ready");
    assert!(third.log().contains("integrity"), "{}", third.log());
}

#[test]
fn a_cut_off_sidecar_stops_signing_at_its_bound_and_verifies_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    // A keyring whose bound comes soon: prepublish 2 s + grace 20 s -
    // max_token_ttl 10 s - the sidecar's skew 2 s = 10 s after the last sync.
    let short = json!({"type": "hmac-sha256", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20s",
                       "max_token_ttl": "10s", "commit_timeout": "30m"});
    server.write("lockstep/keys/short", short).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt,short", "mode": "sign"})).expect_status(200);
    let web = Sidecar::start(
        dir.path(),
        "web",
        &config(dir.path(), &server, "web", &token_auth(dir.path(), &server, "web"), ""),
    );
    web.wait_ready();
    let sign_short = |s: &Sidecar| s.request("POST", "/v1/jwt/short/sign", Some(&json!({"claims": {"sub": "a"}})));
    let token = sign_short(&web);
    assert_eq!(token.status, 200, "{:?}", token.body);
    let token = token.body["token"].clone();

    drop(server);
    web.wait_until("signing with short refused", 40, |s| sign_short(s).status == 503);
    let refused = sign_short(&web);
    assert_eq!(refused.body["error"]["code"], "signing_bound_passed", "{:?}", refused.body);
    // It verifies on, tells kubelet it is not ready, and says why in metrics;
    // a keyring whose bound is later still signs.
    let checked = web.request("POST", "/v1/jwt/short/verify", Some(&json!({"token": token})));
    assert_eq!((checked.status, checked.body["valid"].clone()), (200, json!(true)), "{:?}", checked.body);
    assert_eq!(web.get("/readyz").status, 503);
    let metrics = web.get("/metrics").body;
    let text = metrics.as_str().unwrap_or_default();
    assert!(text.lines().any(|l| l.starts_with("lockstep_sidecar_signing_stopped{keyring=\"short\"} 1")), "{text}");
    assert_eq!(sign(&web, "the other keyring")["version"], 1);
}

#[test]
fn a_revoked_token_leads_to_a_new_approle_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    server.write("sys/auth/approle", json!({"type": "approle"})).expect_status(204);
    server
        .write(
            "auth/approle/role/web",
            json!({"token_policies": "sidecar-web", "token_ttl": "1h", "token_no_default_policy": true}),
        )
        .expect_status(204);
    let role_id =
        server.read("auth/approle/role/web/role-id").body["data"]["role_id"].as_str().expect("role id").to_string();
    let secret = server.write("auth/approle/role/web/secret-id", json!({})).body["data"]["secret_id"]
        .as_str()
        .expect("secret id")
        .to_string();
    let secret_file = dir.path().join("web.secret-id");
    std::fs::write(&secret_file, secret).expect("secret file");
    let auth = format!("method = \"approle\"\nrole_id = \"{role_id}\"\nsecret_id_file = \"{}\"", secret_file.display());
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, "web", &auth, ""));
    web.wait_ready();
    server.request("PUT", "sys/leases/revoke-prefix/auth/approle", None).expect_status(204);
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "after revocation"})).expect_status(200);
    // A long-poll the server admitted before the revocation may still
    // bring version 2 on the old token; the refusal comes at the next poll,
    // and the new login after it.
    let denied = |s: &Sidecar| s.get("/metrics").body.as_str().map_or(0, |m| sync_errors(m, "denied"));
    web.wait_until("version 2, and a refused poll", 60, |s| {
        s.get("/v1/keys/jwt").body["verifying"].as_array().is_some_and(|v| v.iter().any(|v| v["version"] == 2))
            && denied(s) > 0
    });
    web.wait_until("a new login after the refusal", 60, |s| s.log().matches("logged in to vault").count() >= 2);
}

#[test]
fn callers_off_the_allow_list_are_refused_and_sighup_reloads_the_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    let me = std::fs::metadata(dir.path()).expect("meta").uid();
    let auth = token_auth(dir.path(), &server, "web");
    let web = Sidecar::start(
        dir.path(),
        "web",
        &config(dir.path(), &server, "web", &auth, &format!("allowed_uids = [{me}]")),
    );
    web.wait_ready();
    assert_eq!(web.get("/v1/keys/jwt").status, 200);
    let refusing = config(dir.path(), &server, "web", &auth, &format!("allowed_uids = [{}]", me.wrapping_add(1)));
    web.rewrite_config(&refusing);
    web.signal("HUP");
    web.wait_until("the reloaded allow-list", 30, |s| s.get("/v1/keys/jwt").status == 403);
    let reply = web.get("/v1/keys/jwt");
    assert_eq!(reply.body["error"]["code"], "peer_not_allowed", "{reply:?}");
    assert!(web.log().contains("allow-list"), "{}", web.log());
    // Logged once the new configuration is in force, a moment after.
    web.wait_until("the reload in the log", 10, |s| s.log().contains("configuration reloaded"));
}

/// Copies a directory tree with `cp -a`, so modes and times stay as they were.
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("run cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

#[test]
fn a_server_restored_from_old_storage_cannot_roll_the_sidecar_back_and_the_fleet_agrees_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = prepare(Server::persistent().with_mounts(&["lockstep"]), &["web", "api"]);
    let auth = token_auth(dir.path(), &server, "web");
    // The api pool's token exists before the copy; its sidecar starts only
    // after the restore, as a new pod would.
    let api_auth = token_auth(dir.path(), &server, "api");
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, "web", &auth, ""));
    web.wait_until("version 1 signing", 30, |s| signing_version(s) == 1);
    // A copy of the storage as it is now, with version 1 only (the token
    // the sidecar uses already exists in it).
    let snapshot = dir.path().join("storage-snapshot");
    server.restart_with(|data| copy_tree(data, &snapshot));
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "before the restore"})).expect_status(200);
    web.wait_until("version 2 signing", 60, |s| signing_version(s) == 2);
    let kid = web.get("/v1/keys/jwt").body["signing"]["kid"].clone();
    let token = sign(&web, "signed with version 2");
    let held_revision = web.get("/v1/keyrings").body["revision"].clone();

    // The operator restores the old copy: the server now offers version 1 only.
    server.restart_with(|data| {
        std::fs::remove_dir_all(data).expect("remove the data");
        copy_tree(&snapshot, data);
    });
    let offered = server.read("lockstep/keys/jwt").expect_status(200);
    let numbers: Vec<Value> =
        offered.data()["versions"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect();
    assert_eq!(numbers, vec![json!(1)], "the restored server knows version 1 only: {offered:?}");
    // The restored coordinator hears at the sidecar's first poll that it
    // holds a version 2 it never issued, and answers with a bundle newer
    // than the sidecar's (version 1 only), which the sidecar takes, keeping
    // version 2: it signs on, and its tokens verify.
    web.wait_until("the restored bundle taken", 60, |s| s.get("/v1/keyrings").body["revision"] != held_revision);
    let reply = web.get("/v1/keys/jwt");
    assert_eq!((reply.status, reply.body["signing"]["kid"].clone()), (200, kid), "{:?}", reply.body);
    let verifying: Vec<Value> =
        reply.body["verifying"].as_array().into_iter().flatten().map(|v| v["version"].clone()).collect();
    assert_eq!(verifying, vec![json!(1), json!(2)], "{:?}", reply.body);
    assert_eq!(verify(&web, &token["token"])["version"], 2);
    assert_eq!(web.get("/readyz").status, 200);

    // The restored coordinator hears of a version 2 it did not issue: it
    // says so in status and history, and numbering goes on past it.
    let alerted = |server: &Server| {
        let status = server.read("lockstep/status/jwt").expect_status(200);
        status.data()["alerts"].to_string().contains("did not issue")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !alerted(&server) {
        assert!(std::time::Instant::now() < deadline, "no alert: {:?}", server.read("lockstep/status/jwt"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let history = server.read("lockstep/history/jwt").expect_status(200);
    assert!(history.data().to_string().contains("fleet-ahead"), "{history:?}");
    let api = Sidecar::start(dir.path(), "api", &config(dir.path(), &server, "api", &api_auth, ""));
    api.wait_until("version 1 signing at the new pod", 30, |s| signing_version(s) == 1);

    // The old pod's signing version did not go back: version 2 signs on.
    assert_eq!(signing_version(&web), 2, "the old pod signs with what it signed with");
    // Reports decide nothing: the coordinator has not rotated of itself.
    let keys = server.read("lockstep/keys/jwt").expect_status(200);
    assert_eq!(keys.data()["latest_version"], 1, "{keys:?}");
    // The operator rotates: version 3, never a second version 2 (the
    // fleet's 2 is within the bound the reports may move numbering by),
    // reaches both pools, and they agree again.
    let pending = server
        .write("lockstep/keys/jwt/rotate", json!({"reason": "after the restore"}))
        .expect_status(200)
        .data()["version"]
        .clone();
    assert_eq!(pending, 3);
    web.wait_until("version 3 signing at the old pod", 60, |s| signing_version(s) == 3);
    api.wait_until("version 3 signing at the new pod", 60, |s| signing_version(s) == 3);
    for (signer, checker) in [(&web, &api), (&api, &web)] {
        let token = sign(signer, "after the restore");
        assert_eq!(verify(checker, &token["token"])["version"], 3);
    }
    assert!(!alerted(&server), "the alert ends once the fleet is back in step");
}

/// Runs `openssl` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`server.pem`, `server.key`), in `dir`.
fn test_pki(dir: &Path) {
    let run = |args: &str| openssl(dir, &args.split_whitespace().collect::<Vec<_>>());
    run("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
         -subj /CN=lockstep-test-CA -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign");
    run(
        "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    run(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext",
    );
}

#[test]
fn over_tls_the_sidecar_trusts_its_ca_bundle_and_nothing_else() {
    let pki = tempfile::tempdir().expect("tempdir");
    test_pki(pki.path());
    let server = prepare(
        Server::persistent_with_tls(&pki.path().join("server.pem"), &pki.path().join("server.key"))
            .with_mounts(&["lockstep"]),
        &["web"],
    );
    let https = server.tls_address().expect("a TLS listener");
    let over_tls = |dir: &Path, ca_bundle: Option<&Path>| {
        let text = config(dir, &server, "web", &token_auth(dir, &server, "web"), "").replace(&server.address(), &https);
        match ca_bundle {
            Some(ca) => text.replace("[vault]\n", &format!("[vault]\nca_bundle = {:?}\n", ca.display().to_string())),
            None => text,
        }
    };
    let trusting = tempfile::tempdir().expect("tempdir");
    let web = Sidecar::start(trusting.path(), "web", &over_tls(trusting.path(), Some(&pki.path().join("ca.pem"))));
    web.wait_until("version 1 over TLS", 30, |s| signing_version(s) == 1);
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "over TLS"})).expect_status(200);
    web.wait_until("version 2 over TLS", 60, |s| {
        s.get("/v1/keys/jwt").body["verifying"].as_array().is_some_and(|v| v.iter().any(|v| v["version"] == 2))
    });

    // Without the CA bundle the server's certificate is not trusted.
    let doubting = tempfile::tempdir().expect("tempdir");
    let other = Sidecar::start(doubting.path(), "web", &over_tls(doubting.path(), None));
    other.wait_until("a counted failed sync", 30, |s| {
        // Every kind's series is there from the start, at 0: wait for a count.
        s.get("/metrics").body.as_str().is_some_and(|m| {
            m.lines().any(|l| {
                l.starts_with("lockstep_sidecar_sync_errors_total{kind=")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n > 0)
            })
        })
    });
    assert_eq!(other.get("/readyz").status, 503, "never ready without a trusted server");
    assert_eq!(other.get("/v1/keys/jwt").body["error"]["code"], "not_ready");
    // The count goes up just before the warning is written.
    other.wait_until("the failure, naming the certificate, in the log", 10, |s| s.log().contains("certificate"));
}

#[test]
fn in_a_raft_cluster_a_standby_forwards_and_a_new_active_node_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = Server::raft_pair();
    let first = prepare(first.with_mounts(&["lockstep"]), &["web"]);
    // The sidecar talks to the standby, which forwards to the active node.
    let text = config(dir.path(), &first, "web", &token_auth(dir.path(), &first, "web"), "")
        .replace(&first.address(), &second.address());
    let web = Sidecar::start(dir.path(), "web", &text);
    web.wait_until("version 1 through the standby", 60, |s| signing_version(s) == 1);
    second.write("lockstep/keys/jwt/rotate", json!({"reason": "through the standby"})).expect_status(200);
    web.wait_until("version 2 signing", 60, |s| signing_version(s) == 2);

    // The active node steps down; the standby takes over the mount, its
    // storage and the scheduler, and nothing it serves is stale.
    first.request("PUT", "sys/step-down", None).expect_status(204);
    second.wait_active(90);
    // The old active node forwards once it has heard who leads now.
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.read("sys/leader").body["leader_address"] != second.address().as_str() {
        assert!(Instant::now() < deadline, "{:?}", first.read("sys/leader"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let keyring = second.read("lockstep/keys/jwt").expect_status(200);
    assert_eq!(keyring.data()["signing_version"], 2, "{keyring:?}");
    assert_eq!(keyring.data()["latest_version"], 2, "{keyring:?}");
    first
        .write("lockstep/keys/jwt/rotate", json!({"expected_version": 2, "reason": "after the failover"}))
        .expect_status(200);
    web.wait_until("version 3 signing after the failover", 90, |s| signing_version(s) == 3);
    let history = second.read("lockstep/history/jwt").expect_status(200).body.to_string();
    assert!(history.contains("through the standby") && history.contains("after the failover"), "{history}");
    let info = second.read("lockstep/info").expect_status(200);
    assert_eq!(info.data()["plugin_version"], lockstep_tests::plugin_version(), "{info:?}");
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_no_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    let text = config(dir.path(), &server, "web", &token_auth(dir.path(), &server, "web"), "")
        .replace("[log]\nlevel = \"debug\"\n", "[log]\nlevel = \"debug\"\nformat = \"json\"\n");
    let web = Sidecar::start(dir.path(), "web", &text);
    web.wait_until("version 1 signing, and the swap logged", 30, |s| {
        signing_version(s) == 1 && s.log().contains("bundle swapped in")
    });
    let log = web.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{log}");
    // What a person reads: the keyrings and versions held, not a Debug dump.
    let swapped = lines.iter().find(|l| l["fields"]["message"] == "bundle swapped in").expect("a swap logged");
    assert_eq!(swapped["fields"]["held"], "jwt v1", "{log}");
    let token = std::fs::read_to_string(dir.path().join("web.token")).expect("token");
    assert!(!log.contains(token.trim()), "the token leaked into the log");
}

#[test]
fn the_file_sink_holds_the_next_version_before_it_activates_and_runs_its_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    // A long prepublish, so that the next version sits in the file well
    // before it signs.
    server
        .write("lockstep/keys/jwt", json!({"prepublish": "10m", "max_token_ttl": "10m", "grace_period": "20m"}))
        .expect_status(200);
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("sink dir");
    let marker = dir.path().join("changes");
    let sink = format!(
        "[sink]\ndir = {:?}\nformat = \"pem\"\ncommand = [\"sh\", \"-c\", \"echo changed >> {}\"]\n",
        files.display().to_string(),
        marker.display()
    );
    let text = config(dir.path(), &server, "web", &token_auth(dir.path(), &server, "web"), "")
        .replace("[cache]\n", &format!("{sink}[cache]\n"));
    let web = Sidecar::start(dir.path(), "web", &text);
    let read = || -> Value {
        std::fs::read(files.join("jwt.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
    };
    web.wait_until("the file with version 1", 30, |_| read()["signing"]["version"] == 1);
    let mode = std::fs::metadata(files.join("jwt.json")).expect("file").mode() & 0o777;
    assert_eq!(mode, 0o640);
    let pem = read()["signing"]["material"]["public_key"].as_str().unwrap_or_default().to_string();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "sink"})).expect_status(200);
    web.wait_until("version 2 in the file", 30, |_| {
        read()["verifying"].as_array().is_some_and(|v| v.iter().any(|v| v["version"] == 2))
    });
    let file = read();
    assert_eq!(file["signing"]["version"], 1, "version 2 is there ahead of its activation: {file}");
    let pending = file["verifying"].as_array().and_then(|v| v.iter().find(|v| v["version"] == 2).cloned());
    // Pending until web holds it, then scheduled for its activation.
    let state = pending.as_ref().map(|v| v["state"].clone()).unwrap_or_default();
    assert!(state == "pending" || state == "scheduled", "{file}");
    // The command runs after the file is in place, so its own write may
    // come a moment later.
    let runs = || std::fs::read_to_string(&marker).unwrap_or_default().lines().count();
    web.wait_until("the command to have run after each change", 10, |_| runs() >= 2);
}

#[test]
fn two_sidecars_sharing_an_instance_id_are_detected_and_warned() {
    let (one, two) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let server = server(&["web"]);
    // Both configs name instance "web-1", as a shared config file would.
    let first = Sidecar::start(
        one.path(),
        "web",
        &config(one.path(), &server, "web", &token_auth(one.path(), &server, "web"), ""),
    );
    let second = Sidecar::start(
        two.path(),
        "web",
        &config(two.path(), &server, "web", &token_auth(two.path(), &server, "web"), ""),
    );
    first.wait_until("version 1 signing", 30, |s| signing_version(s) == 1);
    second.wait_until("version 1 signing", 30, |s| signing_version(s) == 1);
    let shared = |server: &Server| {
        let status = server.read("lockstep/status/jwt").expect_status(200);
        status.data()["alerts"].to_string().contains("one instance of pool web is used by two sidecar processes")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while !shared(&server) {
        assert!(std::time::Instant::now() < deadline, "no alert: {:?}", server.read("lockstep/status/jwt"));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    for sidecar in [&first, &second] {
        sidecar.wait_until("the coordinator's warning logged", 40, |s| {
            s.log().lines().any(|l| l.contains("WARN") && l.contains("used by two sidecar processes"))
        });
    }
}

/// One request on an open keep-alive connection; the answer's status.
fn keep_alive_status(stream: &mut std::os::unix::net::UnixStream, path: &str) -> u16 {
    use std::io::{Read as _, Write as _};
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Lockstep-Request: 1\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
            }
        }
    }
}

#[test]
fn an_allow_list_reloaded_on_sighup_applies_to_connections_already_open() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web"]);
    let auth = token_auth(dir.path(), &server, "web");
    let me = std::fs::metadata(dir.path()).expect("meta").uid();
    let allowed = format!("allowed_uids = [{me}]");
    let web = Sidecar::start(dir.path(), "web", &config(dir.path(), &server, "web", &auth, &allowed));
    web.wait_until("version 1 signing", 30, |s| signing_version(s) == 1);
    let mut open = std::os::unix::net::UnixStream::connect(web.socket()).expect("connect");
    assert_eq!(keep_alive_status(&mut open, "/v1/keys/jwt"), 200);
    // The caller is taken off the list.
    let refused = format!("allowed_uids = [{}]", me.wrapping_add(1));
    web.rewrite_config(&config(dir.path(), &server, "web", &auth, &refused));
    web.signal("HUP");
    web.wait_until("the reload", 20, |s| s.log().contains("configuration reloaded"));
    assert_eq!(keep_alive_status(&mut open, "/v1/keys/jwt"), 403, "the open connection is refused too");
}

/// Keyrings `data` (AES) and `hooks` (HMAC) under `policy`, pools `web`
/// and `api` listing `keyrings`, and a sidecar of each, both holding
/// version 1 of the two.
fn aes_and_hmac_pools(
    dir: &Path,
    server: &Server,
    policy: impl Fn(&str) -> Value,
    keyrings: &str,
) -> (Sidecar, Sidecar) {
    server.write("lockstep/keys/data", policy("aes256-gcm")).expect_status(200);
    server.write("lockstep/keys/hooks", policy("hmac-sha256")).expect_status(200);
    for pool in ["web", "api"] {
        server
            .write(&format!("lockstep/pools/{pool}"), json!({"keyrings": keyrings, "mode": "sign"}))
            .expect_status(200);
    }
    let start = |pool: &str| Sidecar::start(dir, pool, &config(dir, server, pool, &token_auth(dir, server, pool), ""));
    let (web, api) = (start("web"), start("api"));
    for sidecar in [&web, &api] {
        sidecar.wait_until("data and hooks", 30, |s| version_of(s, "data") == 1 && version_of(s, "hooks") == 1);
    }
    (web, api)
}

/// Rotates `data` and `hooks`, and waits until both sidecars hold the
/// next version (published, not yet signing).
fn rotate_data_and_hooks(server: &Server, sidecars: [&Sidecar; 2]) {
    for keyring in ["data", "hooks"] {
        server.write(&format!("lockstep/keys/{keyring}/rotate"), json!({})).expect_status(200);
    }
    for sidecar in sidecars {
        sidecar.wait_until("the next version held", 10, |s| {
            s.get("/v1/keys/hooks").body["verifying"].as_array().is_some_and(|v| v.len() == 2)
        });
    }
}

/// The version a sidecar signs `keyring` with now.
fn version_of(sidecar: &Sidecar, keyring: &str) -> Value {
    sidecar.get(&format!("/v1/keys/{keyring}")).body["signing"]["version"].clone()
}

/// A POST to a sidecar that must succeed; its answer.
fn post(sidecar: &Sidecar, path: &str, body: Value) -> Value {
    let reply = sidecar.request("POST", path, Some(&body));
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    reply.body
}

#[test]
fn ciphertexts_macs_signatures_and_webhooks_cross_pools_and_a_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web", "api"]);
    let policy = |key_type: &str| {
        // Ten seconds between publication and activation: the window in
        // which a webhook carries both versions.
        json!({"type": key_type, "rotation_period": "1h", "prepublish": "10s", "grace_period": "20m",
               "max_token_ttl": "10m", "commit_timeout": "30m"})
    };
    let (web, api) = aes_and_hmac_pools(dir.path(), &server, policy, "jwt,data,hooks");
    let secret = "c2VjcmV0IHBheWxvYWQ="; // "secret payload"
    let aad = "b3JkZXItNw=="; // "order-7"
    let before = post(&web, "/v1/encrypt/data", json!({"plaintext": secret, "associated_data": aad}));
    assert_eq!(before["version"], 1);
    let mac = post(&web, "/v1/mac/hooks", json!({"data": secret}));
    let signed = post(&web, "/v1/sign/jwt", json!({"data": secret}));

    // Both keyrings rotate: while the next versions are published but not
    // yet signing, a webhook carries both signatures, and verifies at the
    // other pool.
    rotate_data_and_hooks(&server, [&web, &api]);
    let hook = post(&web, "/v1/webhook/hooks/sign", json!({"payload": secret}));
    let signatures = hook["webhook-signature"].as_str().unwrap_or_default().split(' ').count();
    assert_eq!(signatures, 2, "one signature per version a receiver may hold: {hook}");
    let headers = json!({"webhook-id": hook["webhook-id"], "webhook-timestamp": hook["webhook-timestamp"],
                         "webhook-signature": hook["webhook-signature"]});
    let checked = post(&api, "/v1/webhook/hooks/verify", json!({"payload": secret, "headers": headers}));
    assert_eq!(checked["valid"], true, "{checked}");

    // Once version 2 signs everywhere, a ciphertext made before the
    // rotation still opens at the other pool, and new ones open too.
    for sidecar in [&web, &api] {
        sidecar.wait_until("version 2 signing", 60, |s| version_of(s, "data") == 2 && version_of(s, "hooks") == 2);
    }
    let opened = post(&api, "/v1/decrypt/data", json!({"ciphertext": before["ciphertext"], "associated_data": aad}));
    assert_eq!((opened["plaintext"].clone(), opened["version"].clone()), (json!(secret), json!(1)));
    let after = post(&api, "/v1/encrypt/data", json!({"plaintext": secret}));
    assert_eq!(after["version"], 2);
    let opened = post(&web, "/v1/decrypt/data", json!({"ciphertext": after["ciphertext"]}));
    assert_eq!(opened["plaintext"], json!(secret));
    // The webhook signed during the rotation still verifies after it.
    let late = post(&api, "/v1/webhook/hooks/verify", json!({"payload": secret, "headers": headers}));
    assert_eq!(late["valid"], true, "{late}");
    // A MAC and a raw signature made at one pool before the rotation check
    // at the other after it; a rewrap there moves the old ciphertext to
    // version 2, which the first pool opens.
    let checked = post(&api, "/v1/mac/hooks/verify", json!({"data": secret, "mac": mac["mac"]}));
    assert_eq!(checked["version"], 1, "{checked}");
    let checked = post(&api, "/v1/sign/jwt/verify", json!({"data": secret, "signature": signed["signature"]}));
    assert_eq!((checked["valid"].clone(), checked["kid"].clone()), (json!(true), signed["kid"].clone()), "{checked}");
    let rewrapped = post(&api, "/v1/rewrap/data", json!({"ciphertext": before["ciphertext"], "associated_data": aad}));
    assert_eq!(rewrapped["version"], 2, "{rewrapped}");
    let opened = post(&web, "/v1/decrypt/data", json!({"ciphertext": rewrapped["ciphertext"], "associated_data": aad}));
    assert_eq!(opened["plaintext"], json!(secret));
    // Version 1 revoked: both pools refuse what it made, saying so.
    let revoked = server.write("lockstep/keys/data/revoke", json!({"version": 1, "reason": "test"}));
    assert!(revoked.status == 200 || revoked.status == 204, "{revoked:?}");
    let old = json!({"ciphertext": before["ciphertext"], "associated_data": aad});
    for sidecar in [&web, &api] {
        sidecar.wait_until("version 1 refused as revoked", 30, |s| {
            s.request("POST", "/v1/decrypt/data", Some(&old)).body["error"]["code"] == "version_revoked"
        });
    }
    let refused = api.request("POST", "/v1/decrypt/data", Some(&old));
    assert_eq!(refused.status, 400, "{refused:?}");
    // Each sidecar's log says so in words, and says when version 2 began
    // to sign. (Both lines may trail what the socket answers: the first is
    // written once the bundle is served, the second by the task that
    // follows activation times.)
    for sidecar in [&web, &api] {
        sidecar.wait_until("the revocation and the activation in the log", 10, |s| {
            let log = s.log();
            log.lines()
                .any(|l| l.contains("a version was revoked") && l.contains("keyring=data") && l.contains("version=1"))
                && log.lines().any(|l| {
                    l.contains("a new version signs now") && l.contains("keyring=data") && l.contains("version=2")
                })
        });
        let log = sidecar.log();
        assert!(log.contains("serving on the socket") && log.contains("socket="), "{log}");
    }
}

/// HMAC-SHA-256 (RFC 2104), written out here so that the webhook check
/// below shares no code with the sidecar.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

#[test]
fn the_old_version_expires_everywhere_and_a_webhook_of_the_rotation_verifies_with_either_version() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(&["web", "api"]);
    // The shortest grace the fleet's timings allow (max_token_ttl 5 s +
    // poll 5 s + skew 1 s), so version 1 expires within the test.
    let policy = |key_type: &str| {
        json!({"type": key_type, "rotation_period": "1h", "prepublish": "6s", "grace_period": "12s",
               "max_token_ttl": "5s", "commit_timeout": "30m"})
    };
    let (web, api) = aes_and_hmac_pools(dir.path(), &server, policy, "data,hooks");
    let payload = b"{\"event\":\"paid\"}";
    let secret = STANDARD.encode(payload);
    let before = post(&web, "/v1/encrypt/data", json!({"plaintext": secret}));
    let mac = post(&web, "/v1/mac/hooks", json!({"data": secret}));

    rotate_data_and_hooks(&server, [&web, &api]);
    // Signed during the rotation: one signature per version. A receiver
    // holding either secret alone (as `whsec_<base64>`, checked here by
    // the Standard Webhooks algorithm written out above) accepts it.
    let hook = post(&web, "/v1/webhook/hooks/sign", json!({"payload": secret}));
    let header = hook["webhook-signature"].as_str().unwrap_or_default().to_string();
    // Header values: the timestamp is text, as it goes on the wire.
    let timestamp =
        hook["webhook-timestamp"].as_str().map_or_else(|| hook["webhook-timestamp"].to_string(), str::to_string);
    let signed = format!("{}.{timestamp}.", hook["webhook-id"].as_str().unwrap_or_default());
    let mut content = signed.into_bytes();
    content.extend_from_slice(payload);
    let keys = web.get("/v1/keys/hooks?private=true").body;
    let versions = keys["verifying"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2, "{keys}");
    for version in &versions {
        let key = STANDARD.decode(version["material"]["secret"].as_str().unwrap_or_default()).expect("a secret");
        let expected = format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &content)));
        assert!(
            header.split(' ').any(|part| part == expected),
            "no signature a receiver holding only version {} accepts: {expected} not in {header}",
            version["version"]
        );
    }

    // Version 1 expires: once its grace is over, both pools refuse what it
    // made as expired, and the webhook of the rotation still verifies with
    // version 2 alone.
    let old = json!({"ciphertext": before["ciphertext"]});
    // The two keyrings rotated in two writes, so their version 1 may
    // expire a second apart.
    let mac_check = json!({"data": secret, "mac": mac["mac"]});
    for sidecar in [&web, &api] {
        sidecar.wait_until("version 1 of both keyrings expired", 60, |s| {
            s.request("POST", "/v1/decrypt/data", Some(&old)).body["error"]["code"] == "version_expired"
                && s.request("POST", "/v1/mac/hooks/verify", Some(&mac_check)).body["error"]["code"]
                    == "version_expired"
        });
        let hooks = sidecar.get("/v1/keys/hooks").body;
        assert_eq!(hooks["verifying"].as_array().map(Vec::len), Some(1), "{hooks}");
    }
    let headers = json!({"webhook-id": hook["webhook-id"], "webhook-timestamp": hook["webhook-timestamp"],
                         "webhook-signature": hook["webhook-signature"]});
    let late = post(&api, "/v1/webhook/hooks/verify", json!({"payload": secret, "headers": headers}));
    assert_eq!((late["valid"].clone(), late["version"].clone()), (json!(true), json!(2)), "{late}");
}
