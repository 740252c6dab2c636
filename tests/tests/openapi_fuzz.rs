//! Schemathesis, driven by the two OpenAPI documents Lockstep serves, fuzzes
//! the plugin through the real server and the sidecar through its socket:
//! a bounded, seeded run of every operation with valid and invalid input,
//! where any 5xx answer or a crash fails the test. First each document must
//! pass openapi-spec-validator, the standard check of OpenAPI 3.0.
//!
//! Schemathesis speaks TCP; the sidecar answers on a Unix socket only, so
//! the test bridges one to the other (the sidecar still sees a local peer
//! of this user, which its allow-list admits).

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use lockstep_tests::server::Server;
use lockstep_tests::sidecar::Sidecar;
use lockstep_tests::{Reply, required_binary};
use serde_json::{Value, json};

/// Test cases per operation and phase; the seed makes a failure repeatable.
const EXAMPLES: &str = "40";
const SEED: &str = "20261201";

fn schemathesis() -> PathBuf {
    required_binary("LOCKSTEP_SCHEMATHESIS", "pyenv/bin/schemathesis", "make pytools")
}

/// Panics with openapi-spec-validator's report unless `spec` is valid
/// OpenAPI 3.0.
fn validate(dir: &Path, name: &str, spec: &Value) {
    let spec_file = dir.join(format!("{name}.openapi.json"));
    std::fs::write(&spec_file, spec.to_string()).expect("write the document");
    let validator = required_binary("LOCKSTEP_OPENAPI_VALIDATOR", "pyenv/bin/openapi-spec-validator", "make pytools");
    let out = Command::new(validator).arg(&spec_file).output().expect("run openapi-spec-validator");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the {name} OpenAPI document is not valid OpenAPI 3.0:\n{report}");
}

/// `spec` with only the paths under `prefix` and the components they refer
/// to, directly or through other components.
fn mount_only(mut spec: Value, prefix: &str) -> Value {
    if let Some(paths) = spec["paths"].as_object_mut() {
        paths.retain(|path, _| path.starts_with(prefix));
    }
    assert!(spec["paths"].as_object().is_some_and(|p| p.len() >= 10), "the mount's paths: {spec}");
    let all = spec["components"].take();
    let mut kept = json!({});
    let mut pending = vec![spec["paths"].to_string()];
    while let Some(text) = pending.pop() {
        for reference in text.split("\"#/components/").skip(1) {
            let Some((kind, name)) = reference.split('"').next().and_then(|r| r.split_once('/')) else { continue };
            if kept[kind].get(name).is_none()
                && let Some(component) = all.get(kind).and_then(|k| k.get(name))
            {
                pending.push(component.to_string());
                kept[kind][name] = component.clone();
            }
        }
    }
    spec["components"] = kept;
    spec
}

/// Runs openapi-spec-validator on `spec`, then schemathesis against
/// `base`; panics with their reports unless every check passed.
fn fuzz(dir: &Path, name: &str, spec: &Value, base: &str, headers: &[String]) {
    validate(dir, name, spec);
    let spec_file = dir.join(format!("{name}.openapi.json"));
    let har_file = dir.join(format!("{name}.har"));
    let mut command = Command::new(schemathesis());
    command
        .arg("run")
        .arg(&spec_file)
        .args(["--url", base, "--checks", "not_a_server_error", "--max-examples", EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "30", "--suppress-health-check", "all"])
        .args(["--phases", "examples,coverage,fuzzing", "--no-color", "--report", "har", "--report-har-path"])
        .arg(&har_file)
        .current_dir(dir);
    for header in headers {
        command.args(["--header", header]);
    }
    let out = command.output().expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found failures in the {name} API:\n{report}");
    // Read the exchanges back: no 5xx (independently of schemathesis's own
    // check), and enough successes that the run reached the handlers.
    let har: Value = serde_json::from_slice(&std::fs::read(&har_file).expect("the HAR report")).expect("HAR is JSON");
    let mut statuses = std::collections::BTreeMap::<u64, usize>::new();
    for entry in har["log"]["entries"].as_array().into_iter().flatten() {
        *statuses.entry(entry["response"]["status"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    let total: usize = statuses.values().sum();
    let successes: usize = statuses.range(200..300).map(|(_, n)| n).sum();
    println!("{name}: {total} requests, by status {statuses:?}");
    assert!(statuses.range(500..).next().is_none() && !statuses.contains_key(&0), "{name}: {statuses:?}\n{report}");
    assert!(total >= 500 && successes >= 50, "{name}: too little reached the handlers: {statuses:?}\n{report}");
}

/// Points the path parameters named in `names` at the fixture's names (and
/// one that does not exist), so generated requests reach the handlers
/// rather than stopping at "not found"; the negative phase still sends
/// names outside the list.
fn aim(spec: &mut Value, names: &[(&str, &[&str])]) {
    for item in spec["paths"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
        // Parameters sit on the path item and on its operations.
        let Some(item) = item.as_object_mut() else { continue };
        let lists = item.iter_mut().flat_map(|(key, value)| match key.as_str() {
            "parameters" => Some(value),
            _ => value.get_mut("parameters"),
        });
        for parameter in lists.flat_map(|list| list.as_array_mut().into_iter().flatten()) {
            let Some((_, values)) = names.iter().find(|(n, _)| parameter["name"] == *n && parameter["in"] == "path")
            else {
                continue;
            };
            let values: Vec<&str> = values.iter().copied().chain(["missing"]).collect();
            parameter["schema"] = json!({"type": "string", "enum": values});
        }
    }
}

/// Forwards every TCP connection on a free port to `socket`; answers the
/// address. The thread ends with the test process.
fn bridge(socket: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("address");
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || {
                if let Ok(upstream) = UnixStream::connect(&socket) {
                    lockstep_tests::relay::relay(client, upstream);
                }
            });
        }
    });
    format!("http://{address}")
}

fn ok(reply: Reply) {
    assert!(reply.status == 200 || reply.status == 204, "{reply:?}");
}

/// A server with one keyring of each family, a sign pool listing them all,
/// and a verify pool.
fn server() -> Server {
    let server = Server::dev_with_mounts(&["lockstep"]);
    ok(server.write("lockstep/config", json!({"poll_interval": "5s", "liveness_window": "30s"})));
    for (name, kind, public) in [
        ("jwt", "ed25519", true),
        ("ec", "ecdsa-p256", false),
        ("data", "aes256-gcm", false),
        ("hooks", "hmac-sha256", false),
    ] {
        let policy = json!({"type": kind, "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
                            "max_token_ttl": "10m", "commit_timeout": "30m", "public_jwks": public});
        ok(server.write(&format!("lockstep/keys/{name}"), policy));
    }
    ok(server.write("lockstep/pools/web", json!({"keyrings": "jwt,ec,data,hooks", "mode": "sign"})));
    ok(server.write("lockstep/pools/audit", json!({"keyrings": "jwt,hooks", "mode": "verify"})));
    server
}

#[test]
fn schemathesis_finds_no_server_error_in_the_plugin_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server();
    // The server's own document, cut down to the mount's paths and the
    // components they refer to (the rest is the server's own, not ours),
    // must be valid as the server serves it.
    let served = server.request("GET", "sys/internal/specs/openapi", None).expect_status(200).body;
    validate(dir.path(), "server", &mount_only(served, "/lockstep/"));
    let help = server.request("GET", "lockstep/?help=1", None).expect_status(200);
    let mut spec = help.body["openapi"].clone();
    assert!(spec["paths"].as_object().is_some_and(|p| p.len() >= 10), "the mount's document: {spec}");
    aim(&mut spec, &[("name", &["jwt", "ec", "data", "hooks", "web", "audit"]), ("pool", &["web", "audit"])]);
    let base = format!("{}/v1/lockstep", server.address());
    fuzz(dir.path(), "plugin", &spec, &base, &[format!("X-Vault-Token: {}", server.token())]);
    // The server survived the run and the engine still answers.
    server.read("lockstep/info").expect_status(200);
    assert!(!server.log().contains("panicked"), "a panic in the plugin:\n{}", server.log());
}

#[test]
fn schemathesis_finds_no_server_error_in_the_sidecar_socket_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server();
    let token_file = dir.path().join("web.token");
    let token = server.write("auth/token/create", json!({"policies": ["root"], "ttl": "1h"}));
    std::fs::write(&token_file, token.body["auth"]["client_token"].as_str().expect("a token")).expect("token file");
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
    std::fs::write(dir.path().join("keys/cache.key"), [7u8; 32]).expect("cache key");
    let d = dir.path().display();
    let config = format!(
        "pool = \"web\"\ninstance = \"web-1\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\n\
         [auth]\nmethod = \"token\"\ntoken_file = \"{d}/web.token\"\n[socket]\npath = \"{d}/web.sock\"\n\
         [cache]\nfile = \"{d}/web.cache\"\nkey_file = \"{d}/keys/cache.key\"\n[log]\nlevel = \"info\"\n",
        addr = server.address(),
    );
    let sidecar = Sidecar::start(dir.path(), "web", &config);
    sidecar.wait_ready();
    let mut spec = sidecar.get("/v1/openapi.json").expect_status(200).body;
    aim(&mut spec, &[("keyring", &["jwt", "ec", "data", "hooks"])]);
    let base = bridge(sidecar.socket());
    // Through the bridge, as schemathesis will see it.
    let mut probe = TcpStream::connect(base.trim_start_matches("http://")).expect("connect the bridge");
    std::io::Write::write_all(&mut probe, b"GET /healthz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    probe.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    fuzz(dir.path(), "sidecar", &spec, &base, &["X-Lockstep-Request: 1".to_string()]);
    sidecar.get("/healthz").expect_status(200);
    assert!(!sidecar.log().contains("panicked"), "a panic in the sidecar:\n{}", sidecar.log());
}
