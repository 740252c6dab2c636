//! The coordinator through OpenBao's real plugin client (and, where the
//! storage semantics differ, Vault's): keyrings, scheduled rotation gated on
//! distribution, CAS and idempotent rotation, revocation, bundles,
//! acknowledgements, status, history, bad input and crash safety.

use std::time::{Duration, Instant};

use lockstep_model::bundle::Bundle;
use lockstep_model::key_state;
use lockstep_tests::sdkhost::{HostKind, HostReply, SdkHost};
use serde_json::{Value, json};

const HOUR: u64 = 3_600;
const M: &str = "lockstep/";

fn host() -> SdkHost {
    SdkHost::mounted(M)
}

#[track_caller]
fn ok(reply: HostReply) -> Value {
    reply.ok()
}

/// A keyring `jwt` with a one-day rotation, 2 h prepublish, 4 h grace.
fn create_jwt(host: &SdkHost, key_type: &str) -> Value {
    ok(host.request(
        M,
        "create",
        "keys/jwt",
        json!({"type": key_type, "rotation_period": "24h", "prepublish": "2h", "grace_period": "4h",
               "max_token_ttl": "1h", "commit_timeout": "6h"}),
    ))
}

fn poll(host: &SdkHost, pool: &str, instance: &str, held: &str) -> Value {
    ok(host.request(M, "read", &format!("bundle/{pool}"), json!({"instance": instance, "held": held})))
}

fn rollback(host: &SdkHost) {
    let reply = host.request(M, "rollback", "", Value::Null);
    assert!(reply.status < 300, "periodic call failed: {reply:?}");
}

fn key(host: &SdkHost) -> Value {
    ok(host.request(M, "read", "keys/jwt", Value::Null))
}

fn version(key: &Value, n: u64) -> &Value {
    key["versions"].as_array().and_then(|vs| vs.iter().find(|v| v["version"] == n)).unwrap_or(&Value::Null)
}

#[test]
fn a_new_keyring_signs_at_once_and_shows_no_material() {
    let host = host();
    let created = create_jwt(&host, "ed25519");
    assert_eq!(created["signing_version"], 1);
    assert_eq!(version(&created, 1)["state"], "active");
    let text = created.to_string();
    assert!(!text.contains("private") && !text.contains("BEGIN"), "{text}");
    let listed = ok(host.request(M, "list", "keys/", Value::Null));
    assert_eq!(listed["keys"], json!(["jwt"]));
}

#[test]
fn scheduled_rotation_waits_for_every_live_pool_then_switches() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "create", "pools/api", json!({"keyrings": "jwt", "mode": "verify"})));
    poll(&host, "web", "web-1", "jwt:1");
    poll(&host, "api", "api-1", "jwt:1");

    // 22 h in (the sidecars polling all along), the next version is due:
    // published, not committed.
    host.clock.advance(22 * HOUR + 1);
    poll(&host, "web", "web-1", "jwt:1");
    poll(&host, "api", "api-1", "jwt:1");
    rollback(&host);
    let k = key(&host);
    assert_eq!(k["pending_version"], 2, "{k}");
    assert_eq!(version(&k, 2)["committed"], false);
    let bundle = poll(&host, "web", "web-1", "jwt:1");
    let versions = bundle["keyrings"]["jwt"]["versions"].as_array().cloned().unwrap_or_default();
    assert_eq!(versions.len(), 2, "the pending version is distributed ahead: {bundle}");
    assert_eq!(versions[1]["not_before"], Value::Null, "not final before the commit");

    // web holds it now; api does not: still no commit, and status says why.
    poll(&host, "web", "web-1", "jwt:2");
    rollback(&host);
    assert_eq!(version(&key(&host), 2)["committed"], false);
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["upcoming"]["not_held_by"], json!(["api/api-1"]), "{status}");
    assert!(status["alerts"][0].as_str().unwrap_or_default().contains("api/api-1"), "{status}");
    assert_eq!(status["summary"], "v1 signs; v2 pending: 1 of 2 live pools hold it", "{status}");

    // The last live pool acknowledges: committed at once, at the planned instant.
    poll(&host, "api", "api-1", "jwt:2");
    let k = key(&host);
    assert_eq!(version(&k, 2)["committed"], true, "{k}");
    assert_eq!(version(&k, 2)["not_before"], version(&k, 2)["planned_activation"]);
    assert_eq!(k["signing_version"], 1, "v1 signs until the instant");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["summary"], "v1 signs; v2 scheduled: 2 of 2 live pools hold it", "{status}");
    assert_eq!(version(&k, 2)["state"], "scheduled", "committed, its instant ahead");
    host.clock.advance(2 * HOUR);
    let k = key(&host);
    assert_eq!(k["signing_version"], 2);
    assert_eq!(version(&k, 1)["state"], "grace");

    // After the grace period v1's material is destroyed.
    assert!(host.storage(M).contains_key("material/jwt/1"));
    host.clock.advance(4 * HOUR);
    rollback(&host);
    assert!(!host.storage(M).contains_key("material/jwt/1"));
    assert_eq!(version(&key(&host), 1)["state"], "expired");
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let actions: Vec<&str> =
        history["entries"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    // Each activation is recorded at the next periodic run after it.
    let expected = ["create", "publish", "pool", "pool", "activate", "publish", "commit", "activate", "expire"];
    assert_eq!(actions, expected, "{history}");
}

#[test]
fn dead_pools_do_not_block_and_a_silent_live_pool_is_overridden_with_an_alert() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    ok(host.request(M, "create", "pools/old", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "old", "old-1", "jwt:1");
    // old-1 is never seen again; the liveness window is 10 minutes.
    host.clock.advance(22 * HOUR + 1);
    poll(&host, "web", "web-1", "jwt:1");
    rollback(&host);
    assert_eq!(key(&host)["pending_version"], 2);
    // web-1 keeps polling without fetching v2 (stuck); after the commit
    // timeout the version is committed anyway, with an alert.
    for _ in 0..13 {
        host.clock.advance(HOUR / 2);
        poll(&host, "web", "web-1", "jwt:1");
        rollback(&host);
    }
    let k = key(&host);
    assert_eq!(version(&k, 2)["committed"], true, "{k}");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let alerts = status["alerts"].to_string();
    assert!(alerts.contains("committed without every live pool") && alerts.contains("web/web-1"), "{status}");
    assert!(!alerts.contains("old/old-1"), "a dead pool is not blamed: {status}");
}

#[test]
fn an_instance_that_never_held_anything_holds_a_commit_one_window_at_most_even_across_a_reload() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    // A caller that polls once, holding nothing, and is never heard again.
    poll(&host, "web", "ghost", "");
    ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    poll(&host, "web", "web-1", "jwt:2");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["upcoming"]["not_held_by"], json!(["web/ghost"]), "{status}");
    // Five minutes later the plugin reloads; six more, and the ghost has
    // been quiet for more than the ten-minute window.
    host.clock.advance(5 * 60);
    host.reload(M);
    host.clock.advance(6 * 60);
    poll(&host, "web", "web-1", "jwt:2");
    rollback(&host);
    assert_eq!(version(&key(&host), 2)["committed"], true, "the ghost does not hold the commit");
}

#[test]
fn after_a_reload_pools_not_yet_seen_are_waited_for_one_liveness_window() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "create", "pools/api", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    poll(&host, "api", "api-1", "jwt:1");
    host.clock.advance(22 * HOUR + 1);
    poll(&host, "web", "web-1", "jwt:1");
    poll(&host, "api", "api-1", "jwt:1");
    // The plugin restarts: its memory of who polled when is gone. It
    // publishes on schedule only once the fleet has had two poll intervals
    // (30 s each) to say what it holds.
    host.reload(M);
    rollback(&host);
    assert_eq!(key(&host)["pending_version"], Value::Null, "published in the first poll intervals");
    host.clock.advance(61);
    rollback(&host);
    assert_eq!(key(&host)["pending_version"], 2);
    poll(&host, "web", "web-1", "jwt:2");
    rollback(&host);
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    assert_eq!(status["upcoming"]["not_held_by"], json!(["api/api-1"]), "api is waited for: {status}");
    assert_eq!(version(&key(&host), 2)["committed"], false);
    // api-1 says nothing for a whole window: it counts as dead, and the
    // version is committed without waiting for the commit timeout.
    host.clock.advance(11 * 60);
    poll(&host, "web", "web-1", "jwt:2");
    rollback(&host);
    assert_eq!(version(&key(&host), 2)["committed"], true);
}

#[test]
fn a_restored_coordinator_hears_from_the_fleet_and_numbers_its_next_version_past_it_without_rotating_early() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    // Storage restored from a copy that ended at version 1, long before
    // its rotation is due: the fleet holds a version 2 this copy never
    // issued.
    host.clock.advance(HOUR);
    host.reload(M);
    let answer = poll(&host, "web", "web-1", "jwt:2:jwt-v2-abcd:7");
    assert!(answer["keyrings"]["jwt"]["generation"].as_u64() > Some(7), "the fleet takes the next bundle: {answer}");
    host.clock.advance(61);
    rollback(&host);
    // The report decides nothing: no rotation before its time.
    let keys = key(&host);
    assert_eq!((keys["pending_version"].clone(), keys["latest_version"].clone()), (Value::Null, json!(1)), "{keys}");
    // The next version, whoever makes it, is numbered past the fleet's 2.
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1})));
    assert_eq!(rotated["version"], 3, "{rotated}");
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let actions: Vec<&str> =
        history["entries"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["create", "publish", "pool", "fleet-ahead", "activate", "publish"], "{history}");
}

#[test]
fn a_report_far_ahead_moves_no_number_and_the_next_version_gets_the_next_one() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    // 17 ahead of version 1: one past the bound. It moves nothing.
    poll(&host, "web", "web-1", "jwt:18:jwt-v18-abcd:3");
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    assert_eq!(rotated["version"], 2, "{rotated}");
    // web-1 goes quiet; version 2 commits without it and signs.
    host.clock.advance(601);
    rollback(&host);
    host.clock.advance(2 * HOUR);
    assert_eq!(key(&host)["signing_version"], 2);
    // Now 18 is within 16 of the latest (2): the next version goes past it.
    poll(&host, "web", "web-2", "jwt:18:jwt-v18-abcd:3");
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let alerts = status["alerts"].to_string();
    assert!(alerts.contains("renumber past_version=18") && alerts.contains("web/web-2 up to 18"), "{status}");
    assert_eq!(key(&host)["latest_version"], 2, "a report writes no number");
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    assert_eq!(rotated["version"], 19, "{rotated}");
}

#[test]
fn reports_of_versions_the_coordinator_did_not_issue_make_one_alert_that_counts_them() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    // Three claims, a poll interval apart, each of a newer version.
    for n in [20, 30, 40] {
        poll(&host, "web", "web-1", &format!("jwt:{n}:jwt-v{n}-abcd:{n}"));
        host.clock.advance(31);
    }
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let alerts: Vec<&str> = status["alerts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let ahead: Vec<&&str> = alerts.iter().filter(|a| a.contains("did not issue")).collect();
    assert_eq!(ahead.len(), 1, "{alerts:?}");
    assert!(ahead[0].contains(": 3 reports recorded from 1 claimant, ") && ahead[0].contains("up to 40"), "{alerts:?}");
    // In the history: one entry for the claimant, counting its reports.
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let reports: Vec<&Value> =
        history["entries"].as_array().into_iter().flatten().filter(|e| e["action"] == "fleet-ahead").collect();
    assert_eq!(reports.len(), 1, "{history}");
    assert_eq!((&reports[0]["reports"]["claimant"], &reports[0]["reports"]["count"]), (&json!("web/web-1"), &json!(3)));
    assert_eq!(reports[0]["versions"], json!([20, 30, 40]), "{history}");
}

#[test]
fn a_pending_version_the_fleet_went_past_is_given_up_only_by_an_operators_renumber() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    ok(host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1})));
    assert_eq!(key(&host)["pending_version"], 2);
    // Storage restored from a copy taken with version 2 pending, after the
    // fleet went on to version 3: it reports 3, never 2.
    host.clock.advance(5);
    host.reload(M);
    poll(&host, "web", "web-1", "jwt:3:jwt-v3-abcd:9");
    host.clock.advance(61);
    rollback(&host);
    let keys = key(&host);
    assert_eq!((keys["pending_version"].clone(), keys["latest_version"].clone()), (json!(2), json!(2)), "{keys}");
    // The operator's decision, checked against what was reported.
    let renumber = |past: u64, reason: &str| {
        host.request(M, "update", "keys/jwt/renumber", json!({"past_version": past, "reason": reason}))
    };
    for (past, reason, says) in [
        (2, "restore", "is not past the keyring's latest version (2)"),
        (4, "restore", "the highest reported is 3"),
        (3, " ", "missing required field \"reason\""),
    ] {
        let refused = renumber(past, reason);
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(refused.error.contains(says), "{refused:?}");
    }
    assert_eq!(key(&host)["pending_version"], 2, "a refused decision changes nothing");
    let decided = ok(renumber(3, "storage restored from last night's snapshot"));
    assert_eq!(
        (&decided["superseded_version"], &decided["published_version"], &decided["latest_version"]),
        (&json!(2), &json!(4), &json!(4)),
        "{decided}"
    );
    let keys = key(&host);
    assert_eq!(keys["pending_version"], 4, "numbered past the fleet's 3: {keys}");
    assert_eq!(key_state_of(&keys), Some(1), "2 never signs");
    let bundle: Bundle = serde_json::from_value(poll(&host, "web", "web-1", "jwt:3:jwt-v3-abcd:9")).expect("bundle");
    let v2 = bundle.keyrings["jwt"].versions.iter().find(|v| v.meta.number == 2).expect("2 still verifies");
    assert!(v2.meta.is_superseded(), "{:?}", v2.meta);
    assert!(bundle.keyrings["jwt"].generation > 9, "newer than what the fleet holds");
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let entries: Vec<&Value> = history["entries"].as_array().into_iter().flatten().collect();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    let expected =
        ["create", "publish", "pool", "publish", "fleet-ahead", "activate", "renumber", "supersede", "publish"];
    assert_eq!(actions, expected, "{history}");
    let decision = entries[6];
    assert_eq!((&decision["cause"], &decision["versions"]), (&json!("manual"), &json!([3])), "{history}");
    assert!(decision["detail"].as_str().is_some_and(|d| d.contains("last night's snapshot")), "{history}");
    // The fleet takes 4 and it commits as usual.
    poll(&host, "web", "web-1", "jwt:4");
    assert_eq!(version(&key(&host), 4)["committed"], true);
}

#[test]
fn pool_changes_are_in_the_history_of_each_keyring_they_open_or_close_and_its_length_is_a_setting() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "keys/other", json!({"type": "ed25519"})));
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt,other", "mode": "sign"})));
    ok(host.request(M, "update", "pools/web", json!({"mode": "verify"})));
    ok(host.request(M, "update", "pools/web", json!({"keyrings": "other"})));
    ok(host.request(M, "delete", "pools/web", Value::Null));
    let details = |keyring: &str| -> Vec<String> {
        let history = ok(host.request(M, "read", &format!("history/{keyring}"), Value::Null));
        let entries = history["entries"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|e| e["action"] == "pool")
            .filter_map(|e| e["detail"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(
        details("jwt"),
        [
            "pool web may fetch it now, in mode sign",
            "pool web fetches it in mode verify now, not sign",
            "pool web no longer fetches it"
        ]
    );
    assert_eq!(
        details("other"),
        [
            "pool web may fetch it now, in mode sign",
            "pool web fetches it in mode verify now, not sign",
            "pool web no longer fetches it"
        ]
    );
    // How many entries a keyring keeps is the mount's setting.
    for (kept, says) in [(31, "not between 32 and 2000"), (2_001, "not between 32 and 2000"), (-1, "not between")] {
        let refused = host.request(M, "update", "config", json!({"history_entries": kept}));
        assert_eq!(refused.status, 400, "{refused:?}");
        assert!(refused.error.contains("\"history_entries\"") && refused.error.contains(says), "{refused:?}");
    }
    assert_eq!(ok(host.request(M, "read", "config", Value::Null))["history_entries"], 256);
    ok(host.request(M, "update", "config", json!({"history_entries": 32})));
    for i in 0..40 {
        ok(host.request(M, "update", "keys/jwt", json!({"grace_period": format!("{}h", 4 + i % 2)})));
    }
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 32, "{history}");
    assert!(entries.iter().all(|e| e["action"] == "policy"), "the oldest went first: {history}");
}

#[test]
fn alerts_stay_one_per_condition_and_short_however_many_instances_there_are() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let instances: Vec<String> = (0..25).map(|i| format!("web-{i:02}")).collect();
    for instance in &instances {
        // Two processes taking turns under each id.
        for boot in ["a", "b", "a"] {
            ok(host.request(M, "read", "bundle/web", json!({"instance": instance, "boot": boot, "held": "jwt:1"})));
        }
    }
    ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    let status = ok(host.request(M, "read", "status/jwt", Value::Null));
    let alerts: Vec<&str> = status["alerts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let lacking = alerts.iter().find(|a| a.contains("not yet held by")).expect("the gate's alert");
    assert!(lacking.ends_with("web/web-09 and 15 more"), "{lacking}");
    let shared = alerts.iter().find(|a| a.contains("two sidecar processes")).expect("one alert for the pool");
    assert!(shared.starts_with("25 instances of pool web are used by two sidecar processes"), "{shared}");
    assert!(shared.ends_with("web/web-09 and 15 more"), "{shared}");
    assert_eq!(status["upcoming"]["not_held_by"].as_array().map(Vec::len), Some(25), "the full list is in the data");
}

#[test]
fn one_rotation_may_come_sooner_than_prepublish_and_is_still_gated_on_every_live_pool() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    let longer = host.request(M, "update", "keys/jwt/rotate", json!({"prepublish": "3h"}));
    assert_eq!(longer.status, 400, "{longer:?}");
    assert!(longer.error.contains("\"prepublish\"") && longer.error.contains("(7200s)"), "{longer:?}");
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({"prepublish": "0s", "reason": "now"})));
    assert_eq!((rotated["version"].clone(), rotated["committed"].clone()), (json!(2), json!(false)), "{rotated}");
    // Not before web-1 holds it, however soon it was planned.
    host.clock.advance(120);
    rollback(&host);
    assert_eq!(version(&key(&host), 2)["committed"], false);
    poll(&host, "web", "web-1", "jwt:2");
    let keys = key(&host);
    assert_eq!(version(&keys, 2)["committed"], true, "{keys}");
    assert_eq!(keys["signing_version"], 1, "activation_margin after the commit, not at once");
    host.clock.advance(31);
    assert_eq!(key(&host)["signing_version"], 2);
    // The keyring's own prepublish is unchanged for the next rotation.
    assert_eq!(key(&host)["prepublish"], 7_200);
}

fn key_state_of(keys: &Value) -> Option<u64> {
    keys["signing_version"].as_u64()
}

#[test]
fn downtime_gives_one_rotation_not_a_burst() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    host.clock.advance(10 * 24 * HOUR);
    rollback(&host);
    rollback(&host);
    let k = key(&host);
    assert_eq!(k["latest_version"], 2, "{k}");
}

#[test]
fn fifty_concurrent_rotations_with_one_expected_version_rotate_once() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    let replies: Vec<HostReply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| s.spawn(|| host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1}))))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let successes = replies.iter().filter(|r| r.status == 200).count();
    let conflicts: Vec<&HostReply> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!((successes, conflicts.len()), (1, 49), "{replies:?}");
    assert!(conflicts.iter().all(|r| r.error.contains("the latest is 2")), "{:?}", conflicts[0]);
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let publishes = history["entries"].as_array().into_iter().flatten().filter(|e| e["action"] == "publish").count();
    assert_eq!(publishes, 2, "create's first version and one rotation: {history}");
}

#[test]
fn a_retried_rotation_with_the_same_idempotency_key_rotates_once() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    let body = json!({"idempotency_key": "deploy-42", "reason": "quarterly"});
    let first = ok(host.request_as(M, "update", "keys/jwt/rotate", body.clone(), "alice"));
    let again = ok(host.request_as(M, "update", "keys/jwt/rotate", body, "alice"));
    assert_eq!((first["version"].clone(), first["replayed"].clone()), (json!(2), json!(false)));
    assert_eq!((again["version"].clone(), again["replayed"].clone()), (json!(2), json!(true)));
    assert_eq!(key(&host)["latest_version"], 2);
    // Another rotation while v2 waits is refused, naming it.
    let refused = host.request(M, "update", "keys/jwt/rotate", json!({}));
    assert_eq!(refused.status, 409);
    assert!(refused.error.contains("version 2 is already published"), "{refused:?}");
    // The planned instant reads as the API shows times, the one keys/jwt lists.
    let planned = key(&host)["versions"][1]["planned_activation"].as_str().unwrap_or_default().to_string();
    assert!(planned.ends_with('Z') && refused.error.contains(&format!("(planned at {planned})")), "{refused:?}");
    let history = ok(host.request(M, "read", "history/jwt", Value::Null));
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    let last = entries.iter().rev().find(|e| e["action"] == "publish").cloned().unwrap_or_default();
    assert_eq!(
        (last["actor"].clone(), last["detail"].clone(), last["cause"].clone()),
        (json!("alice"), json!("quarterly"), json!("manual"))
    );
}

#[test]
fn revoking_the_signer_switches_at_once_and_leaves_every_bundle() {
    let host = host();
    create_jwt(&host, "ecdsa-p256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1})));
    // The sidecar holds version 2, which is then committed to activate in
    // two hours: the bundle it holds has a committed future activation.
    poll(&host, "web", "web-1", "jwt:2");
    let held: Bundle = serde_json::from_value(poll(&host, "web", "web-1", "jwt:2")).expect("a bundle");
    assert!(held.keyrings["jwt"].versions[1].meta.is_committed(), "{held:?}");
    let revoked =
        ok(host.request_as(M, "update", "keys/jwt/revoke", json!({"version": 1, "reason": "leaked in a log"}), "bob"));
    assert_eq!(revoked["signing_version"], 2, "the published version takes over: {revoked}");
    let bundle = poll(&host, "web", "web-1", "jwt:2");
    // The sidecar accepts the emergency handover it is sent.
    let next: Bundle = serde_json::from_value(bundle.clone()).expect("a bundle");
    assert_eq!(next.validate("web", Some(&held)), Ok(()));
    let now = next.server_time;
    assert_eq!(
        key_state(&next.keyrings["jwt"].versions.iter().map(|v| v.meta.clone()).collect::<Vec<_>>(), now).signing,
        Some(2)
    );
    let numbers: Vec<u64> = bundle["keyrings"]["jwt"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["number"].as_u64())
        .collect();
    assert_eq!(numbers, vec![2]);
    assert!(!host.storage(M).contains_key("material/jwt/1"), "revoked material is destroyed");
    // Revoking the only signer creates a new one that signs at once.
    let again = ok(host.request(M, "update", "keys/jwt/revoke", json!({"version": 2, "reason": "also leaked"})));
    assert_eq!(again["signing_version"], 3);
    let history = ok(host.request(M, "read", "history/jwt", Value::Null)).to_string();
    assert!(
        history.contains("leaked in a log") && history.contains("\"bob\"") && history.contains("emergency"),
        "{history}"
    );
    // Each revocation says which version went and which signs now.
    assert!(
        history.contains("leaked in a log (version 1 revoked; version 2, already published, signing now)"),
        "{history}"
    );
    assert!(history.contains("also leaked (version 2 revoked; version 3 created, signing now)"), "{history}");
    let missing = host.request(M, "update", "keys/jwt/revoke", json!({"version": 1, "reason": "x"}));
    assert_eq!(missing.status, 409, "{missing:?}");
}

#[test]
fn bundles_are_cheap_when_unchanged_and_verify_only_pools_get_no_private_keys() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "create", "pools/edge", json!({"keyrings": "jwt", "mode": "verify"})));
    let full = poll(&host, "web", "web-1", "jwt:1");
    let v1 = &full["keyrings"]["jwt"]["versions"][0];
    assert!(v1["private_key"].is_string() && v1["public_key"].is_string(), "{full}");
    assert!(full["server_time"].is_i64());
    let edge = poll(&host, "edge", "edge-1", "");
    let e1 = &edge["keyrings"]["jwt"]["versions"][0];
    assert!(e1["private_key"].is_null() && e1["public_key"].is_string(), "{edge}");

    let before = host.storage(M);
    let revision = full["revision"].as_str().unwrap_or_default();
    let same =
        ok(host.request(M, "read", "bundle/web", json!({"instance": "web-1", "held": "jwt:1", "revision": revision})));
    assert_eq!(same["not_modified"], true);
    assert!(same.get("keyrings").is_none(), "no material when not modified: {same}");
    assert_eq!(host.storage(M), before, "a not-modified poll writes nothing");
    // Unchanged polls hours later write the instance's own record only, at
    // most once per heartbeat interval (half the 600 s liveness window):
    // its last sight moves on, and nothing else changes.
    let record = |storage: &std::collections::BTreeMap<String, Vec<u8>>| {
        let bytes = storage.get("acks/web/web-1").cloned().unwrap_or_default();
        serde_json::from_slice::<Value>(&bytes).unwrap_or_default()["record"].clone()
    };
    let others = |mut storage: std::collections::BTreeMap<String, Vec<u8>>| {
        storage.remove("acks/web/web-1");
        storage
    };
    let mut seen = record(&before)["last_seen"].as_i64().unwrap_or_default();
    for step in [HOUR / 2, 60, HOUR / 2] {
        host.clock.advance(step);
        let later = ok(host.request(
            M,
            "read",
            "bundle/web",
            json!({"instance": "web-1", "held": "jwt:1", "revision": revision}),
        ));
        assert_eq!(later["not_modified"], true);
        let now = host.storage(M);
        let stored = record(&now);
        assert_eq!(stored["held"], json!({"jwt": 1}), "{stored}");
        let moved = stored["last_seen"].as_i64().unwrap_or_default();
        // Half an hour on, the record is refreshed; a minute on, it is not.
        if step == 60 {
            assert_eq!(moved, seen, "refreshed within the interval: {stored}");
        } else {
            assert!(moved >= seen + i64::try_from(step).unwrap_or_default(), "not refreshed: {stored}");
        }
        seen = moved;
        assert_eq!(others(now), others(before.clone()), "nothing but the instance's record changes");
    }

    let unknown = host.request(M, "read", "bundle/nope", json!({"instance": "x"}));
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let no_instance = host.request(M, "read", "bundle/web", json!({}));
    assert_eq!(no_instance.status, 400);
    assert!(no_instance.error.contains("\"instance\""), "{no_instance:?}");
}

#[test]
fn a_waiting_bundle_read_returns_promptly_after_a_rotation() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    let revision = poll(&host, "web", "web-1", "jwt:1")["revision"].as_str().unwrap_or_default().to_string();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let started = Instant::now();
            let reply = host.request(
                M,
                "read",
                "bundle/web",
                json!({"instance": "web-1", "held": "jwt:1", "revision": revision, "wait": "30s"}),
            );
            (reply, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
        let (reply, waited) = waiter.join().expect("waiter");
        let data = ok(reply);
        assert_eq!(data["not_modified"], false);
        assert!(waited < Duration::from_secs(10), "the wait ended with the change, after {waited:?}");
    });
}

#[test]
fn bad_input_is_a_400_naming_the_field_and_writes_nothing() {
    let host = host();
    let cases = [
        (json!({"type": "rsa-1024"}), "\"type\""),
        (json!({"type": "ed25519", "rotation_period": 0}), "\"rotation_period\""),
        (json!({"type": "ed25519", "grace_period": "-1h"}), "\"grace_period\""),
        (json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2h"}), "\"prepublish\""),
        (json!({"type": "ed25519", "grace_period": "10m", "max_token_ttl": "1h"}), "\"grace_period\""),
        (json!({"type": "ed25519", "rotation_perod": "1h"}), "\"rotation_perod\""),
        (json!({"rotation_period": "1h"}), "\"type\""),
    ];
    for (body, field) in cases {
        let reply = host.request(M, "create", "keys/jwt", body.clone());
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert!(reply.error.contains(field), "{body}: {reply:?}");
    }
    let long = "k".repeat(65);
    let keyring = json!({"type": "ed25519"});
    for (path, body) in [
        (format!("keys/{long}"), &keyring),
        ("keys/a@b".into(), &keyring),
        ("keys/-jwt".into(), &keyring),
        ("keys/jwt.".into(), &keyring),
        ("keys/j wt".into(), &keyring),
        ("keys/a..b".into(), &keyring),
        ("pools/a..b".into(), &json!({"keyrings": "jwt"})),
        ("pools/we$b".into(), &json!({"keyrings": "jwt"})),
        ("keys/a@b/rotate".into(), &json!({})),
    ] {
        let reply = host.request(M, "create", &path, body.clone());
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(
            reply.error.contains("field \"name\"") && reply.error.contains("not a valid name"),
            "{path}: {reply:?}"
        );
    }
    for path in ["status/a@b", "history/a@b", "bundle/a@b"] {
        let reply = host.request(M, "read", path, Value::Null);
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert!(reply.error.contains("not a valid name"), "{path}: {reply:?}");
    }
    assert!(host.storage(M).is_empty(), "nothing was written: {:?}", host.storage(M).keys());
    create_jwt(&host, "ed25519");
    let reason = "r".repeat(2_000);
    let reply = host.request(M, "update", "keys/jwt/rotate", json!({"reason": reason}));
    assert_eq!(reply.status, 400);
    assert!(reply.error.contains("\"reason\""), "{reply:?}");
    let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
    let reply = host.request(M, "update", "pools/web", json!({"keyrings": many}));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.error.contains("\"keyrings\"") && reply.error.contains("at most 64"), "{reply:?}");
    let huge = host.request(M, "update", "pools/web", json!({"keyrings": vec!["k"; 40_000]}));
    assert_eq!(huge.status, 400, "{huge:?}");
    assert!(huge.error.contains("request body is"), "{huge:?}");
    let reply = host.request(M, "update", "keys/jwt", json!({"type": "rsa-2048"}));
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(key(&host)["latest_version"], 1);
}

#[test]
fn deletion_needs_deletion_allowed() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    let refused = host.request(M, "delete", "keys/jwt", Value::Null);
    assert_eq!(refused.status, 400);
    assert!(refused.error.contains("deletion_allowed"), "{refused:?}");
    ok(host.request(M, "update", "keys/jwt", json!({"deletion_allowed": true})));
    assert_eq!(host.request(M, "delete", "keys/jwt", Value::Null).status, 204);
    assert!(host.storage(M).keys().all(|k| !k.starts_with("material/") && !k.starts_with("keyring/")));
}

#[test]
fn a_shortened_prepublish_and_grace_go_on_applying_while_cut_off_sidecars_rely_on_them() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    poll(&host, "web", "web-1", "jwt:1");
    ok(host.request(M, "update", "keys/jwt", json!({"prepublish": "10m", "grace_period": "2h"})));
    let history = ok(host.request(M, "read", "history/jwt", Value::Null)).to_string();
    assert!(history.contains("prepublish 7200s and grace_period 14400s still apply until"), "{history}");
    // A rotation now is planned two hours ahead, and the version it ends
    // verifies four hours after: what a sidecar cut off before the change
    // assumes when it bounds its signing.
    let rotated = ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    let keys = key(&host);
    assert_eq!(between(version(&keys, 2), "created_at", "planned_activation"), 7_200, "{rotated} {keys}");
    poll(&host, "web", "web-1", "jwt:2");
    let keys = key(&host);
    assert_eq!(between(version(&keys, 1), "not_after", "expires_at"), 14_400, "{keys}");
    // Six hours on, the new values apply.
    host.clock.advance(6 * HOUR + 60);
    rollback(&host);
    host.clock.advance(24 * HOUR);
    rollback(&host);
    let keys = key(&host);
    assert_eq!(between(version(&keys, 3), "created_at", "planned_activation"), 600, "{keys}");
}

/// Seconds from one of a version's times to another.
#[track_caller]
fn between(version: &Value, from: &str, to: &str) -> i64 {
    let at = |field: &str| {
        version[field].as_str().and_then(lockstep_tests::fleet_check::unix_seconds).expect("a time") as i64
    };
    at(to) - at(from)
}

#[test]
fn path_help_documents_every_path_and_field() {
    let host = host();
    let policy = ["rotation_period", "grace_period", "prepublish", "max_token_ttl", "commit_timeout", "retention"];
    let fleet = ["poll_interval", "max_clock_skew", "liveness_window", "activation_margin", "max_instances_per_pool"];
    let paths: [(&str, Vec<&str>); 11] = [
        ("info", vec![]),
        ("config", [fleet.as_slice(), policy.as_slice()].concat()),
        ("keys/", vec![]),
        ("keys/jwt", [["name", "type", "deletion_allowed"].as_slice(), policy.as_slice()].concat()),
        ("keys/jwt/rotate", vec!["name", "expected_version", "idempotency_key", "reason"]),
        ("keys/jwt/revoke", vec!["name", "version", "reason"]),
        ("pools/", vec![]),
        ("pools/web", vec!["name", "keyrings", "mode"]),
        ("bundle/web", vec!["pool", "instance", "revision", "held", "wait"]),
        ("status/jwt", vec!["name"]),
        ("history/jwt", vec!["name"]),
    ];
    for (path, fields) in paths {
        let help = host.request(M, "help", path, Value::Null).data["help"].as_str().unwrap_or_default().to_string();
        assert!(help.contains("## DESCRIPTION"), "{path}: {help}");
        for field in fields {
            assert!(help.contains(&format!("{field} (")), "{path} does not document {field}: {help}");
        }
    }
    // The mount's root help lists every path.
    let root = host.request(M, "help", "", Value::Null).data["help"].as_str().unwrap_or_default().to_string();
    for path in ["info", "config", "keys/", "rotate", "revoke", "pools/", "bundle/", "status/", "history/"] {
        assert!(root.contains(path), "root help does not list {path}: {root}");
    }
}

/// A rotation whose keyring write fails leaves the old state; with
/// transactional storage nothing at all is left behind.
#[test]
fn a_failed_write_leaves_the_old_state_with_transactions() {
    let host = host();
    create_jwt(&host, "hmac-sha256");
    host.fault(M, "put", "keyring/", 1);
    let failed = host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1}));
    assert_eq!(failed.status, 500, "{failed:?}");
    assert_eq!(key(&host)["latest_version"], 1);
    assert!(!host.storage(M).contains_key("material/jwt/2"), "the transaction applied nothing");
    let retried = ok(host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1})));
    assert_eq!(retried["version"], 2);
}

/// Without transactions (Vault's host), the same failure leaves an orphaned
/// material entry that the next periodic run removes; the keyring is old.
#[test]
fn a_failed_write_without_transactions_is_repaired() {
    let host = SdkHost::start(HostKind::Vault);
    host.mount(M);
    create_jwt(&host, "hmac-sha256");
    host.fault(M, "put", "keyring/", 1);
    assert_eq!(host.request(M, "update", "keys/jwt/rotate", json!({"expected_version": 1})).status, 500);
    assert_eq!(key(&host)["latest_version"], 1);
    assert!(host.storage(M).contains_key("material/jwt/2"), "material is written first");
    rollback(&host);
    assert!(!host.storage(M).contains_key("material/jwt/2"), "repaired");
    assert!(host.storage(M).contains_key("material/jwt/1"));
    assert_eq!(key(&host)["signing_version"], 1);
}

#[test]
fn material_of_an_interrupted_delete_or_create_is_swept_without_transactions() {
    let host = SdkHost::start(HostKind::Vault);
    host.mount(M);
    create_jwt(&host, "hmac-sha256");
    ok(host.request(M, "update", "keys/jwt", json!({"deletion_allowed": true})));
    // The record is deleted, then destroying the material fails.
    host.fault(M, "delete", "material/", 1);
    assert_eq!(host.request(M, "delete", "keys/jwt", Value::Null).status, 500);
    assert!(!host.storage(M).contains_key("keyring/jwt"));
    assert!(host.storage(M).contains_key("material/jwt/1"), "left behind by the failure");
    // A create whose record write fails leaves material too.
    host.fault(M, "put", "keyring/", 1);
    assert_eq!(host.request(M, "create", "keys/other", json!({"type": "ed25519"})).status, 500);
    assert!(host.storage(M).keys().any(|k| k.starts_with("material/other/")));
    rollback(&host);
    let left: Vec<String> = host.storage(M).into_keys().filter(|k| k.starts_with("material/")).collect();
    assert!(left.is_empty(), "orphaned material is destroyed: {left:?}");
    // Both names are free again.
    assert_eq!(host.request(M, "read", "keys/other", Value::Null).status, 404);
    create_jwt(&host, "hmac-sha256");
}

#[test]
fn a_keyring_made_again_goes_on_from_the_deleted_ones_numbers() {
    let host = host();
    create_jwt(&host, "ed25519");
    ok(host.request(M, "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"})));
    ok(host.request(M, "update", "keys/jwt/rotate", json!({})));
    let held: Bundle = serde_json::from_value(poll(&host, "web", "web-1", "jwt:2")).expect("a bundle");
    ok(host.request(M, "update", "keys/jwt", json!({"deletion_allowed": true})));
    assert_eq!(host.request(M, "delete", "keys/jwt", Value::Null).status, 204);
    // Made again, of another type, before the pool's sidecar polls: its
    // next bundle must not look like a rollback, and no number comes back.
    let again = create_jwt(&host, "ecdsa-p256");
    assert_eq!(again["latest_version"], 3, "{again}");
    let next: Bundle = serde_json::from_value(poll(&host, "web", "web-1", "jwt:2")).expect("a bundle");
    assert_eq!(next.validate("web", Some(&held)), Ok(()));
    assert!(!host.storage(M).contains_key("tombstone/jwt"), "the tombstone is used up");
}

#[test]
fn config_is_validated_and_supplies_defaults_to_new_keyrings() {
    let host = host();
    let defaults = ok(host.request(M, "read", "config", Value::Null));
    assert_eq!((defaults["poll_interval"].clone(), defaults["liveness_window"].clone()), (json!(30), json!(600)));
    let bad = host.request(M, "update", "config", json!({"poll_interval": "10m"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error.contains("\"liveness_window\""), "{bad:?}");
    let bad = host.request(M, "update", "config", json!({"liveness_window": "2d"}));
    assert!(bad.status == 400 && bad.error.contains("\"liveness_window\"") && bad.error.contains("a day"), "{bad:?}");
    let bad = host.request(M, "update", "config", json!({"max_clock_skew": "3d"}));
    assert!(bad.status == 400 && bad.error.contains("\"grace_period\""), "the default policy no longer fits: {bad:?}");
    ok(host.request(M, "update", "config", json!({"rotation_period": "7d", "prepublish": "12h"})));
    let created = ok(host.request(M, "create", "keys/k", json!({"type": "hmac-sha256"})));
    assert_eq!((created["rotation_period"].clone(), created["prepublish"].clone()), (json!(604_800), json!(43_200)));
    assert_eq!(
        ok(host.request(M, "read", "config", Value::Null))["poll_interval"],
        30,
        "refused updates changed nothing"
    );
    // A keyring whose grace period just covers today's timings stops a
    // change that it would no longer cover.
    ok(host.request(
        M,
        "create",
        "keys/tight",
        json!({"type": "hmac-sha256", "max_token_ttl": "1h", "grace_period": "3660s"}),
    ));
    let bad = host.request(M, "update", "config", json!({"poll_interval": "5m"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error.contains("\"tight\"") && bad.error.contains("\"grace_period\""), "{bad:?}");
    assert_eq!(ok(host.request(M, "read", "config", Value::Null))["poll_interval"], 30);
    // An activation margin of ten years would freeze the signer: it must be
    // shorter than every rotation period.
    let bad = host.request(M, "update", "config", json!({"activation_margin": "3650d"}));
    assert!(bad.status == 400 && bad.error.contains("\"activation_margin\""), "{bad:?}");
    ok(host.request(
        M,
        "create",
        "keys/hourly",
        json!({"type": "hmac-sha256", "rotation_period": "1h",
        "prepublish": "10m", "commit_timeout": "30m", "grace_period": "2h", "max_token_ttl": "30m"}),
    ));
    let bad = host.request(M, "update", "config", json!({"activation_margin": "1h"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error.contains("\"hourly\"") && bad.error.contains("activation_margin"), "{bad:?}");
    assert_eq!(ok(host.request(M, "read", "config", Value::Null))["activation_margin"], 30);
}
