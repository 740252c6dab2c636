//! The fault-injection fleet run: a three-node raft cluster of the real
//! server with the release plugin, three pools (two that sign, one that
//! verifies; an Ed25519 and an HMAC keyring) of two release sidecars each
//! behind a TCP balancer in front of the nodes, a driver that signs tokens
//! at every signing sidecar and has every sidecar verify every token until
//! it expires, and faults injected by a seeded, printed schedule. The
//! history goes to [`crate::fleet_check`], which knows nothing of the code
//! under test.
//!
//! `tests/tests/torture.rs` runs the short plan in `make test`;
//! `make torture` runs long plans (`tests/benches/torture.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::fleet_check::{self, Event, Held, Issued, Params, Report};
use crate::server::Server;
use crate::sidecar::Sidecar;
use crate::workspace_root;

/// The engine's fleet timings for the run (seconds).
const LIVENESS: u64 = 15;
const MAX_SKEW: u64 = 2;
/// The skewed sidecar's offset: within `max_clock_skew`.
const SKEW: &str = "+1.5s";

/// Debian's libfaketime (`make tools` installs it), under the machine's
/// multiarch library directory.
fn libfaketime() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|path| path.exists())
        .expect("libfaketime.so.1 under /usr/lib (make tools installs faketime)")
}
/// Token lifetime asked by the driver (the keyrings' `max_token_ttl` is 20 s).
const TTL: i64 = 20;
/// The keyrings' policy (seconds): rotation period, prepublish lead, grace
/// period and commit timeout.
const ROTATION: u64 = 45;
const PREPUBLISH: u64 = 3;
const GRACE: u64 = 40;
const COMMIT_TIMEOUT: u64 = 30;
/// How often the server calls the engine's periodic function, at most.
const PERIODIC: u64 = 60;
/// A request to a sidecar that takes longer counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(400);

/// Wall-clock seconds: the history's time base.
#[allow(clippy::disallowed_methods)] // the run observes real processes in real time
fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One fault of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Keep a raft snapshot for a later restore.
    SnapshotSave,
    /// Restore the kept snapshot (a disaster recovery).
    SnapshotRestore,
    /// A manual rotation of a keyring.
    ManualRotation(&'static str),
    /// Two rotations with the same expected version at once: one wins.
    RacingRotations(&'static str),
    /// Wait (two minutes at most) until the scheduler's next rotation of
    /// the keyring is due, then, this many milliseconds later, rotate by
    /// hand with the version seen before it was due as the expected one:
    /// the manual rotation or the scheduler's wins, never both (the checker
    /// sees a scheduled publication too soon after another).
    RaceScheduled(&'static str, u64),
    /// Rotate, then SIGKILL the active node while the version is pending;
    /// start it again after `secs`.
    KillActiveDuringCommit(&'static str, u64),
    /// Wait (two minutes at most) for the scheduler to publish a version
    /// of the keyring, then SIGKILL the active node while it is pending;
    /// start it again after `secs`. The new active node must neither
    /// publish that rotation again nor lose it.
    KillDuringScheduled(&'static str, u64),
    /// Stop a standby for `secs`, then start it again.
    StopFollower(u64),
    /// Revoke the keyring's signing version (an emergency).
    Revoke(&'static str),
    /// Stop every node for `secs`; meanwhile SIGKILL a sidecar and restart
    /// it, so it starts from its encrypted cache.
    ClusterDown(u64, String),
    /// SIGSTOP a sidecar for `secs`; with a keyring, rotate it a second in.
    Freeze(String, u64, Option<&'static str>),
    /// SIGSTOP a standby for `secs` (its sidecars wait, then fail over).
    PauseStandby(u64),
    /// SIGKILL a standby; start it again after `secs`.
    KillStandby(u64),
    /// With standbys serving reads: wait (40 s at most) until a running
    /// sidecar that polls a standby shows as not live in the active node's
    /// status of the keyring (it sent the active node nothing to store for
    /// a liveness window, which only a build without heartbeats allows),
    /// else take any sidecar of the keyring that polls a standby; then
    /// [`Fault::Freeze`] it for `secs` (less than the window) with the
    /// keyring rotated a second in. It is live all along: the gate must
    /// wait for it.
    FreezeQuiet(&'static str, u64),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Self::SnapshotSave => "snapshot_save",
            Self::SnapshotRestore => "snapshot_restore",
            Self::ManualRotation(_) => "manual_rotation",
            Self::RacingRotations(_) => "racing_rotations",
            Self::RaceScheduled(..) => "race_scheduled",
            Self::KillActiveDuringCommit(..) => "kill_active",
            Self::KillDuringScheduled(..) => "kill_active_scheduled",
            Self::StopFollower(_) => "stop_follower",
            Self::Revoke(_) => "revoke",
            Self::ClusterDown(..) => "cluster_down",
            Self::Freeze(..) => "freeze_sidecar",
            Self::PauseStandby(_) => "pause_standby",
            Self::KillStandby(_) => "kill_standby",
            Self::FreezeQuiet(..) => "freeze_quiet",
        }
    }
}

/// What to run: faults at offsets from the start, then a quiet end.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The seed the plan came from.
    pub seed: u64,
    /// `(seconds from the start, fault)`, in order.
    pub steps: Vec<(f64, Fault)>,
    /// Seconds of faultless load after the last step.
    pub settle: f64,
}

impl Plan {
    /// The short plan: every kind of fault once, in about two minutes; the
    /// seed picks the sidecars hit and jitters the times.
    pub fn short(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut t = 6.0;
        let mut steps = Vec::new();
        let mut at = |gap: f64, fault: Fault, rng: &mut fastrand::Rng| {
            t += gap + rng.f64() * 2.0;
            steps.push((t, fault));
        };
        let short_freeze = format!("api-{}", 1 + rng.usize(..2));
        let long_freeze = format!("audit-{}", 1 + rng.usize(..2));
        at(0.0, Fault::SnapshotSave, &mut rng);
        at(2.0, Fault::ManualRotation("jwt"), &mut rng);
        // Frozen for less than the liveness window while a version is
        // published: the gate must wait for it.
        at(12.0, Fault::Freeze(short_freeze, 5, Some("hooks")), &mut rng);
        at(10.0, Fault::KillActiveDuringCommit("jwt", 8), &mut rng);
        at(12.0, Fault::StopFollower(6), &mut rng);
        at(8.0, Fault::Revoke("hooks"), &mut rng);
        at(4.0, Fault::ClusterDown(10, "web-2".into()), &mut rng);
        // Frozen past the liveness window: dead to the coordinator.
        at(14.0, Fault::Freeze(long_freeze, LIVENESS + 3, None), &mut rng);
        at(16.0, Fault::RacingRotations("jwt"), &mut rng);
        at(2.0, Fault::RaceScheduled("hooks", rng.u64(..2_000)), &mut rng);
        at(10.0, Fault::SnapshotRestore, &mut rng);
        // The restored coordinator must issue past what the fleet holds.
        at(4.0, Fault::ManualRotation("jwt"), &mut rng);
        at(1.0, Fault::ManualRotation("hooks"), &mut rng);
        Self { seed, steps, settle: 25.0 }
    }

    /// A long plan of `minutes`: the short plan's faults, shuffled and
    /// repeated, with a snapshot kept before each restore.
    pub fn long(seed: u64, minutes: u64) -> Self {
        Self::long_with(seed, minutes, false)
    }

    /// [`Plan::long`]; with `standbys`, each round also pauses a standby
    /// and kills one (for clusters whose standbys serve reads).
    pub fn long_with(seed: u64, minutes: u64, standbys: bool) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut steps = Vec::new();
        let mut t = 6.0;
        let end = (minutes * 60) as f64;
        let instances = ["web-1", "web-2", "api-1", "api-2", "audit-1", "audit-2"];
        // Every kind once per round, in a new order each round.
        let mut round: Vec<usize> = Vec::new();
        while t < end {
            if round.is_empty() {
                round = (0..if standbys { 14 } else { 11 }).collect();
                rng.shuffle(&mut round);
                // With standbys, each round opens with `freeze_quiet`.
                if let Some(i) = round.iter().position(|&k| k == 13) {
                    let quiet = round.remove(i);
                    round.push(quiet);
                }
            }
            let keyring = if rng.bool() { "jwt" } else { "hooks" };
            let instance = instances[rng.usize(..instances.len())].to_string();
            let fault = match round.pop().unwrap_or(0) {
                0 => Fault::ManualRotation(keyring),
                1 => Fault::RacingRotations(keyring),
                2 => Fault::KillActiveDuringCommit(keyring, 5 + rng.u64(..6)),
                3 => Fault::StopFollower(4 + rng.u64(..6)),
                4 => Fault::Revoke(keyring),
                5 => Fault::ClusterDown(6 + rng.u64(..8), instance),
                6 => Fault::Freeze(instance, 5, Some(keyring)),
                7 => Fault::Freeze(instance, LIVENESS + 3, None),
                8 => Fault::KillDuringScheduled(keyring, 5 + rng.u64(..6)),
                // Anywhere within a periodic call after it is due, so
                // either side may win.
                10 => Fault::RaceScheduled(keyring, rng.u64(..PERIODIC * 1_000)),
                11 => Fault::PauseStandby(4 + rng.u64(..8)),
                12 => Fault::KillStandby(5 + rng.u64(..8)),
                // Shorter than the checker's liveness (LIVENESS - 5): live all along.
                13 => Fault::FreezeQuiet(keyring, LIVENESS - 7),
                _ => {
                    // A snapshot, rotations after it, then the restore.
                    steps.push((t, Fault::SnapshotSave));
                    steps.push((t + 4.0, Fault::ManualRotation("jwt")));
                    steps.push((t + 6.0, Fault::ManualRotation("hooks")));
                    // Sometimes with the last rotation's commit in flight.
                    t += 7.0 + rng.f64() * 23.0;
                    steps.push((t, Fault::SnapshotRestore));
                    t += 4.0;
                    steps.push((t, Fault::ManualRotation("jwt")));
                    Fault::ManualRotation("hooks")
                }
            };
            steps.push((t, fault));
            t += 12.0 + rng.f64() * 8.0;
        }
        Self { seed, steps, settle: 30.0 }
    }

    /// The schedule, one line per step.
    pub fn describe(&self) -> String {
        let mut out = format!("seed {}\n", self.seed);
        for (t, fault) in &self.steps {
            out.push_str(&format!("  t+{t:6.1}s  {fault:?}\n"));
        }
        out
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin binary (the release build, or the test build for the
    /// broken run).
    pub plugin: PathBuf,
    /// The sidecar binary.
    pub sidecar: PathBuf,
    /// Run the deliberately broken plugin: commit without acknowledgements
    /// (a `test-clock` build only).
    pub skip_gate: bool,
    /// Where to write `history.jsonl`, `report.txt` and `timeline.svg`.
    pub out: PathBuf,
    /// OpenBao's standbys serve reads, and each sidecar polls one node
    /// first (two per node), failing over to the others in turn.
    pub standby_reads: bool,
    /// With `standby_reads`: run the test build with standbys that never
    /// ask for heartbeats and answer every instance themselves (the
    /// liveness rule across nodes removed), which the checker must catch.
    pub skip_heartbeats: bool,
}

/// What the run saw and the checker found.
#[derive(Debug)]
pub struct Outcome {
    /// The checker's report.
    pub report: Report,
    /// Faults executed, by kind.
    pub executed: BTreeMap<String, usize>,
    /// Secrets found in any log (each as where and what kind, never the
    /// secret).
    pub leaks: Vec<String>,
    /// Whether, at the end, every sidecar held the same signing version of
    /// each keyring as its pool's peers and every pool held the other
    /// pools' signing versions.
    pub converged: Result<(), String>,
    /// Notes on the run (race outcomes, restore answers).
    pub notes: Vec<String>,
    /// What a fault expected of the servers and did not see (two racing
    /// rotations that did not give one 200 and one 409, a version that was
    /// not pending when the node was killed, a log that could not be read).
    pub unexpected: Vec<String>,
    /// The history.
    pub events: Vec<Event>,
    /// The coordinator's final word on each keyring (keys, status and
    /// history), for a failed run's report.
    pub final_state: String,
}

/// A sidecar of the fleet.
struct Member {
    pool: &'static str,
    instance: String,
    signs: bool,
    config: String,
    skewed: bool,
    running: Option<Sidecar>,
}

type History = Arc<Mutex<Vec<Event>>>;

fn record(history: &History, event: Event) {
    history.lock().unwrap_or_else(|p| p.into_inner()).push(event);
}

fn fault_event(history: &History, kind: &str, target: &str, phase: &str) {
    record(history, Event::Fault { t: now(), kind: kind.into(), target: target.into(), phase: phase.into() });
}

/// One request to a sidecar with a short deadline; `None` when it did not
/// answer (down, frozen, or too slow).
fn quick(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: s\r\nX-Lockstep-Request: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(payload.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Reads the coordinator's history of both keyrings every second through
/// the balancer and records each entry the first time it reads it with
/// that content (a restore brings back positions with other decisions).
/// A read that fails (the cluster down, a failover) is skipped.
fn observe(vault: &str, token: &str, history: &History, stop: &AtomicBool) {
    let mut known: BTreeMap<&str, BTreeMap<u64, Value>> = BTreeMap::new();
    let mut read = |keyring: &'static str| {
        let url = format!("{vault}/v1/lockstep/history/{keyring}");
        let Ok(answer) = ureq::get(&url).set("X-Vault-Token", token).timeout(Duration::from_secs(3)).call() else {
            return;
        };
        let Ok(body) = answer.into_json::<Value>() else { return };
        let t = now();
        let mut current = BTreeMap::new();
        for entry in body["data"]["entries"].as_array().into_iter().flatten() {
            let Some(seq) = entry["seq"].as_u64() else { continue };
            if known.get(keyring).and_then(|k| k.get(&seq)) != Some(entry) {
                let text = |field: &str| entry[field].as_str().unwrap_or_default().to_string();
                record(
                    history,
                    Event::Decision {
                        t,
                        keyring: keyring.into(),
                        seq,
                        at: text("at"),
                        action: text("action"),
                        cause: text("cause"),
                        versions: entry["versions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_u64)
                            .collect(),
                    },
                );
            }
            current.insert(seq, entry.clone());
        }
        known.insert(keyring, current);
    };
    loop {
        // One last read after the run, so the end is seen.
        let last = stop.load(Ordering::SeqCst);
        read("jwt");
        read("hooks");
        if last {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The claims of a JWT (unverified: the driver only reads `exp`).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

/// A token the driver is still showing around.
struct Live {
    id: u64,
    keyring: String,
    token: String,
    exp: i64,
}

/// The driver: signs at every signing sidecar, shows every live token to
/// every sidecar, and looks at every sidecar's keys, recording all.
fn drive(members: Vec<(String, String, bool, PathBuf)>, history: History, stop: Arc<AtomicBool>) {
    let mut tokens: Vec<Live> = Vec::new();
    let mut next_id = 0u64;
    let mut tick = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        // Each request is recorded at the instant its answer came (or its
        // wait ended). A sidecar that did not answer once this tick is not
        // asked again until the next: the rest is recorded as unavailable
        // at the instant that wait ended, not later.
        let mut silent: Vec<(String, f64)> = Vec::new();
        let ask = |instance: &str,
                   silent: &mut Vec<(String, f64)>,
                   socket: &Path,
                   method: &str,
                   path: &str,
                   body: Option<&Value>| {
            if let Some((_, done)) = silent.iter().find(|(s, _)| s == instance) {
                return (None, *done);
            }
            let answer = quick(socket, method, path, body);
            let done = now();
            if answer.is_none() {
                silent.push((instance.to_string(), done));
            }
            (answer, done)
        };
        for (pool, instance, _, socket) in &members {
            for keyring in ["jwt", "hooks"] {
                let (Some((200, view)), done) =
                    ask(instance, &mut silent, socket, "GET", &format!("/v1/keys/{keyring}"), None)
                else {
                    continue;
                };
                let verifying = view["verifying"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| Held {
                        version: v["version"].as_u64().unwrap_or(0),
                        kid: v["kid"].as_str().unwrap_or_default().to_string(),
                        expires_at: v["expires_at"].as_i64(),
                    })
                    .collect();
                record(
                    &history,
                    Event::View {
                        t: done,
                        pool: pool.clone(),
                        instance: instance.clone(),
                        keyring: keyring.into(),
                        signing: view["signing"]["kid"].as_str().map(str::to_string),
                        verifying,
                    },
                );
            }
        }
        // Every other tick, a token from each signing sidecar, alternating
        // keyrings.
        if tick.is_multiple_of(2) {
            for (pool, instance, signs, socket) in &members {
                if !signs {
                    continue;
                }
                let keyring = if (tick / 2 + next_id).is_multiple_of(2) { "jwt" } else { "hooks" };
                next_id += 1;
                let body = json!({"claims": {"sub": format!("t{next_id}"), "aud": "fleet"}, "ttl": TTL});
                let (answer, done) =
                    ask(instance, &mut silent, socket, "POST", &format!("/v1/jwt/{keyring}/sign"), Some(&body));
                let (result, kid, exp) = match &answer {
                    Some((200, signed)) => {
                        let token = signed["token"].as_str().unwrap_or_default().to_string();
                        let exp = claims(&token)["exp"].as_i64().unwrap_or(0);
                        tokens.push(Live { id: next_id, keyring: keyring.into(), token, exp });
                        ("ok".to_string(), signed["kid"].as_str().map(str::to_string), exp)
                    }
                    Some((_, error)) => (error["error"]["code"].as_str().unwrap_or("error").to_string(), None, 0),
                    None => ("unavailable".to_string(), None, 0),
                };
                record(
                    &history,
                    Event::Sign {
                        t: done,
                        pool: pool.clone(),
                        instance: instance.clone(),
                        keyring: keyring.into(),
                        token: next_id,
                        kid,
                        exp,
                        result,
                    },
                );
            }
        }
        // A quarter of the live tokens, at every sidecar.
        let wall = now();
        tokens.retain(|t| (t.exp as f64) > wall + 1.0);
        for live in tokens.iter().filter(|t| t.id % 4 == tick % 4) {
            for (pool, instance, _, socket) in &members {
                let body = json!({"token": live.token, "audience": "fleet"});
                let path = format!("/v1/jwt/{}/verify", live.keyring);
                let (answer, done) = ask(instance, &mut silent, socket, "POST", &path, Some(&body));
                let result = match answer {
                    Some((200, _)) => "ok".to_string(),
                    Some((status, _)) if status >= 500 => "unavailable".to_string(),
                    Some((_, error)) => error["error"]["code"].as_str().unwrap_or("error").to_string(),
                    None => "unavailable".to_string(),
                };
                record(
                    &history,
                    Event::Verify {
                        t: done,
                        pool: pool.clone(),
                        instance: instance.clone(),
                        keyring: live.keyring.clone(),
                        token: live.id,
                        result,
                    },
                );
            }
        }
        tick += 1;
        std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    }
}

/// The running fleet.
struct Fleet {
    nodes: Vec<Server>,
    vault: String,
    token: String,
    members: Vec<Member>,
    dir: tempfile::TempDir,
    sidecar: PathBuf,
    history: History,
    snapshot: Option<Vec<u8>>,
    notes: Vec<String>,
    unexpected: Vec<String>,
    executed: BTreeMap<String, usize>,
    secrets: Vec<(String, String)>,
}

fn ok(reply: &crate::Reply, what: &str) {
    assert!(reply.status == 200 || reply.status == 204, "{what}: {reply:?}");
}

impl Fleet {
    fn start(options: &Options) -> Self {
        let mut nodes = if options.standby_reads { Server::raft_cluster_reading(3) } else { Server::raft_cluster(3) };
        for node in &nodes {
            node.install_plugin(&options.plugin);
        }
        let mut env: Vec<&str> = Vec::new();
        if options.skip_gate {
            env.push("LOCKSTEP_TEST_SKIP_GATE=1");
        }
        if options.skip_heartbeats {
            env.push("LOCKSTEP_TEST_SKIP_HEARTBEATS=1");
        }
        let env = env.as_slice();
        ok(&nodes[0].register_plugin_with_env(env), "register the plugin");
        ok(&nodes[0].enable("lockstep"), "mount the engine");
        let active = &nodes[0];
        ok(
            &active.write(
                "lockstep/config",
                json!({"poll_interval": "5s", "max_clock_skew": format!("{MAX_SKEW}s"),
                       "liveness_window": format!("{LIVENESS}s"), "activation_margin": "2s"}),
            ),
            "config",
        );
        for (name, kind) in [("jwt", "ed25519"), ("hooks", "hmac-sha256")] {
            let policy = json!({"type": kind, "rotation_period": format!("{ROTATION}s"), "prepublish": format!("{PREPUBLISH}s"),
                                "grace_period": format!("{GRACE}s"), "max_token_ttl": format!("{TTL}s"),
                                "commit_timeout": format!("{COMMIT_TIMEOUT}s")});
            ok(&active.write(&format!("lockstep/keys/{name}"), policy), "keyring");
        }
        let dir = tempfile::Builder::new().prefix("lockstep-torture").tempdir().expect("tempdir");
        for sub in ["cache", "keys"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dirs");
        }
        let vault = crate::relay::balancer(
            nodes.iter().map(|n| n.address().trim_start_matches("http://").to_string()).collect(),
        );
        // With reading standbys every node must have the mount before a
        // sidecar polls it.
        if options.standby_reads {
            let deadline = Instant::now() + Duration::from_secs(60);
            for node in &nodes {
                while node.read("lockstep/info").status != 200 {
                    assert!(Instant::now() < deadline, "the mount never reached {}", node.address());
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let addresses: Vec<String> = nodes.iter().map(Server::address).collect();
        let token = active.token().to_string();
        let mut secrets = vec![("root token".to_string(), token.clone())];
        secrets.extend(active.unseal_key().map(|key| ("unseal key".to_string(), key.to_string())));
        let mut members = Vec::new();
        for (pool, mode) in [("web", "sign"), ("api", "sign"), ("audit", "verify")] {
            ok(
                &active.write(&format!("lockstep/pools/{pool}"), json!({"keyrings": "jwt,hooks", "mode": mode})),
                "pool",
            );
            let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
                .expect("policy")
                .replace("lockstep/bundle/web", &format!("lockstep/bundle/{pool}"));
            ok(
                &active.request("PUT", &format!("sys/policies/acl/sidecar-{pool}"), Some(json!({"policy": hcl}))),
                "policy",
            );
            let created = active.write(
                "auth/token/create",
                json!({"policies": [format!("sidecar-{pool}")], "ttl": "4h", "no_default_policy": true}),
            );
            let pool_token = created.body["auth"]["client_token"].as_str().expect("a token").to_string();
            secrets.push((format!("{pool} token"), pool_token.clone()));
            let token_file = dir.path().join(format!("{pool}.token"));
            std::fs::write(&token_file, &pool_token).expect("token file");
            for n in 1..=2 {
                let instance = format!("{pool}-{n}");
                let key = [u8::try_from(members.len()).unwrap_or(0) + 11; 32];
                secrets.push((format!("{instance} cache key"), STANDARD.encode(key)));
                std::fs::write(dir.path().join(format!("keys/{instance}.key")), key).expect("cache key");
                let d = dir.path().display();
                // Spread over the nodes (two sidecars each), failing over
                // in turn; else through the balancer. Of the two that start
                // on the active node, the first stays there; the other
                // moves to a standby once the active node says standbys
                // serve, as every other one would after a failover.
                let addr = if options.standby_reads {
                    let mut order = addresses.clone();
                    let shift = members.len() % order.len();
                    order.rotate_left(shift);
                    order.join(",")
                } else {
                    vault.clone()
                };
                let prefer_standby = !members.is_empty();
                let config = format!(
                    "pool = \"{pool}\"\ninstance = \"{instance}\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\n\
                     prefer_standby = {prefer_standby}\n\
                     poll_interval_secs = 2\nbackoff_min_ms = 100\nbackoff_max_secs = 1\nmax_clock_skew_secs = {MAX_SKEW}\n\
                     [auth]\nmethod = \"token\"\ntoken_file = \"{}\"\n[socket]\npath = \"{d}/{instance}.sock\"\n\
                     [cache]\nfile = \"{d}/cache/{instance}.bin\"\nkey_file = \"{d}/keys/{instance}.key\"\nmax_age_secs = 600\n\
                     [log]\nformat = \"json\"\nlevel = \"info\"\n",
                    token_file.display()
                );
                members.push(Member {
                    pool,
                    instance,
                    signs: mode == "sign",
                    config,
                    // One sidecar runs with its clock ahead, within max_clock_skew.
                    skewed: pool == "web" && n == 1,
                    running: None,
                });
            }
        }
        let mut fleet = Self {
            nodes: std::mem::take(&mut nodes),
            vault,
            token,
            members,
            dir,
            sidecar: options.sidecar.clone(),
            history: Arc::new(Mutex::new(Vec::new())),
            snapshot: None,
            notes: Vec::new(),
            unexpected: Vec::new(),
            executed: BTreeMap::new(),
            secrets,
        };
        for i in 0..fleet.members.len() {
            fleet.start_member(i);
        }
        for member in &fleet.members {
            let sidecar = member.running.as_ref().expect("started");
            sidecar.wait_until("both keyrings", 60, |s| {
                s.get("/v1/keyrings").body["keyrings"].as_array().is_some_and(|k| k.len() == 2)
            });
        }
        // The skew took: the sidecar measures it against the server's clock
        // on every sync.
        let skewed = fleet.members.iter().find(|m| m.skewed).and_then(|m| m.running.as_ref()).expect("web-1");
        skewed.wait_until("its clock skewed", 60, |s| {
            s.get("/metrics").body.as_str().is_some_and(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("lockstep_sidecar_clock_skew_seconds "))
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .is_some_and(|skew| skew >= 1)
            })
        });
        fault_event(&fleet.history, "skew_sidecar", "web-1", "start");
        fleet
    }

    fn start_member(&mut self, i: usize) {
        let member = &mut self.members[i];
        // A restart writes a new log: keep the one before it for the scan
        // for secrets at the end.
        let log = self.dir.path().join(format!("{}.log", member.instance));
        if let Ok(text) = std::fs::read(&log) {
            let earlier = self.dir.path().join(format!("{}.earlier.log", member.instance));
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(earlier).expect("earlier log");
            file.write_all(&text).expect("keep the log");
        }
        let mut command = Command::new(&self.sidecar);
        if member.skewed {
            // libfaketime preloaded into the sidecar itself, not the
            // `faketime` wrapper, which forks: signals and kills must reach
            // the sidecar's own process.
            command.env("LD_PRELOAD", libfaketime()).env("FAKETIME", SKEW);
        }
        member.running = Some(Sidecar::start_command(command, self.dir.path(), &member.instance, &member.config));
    }

    fn member(&self, instance: &str) -> usize {
        self.members.iter().position(|m| m.instance == instance).expect("a member")
    }

    /// A request through the balancer; retried for a while when the node
    /// it reached cannot serve it yet (a standby during an election or
    /// right after a restore redirects or refuses).
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> crate::Reply {
        let mut reply = self.api_once(method, path, body.clone());
        for _ in 0..40 {
            if !matches!(reply.status, 0 | 307 | 429 | 500..=599) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            reply = self.api_once(method, path, body.clone());
        }
        reply
    }

    fn api_once(&self, method: &str, path: &str, body: Option<Value>) -> crate::Reply {
        let url = format!("{}/v1/{}", self.vault, path.trim_start_matches('/'));
        let request = ureq::request(method, &url).set("X-Vault-Token", &self.token).timeout(Duration::from_secs(30));
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let (status, text) = match result {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(status, r)) => (status, r.into_string().unwrap_or_default()),
            Err(error) => (0, error.to_string()),
        };
        crate::Reply { status, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    /// Waits until some running node is active and answers.
    fn wait_healthy(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.nodes.iter().any(|n| n.is_running() && n.is_active()) {
            assert!(Instant::now() < deadline, "no active node after {secs} s");
            std::thread::sleep(Duration::from_millis(200));
        }
        while self.api("GET", "lockstep/info", None).status != 200 {
            assert!(Instant::now() < deadline, "the engine does not answer after {secs} s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn rotate(&self, keyring: &str, body: Value) -> crate::Reply {
        self.api("POST", &format!("lockstep/keys/{keyring}/rotate"), Some(body))
    }

    fn latest(&self, keyring: &str) -> Value {
        self.api("GET", &format!("lockstep/keys/{keyring}"), None).body["data"].clone()
    }

    /// When the scheduler's next rotation of `keyring` is due (the active
    /// version's activation plus the rotation period, less `prepublish`),
    /// and the latest version before it; waits two minutes at most for a
    /// keyring with nothing pending.
    fn next_scheduled(&self, keyring: &str) -> Option<(f64, Value)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let ring = self.latest(keyring);
            let active = ring["versions"].as_array().into_iter().flatten().find(|v| v["state"] == "active");
            let base = active.and_then(|v| v["not_before"].as_str()).and_then(fleet_check::unix_seconds);
            if ring["pending_version"].is_null()
                && let (Some(base), Some(period), Some(prepublish)) =
                    (base, ring["rotation_period"].as_f64(), ring["prepublish"].as_f64())
            {
                return Some((base + period - prepublish, ring["latest_version"].clone()));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }

    fn apply(&mut self, fault: &Fault) {
        let kind = fault.kind();
        *self.executed.entry(kind.to_string()).or_default() += 1;
        match fault {
            Fault::SnapshotSave => {
                let active = self.nodes.iter().find(|n| n.is_running() && n.is_active()).expect("an active node");
                let url = format!("{}/v1/sys/storage/raft/snapshot", active.address());
                let answer = ureq::get(&url).set("X-Vault-Token", &self.token).call().expect("a snapshot");
                let mut bytes = Vec::new();
                answer.into_reader().read_to_end(&mut bytes).expect("snapshot bytes");
                self.notes.push(format!("snapshot kept: {} bytes", bytes.len()));
                self.snapshot = Some(bytes);
                fault_event(&self.history, kind, "cluster", "start");
                fault_event(&self.history, kind, "cluster", "end");
            }
            Fault::SnapshotRestore => {
                let Some(bytes) = self.snapshot.take() else { return };
                fault_event(&self.history, kind, "cluster", "start");
                let active = self.nodes.iter().find(|n| n.is_running() && n.is_active()).expect("an active node");
                let url = format!("{}/v1/sys/storage/raft/snapshot-force", active.address());
                let answer = ureq::post(&url).set("X-Vault-Token", &self.token).send_bytes(&bytes);
                self.notes
                    .push(format!("snapshot restored: {:?}", answer.map(|r| r.status()).map_err(|e| e.to_string())));
                self.wait_healthy(60);
                // The operator's procedure: wait until the coordinator has
                // heard of the versions the fleet holds beyond its restored
                // state (an alert in status), then rotate (the next steps).
                let deadline = Instant::now() + Duration::from_secs(20);
                let noticed = |k: &str| {
                    self.api("GET", &format!("lockstep/status/{k}"), None).body["data"]["alerts"]
                        .to_string()
                        .contains("did not issue")
                };
                while !(noticed("jwt") && noticed("hooks")) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(250));
                }
                self.notes.push(format!("fleet-ahead noticed: jwt {}, hooks {}", noticed("jwt"), noticed("hooks")));
                // Reports decide nothing: the operator, who knows the
                // storage was restored, accepts them, past the highest
                // version the alert names.
                for keyring in ["jwt", "hooks"] {
                    let alerts =
                        self.api("GET", &format!("lockstep/status/{keyring}"), None).body["data"]["alerts"].to_string();
                    let past = alerts.split("past_version=").nth(1).map(|rest| {
                        rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u64>().unwrap_or(0)
                    });
                    if let Some(past) = past {
                        let body = json!({"past_version": past, "reason": "fault: storage restored from a snapshot"});
                        let reply = self.api("POST", &format!("lockstep/keys/{keyring}/renumber"), Some(body));
                        self.notes.push(format!("renumber {keyring} past {past}: {}", reply.status));
                    }
                }
                fault_event(&self.history, kind, "cluster", "end");
            }
            Fault::ManualRotation(keyring) => {
                fault_event(&self.history, kind, keyring, "start");
                let reply = self.rotate(keyring, json!({"reason": "fault: manual rotation"}));
                self.notes.push(format!("manual rotation of {keyring}: {}", reply.status));
                fault_event(&self.history, kind, keyring, "end");
            }
            Fault::RacingRotations(keyring) => {
                fault_event(&self.history, kind, keyring, "start");
                let expected = self.latest(keyring)["latest_version"].clone();
                let body = json!({"expected_version": expected, "reason": "fault: racing rotation"});
                let (a, b) = std::thread::scope(|scope| {
                    let one = scope.spawn(|| self.rotate(keyring, body.clone()).status);
                    let two = scope.spawn(|| self.rotate(keyring, body.clone()).status);
                    (one.join().unwrap_or(0), two.join().unwrap_or(0))
                });
                self.notes.push(format!("racing rotations of {keyring} from version {expected}: {a} and {b}"));
                if (a.min(b), a.max(b)) != (200, 409) {
                    self.unexpected
                        .push(format!("racing rotations of {keyring} answered {a} and {b}, not 200 and 409"));
                }
                fault_event(&self.history, kind, keyring, "end");
            }
            Fault::RaceScheduled(keyring, after_ms) => {
                let Some((due, expected)) = self.next_scheduled(keyring) else {
                    self.notes.push(format!("race with the scheduler on {keyring}: no rotation came due in time"));
                    return;
                };
                let at = due + *after_ms as f64 / 1_000.0;
                std::thread::sleep(Duration::from_secs_f64((at - now()).max(0.0)));
                fault_event(&self.history, kind, keyring, "start");
                let body = json!({"expected_version": expected, "reason": "fault: racing the scheduler"});
                let reply = self.rotate(keyring, body);
                let winner = match reply.status {
                    200 => "the manual rotation won",
                    409 => "the scheduler won",
                    _ => "neither answered as a race must",
                };
                self.notes.push(format!(
                    "raced the scheduler's rotation of {keyring} from version {expected}, {after_ms} ms after it was due: \
                     {winner} ({})",
                    reply.status
                ));
                if !matches!(reply.status, 200 | 409) {
                    self.unexpected
                        .push(format!("a rotation racing the scheduler on {keyring} answered {}", reply.status));
                }
                fault_event(&self.history, kind, keyring, "end");
            }
            Fault::KillActiveDuringCommit(keyring, secs) => {
                let reply = self.rotate(keyring, json!({"reason": "fault: pending at the kill"}));
                // Asked of the active node itself, at once: through the
                // balancer a retry could outlast the commit, which a fleet
                // that acknowledges within a second reaches quickly.
                let active = self.nodes.iter().find(|n| n.is_running() && n.is_active());
                let ring = active.map_or(Value::Null, |node| node.read(&format!("lockstep/keys/{keyring}")).body);
                let (pending, latest) = (&ring["data"]["pending_version"], &ring["data"]["latest_version"]);
                let version = &reply.body["data"]["version"];
                if reply.status == 200 && pending != version {
                    // A fleet that acknowledged within the moment since the
                    // rotation has committed it already: the kill then
                    // comes after the commit, which is no fault of ours.
                    if pending.is_null() && latest == version {
                        self.notes.push(format!("the rotation of {keyring} to {version} committed before the kill"));
                    } else {
                        self.unexpected.push(format!(
                            "the rotation of {keyring} to {version} was not pending at the kill (pending: {pending})"
                        ));
                    }
                }
                let index = self.nodes.iter().position(|n| n.is_running() && n.is_active()).expect("an active node");
                let node = format!("node-{}", index + 1);
                fault_event(&self.history, kind, &node, "start");
                self.nodes[index].kill();
                self.notes
                    .push(format!("killed the active {node} right after a rotation of {keyring} ({})", reply.status));
                std::thread::sleep(Duration::from_secs(*secs));
                self.nodes[index].start_again();
                self.wait_healthy(60);
                fault_event(&self.history, kind, &node, "end");
            }
            Fault::KillDuringScheduled(keyring, secs) => {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut pending = Value::Null;
                while pending.is_null() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(250));
                    pending = self.latest(keyring)["pending_version"].clone();
                }
                let Some(index) = self.nodes.iter().position(|n| n.is_running() && n.is_active()) else { return };
                let node = format!("node-{}", index + 1);
                fault_event(&self.history, kind, &node, "start");
                self.nodes[index].kill();
                self.notes.push(format!(
                    "killed the active {node} with the scheduler's version {pending} of {keyring} pending"
                ));
                std::thread::sleep(Duration::from_secs(*secs));
                self.nodes[index].start_again();
                self.wait_healthy(60);
                fault_event(&self.history, kind, &node, "end");
            }
            Fault::StopFollower(secs) => {
                let index = self.nodes.iter().position(|n| n.is_running() && !n.is_active()).expect("a standby");
                let node = format!("node-{}", index + 1);
                fault_event(&self.history, kind, &node, "start");
                self.nodes[index].shut_down();
                std::thread::sleep(Duration::from_secs(*secs));
                self.nodes[index].start_again();
                fault_event(&self.history, kind, &node, "end");
            }
            Fault::PauseStandby(secs) => {
                let Some(index) = self.nodes.iter().position(|n| n.is_running() && !n.is_active()) else {
                    self.notes.push("pause_standby: no standby".into());
                    return;
                };
                let node = format!("node-{}", index + 1);
                let pid = self.nodes[index].pid().expect("a running node");
                let signal = |name: &str| {
                    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
                    status.is_ok_and(|s| s.success())
                };
                fault_event(&self.history, kind, &node, "start");
                assert!(signal("STOP"), "SIGSTOP {node}");
                std::thread::sleep(Duration::from_secs(*secs));
                assert!(signal("CONT"), "SIGCONT {node}");
                fault_event(&self.history, kind, &node, "end");
            }
            Fault::KillStandby(secs) => {
                let Some(index) = self.nodes.iter().position(|n| n.is_running() && !n.is_active()) else {
                    self.notes.push("kill_standby: no standby".into());
                    return;
                };
                let node = format!("node-{}", index + 1);
                fault_event(&self.history, kind, &node, "start");
                self.nodes[index].kill();
                std::thread::sleep(Duration::from_secs(*secs));
                self.nodes[index].start_again();
                fault_event(&self.history, kind, &node, "end");
            }
            Fault::Revoke(keyring) => {
                let ring = self.latest(keyring);
                let signing = ring["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["state"] == "active")
                    .cloned()
                    .unwrap_or(Value::Null);
                let (Some(version), Some(kid)) = (signing["version"].as_u64(), signing["kid"].as_str()) else {
                    self.notes.push(format!("revoke {keyring}: no active version in {ring}"));
                    return;
                };
                let reply = self.api(
                    "POST",
                    &format!("lockstep/keys/{keyring}/revoke"),
                    Some(json!({"version": version, "reason": "fault: emergency"})),
                );
                record(&self.history, Event::Revoke { t: now(), keyring: (*keyring).into(), kid: kid.into() });
                self.notes.push(format!("revoked {keyring} version {version}: {}", reply.status));
            }
            Fault::ClusterDown(secs, instance) => {
                fault_event(&self.history, kind, "cluster", "start");
                for node in &mut self.nodes {
                    node.shut_down();
                }
                std::thread::sleep(Duration::from_secs(2));
                let i = self.member(instance);
                fault_event(&self.history, "kill_sidecar", instance, "start");
                if let Some(mut sidecar) = self.members[i].running.take() {
                    sidecar.kill();
                }
                std::thread::sleep(Duration::from_secs(2));
                self.start_member(i);
                fault_event(&self.history, "kill_sidecar", instance, "end");
                std::thread::sleep(Duration::from_secs(secs.saturating_sub(4)));
                for node in &mut self.nodes {
                    node.start_again();
                }
                self.wait_healthy(90);
                fault_event(&self.history, kind, "cluster", "end");
            }
            Fault::FreezeQuiet(keyring, secs) => {
                let Some(active) = self.nodes.iter().find(|n| n.is_running() && n.is_active()) else {
                    self.notes.push("freeze_quiet: no active node".into());
                    return;
                };
                // Running sidecars whose first address is a standby.
                let first = |config: &str| {
                    config
                        .split("addr = \"")
                        .nth(1)
                        .and_then(|r| r.split([',', '"']).next())
                        .unwrap_or_default()
                        .to_string()
                };
                let at_standby: Vec<String> = self
                    .members
                    .iter()
                    .filter(|m| m.running.is_some() && first(&m.config) != active.address())
                    .map(|m| m.instance.clone())
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(40);
                let (mut quiet, mut any) = (None, None);
                while quiet.is_none() {
                    let status = active.read(&format!("lockstep/status/{keyring}")).body;
                    let instances = status["data"]["pools"].as_array().into_iter().flatten();
                    for seen in instances.flat_map(|p| p["instances"].as_array().into_iter().flatten()) {
                        let Some(name) = seen["instance"].as_str().filter(|n| at_standby.iter().any(|m| m == n)) else {
                            continue;
                        };
                        any.get_or_insert_with(|| name.to_string());
                        if seen["live"] == false {
                            quiet = Some(name.to_string());
                        }
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                self.notes.push(format!(
                    "freeze_quiet {keyring}: {}",
                    quiet
                        .as_deref()
                        .map_or("none went quiet".to_string(), |q| format!("{q} shown not live while running"))
                ));
                if let Some(target) = quiet.or(any) {
                    self.apply(&Fault::Freeze(target, *secs, Some(keyring)));
                }
            }
            Fault::Freeze(instance, secs, rotate) => {
                let i = self.member(instance);
                let Some(pid) = self.members[i].running.as_ref().and_then(Sidecar::pid) else { return };
                let signal = |name: &str| {
                    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
                };
                signal("STOP");
                fault_event(&self.history, kind, instance, "start");
                if let Some(keyring) = rotate {
                    std::thread::sleep(Duration::from_secs(1));
                    let reply = self.rotate(keyring, json!({"reason": "fault: rotation while a sidecar is frozen"}));
                    self.notes.push(format!("rotated {keyring} with {instance} frozen: {}", reply.status));
                    std::thread::sleep(Duration::from_secs(secs.saturating_sub(1)));
                } else {
                    std::thread::sleep(Duration::from_secs(*secs));
                }
                fault_event(&self.history, kind, instance, "end");
                signal("CONT");
            }
        }
    }

    /// The coordinator's versions, from every keyring's record.
    fn issued(&self) -> Vec<Issued> {
        let mut out = Vec::new();
        for keyring in ["jwt", "hooks"] {
            for v in self.latest(keyring)["versions"].as_array().into_iter().flatten() {
                out.push(Issued {
                    keyring: keyring.into(),
                    version: v["version"].as_u64().unwrap_or(0),
                    kid: v["kid"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        out
    }

    /// At the end: each pool's sidecars agree on each keyring's signing
    /// version, and every sidecar holds every signing pool's.
    fn converged(&self) -> Result<(), String> {
        let mut signing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut holding: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        for member in &self.members {
            let Some(sidecar) = &member.running else { continue };
            for keyring in ["jwt", "hooks"] {
                let view = sidecar.get(&format!("/v1/keys/{keyring}")).body;
                if member.signs {
                    signing
                        .entry(keyring.into())
                        .or_default()
                        .push(view["signing"]["kid"].as_str().unwrap_or("none").to_string());
                }
                let kids = view["verifying"].as_array().into_iter().flatten();
                holding
                    .entry(keyring.into())
                    .or_default()
                    .push(kids.filter_map(|v| v["kid"].as_str()).map(str::to_string).collect());
            }
        }
        for (keyring, kids) in &signing {
            if kids.iter().any(|k| k != &kids[0]) {
                return Err(format!("{keyring}: signing sidecars disagree: {kids:?}"));
            }
            if let Some(missing) = holding[keyring].iter().find(|held| !held.contains(&kids[0])) {
                return Err(format!("{keyring}: a sidecar lacks the signing {}: it holds {missing:?}", kids[0]));
            }
        }
        Ok(())
    }

    /// Key material every sidecar could reveal, to look for in logs: taken
    /// before every fault and at the end, so versions that expire or are
    /// revoked during the run are looked for too, in base64, base64url and
    /// hex.
    fn collect_key_material(&mut self) {
        let Some(signer) = self.members.iter().filter(|m| m.signs).find_map(|m| m.running.as_ref()) else { return };
        for keyring in ["jwt", "hooks"] {
            let view = signer.get(&format!("/v1/keys/{keyring}?private=true&format=base64")).body;
            for v in view["verifying"].as_array().into_iter().flatten() {
                for field in ["private_key", "secret"] {
                    let Some(material) = v["material"][field].as_str() else { continue };
                    let what = format!("{keyring} {} {field}", v["kid"].as_str().unwrap_or("?"));
                    let mut forms = vec![material.to_string()];
                    if let Ok(bytes) = STANDARD.decode(material) {
                        forms.push(URL_SAFE_NO_PAD.encode(&bytes));
                        forms.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
                    }
                    for form in forms {
                        if !self.secrets.iter().any(|(_, known)| *known == form) {
                            self.secrets.push((what.clone(), form));
                        }
                    }
                }
            }
        }
    }

    /// How often each sidecar moved off the active node because it said
    /// its standbys answer polls: the lines of its log and of the log it
    /// kept from before its last restart.
    fn moves(&self) -> BTreeMap<String, usize> {
        self.members
            .iter()
            .map(|member| {
                let count = ["log", "earlier.log"]
                    .iter()
                    .map(|log| self.dir.path().join(format!("{}.{log}", member.instance)))
                    .map(|path| std::fs::read_to_string(path).unwrap_or_default())
                    .map(|text| text.matches("the active node says its standbys answer polls").count())
                    .sum();
                (member.instance.clone(), count)
            })
            .collect()
    }

    /// Secrets found in the logs; a log that should be there and is not,
    /// or is empty, is reported too (a scan of nothing finds nothing).
    fn leaks(&self) -> Vec<String> {
        let mut logs: Vec<(String, String)> =
            self.nodes.iter().enumerate().map(|(i, n)| (format!("node-{} log", i + 1), n.log())).collect();
        for member in &self.members {
            for log in ["log", "earlier.log"] {
                let path = self.dir.path().join(format!("{}.{log}", member.instance));
                logs.push((format!("{} {log}", member.instance), std::fs::read_to_string(path).unwrap_or_default()));
            }
        }
        let mut found: Vec<String> = logs
            .iter()
            .filter(|(log, text)| !log.ends_with("earlier.log") && text.trim().is_empty())
            .map(|(log, _)| format!("the {log} is missing or empty"))
            .collect();
        for (what, secret) in &self.secrets {
            for (log, text) in &logs {
                if secret.len() >= 16 && text.contains(secret.as_str()) {
                    found.push(format!("{what} in the {log}"));
                }
            }
        }
        found
    }
}

/// Runs `plan`; writes the history, the report and a timeline to
/// `options.out`.
pub fn run(plan: &Plan, options: &Options) -> Outcome {
    std::fs::create_dir_all(&options.out).expect("the output directory");
    println!("fault schedule:\n{}", plan.describe());
    let mut fleet = Fleet::start(options);
    let stop = Arc::new(AtomicBool::new(false));
    let members = fleet
        .members
        .iter()
        .map(|m| {
            (m.pool.to_string(), m.instance.clone(), m.signs, fleet.dir.path().join(format!("{}.sock", m.instance)))
        })
        .collect();
    let driver = {
        let (history, stop) = (fleet.history.clone(), stop.clone());
        std::thread::spawn(move || drive(members, history, stop))
    };
    let observer = {
        let (vault, token, history, stop) =
            (fleet.vault.clone(), fleet.token.clone(), fleet.history.clone(), stop.clone());
        std::thread::spawn(move || observe(&vault, &token, &history, &stop))
    };
    let start = Instant::now();
    // A fault that runs long (one that waits for the scheduler) delays the
    // rest of the plan, not the spacing between them.
    let mut lag = Duration::ZERO;
    for (at, fault) in &plan.steps {
        let due = Duration::from_secs_f64(*at) + lag;
        std::thread::sleep(due.saturating_sub(start.elapsed()));
        if start.elapsed() > due + Duration::from_secs(1) {
            lag += start.elapsed() - due;
        }
        println!("t+{:6.1}s  {fault:?}", start.elapsed().as_secs_f64());
        fleet.collect_key_material();
        fleet.apply(fault);
    }
    std::thread::sleep(Duration::from_secs_f64(plan.settle));
    stop.store(true, Ordering::SeqCst);
    let _ = driver.join();
    let _ = observer.join();
    fault_event(&fleet.history, "skew_sidecar", "web-1", "end");
    let converged = fleet.converged();
    let final_state: String = ["jwt", "hooks"]
        .iter()
        .map(|k| {
            let get = |what: &str| fleet.api("GET", &format!("lockstep/{what}/{k}"), None).body["data"].to_string();
            format!("{k}:\n  keys {}\n  status {}\n  history {}\n", get("keys"), get("status"), get("history"))
        })
        .collect();
    fleet.collect_key_material();
    let events = fleet.history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let issued = fleet.issued();
    let report = fleet_check::check(&events, &issued, params());
    let history: String = events.iter().map(|e| serde_json::to_string(e).unwrap_or_default() + "\n").collect();
    std::fs::write(options.out.join("history.jsonl"), history).expect("history.jsonl");
    std::fs::write(options.out.join("report.txt"), format!("{}\n{}", plan.describe(), report.render()))
        .expect("report");
    std::fs::write(options.out.join("timeline.svg"), timeline(&events)).expect("timeline.svg");
    let mut notes = fleet.notes.clone();
    if options.standby_reads {
        notes.push(format!("moves off the active node, per sidecar: {:?}", fleet.moves()));
    }
    Outcome {
        report,
        executed: fleet.executed.clone(),
        leaks: fleet.leaks(),
        converged,
        notes,
        unexpected: fleet.unexpected.clone(),
        events,
        final_state,
    }
}

/// The checker's knobs for this run's settings.
pub fn params() -> Params {
    Params {
        leeway: MAX_SKEW as f64,
        // The coordinator counts a sidecar's silence from its last poll,
        // which may have begun a long-poll's wait (5 s) before it stopped.
        liveness: (LIVENESS - 5) as f64,
        recovery: 5.0,
        view_age: 0.75,
        rotation_floor: (ROTATION - PREPUBLISH) as f64,
        rotation_ceiling: (ROTATION + COMMIT_TIMEOUT + PERIODIC + 15) as f64,
        // A commit comes by the timeout at the latest, decided at the next
        // periodic call or poll; an outage of the cluster adds its length.
        commit_bound: (COMMIT_TIMEOUT + PERIODIC + 15) as f64,
        request_wait: REQUEST_TIMEOUT.as_secs_f64() + 0.6,
    }
}

/// A picture of the run: one row per sidecar (its signing version of `jwt`
/// over time, by colour, with a legend), a row of cluster faults (labels
/// stacked so they never overlap), faults that hit one sidecar shaded on
/// its row, and rejected verifications as ticks: short for a token of a
/// version revoked before it was shown, full height for any other.
pub fn timeline(events: &[Event]) -> String {
    let (t0, t1) = events.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), e| (a.min(e.t()), b.max(e.t())));
    if !t0.is_finite() || t1 <= t0 {
        return String::from("<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
    }
    let (width, left, row, tiers) = (1000.0, 90.0, 22.0, 4usize);
    let top = 30.0 + 10.0 * tiers as f64;
    let x = |t: f64| left + (t - t0) / (t1 - t0) * (width - left - 10.0);
    let mut rows: Vec<String> = vec!["cluster".into()];
    for e in events {
        if let Event::View { instance, .. } = e
            && !rows.contains(instance)
        {
            rows.push(instance.clone());
        }
    }
    rows[1..].sort();
    // The coordinator's decisions on each keyring, under the cluster.
    // (A restore brings back positions already seen, with other entries:
    // both are drawn.)
    let mut decisions: BTreeSet<(String, u64, String, String, String, u64)> = BTreeSet::new();
    for e in events {
        if let Event::Decision { keyring, seq, at, action, cause, versions, .. } = e {
            let number = versions.first().copied().unwrap_or(0);
            decisions.insert((keyring.clone(), *seq, at.clone(), action.clone(), cause.clone(), number));
        }
    }
    for keyring in ["hooks", "jwt"] {
        if decisions.iter().any(|(k, ..)| k == keyring) {
            rows.insert(1, format!("{keyring} decided"));
        }
    }
    let y = |name: &str| top + row * rows.iter().position(|r| r == name).unwrap_or(0) as f64;
    let legend_y = top + row * rows.len() as f64 + 8.0;
    let colours = [
        "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#4e79a7", "#ff9da7", "#9c755f", "#8cd17d",
        "#bab0ac", "#d37295",
    ];
    let colour = |v: u64| match usize::try_from(v) {
        Ok(0) | Err(_) => "#eeeeee",
        Ok(v) => colours[(v - 1) % colours.len()],
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"{left}\" y=\"14\">jwt signing version per sidecar over {:.0} s; faults in grey; rejected verifications as ticks (short: a revoked version); web-1 runs 1.5 s ahead</text>\n\
         <text x=\"{left}\" y=\"26\">decided rows: the coordinator's publications (tall, in the version's colour), commits (short, black), revocations (red), supersedes and fleet-ahead (orange)</text>\n",
        legend_y + 22.0,
        t1 - t0
    );
    for name in &rows {
        svg.push_str(&format!("<text x=\"4\" y=\"{:.0}\">{name}</text>\n", y(name) + 12.0));
    }
    let mut last: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    let mut versions: Vec<u64> = Vec::new();
    for e in events {
        if let Event::View { t, instance, keyring, signing, verifying, .. } = e
            && keyring == "jwt"
        {
            let version = verifying.iter().find(|h| Some(&h.kid) == signing.as_ref()).map_or(0, |h| h.version);
            if !versions.contains(&version) {
                versions.push(version);
            }
            if let Some((from, v)) = last.insert(instance.clone(), (*t, version)) {
                svg.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.0}\" width=\"{:.1}\" height=\"14\" fill=\"{}\"/>\n",
                    x(from),
                    y(instance),
                    (x(*t) - x(from)).max(0.5),
                    colour(v)
                ));
            }
        }
    }
    for (keyring, _, at, action, cause, number) in &decisions {
        let Some(at) = fleet_check::unix_seconds(at).map(|at| at.clamp(t0, t1)) else { continue };
        let (height, fill) = match action.as_str() {
            "publish" => (14.0, colour(*number)),
            "commit" | "commit-forced" => (7.0, "#000"),
            "revoke" => (14.0, "#d00"),
            "supersede" | "fleet-ahead" | "renumber" => (14.0, "#f80"),
            _ => continue,
        };
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.0}\" width=\"3\" height=\"{height}\" fill=\"{fill}\"><title>{keyring} {action} v{number} ({cause})</title></rect>\n",
            x(at) - 1.5,
            y(&format!("{keyring} decided")),
        ));
    }
    versions.sort_unstable();
    let mut at = left;
    svg.push_str(&format!("<text x=\"4\" y=\"{:.0}\">jwt version</text>\n", legend_y + 11.0));
    for v in versions {
        let label = if v == 0 { "none".to_string() } else { format!("v{v}") };
        svg.push_str(&format!(
            "<rect x=\"{at:.0}\" y=\"{legend_y:.0}\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{:.0}\" y=\"{:.0}\">{label}</text>\n",
            colour(v),
            at + 18.0,
            legend_y + 11.0
        ));
        at += 60.0;
    }
    let signed: BTreeMap<u64, &str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Sign { token, kid: Some(kid), .. } => Some((*token, kid.as_str())),
            _ => None,
        })
        .collect();
    let revoked: BTreeMap<&str, f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::Revoke { t, kid, .. } => Some((kid.as_str(), *t)),
            _ => None,
        })
        .collect();
    let mut labels: Vec<(f64, String)> = Vec::new();
    let mut ticks: BTreeSet<(i64, String, bool)> = BTreeSet::new();
    let mut open: BTreeMap<(String, String), f64> = BTreeMap::new();
    for e in events {
        match e {
            Event::Fault { t, kind, target, phase } if phase == "start" => {
                open.insert((kind.clone(), target.clone()), *t);
            }
            Event::Fault { t, kind, target, .. } if kind != "skew_sidecar" => {
                if let Some(from) = open.remove(&(kind.clone(), target.clone())) {
                    let on = if rows.contains(target) { target.as_str() } else { "cluster" };
                    svg.push_str(&format!(
                        "<rect x=\"{:.1}\" y=\"{:.0}\" width=\"{:.1}\" height=\"14\" fill=\"#999\" fill-opacity=\"0.55\"><title>{kind} {target}</title></rect>\n",
                        x(from),
                        y(on),
                        (x(*t) - x(from)).max(2.0)
                    ));
                    if on == "cluster" {
                        let text = match kind.as_str() {
                            "manual_rotation" => format!("rotate {target}"),
                            "racing_rotations" => format!("race {target}"),
                            "race_scheduled" => format!("race the scheduler {target}"),
                            "snapshot_save" => "save".to_string(),
                            "snapshot_restore" => "restore".to_string(),
                            other => other.replace('_', " "),
                        };
                        labels.push((x(from), text));
                    }
                }
            }
            Event::Revoke { t, keyring, .. } => labels.push((x(*t), format!("revoke {keyring}"))),
            Event::Verify { t, instance, token, result, .. } if result != "ok" && result != "unavailable" => {
                let after_revocation = signed.get(token).and_then(|kid| revoked.get(kid)).is_some_and(|at| at <= t);
                // One tick per pixel and row is all the picture can show.
                ticks.insert(((x(*t) * 2.0).round() as i64, instance.clone(), after_revocation));
            }
            _ => {}
        }
    }
    // Labels stacked in tiers above the cluster row, left to right; one
    // that fits in no tier is left to the fault's tooltip.
    labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut label_ends = vec![f64::NEG_INFINITY; tiers];
    let on = y("cluster");
    for (at, text) in labels {
        let tier = (0..tiers).find(|&i| label_ends[i] < at);
        if let Some(tier) = tier {
            label_ends[tier] = at + 5.5 * text.len() as f64 + 4.0;
        }
        let lift = 10.0 * tier.unwrap_or(0) as f64;
        svg.push_str(&format!(
            "<line x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{:.0}\" y2=\"{on:.0}\" stroke=\"#999\"/>\n",
            on - 2.0 - lift
        ));
        if tier.is_some() {
            svg.push_str(&format!("<text x=\"{at:.1}\" y=\"{:.0}\" font-size=\"9\">{text}</text>\n", on - 3.0 - lift));
        }
    }
    for (half_px, instance, after_revocation) in ticks {
        let height = if after_revocation { 5.0 } else { 14.0 };
        svg.push_str(&format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.0}\" y2=\"{2:.0}\" stroke=\"#000\"/>\n",
            half_px as f64 / 2.0,
            y(&instance),
            y(&instance) + height
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet_check::Held;

    fn view(t: f64, instance: &str, version: u64) -> Event {
        let kid = format!("jwt-v{version}");
        Event::View {
            t,
            pool: "web".into(),
            instance: instance.into(),
            keyring: "jwt".into(),
            signing: Some(kid.clone()),
            verifying: vec![Held { version, kid, expires_at: None }],
        }
    }

    fn sign(t: f64, token: u64, version: u64) -> Event {
        Event::Sign {
            t,
            pool: "web".into(),
            instance: "web-1".into(),
            keyring: "jwt".into(),
            token,
            kid: Some(format!("jwt-v{version}")),
            exp: 0,
            result: "ok".into(),
        }
    }

    fn refused(t: f64, token: u64) -> Event {
        Event::Verify {
            t,
            pool: "web".into(),
            instance: "web-2".into(),
            keyring: "jwt".into(),
            token,
            result: "token_kid_unknown".into(),
        }
    }

    fn fault(t: f64, kind: &str, phase: &str) -> Event {
        Event::Fault { t, kind: kind.into(), target: "cluster".into(), phase: phase.into() }
    }

    /// The tick marks' heights, in drawing order.
    fn ticks(svg: &str) -> Vec<i64> {
        svg.lines()
            .filter(|l| l.starts_with("<line") && l.contains("stroke=\"#000\""))
            .map(|l| {
                let attr = |name: &str| -> i64 {
                    let from = l.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
                    l[from..].split('"').next().unwrap_or_default().parse().expect("a number")
                };
                attr("y2") - attr("y1")
            })
            .collect()
    }

    #[test]
    fn a_refusal_of_a_revoked_version_is_a_short_tick_and_any_other_a_full_one() {
        let events = vec![
            view(0.0, "web-1", 1),
            view(0.0, "web-2", 1),
            sign(1.0, 1, 1),
            sign(1.5, 2, 2),
            Event::Revoke { t: 2.0, keyring: "jwt".into(), kid: "jwt-v1".into() },
            refused(3.0, 1),
            refused(6.0, 2),
            view(10.0, "web-1", 2),
            view(10.0, "web-2", 2),
        ];
        let svg = timeline(&events);
        assert_eq!(ticks(&svg), [5, 14], "{svg}");
        assert!(svg.contains(">revoke jwt</text>"), "{svg}");
        assert!(svg.contains(">v1</text>") && svg.contains(">v2</text>"), "the legend names both versions: {svg}");
    }

    #[test]
    fn labels_of_faults_close_together_go_to_separate_tiers() {
        let mut events = vec![view(0.0, "web-1", 1), view(100.0, "web-1", 1)];
        // Ended in the reverse order of their starts: placed by where they start.
        events.extend([
            fault(10.0, "stop_follower", "start"),
            fault(10.5, "kill_active", "start"),
            fault(11.0, "kill_active", "end"),
            fault(12.0, "stop_follower", "end"),
        ]);
        let svg = timeline(&events);
        let baseline = |text: &str| {
            let line = svg.lines().find(|l| l.ends_with(&format!(">{text}</text>"))).expect(text);
            line.split("y=\"").nth(1).and_then(|rest| rest.split('"').next()).map(str::to_string).expect("y")
        };
        assert_ne!(baseline("stop follower"), baseline("kill active"), "{svg}");
    }
}
