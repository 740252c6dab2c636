//! The plugin inside a real server built from Go modules: registered by
//! SHA-256 and version, mounted, used over HTTP and the CLI, reloaded,
//! restarted, and driven by the server's own periodic call.

use std::time::{Duration, Instant};

use lockstep_tests::plugin_version;
use lockstep_tests::server::{PLUGIN_FILE, PLUGIN_NAME, Server};
use serde_json::{Value, json};

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "vault {args:?} failed: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn registers_by_checksum_mounts_twice_and_round_trips_through_storage() {
    let server = Server::dev();
    let sha = lockstep_tests::sha256_file(&server.plugin_dir().join(PLUGIN_FILE));
    let version = plugin_version();
    cli_ok(
        &server,
        &[
            "plugin",
            "register",
            &format!("-sha256={sha}"),
            &format!("-version={version}"),
            &format!("-command={PLUGIN_FILE}"),
            "secret",
            PLUGIN_NAME,
        ],
    );
    cli_ok(&server, &["secrets", "enable", "-path=lockstep", PLUGIN_NAME]);
    cli_ok(&server, &["secrets", "enable", "-path=second", PLUGIN_NAME]);

    // The running version shows in the mount listing.
    let mounts = server.read("sys/mounts").expect_status(200).body;
    assert_eq!(mounts["data"]["lockstep/"]["running_plugin_version"], version, "{}", mounts["data"]["lockstep/"]);
    let listing = cli_ok(&server, &["secrets", "list", "-detailed"]);
    assert!(listing.contains(&version), "{listing}");

    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "verify"})).expect_status(200);
    let read = server.read("lockstep/pools/web").expect_status(200);
    assert_eq!(read.data(), &json!({"name": "web", "keyrings": ["jwt"], "mode": "verify"}));
    assert_eq!(server.read("second/pools/web").status, 404, "each mount has its own storage");
    server.write("lockstep/pools/api", json!({})).expect_status(200);
    assert_eq!(server.list("lockstep/pools").expect_status(200).data()["keys"], json!(["api", "web"]));
    server.delete("lockstep/pools/web").expect_status(204);
    assert_eq!(server.read("lockstep/pools/web").status, 404);
}

#[test]
fn help_and_errors_come_from_the_plugin() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    let help = cli_ok(&server, &["path-help", "lockstep/pools/web"]);
    assert!(help.contains("mode (string)") && help.contains("verifies HMAC tokens"), "{help}");
    assert_eq!(server.read("lockstep/no/such/path").status, 404);
    let bad = server.write("lockstep/pools/web", json!({"mode": "admin"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.errors().contains("field \"mode\""), "{bad:?}");
    let unsupported = server.delete("lockstep/info");
    assert_eq!(unsupported.status, 405, "{unsupported:?}");
    let bad_type = server.write("lockstep/keys/jwt", json!({"type": "rsa-1024"}));
    assert_eq!(bad_type.status, 400);
    assert!(bad_type.errors().contains("\"rsa-1024\" is not a key type"), "{bad_type:?}");
    // Names the server's storage would refuse are refused first, naming
    // the field: a 400, never a 500 from storage.
    for (path, body) in [("lockstep/keys/a..b", json!({"type": "ed25519"})), ("lockstep/pools/a..b", json!({}))] {
        let dotted = server.write(path, body);
        assert_eq!(dotted.status, 400, "{path}: {dotted:?}");
        assert!(dotted.errors().contains("field \"name\""), "{path}: {dotted:?}");
    }
    // A refused 10 KB name is quoted in part, in the answer and in the
    // server's log of the failed existence check.
    let long = "x-".repeat(5_000) + "@";
    let refused = server.write(&format!("lockstep/keys/{long}"), json!({"type": "ed25519"}));
    assert_eq!(refused.status, 400, "{}", refused.status);
    assert!(refused.errors().contains("(10001 bytes)") && refused.errors().len() < 1_000, "{}", refused.errors().len());
    assert!(!server.log().contains(&long[..2_000]), "the server's log quotes the whole name");
    let listed = server.write("lockstep/pools/web", json!({"keyrings": "a..b"}));
    assert_eq!(listed.status, 400, "{listed:?}");
    assert!(listed.errors().contains("field \"keyrings\""), "{listed:?}");
}

#[test]
fn reload_and_restart_keep_the_data() {
    let mut server = Server::persistent();
    server.register_plugin().expect_status(204);
    server.enable("lockstep").expect_status(204);
    server.write("lockstep/keys/jwt", json!({"type": "ed25519"})).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt"})).expect_status(200);
    let before = server.read("lockstep/keys/jwt").expect_status(200).body["data"].clone();

    cli_ok(&server, &["plugin", "reload", &format!("-plugin={PLUGIN_NAME}")]);
    assert_eq!(server.read("lockstep/keys/jwt").expect_status(200).body["data"]["versions"], before["versions"]);

    server.restart();
    assert_eq!(server.read("lockstep/keys/jwt").expect_status(200).body["data"]["versions"], before["versions"]);
    assert_eq!(server.read("lockstep/pools/web").expect_status(200).data()["keyrings"], json!(["jwt"]));
}

#[test]
fn the_servers_periodic_call_reaches_the_engine() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    // The server calls every mount about once a minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let info = server.read("lockstep/info").expect_status(200);
        if info.data()["last_periodic"].is_string() {
            assert!(info.data()["periodic_calls"].as_u64().unwrap_or_default() >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "no periodic call within 150 s: {info:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn fifty_concurrent_rotations_through_the_server_rotate_once() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server.write("lockstep/keys/jwt", json!({"type": "hmac-sha256"})).expect_status(200);
    let replies: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| server.write("lockstep/keys/jwt/rotate", json!({"expected_version": 1}))))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let successes = replies.iter().filter(|r| r.status == 200).count();
    let conflicts: Vec<_> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!((successes, conflicts.len()), (1, 49), "{replies:?}");
    assert!(conflicts.iter().all(|r| r.errors().contains("the latest is 2")), "{:?}", conflicts[0]);
    let history = server.read("lockstep/history/jwt").expect_status(200);
    let publishes =
        history.data()["entries"].as_array().into_iter().flatten().filter(|e| e["action"] == "publish").count();
    assert_eq!(publishes, 2, "{history:?}");
}

#[test]
fn a_sidecar_policy_reads_its_own_bundle_and_nothing_else() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server.write("lockstep/keys/jwt", json!({"type": "ecdsa-p256"})).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt"})).expect_status(200);
    server.write("lockstep/pools/api", json!({"keyrings": "jwt"})).expect_status(200);
    let policy = std::fs::read_to_string(lockstep_tests::workspace_root().join("policies/lockstep-sidecar-web.hcl"))
        .expect("the policy file");
    server.request("PUT", "sys/policies/acl/lockstep-sidecar-web", Some(json!({"policy": policy}))).expect_status(204);
    let token = server
        .write("auth/token/create", json!({"policies": ["lockstep-sidecar-web"], "ttl": "10m"}))
        .expect_status(200);
    let token = token.body["auth"]["client_token"].as_str().expect("token").to_string();
    let sidecar = server.with_token(&token);

    let bundle = sidecar.read("lockstep/bundle/web?instance=web-1&held=jwt:1").expect_status(200);
    assert_eq!(bundle.data()["pool"], "web");
    // The wire format's version, which a sidecar checks before it trusts
    // the rest (docs/sidecar.md, "Compatibility").
    assert_eq!(bundle.data()["format"], 1, "{:?}", bundle.data().get("format"));
    assert!(bundle.data()["keyrings"]["jwt"]["versions"][0]["private_key"].is_string());
    assert_eq!(sidecar.read("lockstep/bundle/api?instance=x").status, 403);
    assert_eq!(sidecar.read("lockstep/keys/jwt").status, 403);
    // The acknowledgement arrived: status shows the instance and its version.
    let status = server.read("lockstep/status/jwt").expect_status(200);
    let pools = status.data()["pools"].as_array().cloned().unwrap_or_default();
    let web: &Value = pools.iter().find(|p| p["pool"] == "web").expect("web in status");
    assert_eq!(web["instances"][0]["held_version"], 1, "{status:?}");
}

#[test]
fn a_public_jwks_is_served_without_a_token_with_its_cache_lifetime() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    let policy = json!({"type": "ed25519", "public_jwks": true, "rotation_period": "24h", "prepublish": "2h",
                        "grace_period": "4h", "max_token_ttl": "1h", "commit_timeout": "6h"});
    server.write("lockstep/keys/jwt", policy).expect_status(200);
    server.write("lockstep/keys/internal", json!({"type": "ed25519"})).expect_status(200);
    let symmetric = server.write("lockstep/keys/mac", json!({"type": "hmac-sha256", "public_jwks": true}));
    assert_eq!(symmetric.status, 400, "{symmetric:?}");
    assert!(symmetric.errors().contains("\"public_jwks\""), "{symmetric:?}");
    // The published next version is in the set ahead of its activation.
    server.write("lockstep/keys/jwt/rotate", json!({})).expect_status(200);
    let kids: Vec<Value> = server.read("lockstep/keys/jwt").data()["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["kid"].clone())
        .collect();
    let anonymous = |path: &str| match ureq::get(&format!("{}/v1/lockstep/{path}", server.address())).call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("request failed: {error}"),
    };
    let response = anonymous("jwks/jwt");
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    let cache = response.header("Cache-Control").unwrap_or_default().to_string();
    let max_age: i64 = cache.strip_prefix("public, max-age=").and_then(|a| a.parse().ok()).unwrap_or(-1);
    // The next publication is 20 h away: the cap of an hour applies.
    assert_eq!(max_age, 3_600, "{cache}");
    let set: Value = serde_json::from_str(&response.into_string().expect("body")).expect("json");
    let listed: Vec<Value> = set["keys"].as_array().into_iter().flatten().map(|k| k["kid"].clone()).collect();
    assert_eq!(listed, kids, "{set}");
    assert!(set["keys"].as_array().into_iter().flatten().all(|k| k["kty"] == "OKP" && k["alg"] == "EdDSA"), "{set}");
    assert!(!set.to_string().contains("\"d\""), "no private member: {set}");
    // Not public, or not there: the same 404, without a token.
    for path in ["jwks/internal", "jwks/nothing"] {
        assert_eq!(anonymous(path).status(), 404, "{path}");
    }
    // Everything else still needs a token.
    assert_eq!(anonymous("keys/jwt").status(), 403);
}

#[test]
fn the_servers_openapi_document_lists_every_lockstep_path() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    let reply = server.request("GET", "sys/internal/specs/openapi", None).expect_status(200);
    let paths = reply.body["paths"].as_object().cloned().unwrap_or_default();
    for path in [
        "/lockstep/info",
        "/lockstep/config",
        "/lockstep/keys/",
        "/lockstep/keys/{name}",
        "/lockstep/keys/{name}/rotate",
        "/lockstep/keys/{name}/revoke",
        "/lockstep/pools/",
        "/lockstep/pools/{name}",
        "/lockstep/bundle/{pool}",
        "/lockstep/status/{name}",
        "/lockstep/history/{name}",
        "/lockstep/jwks/{name}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().filter(|k| k.contains("lockstep")).collect::<Vec<_>>()
        );
    }
    // Operations and fields come from the declarations.
    let keys = &paths["/lockstep/keys/{name}"];
    assert!(keys["post"]["requestBody"].to_string().contains("rotation_period"), "{keys}");
    assert!(keys["get"].is_object() && keys["delete"].is_object(), "{keys}");
    let revoke = &paths["/lockstep/keys/{name}/revoke"]["post"]["requestBody"];
    assert!(revoke.to_string().contains(r#""required":["version","reason"]"#), "{revoke}");
    let bundle = &paths["/lockstep/bundle/{pool}"];
    assert!(bundle["get"]["parameters"].to_string().contains("\"held\""), "{bundle}");
}
