//! `bundle/<pool>`: what a pool's sidecars fetch. The call is also the
//! sidecar's acknowledgement of what it holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType, Path, name_segment, stateful};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::check_name;
use crate::acks::{Caller, Reported, Standing};
use crate::coordinator;
use crate::state::MountState;

/// The longest a bundle read may wait for a change; well below the
/// server's default request timeout (90 s).
pub const MAX_WAIT: u64 = 60;
/// Longest boot id accepted.
const MAX_BOOT: usize = 64;
/// Most `held` entries a sidecar may report.
const MAX_HELD: usize = 64;

/// The `bundle/<pool>` path.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("bundle/{}", name_segment("pool")))
        .field(Field::new("pool", FieldType::String, "The pool whose bundle to fetch."))
        .field(Field::new(
            "instance",
            FieldType::String,
            "The calling sidecar's instance id (for example its pod name).",
        ))
        .field(Field::new(
            "boot",
            FieldType::String,
            "A random id of the calling sidecar process, the same for all its polls: two processes polling under \
             one instance id are detected and warned about.",
        ))
        .field(Field::new(
            "revision",
            FieldType::String,
            "The revision the caller holds; unchanged means \"not modified\".",
        ))
        .field(Field::new(
            "held",
            FieldType::CommaStringSlice,
            "What the caller holds, as keyring:version:kid:generation entries (the highest version per keyring, \
             its key id, and the keyring's generation; keyring:version is still accepted). This is its acknowledgement: a version activates only once \
             every live pool holds it, and only a matching kid counts.",
        ))
        .field(Field::new(
            "heartbeat",
            FieldType::Bool,
            "Sent by sidecars on every poll: true when a standby asked for a heartbeat (heartbeat_due in its \
             answer), which the active node stores as the instance's last sight. A poll without it is run on \
             the active node.",
        ))
        .field(Field::new(
            "wait",
            FieldType::DurationSeconds,
            "When revision is current, wait up to this long (at most 60s) for a change before answering \"not \
             modified\".",
        ))
        .operation(
            Operation::Read,
            "Fetch the pool's bundle, or \"not modified\" for a current revision; records the acknowledgement.",
            stateful(&state, |state, req, data| async move { read(&state, &req, &data).await }),
        )
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

async fn read(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    use std::sync::atomic::Ordering::Relaxed;
    let outcome = poll(state, req, data).await;
    match &outcome {
        Ok(_) => state.polls.answered.fetch_add(1, Relaxed),
        Err(LogicalError::ReadOnly) => state.polls.sent_to_active.fetch_add(1, Relaxed),
        Err(_) => 0,
    };
    outcome
}

async fn poll(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let pool_name = data.str("pool").unwrap_or_default();
    check_name("pool", pool_name)?;
    let instance = data.str("instance").unwrap_or_default();
    check_name("instance", instance)?;
    let wait = data.duration_secs("wait").unwrap_or(0);
    if wait > MAX_WAIT {
        return Err(LogicalError::InvalidRequest(format!("field \"wait\": at most {MAX_WAIT}s")));
    }
    let held = data.strings("held").unwrap_or_default();
    if held.len() > MAX_HELD {
        return Err(LogicalError::InvalidRequest(format!("field \"held\": at most {MAX_HELD} entries")));
    }
    let held = parse_held(&held)?;
    let boot = data.str("boot").filter(|b| !b.is_empty());
    if let Some(boot) = boot
        && (boot.len() > MAX_BOOT || !boot.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"boot\": at most {MAX_BOOT} letters, digits and '-'"
        )));
    }
    let storage = req.storage.as_ref();
    let missing = || LogicalError::NotFound(format!("pool {pool_name:?} not found"));
    let pool = coordinator::pool(state, storage, pool_name).await?.ok_or_else(missing)?;
    let config = coordinator::config(state, storage).await?;
    let heartbeat = data.bool("heartbeat").unwrap_or(false);
    let caller = Caller { instance, boot, heartbeat };
    let standby = state.is_standby().await;
    // On a standby: when to ask the sidecar for a heartbeat, and whether
    // this poll counts as a sight of it.
    let mut beat_at = None;
    let mut record = true;
    if standby {
        // Run on the active node: a heartbeat (it stores the instance's
        // last sight); a sidecar that sends none (it would never be heard
        // by the active node); and a caller that holds more than this
        // node knows yet, once this node has had a moment to catch up, so
        // that no sidecar is ever handed a bundle older than its own.
        let sent = |reason: &str| {
            state.polls.sent_because(reason);
            Err(LogicalError::ReadOnly)
        };
        if heartbeat {
            return sent("heartbeat");
        }
        if !data.is_set("heartbeat") {
            return sent("no_heartbeat_field");
        }
        if !caught_up(state, storage, &pool, &held).await? {
            return sent("behind");
        }
        coordinator::ensure_fleet(state, storage).await?;
        let live = crate::acks::Liveness::new(state.now(), config.liveness_window);
        if !heartbeats_skipped() {
            match standing(state, storage, pool_name, instance, config.liveness_window).await? {
                // Its heartbeat has not landed within the interval: the
                // active node would no longer count what this node saw.
                Standing::Overdue => return sent("overdue"),
                // The active node does not know it polls here: answer at
                // once, without counting the poll, and ask for the
                // heartbeat that tells it. (Asked moments ago, it waited
                // for the record first; a node that still lacks it asks
                // again rather than send a poll that would wait out its
                // long-poll on the active node.)
                Standing::Unknown => {
                    state.with_fleet(|fleet| fleet.asked_heartbeat(pool_name, instance, live));
                    record = false;
                    beat_at = Some(i64::MIN);
                }
                // A long-poll here ends when the heartbeat falls due.
                Standing::Fresh { due } => beat_at = Some(due),
            }
        }
    }
    let recorded = if record {
        coordinator::record_poll(state, storage, &config, pool_name, &pool, caller, held).await?
    } else {
        coordinator::Recorded::default()
    };
    let beat_due = move |t: i64| beat_at.is_some_and(|at| t >= at);
    // The active node of a cluster whose standbys answer polls tells the
    // sidecars polling it so: one that can reach a standby (another
    // address, or a new connection through a balancer) polls there, and
    // the one node that writes and decides is spared its long-polls. Not
    // in answers to polls a standby may have sent on (a heartbeat, a
    // write): their sidecar polls a standby already.
    let prefer_standby = !standby && !heartbeat && !recorded.stored && recorded.standbys_serve;
    let warned = |mut response: Response, t: i64| {
        response.warnings.extend(recorded.warning.clone());
        if beat_due(t) {
            response.data.insert("heartbeat_due".into(), json!(true));
        }
        if prefer_standby {
            response.data.insert("prefer_standby".into(), json!(true));
        }
        Some(response)
    };
    // A poll that wrote the instance's record (an acknowledgement, a
    // heartbeat: on a cluster, one a standby sent here), and any heartbeat,
    // is answered at once, and the sidecar polls again at once: its wait
    // happens back on the node it polls, never on the active node's
    // forwarded requests.
    let now = state.now();
    let wait = if beat_due(now) || recorded.stored || (heartbeat && !standby) { 0 } else { wait };
    let wait = beat_at.map_or(wait, |at| wait.min(u64::try_from(at.saturating_sub(now)).unwrap_or(0)));
    let known = data.str("revision").unwrap_or_default();
    // While the server drains for a seal, a step-down or a shutdown, a
    // waiting poll would hold it up: answer at once instead.
    let drain = vault_plugin_sdk::drain::drain();
    // Registered before the check, so a signal in between still wakes it.
    let mut waiting = (wait > 0).then(|| drain.waiting());
    let wait = if drain.draining() { 0 } else { wait };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Subscribe before looking, so a change made while the answer is
        // looked at still wakes the wait below.
        let mut changes = state.cache.subscribe(pool_name);
        let t = state.now();
        let answer = coordinator::answer(state, storage, pool_name, t).await?.ok_or_else(missing)?;
        if answer.revision != known {
            return Ok(warned(coordinator::render(&answer, pool_name, t), t));
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // A version leaving the verification set changes the answer
        // without any write: wake then too.
        let until_change = answer
            .valid_until
            .map_or(remaining, |until| Duration::from_secs(u64::try_from(until.saturating_sub(t)).unwrap_or(0).max(1)));
        let nap = remaining.min(until_change);
        if nap.is_zero() {
            return Ok(warned(not_modified(pool_name, &answer.revision, t), state.now()));
        }
        // Woken by a change or the time: look again. Drained: answer now.
        let drained = async {
            match waiting.as_mut() {
                Some(waiting) => waiting.drained().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = drained => return Ok(warned(not_modified(pool_name, &answer.revision, t), t)),
            changed = tokio::time::timeout(nap, changes.changed()) => {
                if let Ok(Err(_)) = changed {
                    tokio::time::sleep(nap).await;
                }
            }
        }
    }
}

/// Where this standby stands with an instance. One it asked for a
/// heartbeat moments ago whose record has not reached this node yet waits
/// for it (as [`caught_up`] does), up to [`CATCH_UP`]: the heartbeat
/// landed on the active node, and its record is on its way here. A poll
/// sent on in the meantime would wait out its long-poll on the active
/// node, on the connection standbys forward by.
async fn standing(
    state: &MountState,
    storage: &dyn vault_plugin_sdk::storage::Storage,
    pool: &str,
    instance: &str,
    window: u64,
) -> Result<Standing, LogicalError> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        // Records other nodes wrote are read when they are first needed.
        coordinator::ensure_fleet(state, storage).await?;
        let live = crate::acks::Liveness::new(state.now(), window);
        let standing = state.with_fleet(|fleet| fleet.standing(pool, instance, live));
        let waiting =
            standing == Standing::Unknown && state.with_fleet(|fleet| fleet.asked_recently(pool, instance, live));
        if !waiting || tokio::time::Instant::now() >= deadline {
            return Ok(standing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// See [`crate::acks::heartbeats_skipped`].
fn heartbeats_skipped() -> bool {
    crate::acks::heartbeats_skipped()
}

/// How long a standby waits for its storage to catch up with a caller
/// that holds more than it knows before it sends the poll to the active
/// node.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Whether this node knows at least what the caller holds, after waiting
/// up to [`CATCH_UP`] for replication to bring it.
async fn caught_up(
    state: &MountState,
    storage: &dyn vault_plugin_sdk::storage::Storage,
    pool: &crate::pool::Pool,
    held: &BTreeMap<String, Reported>,
) -> Result<bool, LogicalError> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        if !coordinator::ahead_of_this_node(state, storage, pool, held).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Longest kid accepted in `held`.
const MAX_KID: usize = 128;

/// Parses `held` entries of the form `keyring:version:kid:generation` (or
/// the older `keyring:version`). The error never quotes an entry in full:
/// it may be long, and it is the caller's own input.
fn parse_held(entries: &[String]) -> Result<BTreeMap<String, Reported>, LogicalError> {
    let mut held = BTreeMap::new();
    for entry in entries {
        let mut parts = entry.splitn(4, ':');
        let (name, number, kid) = (parts.next().unwrap_or_default(), parts.next(), parts.next());
        let generation = parts.next().map(|g| g.parse::<u64>().ok());
        let number = number.and_then(|n| n.parse::<u64>().ok()).filter(|_| generation.is_none_or(|g| g.is_some()));
        let kid_ok = kid.is_none_or(|k| {
            !k.is_empty() && k.len() <= MAX_KID && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
        let Some(number) = number.filter(|_| kid_ok) else {
            return Err(LogicalError::InvalidRequest(format!(
                "field \"held\": an entry ({} bytes) is not of the form keyring:version:kid:generation",
                entry.len()
            )));
        };
        check_name("held", name)?;
        let generation = generation.flatten();
        held.insert(name.to_string(), Reported { number, kid: kid.map(str::to_string), generation });
    }
    Ok(held)
}

fn not_modified(pool: &str, revision: &str, t: i64) -> Response {
    let mut data = Map::new();
    data.insert("pool".into(), json!(pool));
    data.insert("revision".into(), json!(revision));
    data.insert("server_time".into(), json!(t));
    data.insert("not_modified".into(), json!(true));
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Fetch a pool's key bundle (what its sidecars serve).";
const HELP_DESCRIPTION: &str = "\
For each keyring the pool may fetch: every version that still verifies, with \
its times and material (private keys only for pools in sign mode; verify-only \
pools get public keys of asymmetric keyrings, and the secret of HMAC/AES \
keyrings, which cannot be split). The revision changes whenever the content \
changes; called with the current revision, the answer is \"not modified\" \
without material, and with wait it returns as soon as something changes. \
server_time lets sidecars detect clock skew. The call records what the \
sidecar instance holds (held) and when it was seen: versions activate only \
once every live pool holds them. On a cluster, a standby may answer \
heartbeat_due (the next poll should send heartbeat=true), and the active \
node answers prefer_standby while standbys answer polls (a sidecar that can \
reach a standby should poll it instead). Sidecars need only read access to \
their own pool's bundle.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_entries_are_parsed_and_checked() {
        let held = parse_held(&["jwt:3:jwt-v3-0a1b:7".into(), "session:12".into()]).expect("valid");
        let kid = Some("jwt-v3-0a1b".to_string());
        assert_eq!(held.get("jwt"), Some(&Reported { number: 3, kid, generation: Some(7) }));
        assert_eq!(held.get("session"), Some(&Reported { number: 12, kid: None, generation: None }));
        assert!(parse_held(&["jwt:3:k:x".into()]).is_err(), "a generation that is not a number");
        let error = parse_held(&["jwt".into()]).expect_err("no version");
        assert_eq!(
            error.to_string(),
            "field \"held\": an entry (3 bytes) is not of the form keyring:version:kid:generation"
        );
        assert!(parse_held(&["../x:1".into()]).is_err());
        assert!(parse_held(&["jwt:1:".into()]).is_err(), "an empty kid");
        assert!(parse_held(&[format!("jwt:1:{}", "k".repeat(129))]).is_err(), "an oversized kid");
        assert!(parse_held(&["jwt:1:a b".into()]).is_err(), "a kid with a space");
    }
}
