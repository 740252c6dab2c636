//! Lockstep on every node of a 3-node raft cluster. On OpenBao the
//! standbys serve reads themselves (its default since 2.5): they answer
//! sidecars' polls from their own memory and storage and send on to the
//! active node only what must write. On Vault the standbys forward every
//! request, and the same promises hold.
//!
//! Needs what `make test` builds (the test plugin, the servers, the release
//! sidecar).

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_tests::server::{Server, server_kind};
use lockstep_tests::sidecar::{Sidecar, release_sidecar_binary};
use lockstep_tests::workspace_root;
use serde_json::{Value, json};

/// Three nodes; on OpenBao the standbys serve reads.
fn cluster() -> Vec<Server> {
    let cluster = if server_kind().is_openbao() { Server::raft_cluster_reading(3) } else { Server::raft_cluster(3) };
    cluster[0].register_plugin().expect_status(204);
    cluster[0].enable("lockstep").expect_status(204);
    // A standby sets the new mount up once the mount table reaches it.
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &cluster {
        while node.read("lockstep/info").status != 200 {
            assert!(Instant::now() < deadline, "the mount never reached {}", node.address());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    cluster
}

/// The pool's least-privilege policy, and a token with it.
fn pool_token(active: &Server, pool: &str) -> String {
    let hcl = std::fs::read_to_string(workspace_root().join("policies/lockstep-sidecar-web.hcl"))
        .expect("policies/lockstep-sidecar-web.hcl")
        .replace("lockstep/bundle/web", &format!("lockstep/bundle/{pool}"));
    active.request("PUT", &format!("sys/policies/acl/sidecar-{pool}"), Some(json!({"policy": hcl}))).expect_status(204);
    let reply = active.write(
        "auth/token/create",
        json!({"policies": [format!("sidecar-{pool}")], "ttl": "1h", "no_default_policy": true}),
    );
    reply.body["auth"]["client_token"].as_str().expect("a token").to_string()
}

/// A release sidecar of `pool` named `instance`, polling `addr` (one
/// address or several).
fn sidecar(dir: &Path, active: &Server, pool: &str, instance: &str, addr: &str) -> Sidecar {
    for sub in ["cache", "keys"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dirs");
    }
    std::fs::write(dir.join(format!("keys/{instance}.key")), [7u8; 32]).expect("cache key");
    let token = dir.join(format!("{instance}.token"));
    std::fs::write(&token, pool_token(active, pool)).expect("token file");
    let d = dir.display();
    let config = format!(
        "pool = \"{pool}\"\ninstance = \"{instance}\"\n[vault]\naddr = \"{addr}\"\nwait_secs = 5\npoll_interval_secs = 2\n\
         backoff_min_ms = 100\nbackoff_max_secs = 2\nmax_clock_skew_secs = 2\n[auth]\nmethod = \"token\"\n\
         token_file = \"{token}\"\n[socket]\npath = \"{d}/{instance}.sock\"\n[cache]\nfile = \"{d}/cache/{instance}.bin\"\n\
         key_file = \"{d}/keys/{instance}.key\"\nmax_age_secs = 600\n[log]\nlevel = \"info\"\n",
        token = token.display(),
    );
    Sidecar::start_binary(&release_sidecar_binary(), dir, instance, &config)
}

fn version_held(sidecar: &Sidecar) -> Value {
    let keys = sidecar.get("/v1/keys/jwt").body;
    keys["verifying"]
        .as_array()
        .and_then(|v| v.iter().map(|v| v["version"].clone()).max_by_key(Value::as_u64))
        .unwrap_or(Value::Null)
}

fn signing(sidecar: &Sidecar) -> Value {
    sidecar.get("/v1/keys/jwt").body["signing"]["version"].clone()
}

fn actions(history: &Value) -> Vec<String> {
    let entries = history["data"]["entries"].as_array().cloned().unwrap_or_default();
    entries.iter().filter_map(|e| e["action"].as_str().map(str::to_string)).collect()
}

fn count(actions: &[String], action: &str) -> usize {
    actions.iter().filter(|a| *a == action).count()
}

#[track_caller]
fn written(reply: &lockstep_tests::Reply) {
    assert!(reply.status == 200 || reply.status == 204, "{reply:?}");
}

#[test]
fn every_node_serves_sidecars_and_writes_sent_to_a_standby_happen_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster();
    let (active, second, third) = (&nodes[0], &nodes[1], &nodes[2]);
    // Every kind of write, sent to a standby.
    written(&second.write(
        "lockstep/config",
        json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"}),
    ));
    written(&third.write(
        "lockstep/keys/jwt",
        json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
               "max_token_ttl": "10m", "commit_timeout": "30m"}),
    ));
    written(&second.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    written(&third.write("lockstep/pools/old", json!({"keyrings": "jwt"})));
    second.delete("lockstep/pools/old").expect_status(204);

    // A sidecar on each node; each becomes ready and holds version 1.
    let sidecars: Vec<Sidecar> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| sidecar(dir.path(), active, "web", &format!("web-{i}"), &node.address()))
        .collect();
    for s in &sidecars {
        s.wait_ready();
        s.wait_until("version 1", 60, |s| signing(s) == 1);
    }
    // A rotation through a standby: one version, one publish entry, and
    // every sidecar converges on it.
    written(&third.write("lockstep/keys/jwt/rotate", json!({"reason": "through a standby"})));
    for s in &sidecars {
        s.wait_until("version 2 signing everywhere", 60, |s| signing(s) == 2);
    }
    written(&second.write("lockstep/keys/jwt/revoke", json!({"version": 1, "reason": "through a standby"})));
    let history = active.read("lockstep/history/jwt").expect_status(200).body;
    let done = actions(&history);
    assert_eq!(count(&done, "create"), 1, "{history}");
    assert_eq!((count(&done, "publish"), count(&done, "revoke")), (2, 1), "{history}");
    assert_eq!(count(&done, "pool"), 3, "web opened, old opened and closed: {history}");
    let latest = active.read("lockstep/keys/jwt").expect_status(200);
    assert_eq!(latest.data()["latest_version"], 2, "{latest:?}");

    // Status on any node shows every instance, whichever node it polls.
    for node in &nodes {
        let status = node.read("lockstep/status/jwt").expect_status(200);
        let instances = status.data()["pools"][0]["instances"].as_array().map_or(0, Vec::len);
        assert_eq!(instances, 3, "{status:?}");
    }
    // Steady state: the standbys answered polls themselves, and no sync
    // failed anywhere.
    std::thread::sleep(Duration::from_secs(12));
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let info = node.read("lockstep/info").expect_status(200);
        let (answered, sent) = (&info.data()["polls_answered"], &info.data()["polls_sent_to_active"]);
        if server_kind().is_openbao() {
            assert_eq!(info.data()["node"], "standby", "{info:?}");
            assert!(answered.as_u64() > sent.as_u64(), "node {i} answered {answered}, sent on {sent}");
        }
    }
    for s in &sidecars {
        assert!(!s.log().contains("sync failed"), "{}", s.log());
    }
}

#[test]
fn a_frozen_sidecar_seen_only_by_a_standby_holds_the_commit_for_its_whole_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster();
    let (active, standby) = (&nodes[0], &nodes[1]);
    let window = 20;
    written(&active.write(
        "lockstep/config",
        json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": format!("{window}s"),
               "activation_margin": "1s"}),
    ));
    written(&active.write(
        "lockstep/keys/jwt",
        json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
               "max_token_ttl": "10m", "commit_timeout": "30m"}),
    ));
    written(&active.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let near = sidecar(dir.path(), active, "web", "near", &active.address());
    let mut far = sidecar(dir.path(), active, "web", "far", &standby.address());
    for s in [&near, &far] {
        s.wait_until("version 1", 60, |s| signing(s) == 1);
    }
    // Longer than a window of polling the standby only: the active node
    // knows of it only what reaches storage.
    std::thread::sleep(Duration::from_secs(window + 5));
    far.signal("STOP");
    let frozen = Instant::now();
    written(&active.write("lockstep/keys/jwt/rotate", json!({"reason": "while one is frozen"})));
    near.wait_until("version 2 held", 30, |s| version_held(s) == 2);
    // Seen by the standby moments ago: at the start of its last long-poll
    // (5 s) and the pause after it (at most 1 s). Until a window has
    // passed since, the version must not be committed.
    let committed = |node: &Server| {
        let key = node.read("lockstep/keys/jwt").expect_status(200);
        key.data()["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["version"] == 2))
            .map(|v| v["committed"] == true)
    };
    let held_for = Duration::from_secs(window - 8);
    while frozen.elapsed() < held_for {
        // Judged by when the answer came, so a slow answer cannot fail it.
        let now = committed(active);
        if frozen.elapsed() < held_for {
            assert_eq!(now, Some(false), "committed {:?} after the freeze", frozen.elapsed());
        }
        // Status says why, as long as the answer comes within the window.
        let status = active.read("lockstep/status/jwt").expect_status(200);
        if frozen.elapsed() < held_for {
            assert!(status.data()["upcoming"]["not_held_by"].to_string().contains("web/far"), "{status:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Once it has been quiet for its window (and the heartbeat interval),
    // the gate lets the version through: at the next periodic call.
    let deadline = Instant::now() + Duration::from_secs(150);
    while committed(active) != Some(true) {
        assert!(Instant::now() < deadline, "never committed: {:?}", active.read("lockstep/status/jwt"));
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(frozen.elapsed() >= held_for, "committed after {:?}", frozen.elapsed());
    far.signal("CONT");
    far.wait_until("version 2 after it thawed", 60, |s| version_held(s) == 2);
    let _ = far.stop();
}

#[test]
fn a_sidecar_is_never_handed_a_bundle_older_than_it_holds_by_a_lagging_standby() {
    let nodes = cluster();
    let (active, standby) = (&nodes[0], &nodes[1]);
    written(&active.write("lockstep/keys/jwt", json!({"type": "ed25519"})));
    written(&active.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let token = pool_token(active, "web");
    let poll = |node: &Server, held: &str| {
        let path = format!("lockstep/bundle/web?instance=web-1&heartbeat=false&held={held}");
        node.with_token(&token).read(&path)
    };
    let first = poll(active, "").expect_status(200);
    let v1 = &first.data()["keyrings"]["jwt"];
    let held = |number: u64, bundle: &Value| {
        let version = bundle["versions"].as_array().and_then(|v| v.iter().find(|v| v["number"] == number)).cloned();
        let kid = version.map(|v| v["kid"].as_str().unwrap_or_default().to_string()).unwrap_or_default();
        format!("jwt:{number}:{kid}:{}", bundle["generation"])
    };
    assert!(held(1, v1).contains(":jwt-v1-"), "{v1}");
    for round in 0..5 {
        // The standby is paused while the active node publishes a version;
        // the sidecar takes it from the active node; then, the moment the
        // standby runs again, the sidecar asks it.
        let pid = standby.pid().expect("the standby's pid");
        let kill =
            |signal: &str| std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(kill("STOP").is_ok_and(|s| s.success()));
        let rotated = active.write("lockstep/keys/jwt/rotate", json!({"reason": format!("round {round}")}));
        let fresh = poll(active, "").expect_status(200);
        let ring = &fresh.data()["keyrings"]["jwt"];
        let number = ring["versions"].as_array().and_then(|v| v.iter().map(|v| v["number"].as_u64()).max()).flatten();
        let number = number.expect("a version");
        assert!(kill("CONT").is_ok_and(|s| s.success()));
        let answer = poll(standby, &held(number, ring));
        assert_eq!(answer.status, 200, "round {round}: {answer:?} after {rotated:?}");
        let data = answer.data();
        if data["not_modified"] != true {
            let numbers: Vec<u64> = data["keyrings"]["jwt"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["number"].as_u64())
                .collect();
            assert!(numbers.contains(&number), "round {round}: handed {numbers:?} while holding {number}");
            assert!(data["keyrings"]["jwt"]["generation"].as_u64() >= ring["generation"].as_u64(), "{data}");
        }
        // Let the pending version go, for the next round's rotation.
        let revoked = active.write("lockstep/keys/jwt/revoke", json!({"version": number, "reason": "next round"}));
        written(&revoked);
    }
}

#[test]
fn when_the_active_node_dies_a_standby_carries_on_the_due_rotation_happens_once_and_sidecars_keep_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster();
    written(&nodes[0].write(
        "lockstep/config",
        json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"}),
    ));
    written(&nodes[0].write(
        "lockstep/keys/jwt",
        json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2s", "grace_period": "20m",
               "max_token_ttl": "10m", "commit_timeout": "30m"}),
    ));
    written(&nodes[0].write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    // Each sidecar knows every node and fails over between them.
    let all: Vec<String> = nodes.iter().map(Server::address).collect();
    let list = |first: usize| {
        let mut order = all.clone();
        order.rotate_left(first);
        order.join(",")
    };
    let sidecars: Vec<Sidecar> =
        (1..3).map(|i| sidecar(dir.path(), &nodes[0], "web", &format!("web-{i}"), &list(i))).collect();
    for s in &sidecars {
        s.wait_until("version 1", 60, |s| signing(s) == 1);
    }
    nodes[0].kill();
    let deadline = Instant::now() + Duration::from_secs(90);
    let new_active = loop {
        if let Some(i) = (1..3).find(|i| nodes[*i].is_active()) {
            break i;
        }
        assert!(Instant::now() < deadline, "no node took over");
        // Served all along, from what they hold.
        for s in &sidecars {
            assert_eq!(s.request("POST", "/v1/jwt/jwt/sign", Some(&json!({"claims": {"sub": "x"}}))).status, 200);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let survivor = &nodes[new_active];
    // The rotation falls due (the plugins' clock moves an hour): the new
    // active node's scheduler publishes it, once, and every sidecar takes
    // it and acknowledges it there.
    for node in &nodes[1..] {
        node.clock.advance(3_600);
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while sidecars.iter().any(|s| version_held(s) != 2) {
        assert!(
            Instant::now() < deadline,
            "not every sidecar holds version 2 after the failover: {:?}\n{:?}\n{:?}\n{}",
            survivor.read("lockstep/info"),
            survivor.read("lockstep/status/jwt"),
            survivor.read("lockstep/history/jwt"),
            sidecars.iter().map(Sidecar::log).collect::<String>()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        let key = survivor.read("lockstep/keys/jwt").expect_status(200);
        let v2 = key.data()["versions"].as_array().and_then(|v| v.iter().find(|v| v["version"] == 2)).cloned();
        if v2.as_ref().is_some_and(|v| v["committed"] == true) || Instant::now() > deadline {
            break key;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(committed.data()["latest_version"], 2, "{committed:?}");
    let history = survivor.read("lockstep/history/jwt").expect_status(200).body;
    let entries = history["data"]["entries"].as_array().cloned().unwrap_or_default();
    let scheduled: Vec<&Value> =
        entries.iter().filter(|e| e["action"] == "publish" && e["versions"] == json!([2])).collect();
    assert_eq!(scheduled.len(), 1, "one rotation, once: {history}");
    assert_eq!(scheduled[0]["cause"], "scheduled", "{history}");
    assert_eq!(count(&actions(&history), "commit"), 1, "{history}");
    let _ = nodes.remove(0);
}

#[test]
fn sidecars_that_can_reach_a_standby_leave_the_active_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = cluster();
    let (active, second, third) = (&nodes[0], &nodes[1], &nodes[2]);
    written(&active.write("lockstep/keys/jwt", json!({"type": "ed25519"})));
    written(&active.write("lockstep/pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    // One sidecar polls a standby from the start (its heartbeat tells the
    // active node that standbys answer polls); one goes through a
    // balancer in front of every node, whose first connection goes to the
    // active node; one lists the active node first.
    let witness = sidecar(dir.path(), active, "web", "web-w", &second.address());
    witness.wait_until("version 1", 60, |s| signing(s) == 1);
    let host = |node: &Server| node.address().trim_start_matches("http://").to_string();
    let balanced = lockstep_tests::relay::balancer(vec![host(active), host(second), host(third)]);
    let behind = sidecar(dir.path(), active, "web", "web-lb", &balanced);
    let listed = sidecar(dir.path(), active, "web", "web-list", &format!("{},{}", active.address(), third.address()));
    const MOVED: &str = "the active node says its standbys answer polls";
    for s in [&behind, &listed] {
        s.wait_until("version 1", 60, |s| signing(s) == 1);
    }
    let answered = |node: &Server| node.read("lockstep/info").expect_status(200).data()["polls_answered"].as_u64();
    if server_kind().is_openbao() {
        for s in [&behind, &listed] {
            s.wait_until("a move off the active node", 30, |s| s.log().contains(MOVED));
        }
        // Once each has sent the heartbeat its new node asks for, the
        // active node answers no poll at all, and the standbys all of them:
        // over 12 s, within a minute of the moves.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let before: Vec<_> = nodes.iter().map(answered).collect();
            std::thread::sleep(Duration::from_secs(12));
            let after: Vec<_> = nodes.iter().map(answered).collect();
            if before[0] == after[0] && after[1] > before[1] && after[2] > before[2] {
                break;
            }
            assert!(Instant::now() < deadline, "the active node still answers polls: {before:?} then {after:?}");
        }
        // Each moved once: the standby that answers it sends no hint.
        for s in [&behind, &listed] {
            assert_eq!(s.log().matches(MOVED).count(), 1, "{}", s.log());
        }
    } else {
        // Vault's standbys send every request on: no node answers polls
        // but the active one, which never asks a sidecar to move.
        std::thread::sleep(Duration::from_secs(12));
        for s in [&behind, &listed] {
            assert!(!s.log().contains(MOVED), "{}", s.log());
        }
    }
    for node in &nodes {
        let status = node.read("lockstep/status/jwt").expect_status(200);
        let instances = status.data()["pools"][0]["instances"].as_array().map_or(0, Vec::len);
        assert_eq!(instances, 3, "{status:?}");
    }
    for s in [&witness, &behind, &listed] {
        assert!(!s.log().contains("sync failed"), "{}", s.log());
        assert_eq!(signing(s), 1);
    }
}
