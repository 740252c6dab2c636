//! The fleet benchmark: a real server with the release plugin, and N
//! simulated sidecars in this process speaking the real bundle protocol
//! (`instance`, `boot`, `held` as `keyring:version:kid:generation`,
//! `revision`, `wait`). `make bench-fleet` runs it; docs/performance.md
//! records its figures.
//!
//! For each fleet size it starts a fresh dev server, creates P pools
//! sharing K keyrings, starts N long-polling instances with a jittered
//! start, measures the steady state (polls/s, CPU of the server and the
//! plugin from /proc), rotates one keyring and measures how long until
//! every instance holds the new version, until the commit, and the
//! CPU-seconds spent. It also runs plain (non-waiting) polls, and the cost
//! of a not-modified and a full bundle against `info` (the bare hop) and a
//! KV read, side by side on one server.
//!
//! Options (after `--`): `--sizes 1000,2000,5000`, `--pools 10`,
//! `--keyrings 5`, `--steady 30` (seconds), `--plain 1000` (0 skips),
//! `--hop 10` (seconds per hop scenario), `--cluster 5000` (instances for
//! the cluster comparison, 0 skips it; `--cluster-only N` runs only that),
//! `--lists 1` (the cluster once more, each instance listing every node
//! from a different first one and moving off the active node when it
//! answers `prefer_standby`; 0 skips it), `--standbys-only 1` (the cluster
//! once more, every instance on a standby), `--settle 20` (seconds a new
//! server is left alone before it is measured idle), `--idle 15` (seconds
//! each node is measured before any instance polls), `--pprof DIR` (each
//! server's CPU profile of the steady state, from its
//! `sys/pprof/profile`),
//! `--out DIR` (results.json, fleet.svg and cluster.svg; default
//! target/bench-fleet).
//!
//! The cluster comparison runs N long-polling instances against a single
//! raft server and then against a 3-node OpenBao raft cluster whose
//! standbys serve reads, the instances spread evenly over the nodes, and
//! reports per node the CPU (server and plugin), the polls it answered and
//! those it sent on to the active node, the storage writes per second, and
//! for one rotation the time until every instance holds it and until the
//! commit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lockstep_tests::server::Server;
use serde_json::{Value, json};

const MOUNT: &str = "lockstep";
/// The keyring the benchmark rotates.
const ROTATED: &str = "k0";
/// The sidecar's default long-poll wait.
const WAIT: u64 = 30;
/// The cluster run whose instances all poll standbys.
const STANDBYS_ONLY: &str = "3-node cluster, standbys only";
/// The cluster run whose instances each list every node, starting at a
/// different one, and move off the active node when it says so.
const LISTS: &str = "3-node cluster, node lists";

#[derive(Debug, Clone)]
struct Options {
    sizes: Vec<usize>,
    pools: usize,
    keyrings: usize,
    steady: u64,
    plain: usize,
    hop: u64,
    /// Instances for the cluster comparison (0 skips it).
    cluster: usize,
    /// Only the cluster comparison.
    cluster_only: bool,
    /// Also run the cluster with every instance on a standby (the
    /// `-standby` service).
    standbys_only: bool,
    /// Also run the cluster with every instance listing every node.
    lists: bool,
    /// Seconds each node is measured idle before the instances start.
    idle: u64,
    /// Seconds a new server or cluster is left alone before its idle CPU
    /// is measured (raft elections, joins and promotions settle).
    settle: u64,
    /// Where to save each server's CPU profile of the steady state.
    pprof: Option<PathBuf>,
    out: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![1_000, 2_000, 5_000],
        pools: 10,
        keyrings: 5,
        steady: 30,
        plain: 1_000,
        hop: 10,
        cluster: 5_000,
        cluster_only: false,
        standbys_only: false,
        lists: true,
        idle: 15,
        settle: 20,
        pprof: None,
        out: lockstep_tests::workspace_root().join("target/bench-fleet"),
    };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{}: {value:?} is not a number", pair[0]));
        match pair[0].as_str() {
            "--sizes" => o.sizes = value.split(',').map(|n| n.parse().expect("--sizes: numbers")).collect(),
            "--pools" => o.pools = number() as usize,
            "--keyrings" => o.keyrings = number() as usize,
            "--steady" => o.steady = number(),
            "--plain" => o.plain = number() as usize,
            "--hop" => o.hop = number(),
            "--cluster" => o.cluster = number() as usize,
            "--cluster-only" => {
                o.cluster = number() as usize;
                o.cluster_only = true;
            }
            "--standbys-only" => o.standbys_only = value == "1",
            "--lists" => o.lists = value == "1",
            "--idle" => o.idle = number(),
            "--settle" => o.settle = number(),
            "--pprof" => o.pprof = Some(PathBuf::from(value)),
            "--out" => o.out = PathBuf::from(value),
            other => panic!("unknown option {other:?}"),
        }
    }
    o
}

/// CPU time of a process, in seconds, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Server and plugin, measured together.
#[derive(Debug, Clone, Copy)]
struct Procs {
    server: u32,
    plugin: u32,
}

impl Procs {
    fn cpu(self) -> (f64, f64) {
        (cpu_seconds(self.server), cpu_seconds(self.plugin))
    }
}

/// Where simulated sidecars send their polls: one node.
struct Endpoint {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Endpoint {
    fn new(server: &Server) -> Arc<Self> {
        let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)).build().expect("client");
        Arc::new(Self { http, base: format!("{}/v1", server.address()), token: server.token().to_string() })
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let response =
            self.http.get(format!("{}/{path}", self.base)).header("X-Vault-Token", &self.token).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json::<Value>().await.ok()
    }
}

struct Bench {
    server: Server,
    procs: Procs,
    endpoint: Arc<Endpoint>,
    /// A cluster's standbys (none for one server).
    others: Vec<Node>,
}

/// A cluster's standby: its process ids and where to poll it.
struct Node {
    server: Server,
    procs: Procs,
    endpoint: Arc<Endpoint>,
}

impl Node {
    fn of(server: Server) -> Self {
        let pid = server.pid().expect("server pid");
        let procs = Procs { server: pid, plugin: lockstep_tests::server::plugin_pid(pid) };
        let endpoint = Endpoint::new(&server);
        Self { server, procs, endpoint }
    }
}

/// The keyrings and pools every fleet run polls.
fn provision(server: &Server, opts: &Options) {
    for k in 0..opts.keyrings {
        let key_type = ["ed25519", "hmac-sha256", "ecdsa-p256", "aes256-gcm", "rsa-2048"][k % 5];
        let body = json!({"type": key_type, "rotation_period": "30d", "prepublish": "1d", "grace_period": "2d",
                              "commit_timeout": "2d"});
        server.write(&format!("{MOUNT}/keys/k{k}"), body).expect_status(200);
    }
    let keyrings: Vec<String> = (0..opts.keyrings).map(|k| format!("k{k}")).collect();
    for p in 0..opts.pools {
        let body = json!({"keyrings": keyrings.join(","), "mode": if p % 2 == 0 { "sign" } else { "verify" }});
        server.write(&format!("{MOUNT}/pools/p{p}"), body).expect_status(200);
    }
}

impl Bench {
    fn start(opts: &Options) -> Self {
        Self::on(Server::dev_with_mounts(&[MOUNT]), opts)
    }

    /// On `server`, which has the engine mounted.
    fn on(server: Server, opts: &Options) -> Self {
        provision(&server, opts);
        let Node { server, procs, endpoint } = Node::of(server);
        Self { server, procs, endpoint, others: Vec::new() }
    }

    /// `nodes` raft nodes with OpenBao's reading standbys (one node: a
    /// single raft server, the same storage without standbys).
    fn raft(nodes: usize, opts: &Options) -> Self {
        let mut cluster = Server::raft_cluster_reading(nodes).into_iter();
        let active = cluster.next().expect("a node").with_mounts(&[MOUNT]);
        let standbys: Vec<Server> = cluster.collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for node in &standbys {
            while node.read(&format!("{MOUNT}/info")).status != 200 {
                assert!(Instant::now() < deadline, "the mount never reached {}", node.address());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let mut bench = Self::on(active, opts);
        bench.others = standbys.into_iter().map(Node::of).collect();
        bench
    }

    /// Every node's poll endpoint, the active node first.
    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        std::iter::once(self.endpoint.clone()).chain(self.others.iter().map(|n| n.endpoint.clone())).collect()
    }

    /// Every node's processes, the active node first.
    fn all_procs(&self) -> Vec<Procs> {
        std::iter::once(self.procs).chain(self.others.iter().map(|n| n.procs)).collect()
    }

    /// Every node's (answered, sent to the active node) poll counts.
    /// Each node's polls sent to the active node, by reason (cumulative).
    fn sent_because(&self) -> Vec<Value> {
        std::iter::once(&self.server)
            .chain(self.others.iter().map(|n| &n.server))
            .map(|server| server.read(&format!("{MOUNT}/info")).data()["polls_sent_to_active_because"].clone())
            .collect()
    }

    fn poll_counts(&self) -> Vec<(u64, u64)> {
        std::iter::once(&self.server)
            .chain(self.others.iter().map(|n| &n.server))
            .map(|server| {
                let info = server.read(&format!("{MOUNT}/info"));
                let count = |k: &str| info.data()[k].as_u64().unwrap_or(0);
                (count("polls_answered"), count("polls_sent_to_active"))
            })
            .collect()
    }

    /// The active node's raft log index (None off raft): its growth is the
    /// storage writes.
    fn raft_index(&self) -> Option<u64> {
        let state = self.server.read("sys/storage/raft/autopilot/state");
        let servers = state.data()["servers"].as_object()?.clone();
        servers.values().filter_map(|s| s["last_index"].as_u64()).max()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.endpoint.get(path).await
    }
}

/// What every simulated instance reports.
struct Fleet {
    polls: AtomicU64,
    errors: AtomicU64,
    full: AtomicU64,
    /// Per instance: milliseconds since `epoch` when it first held the
    /// rotated keyring's target version (0: not yet).
    held_at: Vec<AtomicU64>,
    /// Per instance: when the server first answered a request of its
    /// acknowledging the target version.
    acked_at: Vec<AtomicU64>,
    /// Per instance: when it first sent one.
    ack_sent_at: Vec<AtomicU64>,
    /// Per instance: whether it fetched a bundle at all.
    fetched: Vec<AtomicU64>,
    target: AtomicU64,
    epoch: Instant,
}

impl Fleet {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            polls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            full: AtomicU64::new(0),
            held_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            acked_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            ack_sent_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            fetched: (0..n).map(|_| AtomicU64::new(0)).collect(),
            target: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn count(field: &[AtomicU64]) -> usize {
        field.iter().filter(|a| a.load(Ordering::Relaxed) > 0).count()
    }
}

/// One simulated sidecar: polls its pool's bundle forever, acknowledging
/// the highest version of each keyring it received. With several nodes,
/// it polls the first, and moves to the next when the active node answers
/// `prefer_standby`, as the sidecar does with a list of addresses (at once
/// the first time, then at most once a minute).
async fn sidecar(nodes: Vec<Arc<Endpoint>>, fleet: Arc<Fleet>, index: usize, pool: String, wait: u64, interval: u64) {
    let mut at = 0;
    let mut moved: Option<Instant> = None;
    let instance = format!("sim-{index}");
    // As a sidecar process does: a random boot id, and what it holds named
    // as keyring:version:kid:generation.
    let boot = format!("{:016x}", fastrand::u64(..));
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    let mut revision = String::new();
    let mut heartbeat = false;
    loop {
        let held_text: Vec<String> = held.iter().map(|(k, h)| h.entry(k)).collect();
        let path = format!(
            "{MOUNT}/bundle/{pool}?instance={instance}&boot={boot}&held={}&revision={revision}&wait={wait}s\
             &heartbeat={heartbeat}",
            held_text.join(",")
        );
        let acks = held.get(ROTATED).is_some_and(|h| h.number >= fleet.target.load(Ordering::Relaxed));
        if acks {
            let _ = fleet.ack_sent_at[index].compare_exchange(0, fleet.now_ms(), Ordering::Relaxed, Ordering::Relaxed);
        }
        let sent_heartbeat = heartbeat;
        let answer = nodes[at].get(&path).await;
        let prefer = answer.as_ref().is_some_and(|a| a["data"]["prefer_standby"] == true);
        if prefer && nodes.len() > 1 && moved.is_none_or(|m| m.elapsed() >= Duration::from_secs(60)) {
            at = (at + 1) % nodes.len();
            moved = Some(Instant::now());
        }
        fleet.polls.fetch_add(1, Ordering::Relaxed);
        // The acknowledgement counts once the server answered the poll
        // that carried it (it is answered at once, once stored).
        if acks && answer.is_some() {
            let _ = fleet.acked_at[index].compare_exchange(0, fleet.now_ms(), Ordering::Relaxed, Ordering::Relaxed);
        }
        // A standby asked for a heartbeat: the next poll carries it, soon.
        let due = answer.as_ref().is_some_and(|a| a["data"]["heartbeat_due"] == true);
        if answer.is_some() {
            heartbeat = due;
        }
        // The same schedule as the sidecar's sync loop (sidecar/src/sync.rs).
        let delay = match answer.as_ref().map(|a| &a["data"]) {
            Some(data) => {
                let changed = data["not_modified"] == false;
                if changed {
                    fleet.full.fetch_add(1, Ordering::Relaxed);
                    revision = data["revision"].as_str().unwrap_or_default().to_string();
                    held = highest(data);
                    fleet.fetched[index].store(1, Ordering::Relaxed);
                    let target = fleet.target.load(Ordering::Relaxed);
                    if held.get(ROTATED).is_some_and(|h| h.number >= target) {
                        let _ = fleet.held_at[index].compare_exchange(
                            0,
                            fleet.now_ms(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
                // The next request carries the acknowledgement or the
                // heartbeat, soon; after a quick answer (one that stored
                // an acknowledgement) a long-poll follows soon too.
                if changed || due || sent_heartbeat {
                    jitter(Duration::from_millis(300), 60)
                } else if wait > 0 {
                    jitter(Duration::from_millis(500), 100)
                } else {
                    jitter(Duration::from_secs(interval), 20)
                }
            }
            None => {
                fleet.errors.fetch_add(1, Ordering::Relaxed);
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// `base` ± `percent` %, uniformly.
fn jitter(base: Duration, percent: u32) -> Duration {
    let spread = base * percent / 100;
    base - spread + Duration::from_millis(fastrand::u64(0..=u64::try_from(spread.as_millis() * 2).unwrap_or(0)))
}

/// The newest version of a keyring a simulated sidecar holds.
struct Held {
    number: u64,
    kid: String,
    generation: u64,
}

impl Held {
    /// Its `held` entry: `keyring:version:kid:generation`.
    fn entry(&self, keyring: &str) -> String {
        format!("{keyring}:{}:{}:{}", self.number, self.kid, self.generation)
    }
}

fn highest(data: &Value) -> BTreeMap<String, Held> {
    let mut held = BTreeMap::new();
    for (name, keyring) in data["keyrings"].as_object().into_iter().flatten() {
        let versions = keyring["versions"].as_array().into_iter().flatten();
        let top = versions.max_by_key(|v| v["number"].as_u64().unwrap_or(0));
        if let Some(top) = top.filter(|v| v["number"].is_u64()) {
            let kid = top["kid"].as_str().unwrap_or_default().to_string();
            let generation = keyring["generation"].as_u64().unwrap_or(0);
            held.insert(name.clone(), Held { number: top["number"].as_u64().unwrap_or(0), kid, generation });
        }
    }
    held
}

#[derive(Debug, Clone, serde::Serialize)]
struct FleetRun {
    mode: &'static str,
    instances: usize,
    polls_per_s: f64,
    server_cpu_pct: f64,
    plugin_cpu_pct: f64,
    all_held_s: Option<f64>,
    commit_s: Option<f64>,
    commit_after_last_ack_s: Option<f64>,
    /// The same, from when the last acknowledgement was sent (the server's
    /// queue included).
    commit_after_last_ack_sent_s: Option<f64>,
    converge_cpu_s: f64,
    plugin_rss_mib: f64,
    errors: u64,
    /// Per node (the active node first): server + plugin CPU, polls it
    /// answered and polls it sent on to the active node, per second.
    nodes: Vec<NodeRun>,
    /// Storage writes per second (raft log entries), on raft.
    writes_per_s: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct NodeRun {
    role: &'static str,
    cpu_pct: f64,
    /// Of which the server's and the plugin's.
    server_cpu_pct: f64,
    plugin_cpu_pct: f64,
    /// The same node before any instance polled it.
    idle_cpu_pct: f64,
    /// Of which the plugin's.
    idle_plugin_cpu_pct: f64,
    answered_per_s: f64,
    sent_to_active_per_s: f64,
}

async fn fleet_run(opts: &Options, n: usize, mode: &'static str) -> FleetRun {
    fleet_run_on(Arc::new(Bench::start(opts)), opts, n, mode).await
}

/// A fleet of `n` on `bench`: instances spread evenly over its nodes (over
/// its standbys only in the mode "standbys only").
async fn fleet_run_on(bench: Arc<Bench>, opts: &Options, n: usize, mode: &'static str) -> FleetRun {
    let node_cpu = |procs: &[Procs]| procs.iter().map(|p| p.cpu()).collect::<Vec<(f64, f64)>>();
    // Per node, server and plugin CPU between two readings, in % of a core.
    let pct = |b: &[(f64, f64)], a: &[(f64, f64)], secs: f64| -> Vec<(f64, f64)> {
        b.iter().zip(a).map(|(b, a)| ((b.0 - a.0) / secs * 100.0, (b.1 - a.1) / secs * 100.0)).collect()
    };
    // What each node costs with nobody polling it: the server's own work
    // (raft, its timers) and the plugin's, once a new cluster has settled.
    tokio::time::sleep(Duration::from_secs(opts.settle)).await;
    let (idle0, idle_t0) = (node_cpu(&bench.all_procs()), Instant::now());
    tokio::time::sleep(Duration::from_secs(opts.idle)).await;
    let idle = pct(&node_cpu(&bench.all_procs()), &idle0, idle_t0.elapsed().as_secs_f64());
    let fleet = Fleet::new(n);
    let (wait, interval, ramp) = if mode == "plain" { (0, 30, 30.0) } else { (WAIT, 0, 10.0) };
    let mut endpoints = bench.endpoints();
    if mode == STANDBYS_ONLY {
        endpoints.remove(0);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        // One node each, or (node lists) every node, starting at one.
        let mut nodes = endpoints.clone();
        nodes.rotate_left(i % endpoints.len());
        if mode != LISTS {
            nodes.truncate(1);
        }
        let (fleet, pool) = (fleet.clone(), format!("p{}", i % opts.pools));
        let start = Duration::from_secs_f64(fastrand::f64() * ramp);
        tasks.spawn(async move {
            tokio::time::sleep(start).await;
            sidecar(nodes, fleet, i, pool, wait, interval).await;
        });
    }
    // Everyone has fetched, and acknowledged what it fetched.
    let deadline = Instant::now() + Duration::from_secs(180);
    while Fleet::count(&fleet.fetched) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(if interval > 0 { 35 } else { 5 })).await;
    // Node lists: the active node's hint comes with the answer to a
    // long-poll, so the moves off it settle one long-poll later.
    if mode == LISTS {
        tokio::time::sleep(Duration::from_secs(WAIT + 5)).await;
    }
    eprintln!("  {mode} n={n}: all fetched; steady state for {}s", opts.steady);

    let (cpu0, counts0, index0) = (node_cpu(&bench.all_procs()), bench.poll_counts(), bench.raft_index());
    let (s0, p0, polls0, t0) = {
        let (s, p) = bench.procs.cpu();
        (s, p, fleet.polls.load(Ordering::Relaxed), Instant::now())
    };
    // With --pprof DIR: each server's own CPU profile of the steady state
    // (`go tool pprof -top DIR/<setup>-<node>.pb.gz`).
    let profiles: Vec<_> = match opts.pprof.clone() {
        Some(dir) => bench
            .endpoints()
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let (dir, secs) = (dir.display().to_string(), opts.steady.saturating_sub(5));
                let mode = mode.replace([' ', ','], "_");
                tokio::spawn(async move {
                    let url = format!("{}/sys/pprof/profile?seconds={secs}", e.base);
                    let r = e.http.get(url).header("X-Vault-Token", &e.token).send().await.expect("pprof");
                    let bytes = r.bytes().await.expect("pprof body");
                    std::fs::create_dir_all(&dir).expect("profile directory");
                    std::fs::write(format!("{dir}/{mode}-{i}.pb.gz"), bytes).expect("write profile");
                })
            })
            .collect(),
        None => Vec::new(),
    };
    tokio::time::sleep(Duration::from_secs(opts.steady)).await;
    for p in profiles {
        let _ = p.await;
    }
    let (s1, p1) = bench.procs.cpu();
    let secs = t0.elapsed().as_secs_f64();
    let polls = (fleet.polls.load(Ordering::Relaxed) - polls0) as f64;
    let (cpu1, counts1, index1) = (node_cpu(&bench.all_procs()), bench.poll_counts(), bench.raft_index());
    let steady = pct(&cpu1, &cpu0, secs);
    let nodes: Vec<NodeRun> = (0..cpu1.len())
        .map(|i| NodeRun {
            role: if i == 0 { "active" } else { "standby" },
            cpu_pct: steady[i].0 + steady[i].1,
            server_cpu_pct: steady[i].0,
            plugin_cpu_pct: steady[i].1,
            idle_cpu_pct: idle.get(i).map_or(0.0, |(s, p)| s + p),
            idle_plugin_cpu_pct: idle.get(i).map_or(0.0, |(_, p)| *p),
            answered_per_s: (counts1[i].0 - counts0[i].0) as f64 / secs,
            sent_to_active_per_s: (counts1[i].1 - counts0[i].1) as f64 / secs,
        })
        .collect();
    let writes_per_s = index0.zip(index1).map(|(a, b)| (b - a) as f64 / secs);
    if !bench.others.is_empty() {
        eprintln!(
            "  polls sent to the active node by reason, per node, after the steady state: {:?}",
            bench.sent_because()
        );
    }

    // One rotation.
    let key = bench.get(&format!("{MOUNT}/keys/{ROTATED}")).await.expect("keyring");
    let next = key["data"]["latest_version"].as_u64().expect("latest") + 1;
    fleet.target.store(next, Ordering::Relaxed);
    let (cs0, cp0) = bench.procs.cpu();
    let rotated_ms = fleet.now_ms();
    let rotate = bench.server.write(&format!("{MOUNT}/keys/{ROTATED}/rotate"), json!({"expected_version": next - 1}));
    assert!(rotate.status < 300, "rotation failed: {rotate:?}");
    let deadline = Instant::now() + Duration::from_secs(if interval > 0 { 150 } else { 60 });
    let mut commit_ms = None;
    while Instant::now() < deadline {
        if commit_ms.is_none() {
            let key = bench.get(&format!("{MOUNT}/keys/{ROTATED}")).await;
            let committed = key.as_ref().and_then(|k| {
                k["data"]["versions"].as_array()?.iter().find(|v| v["version"] == next).map(|v| v["committed"] == true)
            });
            if committed == Some(true) {
                commit_ms = Some(fleet.now_ms());
            }
        }
        if commit_ms.is_some() && Fleet::count(&fleet.held_at) == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The wave of bundles the commit itself causes settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cs1, cp1) = bench.procs.cpu();
    let last_held = fleet.held_at.iter().map(|a| a.load(Ordering::Relaxed)).max().unwrap_or(0);
    let last_ack = fleet.acked_at.iter().map(|a| a.load(Ordering::Relaxed)).max().unwrap_or(0);
    let all_acked = Fleet::count(&fleet.acked_at) == n;
    let last_sent = fleet.ack_sent_at.iter().map(|a| a.load(Ordering::Relaxed)).max().unwrap_or(0);
    let all_held = (Fleet::count(&fleet.held_at) == n).then(|| (last_held - rotated_ms) as f64 / 1000.0);
    let commit_s = commit_ms.map(|c| (c - rotated_ms) as f64 / 1000.0);
    let run = FleetRun {
        mode,
        instances: n,
        polls_per_s: polls / secs,
        server_cpu_pct: (s1 - s0) / secs * 100.0,
        plugin_cpu_pct: (p1 - p0) / secs * 100.0,
        all_held_s: all_held,
        commit_s,
        commit_after_last_ack_s: commit_ms.filter(|_| all_acked).map(|c| (c as f64 - last_ack as f64) / 1000.0),
        commit_after_last_ack_sent_s: commit_ms.filter(|_| all_acked).map(|c| (c as f64 - last_sent as f64) / 1000.0),
        converge_cpu_s: (cs1 - cs0) + (cp1 - cp0),
        plugin_rss_mib: rss_mib(bench.procs.plugin),
        errors: fleet.errors.load(Ordering::Relaxed),
        nodes,
        writes_per_s,
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    eprintln!("  {run:?}");
    run
}

#[derive(Debug, Clone, serde::Serialize)]
struct Hop {
    name: &'static str,
    per_s: f64,
    p50_ms: f64,
    cpu_ms_per_request: f64,
}

/// Four clients for `secs` seconds on one request; throughput, median
/// latency and server + plugin CPU per request.
async fn hop(bench: &Arc<Bench>, name: &'static str, path: String, secs: u64) -> Hop {
    let (s0, p0) = bench.procs.cpu();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (bench, path) = (bench.clone(), path.clone());
        clients.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let started = Instant::now();
                bench.get(&path).await.expect("hop request");
                latencies.push(started.elapsed());
            }
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(latencies) = clients.join_next().await {
        all.extend(latencies.expect("client"));
    }
    let (s1, p1) = bench.procs.cpu();
    all.sort();
    let p50 = all.get(all.len() / 2).copied().unwrap_or_default();
    let cpu = (s1 - s0) + (p1 - p0);
    Hop {
        name,
        per_s: all.len() as f64 / secs as f64,
        p50_ms: p50.as_secs_f64() * 1000.0,
        cpu_ms_per_request: cpu * 1000.0 / all.len().max(1) as f64,
    }
}

async fn hops(opts: &Options) -> (Vec<Hop>, f64) {
    let ten = Options { keyrings: 10, pools: 1, ..opts.clone() };
    let bench = Arc::new(Bench::start(&ten));
    bench.server.write("secret/data/bench", json!({"data": {"value": "x"}})).expect_status(200);
    let full = bench.get(&format!("{MOUNT}/bundle/p0?instance=hop")).await.expect("bundle");
    let revision = full["data"]["revision"].as_str().expect("revision").to_string();
    let held: Vec<String> = highest(&full["data"]).iter().map(|(k, h)| h.entry(k)).collect();
    let held = held.join(",");
    // Warm up every path once.
    for path in [format!("{MOUNT}/info"), "secret/data/bench".into()] {
        bench.get(&path).await.expect("warm-up");
    }
    let mut results = Vec::new();
    results.push(hop(&bench, "info", format!("{MOUNT}/info"), opts.hop).await);
    let not_modified = format!("{MOUNT}/bundle/p0?instance=hop&held={held}&revision={revision}");
    results.push(hop(&bench, "bundle, not modified", not_modified, opts.hop).await);
    results.push(
        hop(&bench, "bundle, full (10 keyrings)", format!("{MOUNT}/bundle/p0?instance=hop&held={held}"), opts.hop)
            .await,
    );
    results.push(hop(&bench, "KV v2 read", "secret/data/bench".into(), opts.hop).await);
    (results, rss_mib(bench.procs.plugin))
}

fn main() {
    let opts = options();
    // The HTTP client's TLS layer wants a provider even for plain HTTP.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    eprintln!("plugin: {}", lockstep_tests::plugin_binary().display());
    std::fs::create_dir_all(&opts.out).expect("output directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut cluster = Vec::new();
        if opts.cluster > 0 {
            let n = opts.cluster;
            eprintln!("cluster comparison, {n} instances: one raft server, then three nodes");
            cluster.push(fleet_run_on(Arc::new(Bench::raft(1, &opts)), &opts, n, "single raft").await);
            cluster.push(fleet_run_on(Arc::new(Bench::raft(3, &opts)), &opts, n, "3-node cluster").await);
            if opts.lists {
                cluster.push(fleet_run_on(Arc::new(Bench::raft(3, &opts)), &opts, n, LISTS).await);
            }
            if opts.standbys_only {
                cluster.push(fleet_run_on(Arc::new(Bench::raft(3, &opts)), &opts, n, STANDBYS_ONLY).await);
            }
            println!("{}", cluster_report(&cluster));
            std::fs::write(opts.out.join("cluster.svg"), cluster_plot(&cluster)).expect("cluster.svg");
        }
        if opts.cluster_only {
            let results = json!({"options": format!("{opts:?}"), "cluster": cluster});
            std::fs::write(opts.out.join("results.json"), serde_json::to_string_pretty(&results).expect("json"))
                .expect("results.json");
            eprintln!("wrote {0}/results.json and {0}/cluster.svg", opts.out.display());
            return;
        }
        eprintln!("hop costs ({} s each, 4 clients)", opts.hop);
        let (hops, hop_rss) = hops(&opts).await;
        let mut runs = Vec::new();
        for &n in &opts.sizes {
            runs.push(fleet_run(&opts, n, "long-poll").await);
        }
        if opts.plain > 0 {
            runs.push(fleet_run(&opts, opts.plain, "plain").await);
        }
        let report = report(&opts, &hops, hop_rss, &runs);
        println!("{report}");
        let results = json!({"options": format!("{opts:?}"), "hops": hops, "runs": runs, "cluster": cluster});
        std::fs::write(opts.out.join("results.json"), serde_json::to_string_pretty(&results).expect("json"))
            .expect("results.json");
        let long: Vec<&FleetRun> = runs.iter().filter(|r| r.mode == "long-poll").collect();
        std::fs::write(opts.out.join("fleet.svg"), plot(&long)).expect("fleet.svg");
        eprintln!("wrote {0}/results.json and {0}/fleet.svg", opts.out.display());
    });
}

fn report(opts: &Options, hops: &[Hop], hop_rss: f64, runs: &[FleetRun]) -> String {
    let mut out = String::new();
    let info = hops.first().map_or(1.0, |h| h.cpu_ms_per_request);
    let _ = writeln!(out, "## Hop costs (pool of 10 keyrings, 4 clients, {} s each)\n", opts.hop);
    let _ = writeln!(out, "| request | requests/s | p50 ms | server+plugin CPU ms/request | CPU vs info |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for h in hops {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.3} | {:.2}× |",
            h.name,
            h.per_s,
            h.p50_ms,
            h.cpu_ms_per_request,
            h.cpu_ms_per_request / info
        );
    }
    let _ = writeln!(out, "\nplugin RSS after the hop runs: {hop_rss:.1} MiB\n");
    let _ = writeln!(
        out,
        "## Fleet ({} pools sharing {} keyrings; steady state over {} s)\n",
        opts.pools, opts.keyrings, opts.steady
    );
    let _ = writeln!(
        out,
        "| mode | instances | polls/s | server CPU % | plugin CPU % | all hold new version (s) | commit (s) | \
         commit after last ack (s) | convergence CPU-s | plugin RSS MiB | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {:.2} | {:.1} | {} |",
            r.mode,
            r.instances,
            r.polls_per_s,
            r.server_cpu_pct,
            r.plugin_cpu_pct,
            opt(r.all_held_s),
            opt(r.commit_s),
            opt(r.commit_after_last_ack_s),
            r.converge_cpu_s,
            r.plugin_rss_mib,
            r.errors
        );
    }
    out
}

/// Two panels against N: steady-state CPU (server, plugin) and, for one
/// rotation, the time until every instance holds it and the CPU-seconds
/// it cost.
fn plot(runs: &[&FleetRun]) -> String {
    let (w, h, pad) = (360.0, 240.0, 50.0);
    let max_n = runs.iter().map(|r| r.instances).max().unwrap_or(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" \
         font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w + 3.0 * pad,
        h + 2.5 * pad
    );
    type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);
    let panels: [(&str, Vec<Series>); 2] = [
        (
            "steady-state CPU, % of one core",
            vec![
                ("server", "#1f77b4", runs.iter().map(|r| (r.instances as f64, r.server_cpu_pct)).collect()),
                ("plugin", "#d62728", runs.iter().map(|r| (r.instances as f64, r.plugin_cpu_pct)).collect()),
            ],
        ),
        (
            "one rotation: seconds until all hold it; CPU-seconds",
            vec![
                (
                    "all hold (s)",
                    "#2ca02c",
                    runs.iter().map(|r| (r.instances as f64, r.all_held_s.unwrap_or(0.0))).collect(),
                ),
                ("CPU-s", "#9467bd", runs.iter().map(|r| (r.instances as f64, r.converge_cpu_s)).collect()),
            ],
        ),
    ];
    for (i, (title, series)) in panels.iter().enumerate() {
        let x0 = pad + i as f64 * (w + pad);
        let y0 = pad;
        let top = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" font-weight=\"bold\">{title}</text>", x0, y0 - 15.0);
        let _ =
            writeln!(svg, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>");
        for t in 0..=4 {
            let v = top * f64::from(t) / 4.0;
            let y = y0 + h - h * f64::from(t) / 4.0;
            let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.1}</text>", x0 - 4.0, y + 4.0);
            let _ = writeln!(svg, "<line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/>", x0 + w);
        }
        for r in runs {
            let x = x0 + w * r.instances as f64 / max_n;
            let _ =
                writeln!(svg, "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>", y0 + h + 14.0, r.instances);
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">instances (long-poll, 30 s wait)</text>",
            x0 + w / 2.0,
            y0 + h + 30.0
        );
        for (j, (label, color, points)) in series.iter().enumerate() {
            let path: Vec<String> =
                points.iter().map(|(n, v)| format!("{:.1},{:.1}", x0 + w * n / max_n, y0 + h - h * v / top)).collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
                path.join(" ")
            );
            for p in &path {
                let (x, y) = p.split_once(',').unwrap_or_default();
                let _ = writeln!(svg, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>");
            }
            let ly = y0 + 14.0 + 14.0 * j as f64;
            let _ = writeln!(svg, "<text x=\"{}\" y=\"{ly}\" fill=\"{color}\">{label}</text>", x0 + 8.0);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// The cluster comparison as Markdown: per node, and the rotation.
fn cluster_report(runs: &[FleetRun]) -> String {
    let mut out = String::from("## One raft server against a 3-node cluster with reading standbys\n\n");
    let _ = writeln!(
        out,
        "| setup | node | CPU % (server + plugin) | server | plugin | idle CPU % | of which plugin | polls answered/s | polls sent to the active node/s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        for (i, node) in r.nodes.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                r.mode,
                node.role,
                i,
                node.cpu_pct,
                node.server_cpu_pct,
                node.plugin_cpu_pct,
                node.idle_cpu_pct,
                node.idle_plugin_cpu_pct,
                node.answered_per_s,
                node.sent_to_active_per_s
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| setup | instances | storage writes/s | all hold new version (s) | commit (s) | commit after the last ack was answered (s) | after it was sent (s) | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.instances,
            opt(r.writes_per_s),
            opt(r.all_held_s),
            opt(r.commit_s),
            opt(r.commit_after_last_ack_s),
            opt(r.commit_after_last_ack_sent_s),
            r.errors
        );
    }
    if let Some(one) = runs.first().and_then(|r| r.nodes.first()) {
        for cluster in runs.iter().skip(1) {
            if let Some(active) = cluster.nodes.first() {
                // What the node would use at the single server's own cost
                // per poll: its idle, and its polls at that cost.
                let per_poll = (one.cpu_pct - one.idle_cpu_pct) / one.answered_per_s.max(1e-9);
                let at_single_cost = active.idle_cpu_pct + active.answered_per_s * per_poll;
                let _ = writeln!(
                    out,
                    "\n{}: the active node used {:.0} % of the single server's CPU (its idle and its polls at the \
                     single server's cost per poll: {:.0} %)",
                    cluster.mode,
                    active.cpu_pct / one.cpu_pct.max(1e-9) * 100.0,
                    at_single_cost / one.cpu_pct.max(1e-9) * 100.0
                );
            }
        }
    }
    out
}

/// Bars: CPU of the single server and of each cluster node.
fn cluster_plot(runs: &[FleetRun]) -> String {
    let bars: Vec<(String, f64, &str)> = runs
        .iter()
        .flat_map(|r| {
            r.nodes.iter().enumerate().map(move |(i, n)| {
                let label = if r.nodes.len() == 1 { "single server".to_string() } else { format!("{} {i}", n.role) };
                (label, n.cpu_pct, if n.role == "active" && r.nodes.len() > 1 { "#d62728" } else { "#1f77b4" })
            })
        })
        .collect();
    let (w, h, pad) = (90.0, 220.0, 50.0);
    let top = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max) * 1.15;
    let width = pad * 2.0 + w * bars.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" \
         font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        h + 2.0 * pad
    );
    let instances = runs.first().map_or(0, |r| r.instances);
    let _ = writeln!(
        svg,
        "<text x=\"{pad}\" y=\"{}\" font-weight=\"bold\">CPU % of one core, {instances} long-polling instances</text>",
        pad - 20.0
    );
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let x = pad + w * i as f64 + 10.0;
        let bar = h * value / top;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{bar}\" fill=\"{color}\"/>",
            pad + h - bar,
            w - 20.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{value:.1}</text>",
            x + (w - 20.0) / 2.0,
            pad + h - bar - 4.0
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            x + (w - 20.0) / 2.0,
            pad + h + 14.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
