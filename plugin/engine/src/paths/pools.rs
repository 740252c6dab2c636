//! `pools/<name>`: which keyrings a pool of services may fetch, and whether
//! it may sign with them or only verify.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lockstep_model::schedule::{Actor, Cause};
use serde_json::{Map, json};
use vault_plugin_sdk::framework::{
    Field, FieldData, FieldType, Path, existence_check, handler, name_segment, stateful,
};
use vault_plugin_sdk::logical::{LogicalError, Operation, Request, Response};

use super::{check_name, storage_error, who};
use crate::coordinator;
use crate::pool::{self, Mode, PREFIX, Pool};
use crate::state::MountState;
use crate::storage::{Write, encode, load_keyring};

/// `pools/` (list).
pub fn list_path() -> Path {
    Path::new("pools/?")
        .operation(Operation::List, "List pools.", handler(|req: Request, _data| async move { list(&req).await }))
        .help("List the pools.", "Lists the names of all configured pools.")
}

/// `pools/<name>`.
pub fn path(state: Arc<MountState>) -> Path {
    Path::new(format!("pools/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the pool (as its sidecars present it)."))
        .field(
            Field::new(
                "keyrings",
                FieldType::CommaStringSlice,
                "Keyrings this pool may fetch, as a list or comma-separated.",
            )
            .default_value(json!([])),
        )
        .field(
            Field::new(
                "mode",
                FieldType::String,
                "\"sign\": the pool gets private material and signs. \"verify\" (the default when a pool is \
                 created without a mode): the pool only verifies; for asymmetric keyrings it gets public keys \
                 only. HMAC and AES keys cannot be split, so a pool that verifies HMAC tokens holds the secret.",
            )
            .default_value(json!("verify")),
        )
        .operation(Operation::Read, "Read a pool.", handler(|req, data| async move { read(&req, &data).await }))
        .operation_on_active_node(
            Operation::Create,
            "Create a pool.",
            stateful(&state, |state, req, data| async move { write(&state, &req, &data).await }),
        )
        .operation_on_active_node(
            Operation::Update,
            "Update a pool.",
            stateful(&state, |state, req, data| async move { write(&state, &req, &data).await }),
        )
        .operation_on_active_node(
            Operation::Delete,
            "Delete a pool.",
            stateful(&state, |state, req, data| async move { delete(&state, &req, &data).await }),
        )
        .exists(existence_check(|req: Request, data: FieldData| async move {
            Ok(pool::load(req.storage.as_ref(), name(&data)?).await?.is_some())
        }))
        .help(HELP_SYNOPSIS, HELP_DESCRIPTION)
}

fn name(data: &FieldData) -> Result<&str, LogicalError> {
    let name = data.str("name").unwrap_or_default();
    check_name("name", name)?;
    Ok(name)
}

async fn list(req: &Request) -> Result<Option<Response>, LogicalError> {
    let names = req.storage.list(PREFIX).await.map_err(storage_error)?;
    Ok(Some(Response::list(names)))
}

async fn read(req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let Some(pool) = pool::load(req.storage.as_ref(), name).await? else {
        return Ok(None);
    };
    let mut response = render(name, &pool);
    for keyring in &pool.keyrings {
        if load_keyring(req.storage.as_ref(), keyring).await?.is_none() {
            response.warnings.push(missing_warning(keyring));
        }
    }
    Ok(Some(response))
}

fn missing_warning(keyring: &str) -> String {
    format!("keyring {keyring:?} does not exist: the pool's bundle leaves it out until it is created")
}

async fn write(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let existing = pool::load(req.storage.as_ref(), name).await?;
    let mut pool = existing.clone().unwrap_or(Pool { keyrings: Vec::new(), mode: Mode::Verify });
    // An update changes only what it names; a create starts from defaults.
    if data.is_set("keyrings") || existing.is_none() {
        pool.keyrings = keyrings(data)?;
    }
    // Least privilege: a pool created without a mode only verifies, and
    // the answer says so.
    let defaulted = existing.is_none() && !data.is_set("mode");
    if data.is_set("mode") {
        pool.mode = Mode::parse(data.str("mode").unwrap_or_default())?;
    }
    let mut writes = vec![Write::Put(pool::key(name), encode(&pool)?)];
    let (storage, t) = (req.storage.as_ref(), state.now());
    let changes = access_changes(name, existing.as_ref(), Some(&pool));
    let locks: Vec<_> = changes.keys().map(|keyring| state.keyring_lock(keyring)).collect();
    let mut guards = Vec::with_capacity(locks.len());
    for lock in &locks {
        guards.push(lock.lock().await);
    }
    writes.extend(record_access(state, storage, who(req), t, changes).await?);
    coordinator::apply(state, storage, writes).await?;
    drop(guards);
    tracing::info!(pool = name, actor = req.actor(), "pool written");
    let mut response = render(name, &pool);
    if defaulted {
        response.warnings.push(format!(
            "no mode given: pool {name} verifies only and gets no private keys of asymmetric keyrings; write \
             mode=sign to let it sign"
        ));
    }
    // As the server does for a policy naming paths that do not exist yet:
    // written, with a warning.
    for keyring in &pool.keyrings {
        match load_keyring(req.storage.as_ref(), keyring).await? {
            None => response.warnings.push(missing_warning(keyring)),
            Some(ring) if pool.mode == Mode::Verify && !ring.key_type.is_asymmetric() => {
                response.warnings.push(coordinator::symmetric_warning(keyring, &[name.to_string()]));
            }
            Some(_) => {}
        }
    }
    Ok(Some(response))
}

async fn delete(state: &MountState, req: &Request, data: &FieldData) -> Result<Option<Response>, LogicalError> {
    let name = name(data)?;
    let storage = req.storage.as_ref();
    let existing = pool::load(storage, name).await?;
    let changes = access_changes(name, existing.as_ref(), None);
    let locks: Vec<_> = changes.keys().map(|keyring| state.keyring_lock(keyring)).collect();
    let mut guards = Vec::with_capacity(locks.len());
    for lock in &locks {
        guards.push(lock.lock().await);
    }
    let mut writes = vec![Write::Delete(pool::key(name))];
    writes.extend(record_access(state, storage, who(req), state.now(), changes).await?);
    coordinator::apply(state, storage, writes).await?;
    drop(guards);
    Ok(None)
}

/// What changes, per keyring, in who may fetch it when pool `name` goes
/// from `before` to `after`: the words for its history. Sorted by keyring,
/// which is also the order their locks are taken in.
fn access_changes(name: &str, before: Option<&Pool>, after: Option<&Pool>) -> BTreeMap<String, String> {
    let listed = |pool: Option<&Pool>, keyring: &str| pool.filter(|p| p.has(keyring)).map(|p| p.mode);
    let all = before.into_iter().chain(after).flat_map(|p| p.keyrings.iter().cloned()).collect::<BTreeSet<_>>();
    let mut changes = BTreeMap::new();
    for keyring in all {
        let said = match (listed(before, &keyring), listed(after, &keyring)) {
            (None, Some(mode)) => format!("pool {name} may fetch it now, in mode {}", mode.as_str()),
            (Some(_), None) => format!("pool {name} no longer fetches it"),
            (Some(old), Some(new)) if old != new => {
                format!("pool {name} fetches it in mode {} now, not {}", new.as_str(), old.as_str())
            }
            _ => continue,
        };
        changes.insert(keyring, said);
    }
    changes
}

/// Records each change in the history of its keyring (those that exist),
/// under the keyring's lock, which the caller holds; answers the writes.
async fn record_access(
    state: &MountState,
    storage: &dyn vault_plugin_sdk::storage::Storage,
    actor: Actor<'_>,
    t: i64,
    changes: BTreeMap<String, String>,
) -> Result<Vec<Write>, LogicalError> {
    let mut writes = Vec::new();
    for (keyring, said) in changes {
        if let Some(mut ring) = load_keyring(storage, &keyring).await? {
            ring.record(t, "pool", Cause::Manual, actor, said, Vec::new());
            writes.push(coordinator::ring_write(state, storage, &ring).await?);
        }
    }
    Ok(writes)
}

fn keyrings(data: &FieldData) -> Result<Vec<String>, LogicalError> {
    let mut keyrings = data.strings("keyrings").unwrap_or_default();
    for keyring in &keyrings {
        check_name("keyrings", keyring)?;
    }
    keyrings.sort();
    keyrings.dedup();
    let most = lockstep_model::bundle::MAX_KEYRINGS;
    if keyrings.len() > most {
        return Err(LogicalError::InvalidRequest(format!(
            "field \"keyrings\": {} keyrings; a pool's bundle carries at most {most}",
            keyrings.len()
        )));
    }
    Ok(keyrings)
}

fn render(name: &str, pool: &Pool) -> Response {
    let mut data = Map::new();
    data.insert("name".into(), json!(name));
    data.insert("keyrings".into(), json!(pool.keyrings));
    data.insert("mode".into(), json!(pool.mode.as_str()));
    Response::with_data(data)
}

const HELP_SYNOPSIS: &str = "Manage pools: which keyrings each pool of services may fetch.";
const HELP_DESCRIPTION: &str = "\
A pool is a group of identical services (a deployment, a fleet) whose sidecars \
fetch one key bundle. The pool lists the keyrings it may fetch and whether it \
signs with them (\"sign\": private material) or only verifies (\"verify\": \
public keys only, for asymmetric keyrings). A pool created without a mode \
verifies only: signing is granted by writing mode=sign. Symmetric keys (HMAC, AES) cannot \
be split: a pool that verifies HMAC tokens necessarily holds the secret, so use \
an asymmetric keyring where a pool should verify without being able to sign.";

#[cfg(test)]
mod tests;
