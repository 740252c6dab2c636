//! The plugin inside a real server (OpenBao's release binary or Vault
//! built from Go modules, as `LOCKSTEP_SERVER` picks): registered by
//! SHA-256 and version, mounted, used over HTTP and the CLI, reloaded,
//! restarted, audited, and driven by the server's own periodic call. The
//! `smoke_` tests are the subset every server of the matrix runs, the
//! previous OpenBao minor included; this suite also checks that the matrix
//! covers every suite that starts a server.

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_tests::server::{PLUGIN_FILE, PLUGIN_NAME, Server, server_kind};
use lockstep_tests::sidecar::Sidecar;
use lockstep_tests::{plugin_version, workspace_root};
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
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
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
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
    server.write("lockstep/pools/api", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
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
        "/lockstep/keys/{name}/renumber",
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
    let renumber = &paths["/lockstep/keys/{name}/renumber"]["post"]["requestBody"];
    assert!(renumber.to_string().contains(r#""required":["past_version","reason"]"#), "{renumber}");
    let bundle = &paths["/lockstep/bundle/{pool}"];
    assert!(bundle["get"]["parameters"].to_string().contains("\"held\""), "{bundle}");
}

/// A token for `pool`'s sidecars under the project's sidecar policy.
fn pool_token(server: &Server, pool: &str) -> String {
    let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
        .expect("policies/lockstep-sidecar-web.hcl")
        .replace("lockstep/bundle/web", &format!("lockstep/bundle/{pool}"));
    server.request("PUT", &format!("sys/policies/acl/sidecar-{pool}"), Some(json!({"policy": hcl}))).expect_status(204);
    let reply = server
        .write(
            "auth/token/create",
            json!({"policies": [format!("sidecar-{pool}")], "ttl": "1h", "no_default_policy": true}),
        )
        .expect_status(200);
    reply.body["auth"]["client_token"].as_str().expect("a token").to_string()
}

fn start_sidecar(dir: &Path, server: &Server, pool: &str) -> Sidecar {
    let token_file = dir.join(format!("{pool}.token"));
    std::fs::write(&token_file, pool_token(server, pool)).expect("token file");
    let config = format!(
        "pool = \"{pool}\"\ninstance = \"{pool}-1\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\npoll_interval_secs = 2\n\
         [auth]\nmethod = \"token\"\ntoken_file = \"{token}\"\n[socket]\npath = \"{dir}/{pool}.sock\"\n",
        addr = server.address(),
        token = token_file.display(),
        dir = dir.display(),
    );
    let sidecar = Sidecar::start(dir, pool, &config);
    sidecar.wait_ready();
    sidecar
}

#[test]
fn smoke_register_mount_rotate_with_cas_and_two_pools_sign_and_verify() {
    let server = Server::dev();
    eprintln!("server under test: {}", server_kind().version_line);
    let sha = lockstep_tests::sha256_file(&server.plugin_dir().join(PLUGIN_FILE));
    let register = ["plugin", "register", &format!("-sha256={sha}"), &format!("-version={}", plugin_version())];
    cli_ok(&server, &[&register[..], &[&format!("-command={PLUGIN_FILE}"), "secret", PLUGIN_NAME]].concat());
    cli_ok(&server, &["secrets", "enable", "-path=lockstep", PLUGIN_NAME]);
    let fleet =
        json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"});
    server.write("lockstep/config", fleet).expect_status(200);
    let policy = json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
                        "max_token_ttl": "10m", "commit_timeout": "30m"});
    server.write("lockstep/keys/jwt", policy).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
    server.write("lockstep/pools/edge", json!({"keyrings": "jwt", "mode": "verify"})).expect_status(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let web = start_sidecar(dir.path(), &server, "web");
    let edge = start_sidecar(dir.path(), &server, "edge");

    // Compare-and-swap: one rotation from version 1, then a conflict.
    let rotated = server.write("lockstep/keys/jwt/rotate", json!({"expected_version": 1, "reason": "smoke"}));
    assert_eq!(rotated.expect_status(200).data()["version"], 2);
    let conflict = server.write("lockstep/keys/jwt/rotate", json!({"expected_version": 1}));
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert!(conflict.errors().contains("the latest is 2"), "{conflict:?}");

    // Both sidecars take version 2; once it activates the sign pool signs
    // with it and the verify pool accepts the token.
    web.wait_until("web signs with version 2", 60, |s| s.get("/v1/keys/jwt").body["signing"]["version"] == 2);
    let signed = web.request("POST", "/v1/jwt/jwt/sign", Some(&json!({"claims": {"sub": "smoke"}, "ttl": 60})));
    let token = signed.body["token"].clone();
    assert_eq!(signed.status, 200, "{signed:?}");
    let verified = edge.request("POST", "/v1/jwt/jwt/verify", Some(&json!({"token": token})));
    assert_eq!(
        (verified.status, &verified.body["valid"], &verified.body["version"]),
        (200, &json!(true), &json!(2)),
        "{verified:?}"
    );
    let refused = edge.request("POST", "/v1/jwt/jwt/sign", Some(&json!({"claims": {"sub": "x"}, "ttl": 60})));
    assert_eq!((refused.status, &refused.body["error"]["code"]), (400, &json!("verify_only")), "{refused:?}");
}

#[test]
fn policy_fields_left_out_are_derived_to_fit_and_given_ones_are_judged_as_given() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    // What a new user types: the CLI prints the derivations as warnings.
    let out = server.cli(&["write", "lockstep/keys/hourly", "type=ed25519", "rotation_period=1h"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("commit_timeout was not given and 21600s would not fit: set to 900s"), "{text}");
    assert!(text.contains("grace_period was not given"), "{text}");
    let hourly = server.read("lockstep/keys/hourly").expect_status(200);
    let fields = ["rotation_period", "prepublish", "commit_timeout", "grace_period", "max_token_ttl"];
    let values: Vec<&Value> = fields.iter().map(|f| &hourly.data()[*f]).collect();
    assert_eq!(values, [&json!(3_600), &json!(900), &json!(900), &json!(3_660), &json!(3_600)], "{hourly:?}");

    let ten = server.write("lockstep/keys/ten", json!({"type": "hmac-sha256", "rotation_period": "10m"}));
    let ten = ten.expect_status(200);
    assert_eq!(ten.body["warnings"].as_array().map(Vec::len), Some(3), "{ten:?}");
    assert_eq!((&ten.data()["prepublish"], &ten.data()["grace_period"]), (&json!(150), &json!(3_660)));
    // The derived keyring rotates like any other.
    server.write("lockstep/keys/ten/rotate", json!({"expected_version": 1})).expect_status(200);

    // Given values are checked as they are, naming the field.
    for (body, field) in [
        (json!({"type": "ed25519", "rotation_period": "1h", "commit_timeout": "2h"}), "commit_timeout"),
        (json!({"type": "ed25519", "rotation_period": "1h", "grace_period": "1m"}), "grace_period"),
        (json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "1h"}), "prepublish"),
        // No grace period fits a rotation this short: its own fault.
        (json!({"type": "ed25519", "rotation_period": "1s"}), "rotation_period"),
    ] {
        let refused = server.write("lockstep/keys/bad", body);
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(refused.errors().contains(&format!("field \"{field}\"")), "{refused:?}");
    }
    assert_eq!(server.read("lockstep/keys/bad").status, 404, "nothing half made");
    // An update keeps the keyring's fields that still fit (20 minutes) and
    // derives those that no longer do (10 minutes).
    let updated = server.write("lockstep/keys/hourly", json!({"rotation_period": "20m"})).expect_status(200);
    assert_eq!((&updated.data()["prepublish"], &updated.body["warnings"]), (&json!(900), &Value::Null), "{updated:?}");
    let updated = server.write("lockstep/keys/hourly", json!({"rotation_period": "10m"})).expect_status(200);
    assert_eq!((&updated.data()["prepublish"], &updated.data()["commit_timeout"]), (&json!(150), &json!(150)));
    assert_eq!(updated.body["warnings"].as_array().map(Vec::len), Some(2), "{updated:?}");
}

#[test]
fn the_audit_log_records_lockstep_requests_without_key_material_or_tokens() {
    let server = Server::dev_audited().with_mounts(&["lockstep"]);
    let log = server.audit_log().expect("an audit device").to_path_buf();
    server.write("lockstep/keys/jwt", json!({"type": "ed25519"})).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
    let token = pool_token(&server, "web");
    let bundle = server.with_token(&token).read("lockstep/bundle/web?instance=web-1").expect_status(200);
    let private = bundle.data()["keyrings"]["jwt"]["versions"][0]["private_key"].as_str().expect("private key");
    server.write("lockstep/keys/jwt/rotate", json!({"expected_version": 1, "reason": "audited"})).expect_status(200);

    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let entries: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let paths: Vec<&str> = entries.iter().filter_map(|e| e["request"]["path"].as_str()).collect();
    for path in ["lockstep/keys/jwt", "lockstep/bundle/web", "lockstep/keys/jwt/rotate"] {
        assert!(paths.contains(&path), "{path} not audited: {paths:?}");
    }
    // The server hashes what the plugin answered and who asked.
    assert!(!text.contains(private), "the bundle's private key is in the audit log");
    assert!(!text.contains(&token), "the sidecar's token is in the audit log");
    assert!(!text.contains(server.token()), "the root token is in the audit log");
}

#[test]
fn the_openbao_servers_are_the_pinned_releases() {
    let releases = std::fs::read_to_string(workspace_root().join("tests/openbao/releases.tsv")).expect("releases.tsv");
    let pinned: Vec<(&str, &str)> = releases
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut cols = l.split('\t');
            (cols.next().unwrap_or_default(), cols.next().unwrap_or_default())
        })
        .collect();
    assert!(pinned.iter().any(|(v, _)| *v == "2.7.2") && pinned.iter().any(|(v, _)| *v == "2.6.2"), "{pinned:?}");
    for (version, commit) in &pinned {
        let bin = lockstep_tests::built_binary(&format!("openbao/{version}/bao"), "make openbao");
        let out = std::process::Command::new(&bin).arg("version").output().expect("bao version");
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(line.starts_with(&format!("OpenBao v{version} ({commit})")), "{}: {line}", bin.display());
    }
    let kind = server_kind();
    if kind.is_openbao() {
        let commit = pinned.iter().find(|(v, _)| *v == kind.version).map(|(_, c)| *c);
        assert!(
            commit.is_some_and(|c| kind.version_line.contains(c)),
            "{} is not pinned: {pinned:?}",
            kind.version_line
        );
    }
}

/// Every suite whose tests start a real server (through the harness's
/// `server`, `clients` or `torture` modules) runs on every server of the
/// matrix, so it must be in the Makefile's SERVER_SUITES.
#[test]
fn every_suite_that_starts_a_server_runs_on_the_whole_matrix() {
    let root = workspace_root();
    let makefile = std::fs::read_to_string(root.join("Makefile")).expect("Makefile");
    let listed: Vec<&str> = makefile
        .lines()
        .find_map(|l| l.strip_prefix("SERVER_SUITES := "))
        .expect("SERVER_SUITES in the Makefile")
        .split_whitespace()
        .collect();
    let mut starting = Vec::new();
    for entry in std::fs::read_dir(root.join("tests/tests")).expect("tests/tests") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("suite");
        let uses = ["lockstep_tests::server", "lockstep_tests::clients", "lockstep_tests::torture"];
        if uses.iter().any(|m| text.contains(m)) {
            starting.push(path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string());
        }
    }
    starting.sort();
    let mut sorted: Vec<String> = listed.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(sorted, starting, "SERVER_SUITES in the Makefile and the suites that start a server differ");
}

#[test]
fn the_plugin_exits_when_its_server_is_killed() {
    let mut server = Server::dev_with_mounts(&["lockstep"]);
    server.write("lockstep/keys/jwt", json!({"type": "ed25519"})).expect_status(200);
    let plugin = lockstep_tests::server::plugin_pid(server.pid().expect("running"));
    server.kill();
    // Gone, or a zombie waiting for its new parent to reap it.
    let running = || {
        std::fs::read_to_string(format!("/proc/{plugin}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() {
        assert!(Instant::now() < deadline, "plugin {plugin} still runs 10 s after its server was killed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The threat model's "cannot" for a stolen sidecar token: a caller holding
/// only a verify pool's bundle read sends 1,000 hostile reports (numbers
/// far ahead, forged kids under known numbers, many instance ids). They
/// move no number, give up no pending version, change no plan and push no
/// decision out of the history; status shows one alert.
#[test]
fn a_thousand_hostile_reports_through_a_verify_pools_token_change_nothing_an_operator_relies_on() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server.write("lockstep/keys/jwt", json!({"type": "ed25519"})).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
    server.write("lockstep/pools/edge", json!({"keyrings": "jwt", "mode": "verify"})).expect_status(200);
    let poll = |client: &lockstep_tests::server::Client, pool: &str, instance: &str, held: &str| {
        client.read(&format!("lockstep/bundle/{pool}?instance={instance}&held={held}"))
    };
    // The record an operator relies on: a rotation, a revocation with its
    // incident reason, and a version pending now.
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "quarterly"})).expect_status(200);
    server.read("lockstep/bundle/web?instance=web-1&held=jwt:2").expect_status(200);
    server.read("lockstep/bundle/edge?instance=edge-1&held=jwt:2").expect_status(200);
    server
        .write("lockstep/keys/jwt/revoke", json!({"version": 1, "reason": "INC-4711: key copied"}))
        .expect_status(200);
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "next"})).expect_status(200);
    let keys_before = server.read("lockstep/keys/jwt").expect_status(200).data().clone();
    assert_eq!(keys_before["pending_version"], 3, "{keys_before}");
    let decisions = |server: &Server| -> Vec<Value> {
        let history = server.read("lockstep/history/jwt").expect_status(200);
        history.data()["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["action"] != "fleet-ahead")
            .cloned()
            .collect()
    };
    let before = decisions(&server);
    let actions: Vec<&str> = before.iter().filter_map(|e| e["action"].as_str()).filter(|a| *a != "activate").collect();
    assert_eq!(actions, ["create", "publish", "pool", "pool", "publish", "commit", "revoke", "publish"], "{before:?}");
    let without_generation = |keys: &Value| {
        let mut keys = keys.clone();
        keys.as_object_mut().map(|k| k.remove("generation"));
        keys
    };

    let attacker = server.with_token(&pool_token(&server, "edge"));
    assert_eq!(attacker.read("lockstep/keys/jwt").status, 403, "the token reads its pool's bundle only");
    let generation = keys_before["generation"].as_u64().expect("generation");
    for i in 0..1_000u64 {
        let held = match i % 3 {
            0 => format!("jwt:{}:made-up-{i}:{}", 20 + i * 7, generation + 1),
            1 => format!("jwt:{}:made-up-{i}:{}", 9_000 + i, generation),
            _ => format!("jwt:2:forged-{i}:{}", generation + 2),
        };
        let reply = poll(&attacker, "edge", &format!("edge-{}", i % 97), &held);
        assert_eq!(reply.status, 200, "claim {i}: {reply:?}");
    }

    let keys_after = server.read("lockstep/keys/jwt").expect_status(200).data().clone();
    // The generation moves past a report at most once a poll interval, and
    // never further than a fleet can have gone in 16 versions.
    let moved = keys_after["generation"].as_u64().unwrap_or(u64::MAX).saturating_sub(generation);
    assert!(moved <= 2 * 161, "the generation moved by {moved}");
    assert_eq!(without_generation(&keys_after), without_generation(&keys_before), "numbers, pending version and plan");
    // Every decision kept, as it was; the scheduler's own entries (a
    // version's activation, an expiry) may follow.
    let after = decisions(&server);
    assert_eq!(after.get(..before.len()), Some(&before[..]), "every decision kept, as it was: {after:?}");
    let later: Vec<&Value> =
        after[before.len()..].iter().filter(|e| e["action"] != "activate" && e["action"] != "expire").collect();
    assert!(later.is_empty(), "nothing else was decided: {later:?}");
    let history = server.read("lockstep/history/jwt").expect_status(200);
    let reports: Vec<&Value> =
        history.data()["entries"].as_array().into_iter().flatten().filter(|e| e["action"] == "fleet-ahead").collect();
    assert!(!reports.is_empty() && reports.len() <= 4, "coalesced, at most 4 for one pool: {reports:?}");
    assert!(reports.iter().all(|r| r["reports"]["claimant"].as_str().is_some_and(|c| c.starts_with("edge/"))));
    let status = server.read("lockstep/status/jwt").expect_status(200);
    let alerts: Vec<&str> =
        status.data()["alerts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(alerts.iter().filter(|a| a.contains("did not issue")).count(), 1, "{alerts:?}");
    // The operator settles the pending version and rotates: the next number.
    server.write("lockstep/keys/jwt/revoke", json!({"version": 3, "reason": "superseded by hand"})).expect_status(200);
    let rotated = server.write("lockstep/keys/jwt/rotate", json!({"reason": "after the drill"})).expect_status(200);
    assert_eq!(rotated.data()["version"], 4, "{rotated:?}");
}

/// Starts a long-poll on `server` that would wait 30 s (nothing changes),
/// in `scope`; answers its reply (none if the connection failed, as it may
/// when the server shuts down) and how long it took.
fn long_poll<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    server: &'s Server,
) -> std::thread::ScopedJoinHandle<'s, (Option<lockstep_tests::Reply>, Duration)> {
    let first = server.read("lockstep/bundle/web?instance=web-1").expect_status(200);
    let revision = first.data()["revision"].as_str().expect("a revision").to_string();
    let path = format!("lockstep/bundle/web?instance=web-1&revision={revision}&wait=30");
    let handle = scope.spawn(move || {
        let started = Instant::now();
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.read(&path))).ok();
        (reply, started.elapsed())
    });
    // Well into its wait.
    std::thread::sleep(Duration::from_secs(3));
    handle
}

fn waiting_fleet(server: &Server) {
    server.write("lockstep/keys/jwt", json!({"type": "ed25519"})).expect_status(200);
    server.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
}

/// Whether process `pid` has ended (exited, or exited and not yet reaped).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// The server waits for every request in flight before it seals or shuts
/// down, and gives the plugin no word of it: a long-poll waiting 30 s would
/// hold the seal, and every request behind it, for that long. The plugin
/// probes the server's health endpoint (its address from the environment
/// the server passes on), which stops answering at once, and ends its
/// waits. Bounds here are a third of the wait, so that a regression fails.
#[test]
fn a_waiting_long_poll_holds_up_neither_a_seal_nor_a_shutdown() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    waiting_fleet(&server);
    std::thread::scope(|scope| {
        let poll = long_poll(scope, &server);
        let started = Instant::now();
        let sealing = scope.spawn(|| server.write("sys/seal", json!({})));
        std::thread::sleep(Duration::from_millis(300));
        // An unrelated request sent while the seal waits.
        let unrelated = server.read("sys/mounts");
        let unrelated_took = started.elapsed();
        let sealed = sealing.join().expect("seal thread");
        let seal_took = started.elapsed();
        assert!(sealed.status < 300, "{sealed:?}");
        let (reply, waited) = poll.join().expect("poll thread");
        let reply = reply.expect("an answer");
        assert!(seal_took < Duration::from_secs(10), "the seal took {seal_took:?}");
        assert!(
            unrelated_took < Duration::from_secs(10),
            "an unrelated request waited {unrelated_took:?}: {unrelated:?}"
        );
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.data()["not_modified"], true, "{reply:?}");
        assert!(waited < Duration::from_secs(12), "the poll waited {waited:?}");
        // The server copies the plugin's log lines into its own on its own
        // schedule.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("the server is draining") {
            assert!(Instant::now() < deadline, "the plugin never logged the seal coming:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let server = Server::dev_with_mounts(&["lockstep"]);
    waiting_fleet(&server);
    let pid = server.pid().expect("a running server");
    std::thread::scope(|scope| {
        let poll = long_poll(scope, &server);
        let started = Instant::now();
        let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(term.success());
        while !ended(pid) && started.elapsed() < Duration::from_secs(40) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "SIGTERM took {took:?} to stop the server");
        let (_, waited) = poll.join().expect("poll thread");
        assert!(waited < Duration::from_secs(12), "the poll waited {waited:?}");
    });
}

/// The same on a raft cluster's active node: a step-down waits for the
/// requests in flight, and the long-poll ends at once.
#[test]
fn a_waiting_long_poll_does_not_hold_up_a_step_down() {
    let (first, second) = Server::raft_pair();
    let first = first.with_mounts(&["lockstep"]);
    waiting_fleet(&first);
    std::thread::scope(|scope| {
        let poll = long_poll(scope, &first);
        let started = Instant::now();
        first.request("PUT", "sys/step-down", None).expect_status(204);
        std::thread::sleep(Duration::from_millis(300));
        let unrelated = first.read("auth/token/lookup-self");
        let unrelated_took = started.elapsed();
        second.wait_active(60);
        let took = started.elapsed();
        assert!(
            unrelated_took < Duration::from_secs(10),
            "an unrelated request waited {unrelated_took:?}: {unrelated:?}"
        );
        assert!(took < Duration::from_secs(20), "the other node took over after {took:?}");
        let (reply, waited) = poll.join().expect("poll thread");
        assert!(waited < Duration::from_secs(12), "the poll waited {waited:?}: {reply:?}");
    });
}

/// The row of `key` in the CLI's table output.
fn table_row<'a>(table: &'a str, key: &str) -> &'a str {
    table.lines().find(|l| l.split_whitespace().next() == Some(key)).unwrap_or_else(|| panic!("no {key} row:\n{table}"))
}

#[test]
fn operators_read_plain_answers_and_history_names_who_decided() {
    let server = Server::dev_with_mounts(&["lockstep"]);
    // A person logs in (userpass gives the token an identity entity).
    server.request("POST", "sys/auth/userpass", Some(json!({"type": "userpass"}))).expect_status(204);
    let policy = "path \"lockstep/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }";
    server.request("PUT", "sys/policies/acl/lockstep-operator", Some(json!({"policy": policy}))).expect_status(204);
    server
        .write("auth/userpass/users/alice", json!({"password": "correct horse", "policies": "lockstep-operator"}))
        .expect_status(204);
    let login = server.write("auth/userpass/login/alice", json!({"password": "correct horse"})).expect_status(200);
    let auth = &login.body["auth"];
    let (token, entity, accessor) = (
        auth["client_token"].as_str().expect("token"),
        auth["entity_id"].as_str().expect("entity id").to_string(),
        auth["accessor"].as_str().expect("accessor").to_string(),
    );
    assert!(!entity.is_empty() && !accessor.is_empty(), "{auth}");
    let alice = server.with_token(token);

    let created = alice
        .write("lockstep/keys/jwt", json!({"type": "ed25519", "rotation_period": "24h", "prepublish": "1h"}))
        .expect_status(200);
    assert_eq!(created.data()["summary"], "v1 signs", "{created:?}");
    let start = created.data()["versions"][0]["not_before"].as_str().expect("v1's start").to_string();
    let next = created.data()["next_rotation"].as_str().expect("next_rotation").to_string();
    assert!(next > start, "the next rotation comes a rotation period after v1's start: {next} vs {start}");

    // A pool created without a mode only verifies, and the answer says so.
    let pool = alice.write("lockstep/pools/edge", json!({"keyrings": "jwt"})).expect_status(200);
    assert_eq!(pool.data()["mode"], "verify", "{pool:?}");
    let warned = pool.body["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| w.as_str().is_some_and(|w| w.contains("no mode given") && w.contains("mode=sign")));
    assert!(warned, "{pool:?}");
    let bundle = server.read("lockstep/bundle/edge?instance=edge-1").expect_status(200);
    assert!(bundle.data()["keyrings"]["jwt"]["versions"][0].get("private_key").is_none(), "{bundle:?}");

    let rotated = alice.write("lockstep/keys/jwt/rotate", json!({"reason": "quarterly"})).expect_status(200);
    let key = alice.read("lockstep/keys/jwt").expect_status(200);
    let planned = key.data()["versions"][1]["planned_activation"].as_str().expect("v2 planned").to_string();
    let summary = key.data()["summary"].as_str().unwrap_or_default().to_string();
    assert!(summary.starts_with("v2 pending (published, waits for every live pool; planned for "), "{summary}");
    assert!(summary.ends_with("; v1 signs"), "{summary}");
    assert_eq!(key.data()["next_rotation"], planned.as_str(), "{key:?} after {rotated:?}");
    assert_eq!(key.data()["pending_version"], 2, "one word, one meaning: {key:?}");

    // History: the decision, who made it by name, entity and accessor.
    let history = server.read("lockstep/history/jwt").expect_status(200);
    let entries = history.data()["entries"].as_array().cloned().unwrap_or_default();
    let publish = entries.iter().rev().find(|e| e["action"] == "publish").expect("a publish entry");
    assert_eq!(publish["actor"], "userpass-alice", "{publish}");
    assert_eq!(publish["actor_entity_id"], entity.as_str(), "{publish}");
    assert_eq!(publish["actor_accessor"], accessor.as_str(), "{publish}");
    assert_eq!(history.data()["entries_kept"], entries.len(), "{history:?}");
    let last = history.data()["last_decision"].as_str().unwrap_or_default().to_string();
    let seq = publish["seq"].as_u64().expect("seq");
    assert!(last.starts_with(&format!("#{seq} ")), "{last}");
    assert!(last.ends_with(" publish v2 (manual, by userpass-alice): quarterly"), "{last}");
    let create = entries.iter().find(|e| e["action"] == "create").expect("create");
    assert_eq!(create["actor_entity_id"], entity.as_str(), "{create}");
    // The root token has no entity: its accessor alone names it.
    server.write("lockstep/pools/api", json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
    let history = server.read("lockstep/history/jwt").expect_status(200);
    let pool = history.data()["entries"].as_array().and_then(|e| e.last().cloned()).unwrap_or_default();
    assert_eq!((&pool["action"], &pool["actor_entity_id"]), (&json!("pool"), &Value::Null), "{pool}");
    assert!(pool["actor_accessor"].as_str().is_some_and(|a| !a.is_empty() && a != accessor), "{pool}");

    // In the CLI's default table format the flat fields read as one line.
    let table = cli_ok(&server, &["read", "lockstep/keys/jwt"]);
    assert_eq!(table_row(&table, "summary").split_whitespace().skip(1).collect::<Vec<_>>().join(" "), summary);
    assert!(table_row(&table, "next_rotation").contains(&planned), "{table}");
    let table = cli_ok(&server, &["read", "lockstep/history/jwt"]);
    let row = table_row(&table, "last_decision");
    assert!(row.ends_with(" pool (manual, by token): pool api may fetch it now, in mode sign"), "{table}");
    let table = cli_ok(&server, &["read", "lockstep/status/jwt"]);
    let row = table_row(&table, "summary");
    assert!(row.ends_with("v1 signs; v2 pending: 0 of 1 live pools hold it"), "{table}");
}
