//! The plugin under the servers' own Go plugin clients (OpenBao's SDK and
//! HashiCorp Vault's): launched as the server launches it (AutoMTLS,
//! SHA-256 check, multiplexing, or none when the host does not multiplex),
//! with in-memory storage served through the broker. Every scenario runs
//! under both hosts.

use lockstep_tests::plugin_version;
use lockstep_tests::sdkhost::{HostKind, SdkHost};
use serde_json::{Value, json};

/// Runs each scenario once per host, as `openbao::<name>` and `vault::<name>`.
macro_rules! under_both_hosts {
    ($($name:ident),* $(,)?) => {
        mod openbao {
            $(#[test] fn $name() { super::$name(super::HostKind::OpenBao) })*
        }
        mod vault {
            $(#[test] fn $name() { super::$name(super::HostKind::Vault) })*
        }
    };
}

under_both_hosts!(
    mounts_twice_in_one_process_and_round_trips_through_storage,
    without_multiplexing_each_mount_gets_its_own_process_and_storage,
    errors_map_to_the_statuses_the_server_answers,
    help_is_real_help,
    periodic_call_reaches_the_engine,
    reload_starts_a_new_process_and_keeps_the_data,
    a_failing_storage_write_is_a_500_and_leaves_nothing,
    plugin_logs_reach_the_host_with_their_level,
);

fn mounts_twice_in_one_process_and_round_trips_through_storage(kind: HostKind) {
    let host = SdkHost::start(kind);
    let first = host.mount("a/");
    assert_eq!(first["multiplexed"], true, "{first}");
    assert_eq!(first["plugin_version"], plugin_version());
    // Key material is declared for seal wrapping; only public JWKS are
    // reachable without a token.
    assert_eq!(first["seal_wrap_storage"], json!(["material/"]), "{first}");
    assert_eq!(first["unauthenticated"], json!(["jwks/*"]), "{first}");
    host.mount("b/");
    assert_eq!(host.processes(), (1, 1), "two mounts share one multiplexed process");

    let written = host.request("a/", "create", "pools/web", json!({"keyrings": ["jwt"], "mode": "verify"}));
    assert_eq!(written.status, 200, "{written:?}");
    let read = host.request("a/", "read", "pools/web", Value::Null);
    assert_eq!(read.data, json!({"name": "web", "keyrings": ["jwt"], "mode": "verify"}));
    // Each mount has its own storage.
    assert_eq!(host.request("b/", "read", "pools/web", Value::Null).status, 404);
    assert!(host.storage("a/").contains_key("pools/web"));
    assert!(host.storage("b/").is_empty());

    host.request("a/", "create", "pools/api", json!({}));
    let listed = host.request("a/", "list", "pools/", Value::Null);
    assert_eq!(listed.data["keys"], json!(["api", "web"]));
    assert_eq!(host.request("a/", "delete", "pools/web", Value::Null).status, 204);
    assert_eq!(host.request("a/", "read", "pools/web", Value::Null).status, 404);
}

fn without_multiplexing_each_mount_gets_its_own_process_and_storage(kind: HostKind) {
    let host = SdkHost::start_without_multiplexing(kind);
    let first = host.mount("a/");
    assert_eq!(first["multiplexed"], false, "{first}");
    host.mount("b/");
    assert_eq!(host.processes(), (2, 2), "one process per mount");
    // Calls carry no multiplex id; each process serves its one mount.
    let written = host.request("a/", "create", "pools/web", json!({"keyrings": ["jwt"], "mode": "sign"}));
    assert_eq!(written.status, 200, "{written:?}");
    assert_eq!(host.request("b/", "read", "pools/web", Value::Null).status, 404);
    assert_eq!(host.request("b/", "create", "pools/api", json!({})).status, 200);
    assert_eq!(host.request("a/", "list", "pools/", Value::Null).data["keys"], json!(["web"]));
    assert_eq!(host.request("b/", "list", "pools/", Value::Null).data["keys"], json!(["api"]));
    host.unmount("a/");
    assert_eq!(host.processes(), (2, 1), "unmounting stops that mount's process only");
    assert_eq!(host.request("b/", "read", "pools/api", Value::Null).status, 200);
}

fn errors_map_to_the_statuses_the_server_answers(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    let unknown = host.request("lockstep/", "read", "no/such/path", Value::Null);
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let unsupported = host.request("lockstep/", "delete", "info", Value::Null);
    assert_eq!(unsupported.status, 405, "{unsupported:?}");
    let bad = host.request("lockstep/", "create", "pools/web", json!({"mode": "admin"}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.error.contains("field \"mode\""), "{bad:?}");
    let unknown_field = host.request("lockstep/", "update", "pools/web", json!({"keyringz": "x"}));
    assert_eq!(unknown_field.status, 400);
    assert!(unknown_field.error.contains("unknown field \"keyringz\""), "{unknown_field:?}");
    assert!(host.storage("lockstep/").is_empty(), "a refused write stores nothing");
}

fn help_is_real_help(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    let help = host.request("lockstep/", "help", "pools/web", Value::Null);
    let text = help.data["help"].as_str().unwrap_or_default();
    assert!(text.contains("## PARAMETERS") && text.contains("mode (string)"), "{help:?}");
    let root = host.request("lockstep/", "help", "", json!({"requestResponsePrefix": "data"}));
    assert!(root.data["help"].as_str().unwrap_or_default().contains("^pools/"), "{root:?}");
}

fn periodic_call_reaches_the_engine(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    let before = host.request("lockstep/", "read", "info", Value::Null);
    assert_eq!(before.data["last_periodic"], Value::Null, "{before:?}");
    let rollback = host.request("lockstep/", "rollback", "", Value::Null);
    assert!(rollback.status < 300, "{rollback:?}");
    let after = host.request("lockstep/", "read", "info", Value::Null);
    assert_eq!(after.data["periodic_calls"], 1, "{after:?}");
    assert!(after.data["last_periodic"].is_string());
    // PluginEnv came through the brokered system view.
    assert!(after.data["server_version"].as_str().is_some_and(|v| !v.is_empty()), "{after:?}");
}

fn reload_starts_a_new_process_and_keeps_the_data(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    host.request("lockstep/", "create", "pools/web", json!({"keyrings": "jwt", "mode": "sign"}));
    host.reload("lockstep/");
    assert_eq!(host.processes(), (2, 1));
    let read = host.request("lockstep/", "read", "pools/web", Value::Null);
    assert_eq!(read.data["keyrings"], json!(["jwt"]), "{read:?}");
    host.unmount("lockstep/");
    assert_eq!(host.processes().1, 0, "the process exits with its last mount");
}

fn a_failing_storage_write_is_a_500_and_leaves_nothing(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    host.fault("lockstep/", "put", "pools/", 1);
    let failed = host.request("lockstep/", "create", "pools/web", json!({}));
    assert_eq!(failed.status, 500, "{failed:?}");
    assert!(failed.error.contains("storage put failed"), "{failed:?}");
    assert!(
        !failed.error.contains("pools/web") && !failed.error.contains("injected"),
        "no key, no host text: {failed:?}"
    );
    assert!(host.storage("lockstep/").is_empty());
    // The fault was used up; the next write goes through.
    assert_eq!(host.request("lockstep/", "create", "pools/web", json!({})).status, 200);
}

fn plugin_logs_reach_the_host_with_their_level(kind: HostKind) {
    let host = SdkHost::start(kind);
    host.mount("lockstep/");
    host.request("lockstep/", "create", "pools/web", json!({}));
    // The host relays the plugin's stderr asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = host.log();
        if let Some(line) = log.lines().find(|l| l.contains("pool written")) {
            break line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no record in:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(line.contains("[INFO]"), "level lost: {line}");
}
