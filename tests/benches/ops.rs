//! Keys that stay in the sidecar against Vault's Transit, side by side on
//! one server: encrypt and decrypt of 1 KiB, MAC, and a raw signature, at
//! 1 and 16 clients. `make bench-ops` runs it; docs/performance.md records
//! its figures.
//!
//! The release sidecar runs with its pool's bundle from a real dev server
//! (release plugin); clients are tokio tasks in this process, each with one
//! keep-alive connection (the sidecar's Unix socket, or HTTP to the
//! server). Options (after `--`): `--secs 5` per scenario.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use lockstep_sidecar::client::SocketClient;
use lockstep_tests::server::Server;
use lockstep_tests::sidecar::Sidecar;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
    Mac,
    Sign,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt 1 KiB",
            Self::Decrypt => "decrypt 1 KiB",
            Self::Mac => "MAC 1 KiB",
            Self::Sign => "sign 1 KiB (ed25519)",
        }
    }
}

/// One request of one scenario: where, and the body.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    body: Value,
}

struct Fixture {
    server: Server,
    sidecar: Sidecar,
    http: reqwest::Client,
    base: String,
    payload: String,
    sidecar_ciphertext: String,
    transit_ciphertext: String,
}

fn fixture(dir: &std::path::Path) -> Fixture {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server.request("POST", "sys/mounts/transit", Some(json!({"type": "transit"}))).expect_status(204);
    server.write("transit/keys/t-aes", json!({"type": "aes256-gcm96"})).expect_status(200);
    server.write("transit/keys/t-ed", json!({"type": "ed25519"})).expect_status(200);
    for (name, key_type) in [("data", "aes256-gcm"), ("hooks", "hmac-sha256"), ("ed", "ed25519")] {
        server.write(&format!("lockstep/keys/{name}"), json!({"type": key_type})).expect_status(200);
    }
    server.write("lockstep/pools/bench", json!({"keyrings": "data,hooks,ed", "mode": "sign"})).expect_status(200);
    let token = dir.join("token");
    std::fs::write(&token, server.token()).expect("token file");
    std::fs::create_dir_all(dir.join("cache")).expect("cache dir");
    std::fs::write(dir.join("cache.key"), [7u8; 32]).expect("cache key");
    let d = dir.display();
    let config = format!(
        "pool = \"bench\"\ninstance = \"bench-1\"\n[vault]\naddr = \"{}\"\n[auth]\nmethod = \"token\"\ntoken_file = \"{}\"\n\
         [socket]\npath = \"{d}/bench.sock\"\n[cache]\nfile = \"{d}/cache/bench.bin\"\nkey_file = \"{d}/cache.key\"\n\
         [log]\nlevel = \"warn\"\n",
        server.address(),
        token.display()
    );
    let sidecar = Sidecar::start(dir, "bench", &config);
    sidecar.wait_until("keys", 30, |s| s.get("/v1/keys/data").status == 200);
    let payload = STANDARD.encode(vec![0x5a; 1024]);
    let made = sidecar.request("POST", "/v1/encrypt/data", Some(&json!({"plaintext": payload})));
    let sidecar_ciphertext = made.body["ciphertext"].as_str().expect("ciphertext").to_string();
    let made = server.write("transit/encrypt/t-aes", json!({"plaintext": payload})).expect_status(200);
    let transit_ciphertext = made.data()["ciphertext"].as_str().expect("ciphertext").to_string();
    let base = format!("{}/v1", server.address());
    Fixture { server, sidecar, http: reqwest::Client::new(), base, payload, sidecar_ciphertext, transit_ciphertext }
}

fn sidecar_call(f: &Fixture, op: Op) -> Call {
    let (path, body) = match op {
        Op::Encrypt => ("/v1/encrypt/data", json!({"plaintext": f.payload})),
        Op::Decrypt => ("/v1/decrypt/data", json!({"ciphertext": f.sidecar_ciphertext})),
        Op::Mac => ("/v1/mac/hooks", json!({"data": f.payload})),
        Op::Sign => ("/v1/sign/ed", json!({"data": f.payload})),
    };
    Call { path: path.into(), body }
}

fn transit_call(f: &Fixture, op: Op) -> Call {
    let (path, body) = match op {
        Op::Encrypt => ("transit/encrypt/t-aes", json!({"plaintext": f.payload})),
        Op::Decrypt => ("transit/decrypt/t-aes", json!({"ciphertext": f.transit_ciphertext})),
        Op::Mac => ("transit/hmac/t-aes", json!({"input": f.payload})),
        Op::Sign => ("transit/sign/t-ed", json!({"input": f.payload})),
    };
    Call { path: path.into(), body }
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Figures {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figures(mut latencies: Vec<Duration>, secs: f64) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Figures {
        per_s: latencies.len() as f64 / secs,
        p50_us: at(0.5).as_secs_f64() * 1e6,
        p99_us: at(0.99).as_secs_f64() * 1e6,
    }
}

/// Repeats `one` until `end`; the latency of each call.
async fn timed<F, Fut>(end: Instant, mut one: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut latencies = Vec::new();
    while Instant::now() < end {
        let started = Instant::now();
        one().await;
        latencies.push(started.elapsed());
    }
    latencies
}

/// Every client's latencies, as figures over `secs`.
async fn gather(mut tasks: tokio::task::JoinSet<Vec<Duration>>, secs: u64) -> Figures {
    let mut all = Vec::new();
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies.expect("client"));
    }
    figures(all, secs as f64)
}

async fn run_sidecar(socket: &std::path::Path, call: &Call, clients: usize, secs: u64) -> Figures {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (socket, call) = (socket.to_path_buf(), call.clone());
        tasks.spawn(async move {
            let client = tokio::sync::Mutex::new(SocketClient::connect(&socket).await.expect("connect"));
            timed(end, || async {
                let (status, _) =
                    client.lock().await.send("POST", &call.path, Some(&call.body)).await.expect("request");
                assert_eq!(status, 200, "{}", call.path);
            })
            .await
        });
    }
    gather(tasks, secs).await
}

async fn run_transit(f: &Arc<Fixture>, call: &Call, clients: usize, secs: u64) -> Figures {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (f, call) = (f.clone(), call.clone());
        tasks.spawn(async move {
            let url = format!("{}/{}", f.base, call.path);
            let token = f.server.token().to_string();
            timed(end, || async {
                let response =
                    f.http.post(&url).header("X-Vault-Token", &token).json(&call.body).send().await.expect("request");
                assert!(response.status().is_success(), "{}: {}", call.path, response.status());
                response.bytes().await.expect("body");
            })
            .await
        });
    }
    gather(tasks, secs).await
}

fn main() {
    let secs = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .map(|s| s.parse::<u64>().expect("--secs: a number"))
        .unwrap_or(5);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Arc::new(fixture(dir.path()));
    let socket = fixture.sidecar.socket().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut rows = Vec::new();
    runtime.block_on(async {
        for op in [Op::Encrypt, Op::Decrypt, Op::Mac, Op::Sign] {
            for clients in [1, 16] {
                let sidecar = run_sidecar(&socket, &sidecar_call(&fixture, op), clients, secs).await;
                let transit = run_transit(&fixture, &transit_call(&fixture, op), clients, secs).await;
                eprintln!("{} x{clients}: sidecar {sidecar:?}, transit {transit:?}", op.name());
                rows.push((op, clients, sidecar, transit));
            }
        }
    });
    println!(
        "| operation | clients | sidecar ops/s | p50 µs | p99 µs | Transit ops/s | p50 µs | p99 µs | sidecar / Transit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (op, clients, s, t) in &rows {
        println!(
            "| {} | {clients} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1}× |",
            op.name(),
            s.per_s,
            s.p50_us,
            s.p99_us,
            t.per_s,
            t.p50_us,
            t.p99_us,
            s.per_s / t.per_s.max(1e-9)
        );
    }
    let results: Vec<Value> = rows
        .iter()
        .map(|(op, clients, s, t)| json!({"operation": op.name(), "clients": clients, "sidecar": s, "transit": t}))
        .collect();
    let out = lockstep_tests::workspace_root().join("target/bench-ops");
    std::fs::create_dir_all(&out).expect("output directory");
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results).expect("json")).expect("write");
}
