//! Bundles served from memory, through OpenBao's real plugin client: what a
//! poll costs in storage operations (counted by the host), long-polls woken
//! by every kind of change, nothing stale after an invalidation or a
//! reload, and the cap on instances per pool.

use std::time::{Duration, Instant};

use lockstep_tests::sdkhost::{HostReply, SdkHost};
use serde_json::{Value, json};

const M: &str = "lockstep/";

fn host() -> SdkHost {
    SdkHost::mounted(M)
}

#[track_caller]
fn ok(reply: HostReply) -> Value {
    reply.ok()
}

fn keyring(host: &SdkHost, name: &str, key_type: &str) {
    ok(host.request(
        M,
        "create",
        &format!("keys/{name}"),
        json!({"type": key_type, "rotation_period": "24h", "prepublish": "2h", "grace_period": "4h",
               "max_token_ttl": "1h", "commit_timeout": "6h"}),
    ));
}

fn bundle(host: &SdkHost, pool: &str, instance: &str, held: &str, revision: &str) -> Value {
    let body = json!({"instance": instance, "held": held, "revision": revision});
    ok(host.request(M, "read", &format!("bundle/{pool}"), body))
}

fn revision(bundle: &Value) -> String {
    bundle["revision"].as_str().expect("revision").to_string()
}

/// Storage operations of each kind while `f` runs.
fn storage_ops(host: &SdkHost, f: impl FnOnce()) -> [u64; 4] {
    let ops = ["get", "list", "put", "delete"];
    let ids: Vec<u64> = ops.iter().map(|op| host.count_storage(M, op)).collect();
    f();
    let mut counts = [0; 4];
    for (count, id) in counts.iter_mut().zip(ids) {
        *count = host.storage_ops(id);
    }
    counts
}

#[test]
fn a_not_modified_poll_reads_no_storage_and_a_change_rereads_only_what_changed() {
    let host = host();
    let names: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        keyring(&host, name, ["ed25519", "hmac-sha256", "ecdsa-p256", "aes256-gcm"][i % 4]);
    }
    ok(host.request(M, "create", "pools/web", json!({"keyrings": names.join(","), "mode": "sign"})));
    let held: String = names.iter().map(|n| format!("{n}:1")).collect::<Vec<_>>().join(",");
    let first = bundle(&host, "web", "web-1", &held, "");
    assert_eq!(first["keyrings"].as_object().map(|k| k.len()), Some(10), "{first}");
    let current = revision(&first);

    let [gets, lists, puts, deletes] = storage_ops(&host, || {
        for _ in 0..20 {
            let same = bundle(&host, "web", "web-1", &held, &current);
            assert_eq!(same["not_modified"], true, "{same}");
        }
    });
    assert_eq!((gets, lists, puts, deletes), (0, 0, 0, 0), "twenty not-modified polls touch no storage");

    // A new instance gets the full bundle from memory: only its own
    // acknowledgement is written.
    let [gets, lists, puts, _] = storage_ops(&host, || {
        let full = bundle(&host, "web", "web-2", &held, "");
        assert_eq!(revision(&full), current);
        assert_eq!(full["keyrings"], first["keyrings"], "the same bundle, material included");
    });
    assert_eq!((gets, lists, puts), (0, 0, 1), "a full bundle reads nothing; the new instance's record is written");

    // One keyring rotates: the next bundle rereads that keyring (record and
    // two versions' material) and nothing else.
    ok(host.request(M, "update", "keys/k3/rotate", json!({})));
    let [gets, lists, _, _] = storage_ops(&host, || {
        let changed = bundle(&host, "web", "web-1", &held, &current);
        assert_eq!(changed["not_modified"], false);
        assert_eq!(changed["keyrings"]["k3"]["versions"].as_array().map(Vec::len), Some(2), "{changed}");
        assert_eq!(changed["keyrings"]["k4"], first["keyrings"]["k4"]);
    });
    assert!(gets <= 3 && lists == 0, "only the rotated keyring is read again: {gets} gets, {lists} lists");
}

/// Starts a poll that waits for a change of `revision`, makes `change`, and
/// returns the poll's answer and how long after the change it came.
fn woken_by(host: &SdkHost, pool: &str, held: &str, revision: &str, change: impl FnOnce()) -> (HostReply, Duration) {
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let body = json!({"instance": format!("{pool}-1"), "held": held, "revision": revision, "wait": "30s"});
            let reply = host.request(M, "read", &format!("bundle/{pool}"), body);
            (reply, Instant::now())
        });
        // Long enough for the poll to be waiting.
        std::thread::sleep(Duration::from_millis(400));
        change();
        let changed = Instant::now();
        let (reply, answered) = waiter.join().expect("waiter");
        (reply, answered.saturating_duration_since(changed))
    })
}

#[track_caller]
fn assert_prompt(what: &str, reply: &HostReply, after: Duration) {
    // A missed wake answers "not modified" after the whole 30 s wait.
    assert!(after < Duration::from_secs(1), "{what}: the wait ended {after:?} after the change: {reply:?}");
    assert_eq!(reply.data["not_modified"], false, "{what}: {reply:?}");
}

#[test]
fn a_poll_that_acknowledges_is_answered_at_once_and_the_next_one_waits() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let current = revision(&bundle(&host, "web", "web-1", "", ""));
    let timed = |held: &str, wait: &str| {
        let body = json!({"instance": "web-1", "held": held, "revision": current, "wait": wait});
        let started = Instant::now();
        let reply = ok(host.request(M, "read", "bundle/web", body));
        (reply, started.elapsed())
    };
    // A new acknowledgement is stored and answered without waiting: on a
    // cluster it runs on the active node, and the wait belongs back on the
    // node the sidecar polls.
    let (reply, took) = timed("jwt:1", "3s");
    assert_eq!(reply["not_modified"], true, "{reply}");
    assert!(took < Duration::from_secs(2), "an acknowledgement waited {took:?}");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["pools"][0]["instances"][0]["held_version"], 1, "{status}");
    // Holding the same, the next poll waits its whole wait.
    let (reply, took) = timed("jwt:1", "3s");
    assert_eq!(reply["not_modified"], true, "{reply}");
    assert!(took >= Duration::from_secs(3), "a poll with nothing to store waited only {took:?}");
}

#[test]
fn a_waiting_poll_returns_within_a_second_of_every_change_to_its_bundle() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    keyring(&host, "mac", "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let mut current = revision(&bundle(&host, "web", "web-1", "jwt:1", ""));
    // A second live instance, so that the next version waits for it.
    bundle(&host, "web", "web-2", "jwt:1", "");

    let mut step = |what: &str, held: &str, change: &dyn Fn()| {
        // What it holds is acknowledged first (answered at once), as a
        // sidecar does; the long-poll that follows waits.
        bundle(&host, "web", "web-1", held, &current);
        let (reply, after) = woken_by(&host, "web", held, &current, change);
        assert_prompt(what, &reply, after);
        current = revision(&reply.data);
        eprintln!("{what}: answered {after:?} after the change");
        reply.data
    };
    let data = step("mode change", "jwt:1", &|| {
        ok(host.request(M, "update", "pools/web", json!({"mode": "verify"})));
    });
    assert_eq!(data["mode"], "verify");
    let data = step("mode change back", "jwt:1", &|| {
        ok(host.request(M, "update", "pools/web", json!({"mode": "sign"})));
    });
    assert_eq!(data["mode"], "sign");
    // The keyring list alone changes: that wakes the poll too.
    let data = step("keyring added", "jwt:1", &|| {
        ok(host.request(M, "update", "pools/web", json!({"keyrings": "jwt,mac", "mode": "sign"})));
    });
    assert!(data["keyrings"]["mac"].is_object(), "{data}");
    assert_eq!(data["mode"], "sign");
    let data = step("keyring removed", "jwt:1,mac:1", &|| {
        ok(host.request(M, "update", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    });
    assert!(data["keyrings"].get("mac").is_none(), "{data}");
    let data = step("rotation", "jwt:1", &|| {
        ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    });
    assert_eq!(data["keyrings"]["jwt"]["versions"][1]["not_before"], Value::Null, "published, not committed");
    // web-1 waits holding v2; web-2's acknowledgement completes the set.
    let pending = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(pending["upcoming"]["not_held_by"], json!(["web/web-1", "web/web-2"]), "{pending}");
    let data = step("commit", "jwt:2", &|| {
        bundle(&host, "web", "web-2", "jwt:2", "");
    });
    assert!(data["keyrings"]["jwt"]["versions"][1]["not_before"].is_i64(), "committed: {data}");
    let data = step("revocation", "jwt:2", &|| {
        ok(host.request(M, "update", "keys/jwt/revoke", json!({"version": 1, "reason": "test"})));
    });
    assert_eq!(data["keyrings"]["jwt"]["versions"].as_array().map(Vec::len), Some(1), "{data}");
    let data = step("policy change", "jwt:2", &|| {
        ok(host.request(M, "update", "keys/jwt", json!({"max_token_ttl": "30m"})));
    });
    assert_eq!(data["keyrings"]["jwt"]["limits"]["max_token_ttl"], 1_800, "{data}");

    let (reply, after) = woken_by(&host, "web", "jwt:2", &current, || {
        ok(host.request(M, "delete", "pools/web", Value::Null));
    });
    assert!(after < Duration::from_secs(1), "pool deletion: the wait ended {after:?} after it");
    assert_eq!(reply.status, 404, "{reply:?}");
}

#[test]
fn changes_made_elsewhere_and_reloads_never_leave_a_stale_bundle() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let first = bundle(&host, "web", "web-1", "jwt:1", "");
    assert!(first["keyrings"]["jwt"]["versions"][0]["private_key"].is_string());

    // Another node makes the pool verify-only: the host's invalidation
    // reaches this one, and a poll waiting on it wakes.
    let record = br#"{"format":1,"record":{"keyrings":["jwt"],"mode":"verify"}}"#;
    let (reply, after) = woken_by(&host, "web", "jwt:1", &revision(&first), || {
        host.put_storage(M, "pools/web", record);
        host.invalidate(M, "pools/web");
    });
    assert_prompt("pool changed elsewhere", &reply, after);
    assert_eq!(reply.data["mode"], "verify");
    assert!(reply.data["keyrings"]["jwt"]["versions"][0].get("private_key").is_none(), "{:?}", reply.data);
    let verify = revision(&reply.data);

    // A rotation through this node, then a reload: the new process builds
    // the same answer from storage, and still knows who holds what.
    ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    let rotated = bundle(&host, "web", "web-1", "jwt:1", &verify);
    assert_ne!(revision(&rotated), verify);
    host.reload(M);
    let again = bundle(&host, "web", "web-1", "jwt:1", &revision(&rotated));
    assert_eq!(again["not_modified"], true, "the rebuilt answer has the same revision: {again}");
    let full = bundle(&host, "web", "web-1", "jwt:1", "");
    assert_eq!(full["keyrings"], rotated["keyrings"]);
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["pools"][0]["instances"][0]["held_version"], 1, "{status}");
    assert_eq!(status["upcoming"]["not_held_by"], json!(["web/web-1"]), "{status}");
}

#[test]
fn a_pool_has_a_cap_on_instances_with_a_clear_error_and_an_alert() {
    let host = host();
    keyring(&host, "jwt", "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let bad = host.request(M, "update", "config", json!({"max_instances_per_pool": 0}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error.contains("max_instances_per_pool"), "{bad:?}");
    let config = ok(host.request(M, "update", "config", json!({"max_instances_per_pool": 2})));
    assert_eq!(config["max_instances_per_pool"], 2);
    bundle(&host, "web", "web-1", "jwt:1", "");
    bundle(&host, "web", "web-2", "jwt:1", "");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let alerts = status["alerts"].to_string();
    assert!(alerts.contains("pool web has 2 of the 2 instances"), "{status}");

    let refused = host.request(M, "read", "bundle/web", json!({"instance": "web-3", "held": "jwt:1"}));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.error.contains("\"instance\"") && refused.error.contains("max_instances_per_pool"), "{refused:?}");
    assert!(!host.storage(M).contains_key("acks/web/web-3"), "nothing of the refused instance is kept");
    // Known instances go on polling.
    bundle(&host, "web", "web-1", "jwt:1", "");
}

#[test]
fn forty_concurrent_polls_of_one_instance_all_succeed_on_transactional_storage() {
    // OpenBao's host has transactional storage, where two transactions
    // writing one key conflict.
    let host = host();
    keyring(&host, "jwt", "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let replies: Vec<HostReply> = std::thread::scope(|s| {
        let polls: Vec<_> = (0..40)
            .map(|i| {
                let host = &host;
                s.spawn(move || {
                    // What the instance holds changes from poll to poll.
                    let held = if i % 2 == 0 { "jwt:1" } else { "" };
                    host.request(M, "read", "bundle/web", json!({"instance": "web-1", "held": held}))
                })
            })
            .collect();
        polls.into_iter().map(|p| p.join().expect("poll")).collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let log = host.log();
    assert!(!log.contains("contents changed"), "no conflict reached the log");
}

#[test]
fn an_acknowledgement_counts_only_for_a_version_this_coordinator_issued() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let first = bundle(&host, "web", "web-1", "", "");
    let kid = first["keyrings"]["jwt"]["versions"][0]["kid"].as_str().expect("kid").to_string();

    // A version that does not exist, named by number alone: refused.
    let refused = host.request(M, "read", "bundle/web", json!({"instance": "liar", "held": "jwt:999"}));
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.error.contains("\"held\"") && refused.error.contains("no version 999"), "{refused:?}");
    assert!(!host.storage(M).contains_key("acks/web/liar"), "nothing of it is recorded");

    // The right number with another kid holds nothing; the real kid does.
    bundle(&host, "web", "web-2", "jwt:1:jwt-v1-ffff:1", "");
    bundle(&host, "web", "web-1", &format!("jwt:1:{kid}:1"), "");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let instances = &status["pools"][0]["instances"];
    assert_eq!((instances[0]["instance"].clone(), instances[0]["held_version"].clone()), (json!("web-1"), json!(1)));
    assert_eq!((instances[1]["instance"].clone(), instances[1]["held_version"].clone()), (json!("web-2"), Value::Null));
    assert!(status["alerts"].to_string().contains("did not issue"), "{status}");

    // A version past the latest, with a kid (a restored coordinator's
    // fleet): numbering continues past it, once.
    bundle(&host, "web", "web-3", "jwt:4:jwt-v4-abcd:9", "");
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    assert_eq!(rotated["version"], 5, "{rotated}");
    // One instance's word moves the generation, and is recorded, once a
    // poll interval: the second claim, at once, moved the numbers only.
    let count = |host: &SdkHost| {
        ok(host.request(M, "read", "history/jwt", Value::Null)).to_string().matches("fleet-ahead").count()
    };
    assert_eq!(count(&host), 1);
    host.clock.advance(31);
    bundle(&host, "web", "web-3", "jwt:4:jwt-v4-abcd:9", "");
    assert_eq!(count(&host), 2, "one entry per foreign version");
    bundle(&host, "web", "web-3", "jwt:4:jwt-v4-abcd:9", "");
    assert_eq!(count(&host), 2, "once");
}

#[test]
fn a_bundle_of_large_keys_is_built_in_one_buffer() {
    // The bundle's text is sized from its material up front (the plugin's
    // debug build asserts it never grew, which would leave a freed copy of
    // the keys behind): RSA keys, two versions each, in a signing pool.
    let host = host();
    let names = ["r1", "r2", "r3"];
    for name in names {
        keyring(&host, name, "rsa-2048");
        ok(host.request(M, "update", &format!("keys/{name}/rotate"), json!({})));
    }
    ok(host.request(M, "create", "pools/web", json!({"keyrings": names.join(","), "mode": "sign"})));
    let full = bundle(&host, "web", "web-1", "", "");
    for name in names {
        let versions = full["keyrings"][name]["versions"].as_array().cloned().unwrap_or_default();
        assert_eq!(versions.len(), 2, "{name}: {full}");
        assert!(versions.iter().all(|v| v["private_key"].as_str().is_some_and(|k| k.len() > 1_500)), "{name}");
    }
}

#[test]
fn a_caller_raising_its_claim_at_every_poll_writes_nothing_and_no_number_is_given_twice() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    bundle(&host, "web", "web-1", "jwt:1", "");
    // The first claim is heard at once (that is how a restore is heard),
    // and recorded; the stored numbering stays.
    bundle(&host, "web", "liar", "jwt:5:jwt-v5-abcd:1", "");
    assert_eq!(ok(host.request(M, "read", "keys/jwt", Value::Null))["latest_version"], 1);
    assert!(ok(host.request(M, "read", "history/jwt", Value::Null)).to_string().contains("fleet-ahead"));
    // Raising it at every poll costs no write (nor a new bundle for the
    // fleet) until a poll interval has passed.
    let [_, _, puts, deletes] = storage_ops(&host, || {
        for n in 6..16 {
            bundle(&host, "web", "liar", &format!("jwt:{n}:jwt-v{n}-abcd:1"), "");
        }
    });
    assert_eq!((puts, deletes), (0, 0), "ten raised claims write nothing");
    // Yet a version made now is numbered past every claim (all within
    // 16 of the latest).
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    assert_eq!(rotated["version"], 16, "{rotated}");
}

#[test]
fn a_foreign_version_never_holds_a_lower_pending_number() {
    // A restored coordinator rotates before any sidecar has told it what
    // the fleet holds: it publishes 2, then hears of a foreign 4. The
    // fleet's 4 is not its version 2, at any poll.
    let host = host();
    keyring(&host, "jwt", "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    assert_eq!(rotated["version"], 2, "{rotated}");
    for _ in 0..2 {
        bundle(&host, "web", "web-1", "jwt:4:jwt-v4-abcd:9", "");
        let status = ok(host.request(M, "read", "status/jwt", Value::Null));
        assert_eq!(status["upcoming"]["version"], 2, "{status}");
        assert!(status["upcoming"]["not_held_by"].to_string().contains("web/web-1"), "counted as holding 2: {status}");
    }
    let keys = ok(host.request(M, "read", "keys/jwt", Value::Null));
    let seen = [&keys["latest_version"], &keys["signing_version"], &keys["versions"][1]["state"]];
    assert_eq!(seen, [&json!(2), &json!(1), &json!("scheduled")], "the report gave up nothing: {keys}");
}

#[test]
fn reports_of_versions_not_issued_here_never_give_up_a_pending_version_whichever_pools_send_them() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    for pool in ["api", "web"] {
        ok(host.request(M, "create", &format!("pools/{pool}"), json!({"keyrings": "jwt", "mode": "sign"})));
        bundle(&host, pool, "1", "jwt:1", "");
    }
    ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    let history = || ok(host.request(M, "read", "history/jwt", Value::Null)).to_string();
    let keys = || ok(host.request(M, "read", "keys/jwt", Value::Null));
    // One instance says the fleet went on to 7, as the first sidecar to
    // poll a restored server does: the generation goes past its, so the
    // fleet takes the next bundle; the pending version 2 and the stored
    // numbering stay.
    let generation = |b: &Value| b["keyrings"]["jwt"]["generation"].as_u64().expect("generation");
    let answer = bundle(&host, "web", "1", "jwt:7:jwt-v7-abcd:30", "");
    assert!(generation(&answer) > 30, "{answer}");
    let k = keys();
    assert_eq!((k["pending_version"].clone(), k["latest_version"].clone()), (json!(2), json!(2)), "{k}");
    // Its next claim, so soon after, moves nothing durable: the
    // generation stays, so the fleet does not fetch again at each poll.
    let before = generation(&bundle(&host, "api", "1", "jwt:1", ""));
    for _ in 0..3 {
        bundle(&host, "web", "1", &format!("jwt:9:jwt-v9-abcd:{}", before + 5), "");
    }
    assert_eq!(generation(&bundle(&host, "api", "1", "jwt:1", "")), before);
    // A generation no fleet can have reached, or past u64: refused.
    for generation in ["999999999", "18446744073709551615"] {
        let held = format!("jwt:9:jwt-v9-abcd:{generation}");
        let refused = host.request(M, "read", "bundle/web", json!({"instance": "1", "held": held}));
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(refused.error.contains("\"held\"") && refused.error.contains("no generation"), "{refused:?}");
    }
    // The other pool says so too, a window later: still nothing given up,
    // however many pools agree (one token may read them all).
    host.clock.advance(31);
    bundle(&host, "api", "1", &format!("jwt:9:jwt-v9-abcd:{}", before + 5), "");
    bundle(&host, "web", "1", &format!("jwt:9:jwt-v9-abcd:{}", before + 5), "");
    let k = keys();
    assert_eq!((k["pending_version"].clone(), k["latest_version"].clone()), (json!(2), json!(2)), "{k}");
    assert!(!history().contains("\"supersede\""), "{}", history());
    assert!(ok(host.request(M, "read", "status/jwt", Value::Null))["alerts"].to_string().contains("did not issue"));
}

#[test]
fn a_pool_naming_a_keyring_that_does_not_exist_is_written_with_a_warning() {
    let host = host();
    keyring(&host, "jwt", "ed25519");
    let reply = host.request(M, "create", "pools/web", json!({"keyrings": "jwt,later", "mode": "sign"}));
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.warnings.len(), 1, "{reply:?}");
    assert!(reply.warnings[0].contains("\"later\" does not exist"), "{reply:?}");
    let bundle = bundle(&host, "web", "web-1", "", "");
    assert!(bundle["keyrings"].get("later").is_none() && bundle["keyrings"]["jwt"].is_object(), "{bundle}");
    // Reading the pool warns again, and the missing name's status alerts.
    let read = host.request(M, "read", "pools/web", Value::Null);
    assert!(read.warnings.iter().any(|w| w.contains("\"later\" does not exist")), "{read:?}");
    let status = ok(host.request(M, "read", "status/later", Value::Null));
    assert_eq!((status["exists"].clone(), status["pools"].clone()), (json!(false), json!(["web"])), "{status}");
    assert!(status["alerts"][0].as_str().is_some_and(|a| a.contains("pools list it (web)")), "{status}");
    assert_eq!(host.request(M, "read", "status/nothing", Value::Null).status, 404);
    keyring(&host, "later", "hmac-sha256");
    let again = host.request(M, "update", "pools/web", json!({"mode": "sign"}));
    assert!(again.warnings.is_empty(), "{again:?}");
    assert!(host.request(M, "read", "pools/web", Value::Null).warnings.is_empty());
    assert_eq!(ok(host.request(M, "read", "status/later", Value::Null))["alerts"], json!([]));
}

#[test]
fn a_keyring_made_again_as_symmetric_for_a_verify_only_pool_is_warned_in_the_answer_and_in_status() {
    let host = host();
    ok(host.request(M, "create", "keys/jwt", json!({"type": "ed25519", "deletion_allowed": true})));
    ok(host.request(M, "create", "pools/edge", json!({"keyrings": "jwt", "mode": "verify"})));
    assert!(ok(host.request(M, "read", "status/jwt", Value::Null))["alerts"].to_string().contains("[]"));
    assert_eq!(host.request(M, "delete", "keys/jwt", Value::Null).status, 204);
    let made = host.request(M, "create", "keys/jwt", json!({"type": "hmac-sha256"}));
    assert_eq!(made.status, 200, "{made:?}");
    assert!(made.warnings.iter().any(|w| w.contains("symmetric") && w.contains("edge")), "{made:?}");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert!(status["alerts"].to_string().contains("verify-only pools list it (edge)"), "{status}");
    // A verify-only pool made for an existing symmetric keyring is warned too.
    let pool = host.request(M, "create", "pools/audit", json!({"keyrings": "jwt", "mode": "verify"}));
    assert!(pool.warnings.iter().any(|w| w.contains("symmetric")), "{pool:?}");
}
