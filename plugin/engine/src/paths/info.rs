//! `info`: what the plugin is and what it sees of the server.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Path, stateful};
use vault_plugin_sdk::logical::{Operation, Response};

use crate::VERSION;
use crate::clock::rfc3339;
use crate::state::MountState;

/// The `info` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new("info")
        .operation(
            Operation::Read,
            "Show the plugin version, the time the plugin sees and the last periodic call.",
            stateful(&state, |state, _req, _data| async move { Ok(Some(read(&state).await)) }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(state: &MountState) -> Response {
    let periodic = state.periodic();
    let mut data = Map::new();
    data.insert("plugin_version".into(), json!(VERSION));
    data.insert("server_time".into(), json!(rfc3339(state.clock.now())));
    data.insert("last_periodic".into(), periodic.last.map(rfc3339).map_or(Value::Null, Value::String));
    data.insert("periodic_calls".into(), json!(periodic.count));
    // This node's part: a standby serving reads answers most polls itself
    // and sends the rest (heartbeats, acknowledgements) to the active node.
    let standby = state.is_standby().await;
    data.insert("node".into(), json!(if standby { "standby" } else { "active" }));
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    data.insert("polls_answered".into(), json!(count(&state.polls.answered)));
    data.insert("polls_sent_to_active".into(), json!(count(&state.polls.sent_to_active)));
    let mut because: Map<String, Value> = crate::state::SENT_BECAUSE
        .iter()
        .zip(&state.polls.sent_because)
        .map(|(reason, n)| ((*reason).to_string(), json!(count(n))))
        .collect();
    let before_writing: u64 = state.polls.sent_because.iter().map(count).sum();
    because.insert("write".into(), json!(count(&state.polls.sent_to_active).saturating_sub(before_writing)));
    data.insert("polls_sent_to_active_because".into(), Value::Object(because));
    // The host version is informative; a host without it still answers.
    if let Ok(version) = state.system.server_version().await {
        data.insert("server_version".into(), json!(version));
    }
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Show the plugin's version and what it sees of the server.";
const HELP_DESCRIPTION: &str = "\
Reads the running plugin version, the current time as the plugin sees it \
(sidecars compare their clocks with this time), the time of the server's last \
periodic call to this mount (the call that drives scheduled rotation; the \
server makes it about once a minute on its active node only), and how many \
periodic calls this mount has seen since it was last set up. node says \
whether this node is the active one or a standby serving reads; \
polls_answered and polls_sent_to_active count the bundle polls this node \
answered itself and those it sent on to the active node; \
polls_sent_to_active_because splits the latter by reason (heartbeat, \
no_heartbeat_field: an older sidecar, behind: the caller holds more than \
this node knows yet, overdue: a heartbeat that has not landed, write: an \
acknowledgement or another write).";
