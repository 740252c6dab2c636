//! The fixture the client libraries' own test runners use: a real server
//! with the plugin, two pools (`web` signs, `audit` verifies) each served
//! by a release `lockstep-sidecar`, and a small control API on 127.0.0.1
//! through which a client's tests rotate a keyring or restart a sidecar.
//!
//! The environment a runner gets ([`ClientFixture::env`]):
//! `LOCKSTEP_SOCKET` (web), `LOCKSTEP_TEST_VERIFY_SOCKET` (audit),
//! `LOCKSTEP_TEST_CONTROL` (`http://127.0.0.1:<port>`) and
//! `LOCKSTEP_TEST_CASES` (the shared cases, `tests/testdata/`).
//!
//! Control API (POST, empty body, answers JSON):
//! `/rotate/<keyring>`: a manual rotation (the server's answer);
//! `/restart/<pool>`: stops that pool's sidecar and starts it again,
//! answering once its socket accepts; `/stop/<pool>`, `/start/<pool>`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::server::{Client, Server};
use crate::sidecar::{Sidecar, release_sidecar_binary};
use crate::workspace_root;

/// One pool's sidecar, as the control API restarts it.
#[derive(Debug)]
struct Slot {
    config: String,
    running: Option<Sidecar>,
}

/// The running fixture; everything stops when it is dropped.
#[derive(Debug)]
pub struct ClientFixture {
    sidecars: Arc<Mutex<BTreeMap<String, Slot>>>,
    server: Server,
    dir: tempfile::TempDir,
    control: String,
}

/// What the fixture's keyrings are: name and type.
pub const KEYRINGS: &[(&str, &str)] =
    &[("jwt", "ed25519"), ("es", "ecdsa-p256"), ("hooks", "hmac-sha256"), ("data", "aes256-gcm")];

fn sidecar_config(dir: &Path, server: &Server, pool: &str, token_file: &Path) -> String {
    let d = dir.display();
    format!(
        "pool = \"{pool}\"\ninstance = \"{pool}-1\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\npoll_interval_secs = 2\n\
         backoff_min_ms = 100\nbackoff_max_secs = 2\n[auth]\nmethod = \"token\"\ntoken_file = \"{token}\"\n\
         [socket]\npath = \"{d}/{pool}.sock\"\n[cache]\nfile = \"{d}/cache/{pool}.bin\"\nkey_file = \"{d}/keys/{pool}.key\"\n\
         max_age_secs = 600\n[log]\nlevel = \"info\"\n",
        addr = server.address(),
        token = token_file.display(),
    )
}

impl ClientFixture {
    /// Starts the server, configures the engine and both pools, starts their
    /// sidecars and waits until both serve version 1 of every keyring.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// As [`ClientFixture::start`], with `extra` TOML appended to the web
    /// pool's sidecar configuration.
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::dev_with_mounts(&["lockstep"]);
        let ok = |reply: crate::Reply| assert!(reply.status == 200 || reply.status == 204, "{reply:?}");
        ok(server.write(
            "lockstep/config",
            json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"}),
        ));
        for (name, kind) in KEYRINGS {
            // Two seconds from publication to activation: a rotation asked
            // through the control API signs everywhere within seconds.
            let policy = json!({"type": kind, "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
                                "max_token_ttl": "10m", "commit_timeout": "30m"});
            ok(server.write(&format!("lockstep/keys/{name}"), policy));
        }
        ok(server.write("lockstep/pools/web", json!({"keyrings": "jwt,es,hooks,data", "mode": "sign"})));
        ok(server.write("lockstep/pools/audit", json!({"keyrings": "jwt,hooks,data", "mode": "verify"})));
        for sub in ["cache", "keys"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("fixture dirs");
        }
        let mut slots = BTreeMap::new();
        for pool in ["web", "audit"] {
            // The project's least-privilege policy for a pool's sidecars.
            let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
                .expect("policies/lockstep-sidecar-web.hcl")
                .replace("lockstep/bundle/web", &format!("lockstep/bundle/{pool}"));
            server.request("PUT", &format!("sys/policies/acl/sidecar-{pool}"), Some(json!({"policy": hcl})));
            let token = server.write(
                "auth/token/create",
                json!({"policies": [format!("sidecar-{pool}")], "ttl": "2h", "no_default_policy": true}),
            );
            let token_file = dir.path().join(format!("{pool}.token"));
            std::fs::write(&token_file, token.body["auth"]["client_token"].as_str().expect("a token"))
                .expect("token file");
            std::fs::write(dir.path().join(format!("keys/{pool}.key")), [9u8; 32]).expect("cache key");
            let mut config = sidecar_config(dir.path(), &server, pool, &token_file);
            if pool == "web" {
                config.push_str(extra);
            }
            let sidecar = Sidecar::start_binary(&release_sidecar_binary(), dir.path(), pool, &config);
            sidecar.wait_until("version 1 of every keyring", 60, |s| {
                let keyrings = s.get("/v1/keyrings").body["keyrings"].as_array().map_or(0, Vec::len);
                keyrings == if pool == "web" { 4 } else { 3 } && s.get("/readyz").status == 200
            });
            slots.insert(pool.to_string(), Slot { config, running: Some(sidecar) });
        }
        let sidecars = Arc::new(Mutex::new(slots));
        let control = serve_control(server.with_token(server.token()), dir.path().to_path_buf(), Arc::clone(&sidecars));
        Self { sidecars, server, dir, control }
    }

    /// The socket of `pool`'s sidecar.
    pub fn socket(&self, pool: &str) -> PathBuf {
        self.dir.path().join(format!("{pool}.sock"))
    }

    /// The fixture's directory (sockets, logs, caches).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The environment a client's test runner is started with.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LOCKSTEP_SOCKET".into(), self.socket("web").display().to_string()),
            ("LOCKSTEP_TEST_VERIFY_SOCKET".into(), self.socket("audit").display().to_string()),
            ("LOCKSTEP_TEST_CONTROL".into(), self.control.clone()),
            (
                "LOCKSTEP_TEST_CASES".into(),
                workspace_root().join("tests/testdata/client-cases.json").display().to_string(),
            ),
            (
                "LOCKSTEP_TEST_ERRORS".into(),
                workspace_root().join("tests/testdata/client-errors.json").display().to_string(),
            ),
        ]
    }

    /// The logs of both sidecars, for a failing runner's report.
    pub fn logs(&self) -> String {
        let slots = self.sidecars.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .filter_map(|(pool, slot)| slot.running.as_ref().map(|s| format!("--- sidecar {pool} ---\n{}", s.log())))
            .collect()
    }
}

impl Drop for ClientFixture {
    fn drop(&mut self) {
        // The control thread holds the slots too: stop the sidecars here.
        let mut slots = self.sidecars.lock().unwrap_or_else(|p| p.into_inner());
        for slot in slots.values_mut() {
            slot.running.take();
        }
    }
}

/// Starts the control API on a free port; answers its base URL.
fn serve_control(vault: Client, dir: PathBuf, sidecars: Arc<Mutex<BTreeMap<String, Slot>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (vault, dir, sidecars) = (vault.clone(), dir.clone(), Arc::clone(&sidecars));
            std::thread::spawn(move || control_request(stream, &vault, &dir, &sidecars));
        }
    });
    format!("http://{address}")
}

fn control_request(stream: TcpStream, vault: &Client, dir: &Path, sidecars: &Mutex<BTreeMap<String, Slot>>) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The rest of the head (the requests carry no body worth reading).
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (action, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match action {
        "rotate" => {
            let reply = vault.request("POST", &format!("lockstep/keys/{target}/rotate"), Some(json!({})));
            (reply.status, reply.body)
        }
        "restart" | "stop" | "start" => {
            let mut slots = sidecars.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get_mut(target) {
                Some(slot) => {
                    if action != "start"
                        && let Some(mut running) = slot.running.take()
                    {
                        running.stop();
                    }
                    if action != "stop" && slot.running.is_none() {
                        slot.running =
                            Some(Sidecar::start_binary(&release_sidecar_binary(), dir, target, &slot.config));
                    }
                    (200, json!({"pool": target, "running": slot.running.is_some()}))
                }
                None => (404, json!({"error": format!("no pool {target:?}")})),
            }
        }
        _ => (404, json!({"error": format!("no control action {action:?}")})),
    };
    let body = body.to_string();
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Runs a client's test command with the fixture's environment; panics with
/// its output and the sidecars' logs unless it succeeds. Answers its output.
pub fn run_runner(fixture: &ClientFixture, mut command: std::process::Command, what: &str) -> String {
    command.envs(fixture.env());
    let out = command.output().unwrap_or_else(|e| panic!("start {what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}\n{}", out.status, fixture.logs());
    text
}
