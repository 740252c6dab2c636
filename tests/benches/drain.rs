//! The drain benchmark: how much longer a seal, a SIGTERM shutdown and a
//! step-down take, and how long an unrelated request waits meanwhile, with
//! N sidecars long-polling the server. `make bench-drain` runs it;
//! docs/performance.md records its figures.
//!
//! Each scenario runs three ways in one run, each on a fresh server:
//! without Lockstep's polls, with N long-polls and the plugin probing its
//! server (the server's own address in its environment, as the official
//! images set it), and with N long-polls and no address to probe (so the
//! waits run their full length, as before the probe existed). Seal and
//! SIGTERM run on a dev server; step-down on a 3-node raft cluster, the
//! polls on its active node.
//!
//! Options (after `--`): `--n 1000` (long-polling instances), `--wait 30`
//! (their wait, seconds), `--out DIR` (results.json; default
//! target/bench-drain).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockstep_tests::server::{self, Server};
use serde_json::{Value, json};

const MOUNT: &str = "lockstep";

#[derive(Debug, Clone)]
struct Options {
    n: usize,
    wait: u64,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options { n: 1_000, wait: 30, out: lockstep_tests::workspace_root().join("target/bench-drain") };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--n" => o.n = value.parse().expect("--n N"),
            "--wait" => o.wait = value.parse().expect("--wait SECONDS"),
            "--out" => o.out = PathBuf::from(value),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// N long-polling instances of one pool, until `stop`.
struct Pollers {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pollers {
    async fn start(server: &Server, n: usize, wait: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder().pool_max_idle_per_host(n + 16).build().expect("client");
        let base = format!("{}/v1/{MOUNT}/bundle/web", server.address());
        let token = server.token().to_string();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let (http, base, token, stop, polls) =
                (http.clone(), base.clone(), token.clone(), stop.clone(), polls.clone());
            tasks.push(tokio::spawn(async move {
                let mut revision = String::new();
                // Spread over a second, as pods start.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1_000))).await;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{base}?instance=i-{i}&held=jwt:1&revision={revision}&wait={wait}s");
                    let answer = http.get(url).header("X-Vault-Token", &token).send().await;
                    polls.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            let body: Value = response.json().await.unwrap_or(Value::Null);
                            if let Some(r) = body["data"]["revision"].as_str() {
                                revision = r.to_string();
                            }
                        }
                        _ => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            }));
        }
        let pollers = Self { stop, polls, tasks };
        // Every instance has fetched once and is waiting now.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pollers.polls.load(Ordering::Relaxed) < 2 * n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        pollers
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
        }
    }
}

fn prepare(server: &Server) {
    server.write(&format!("{MOUNT}/keys/jwt"), json!({"type": "ed25519"})).expect_status(200);
    server.write(&format!("{MOUNT}/pools/web"), json!({"keyrings": "jwt", "mode": "sign"})).expect_status(200);
}

/// Whether process `pid` has ended (exited, or exited and not reaped).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// Times a blocking request sent `after` from now, on another thread.
fn unrelated(url: String, token: String, after: Duration) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let started = Instant::now();
        let _ = ureq::get(&url).set("X-Vault-Token", &token).timeout(Duration::from_secs(120)).call();
        started.elapsed().as_secs_f64()
    })
}

#[derive(Debug, serde::Serialize)]
struct Measured {
    scenario: &'static str,
    variant: &'static str,
    /// The operation: the seal request's answer, the process's exit after
    /// SIGTERM, or another node active after the step-down.
    operation_s: f64,
    /// An unrelated request sent 200 ms into the operation.
    unrelated_s: f64,
}

async fn seal(opts: &Options, variant: &'static str) -> Measured {
    let server = Server::dev_with_mounts(&[MOUNT]);
    prepare(&server);
    let pollers = if variant == "none" { None } else { Some(Pollers::start(&server, opts.n, opts.wait).await) };
    let side = unrelated(server.url("sys/mounts"), server.token().to_string(), Duration::from_millis(200));
    let started = Instant::now();
    let (url, token) = (server.url("sys/seal"), server.token().to_string());
    let sealed = tokio::task::spawn_blocking(move || {
        ureq::put(&url)
            .set("X-Vault-Token", &token)
            .timeout(Duration::from_secs(120))
            .call()
            .map(|r| r.status())
            .map_err(|e| e.to_string())
    });
    let status = sealed.await.expect("seal thread");
    assert!(status.as_ref().is_ok_and(|s| *s < 300), "seal: {status:?}");
    let operation_s = started.elapsed().as_secs_f64();
    let unrelated_s = side.join().expect("unrelated request");
    if let Some(pollers) = pollers {
        pollers.stop();
    }
    Measured { scenario: "seal", variant, operation_s, unrelated_s }
}

async fn sigterm(opts: &Options, variant: &'static str) -> Measured {
    let server = Server::dev_with_mounts(&[MOUNT]);
    prepare(&server);
    let pollers = if variant == "none" { None } else { Some(Pollers::start(&server, opts.n, opts.wait).await) };
    let pid = server.pid().expect("running");
    let side = unrelated(server.url("sys/mounts"), server.token().to_string(), Duration::from_millis(200));
    let started = Instant::now();
    let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(term.success());
    while !ended(pid) && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let operation_s = started.elapsed().as_secs_f64();
    let unrelated_s = tokio::task::spawn_blocking(move || side.join().expect("unrelated request")).await.expect("join");
    if let Some(pollers) = pollers {
        pollers.stop();
    }
    Measured { scenario: "SIGTERM", variant, operation_s, unrelated_s }
}

async fn step_down(opts: &Options, variant: &'static str) -> Measured {
    let mut nodes = tokio::task::spawn_blocking(|| Server::raft_cluster(3)).await.expect("cluster");
    let first = nodes.remove(0).with_mounts(&[MOUNT]);
    prepare(&first);
    let pollers = if variant == "none" { None } else { Some(Pollers::start(&first, opts.n, opts.wait).await) };
    let side = unrelated(first.url("auth/token/lookup-self"), first.token().to_string(), Duration::from_millis(200));
    let started = Instant::now();
    first.request("PUT", "sys/step-down", None).expect_status(204);
    let others = nodes;
    let operation_s = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !others.iter().any(Server::is_active) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed().as_secs_f64()
    })
    .await
    .expect("waiting for a new active node");
    let unrelated_s = tokio::task::spawn_blocking(move || side.join().expect("unrelated request")).await.expect("join");
    if let Some(pollers) = pollers {
        pollers.stop();
    }
    Measured { scenario: "step-down (3-node raft)", variant, operation_s, unrelated_s }
}

fn main() {
    let opts = options();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    eprintln!("plugin: {}; server: {}", lockstep_tests::plugin_binary().display(), server::server_kind().label());
    std::fs::create_dir_all(&opts.out).expect("output directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut results = Vec::new();
    runtime.block_on(async {
        for scenario in ["seal", "SIGTERM", "step-down"] {
            for variant in ["none", "probe", "no-probe"] {
                server::pass_own_address(variant != "no-probe");
                eprintln!("  {scenario}, {variant}");
                let measured = match scenario {
                    "seal" => seal(&opts, variant).await,
                    "SIGTERM" => sigterm(&opts, variant).await,
                    _ => step_down(&opts, variant).await,
                };
                eprintln!("    {measured:?}");
                results.push(measured);
            }
        }
    });
    server::pass_own_address(true);
    let label = |v: &str| match v {
        "none" => "no long-polls".to_string(),
        "probe" => format!("{} long-polls, plugin probes its server", opts.n),
        _ => format!("{} long-polls, no address to probe", opts.n),
    };
    println!(
        "{}, {} long-polls waiting {} s each\n\n| operation | polls | operation took (s) | unrelated request waited (s) |\n|---|---|---:|---:|",
        server::server_kind().label(),
        opts.n,
        opts.wait
    );
    for m in &results {
        println!("| {} | {} | {:.2} | {:.2} |", m.scenario, label(m.variant), m.operation_s, m.unrelated_s);
    }
    let json = json!({"options": format!("{opts:?}"), "server": server::server_kind().label(), "results": results});
    std::fs::write(opts.out.join("results.json"), serde_json::to_string_pretty(&json).expect("json")).expect("write");
}
