//! Storage layout and versioned records.
//!
//! | key                       | record                                        |
//! |---------------------------|-----------------------------------------------|
//! | `config`                  | mount-wide settings ([`crate::config`])       |
//! | `keyring/<name>`          | a keyring: policy, version metadata, history  |
//! | `material/<name>/<n>`     | one version's key material                    |
//! | `pools/<name>`            | a pool ([`crate::pool`])                      |
//! | `acks/<pool>/<instance>`  | what a sidecar instance holds, when last seen |
//!
//! Every state change of a keyring is one write of its record; material is
//! written before the record refers to it and deleted after the record
//! stops referring to it, so a crash between writes leaves either the old
//! or the new state plus, at worst, an orphaned material entry that
//! [`repair`] removes. On hosts with transactional storage the writes of one
//! change are also applied in one transaction.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::Storage;

use lockstep_model::schedule::Keyring;
use lockstep_model::secret::SecretBytes;

use crate::keygen::Material;
use vault_plugin_sdk::storage::StorageError;

/// Storage failures are the server's problem, not the caller's. The
/// answer names the operation only: the key may carry names the caller
/// did not send, and the host's message may quote stored values (OpenBao's
/// transaction conflicts do).
pub fn storage_error(error: StorageError) -> LogicalError {
    let (op, cause) = match error {
        // A standby's storage: the server runs the request on the active
        // node when it sees the host's own read-only error.
        StorageError::ReadOnly { .. } => return LogicalError::ReadOnly,
        StorageError::Backend { op, .. } => (op, "the server's storage refused it"),
        StorageError::Transport { op, .. } => (op, "the connection to the server failed"),
    };
    LogicalError::Internal(format!("storage {op} failed: {cause}"))
}

/// The layout version this plugin writes.
pub const FORMAT: u32 = 1;

/// One storage change. Its bytes may be key material: `Debug` shows only
/// their length.
pub enum Write {
    /// Put bytes at a key.
    Put(String, Vec<u8>),
    /// Delete a key.
    Delete(String),
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Put(key, bytes) => write!(f, "Put({key:?}, {} bytes)", bytes.len()),
            Self::Delete(key) => write!(f, "Delete({key:?})"),
        }
    }
}

impl Write {
    /// The key it writes.
    pub fn key(&self) -> &str {
        match self {
            Self::Put(key, _) | Self::Delete(key) => key,
        }
    }
}

/// Applies writes in order, in one transaction when the host offers them.
pub async fn apply(storage: &dyn Storage, writes: Vec<Write>) -> Result<(), LogicalError> {
    match storage.begin().await.map_err(storage_error)? {
        Some(txn) => {
            if let Err(error) = apply_each(txn.as_ref(), writes).await {
                let _ = txn.rollback().await;
                return Err(error);
            }
            txn.commit().await.map_err(storage_error)
        }
        None => apply_each(storage, writes).await,
    }
}

async fn apply_each(storage: &dyn Storage, writes: Vec<Write>) -> Result<(), LogicalError> {
    for write in writes {
        match write {
            Write::Put(key, value) => storage.put(&key, value).await,
            Write::Delete(key) => storage.delete(&key).await,
        }
        .map_err(storage_error)?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    format: u32,
    record: T,
}

/// Serialises a record with its layout version.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, LogicalError> {
    serde_json::to_vec(&Envelope { format: FORMAT, record })
        .map_err(|e| LogicalError::Internal(format!("encoding a record: {e}")))
}

/// Reads a record at `key`, migrating older layouts.
pub async fn load<T: DeserializeOwned>(storage: &dyn Storage, key: &str) -> Result<Option<T>, LogicalError> {
    let Some(bytes) = storage.get(key).await.map_err(storage_error)? else {
        return Ok(None);
    };
    // Named by its kind only: storage keys stay out of answers and logs.
    let kind = key.split('/').next().unwrap_or_default();
    let unreadable = |e: String| LogicalError::Internal(format!("a stored {kind} record is unreadable: {e}"));
    let envelope: Envelope<Value> = serde_json::from_slice(&bytes).map_err(|e| unreadable(redacted(&e)))?;
    let record = migrate(envelope.format, envelope.record).map_err(unreadable)?;
    serde_json::from_value(record).map(Some).map_err(|e| unreadable(redacted(&e)))
}

/// A decoding error without its text: serde's messages quote the offending
/// value, which in a material record would be key material.
fn redacted(error: &serde_json::Error) -> String {
    format!("{:?} error at line {} column {}", error.classify(), error.line(), error.column())
}

/// The migration hook: turns a record of an older layout into the
/// current one. Layout 1 is the first; a newer layout than this plugin
/// knows (written by a newer plugin before a downgrade) is refused rather
/// than misread.
fn migrate(format: u32, record: Value) -> Result<Value, String> {
    match format {
        FORMAT => Ok(record),
        newer if newer > FORMAT => Err(format!("layout {newer} is newer than this plugin's layout {FORMAT}")),
        older => Err(format!("layout {older} has no migration")),
    }
}

/// Key of a keyring record.
pub fn keyring_key(name: &str) -> String {
    format!("keyring/{name}")
}

/// Key of a version's material.
pub fn material_key(name: &str, number: u64) -> String {
    format!("material/{name}/{number}")
}

/// Where a deleted keyring's last version number and generation are kept,
/// so that a keyring made again under the name goes on from them.
pub fn tombstone_key(name: &str) -> String {
    format!("tombstone/{name}")
}

/// What a deleted keyring leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tombstone {
    /// Its highest version number.
    pub latest: u64,
    /// Its generation.
    pub generation: u64,
}

/// Reads a keyring.
pub async fn load_keyring(storage: &dyn Storage, name: &str) -> Result<Option<Keyring>, LogicalError> {
    load(storage, &keyring_key(name)).await
}

/// A keyring that must exist.
pub async fn require_keyring(storage: &dyn Storage, name: &str) -> Result<Keyring, LogicalError> {
    load_keyring(storage, name).await?.ok_or_else(|| LogicalError::NotFound(format!("keyring {name:?} not found")))
}

#[derive(Serialize, Deserialize)]
struct StoredMaterial {
    private_key: SecretBytes,
    public_key: Option<String>,
}

/// The write of a version's material.
pub fn put_material(name: &str, number: u64, material: &Material) -> Result<Write, LogicalError> {
    let stored = StoredMaterial { private_key: material.private_key.clone(), public_key: material.public_key.clone() };
    Ok(Write::Put(material_key(name, number), encode(&stored)?))
}

/// Reads a version's material.
pub async fn load_material(storage: &dyn Storage, name: &str, number: u64) -> Result<Option<Material>, LogicalError> {
    let stored: Option<StoredMaterial> = load(storage, &material_key(name, number)).await?;
    Ok(stored.map(|s| Material { private_key: s.private_key, public_key: s.public_key }))
}

/// Removes material entries no live version refers to: left by a crash
/// between the writes of a rotation, or by an interrupted expiry.
pub async fn repair(storage: &dyn Storage, ring: &Keyring) -> Result<Vec<u64>, LogicalError> {
    let prefix = format!("material/{}/", ring.name);
    let mut removed = Vec::new();
    for entry in storage.list(&prefix).await.map_err(storage_error)? {
        let Ok(number) = entry.parse::<u64>() else {
            continue;
        };
        let live = ring.versions.iter().any(|v| v.number == number && !v.destroyed);
        if !live {
            storage.delete(&material_key(&ring.name, number)).await.map_err(storage_error)?;
            removed.push(number);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_plugin_sdk::storage::MemoryStorage;

    #[test]
    fn storage_errors_name_the_operation_only() {
        let error = StorageError::Backend {
            op: "put",
            key: "acks/web/a".into(),
            message: "contents changed before put: c2VjcmV0".into(),
        };
        let text = storage_error(error).to_string();
        assert_eq!(text, "storage put failed: the server's storage refused it");
    }

    #[test]
    fn debug_of_a_write_shows_no_bytes() {
        let put = Write::Put("material/jwt/1".into(), b"secret-bytes".to_vec());
        assert_eq!(format!("{put:?}"), "Put(\"material/jwt/1\", 12 bytes)");
        assert_eq!(format!("{:?}", Write::Delete("keyring/jwt".into())), "Delete(\"keyring/jwt\")");
    }

    #[tokio::test]
    async fn records_carry_their_layout_and_newer_layouts_are_refused() {
        let storage = MemoryStorage::default();
        storage.put("x", encode(&42u32).expect("encode")).await.expect("put");
        assert_eq!(load::<u32>(&storage, "x").await, Ok(Some(42)));
        storage.put("x", br#"{"format":2,"record":42}"#.to_vec()).await.expect("put");
        let error = load::<u32>(&storage, "x").await.expect_err("newer");
        assert!(error.to_string().contains("layout 2 is newer"), "{error}");
        assert_eq!(load::<u32>(&storage, "missing").await, Ok(None));
    }

    #[tokio::test]
    async fn decoding_errors_never_quote_stored_values() {
        let storage = MemoryStorage::default();
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA==";
        let record = format!(r#"{{"format":1,"record":"{secret}"}}"#);
        storage.put("material/jwt/1", record.into_bytes()).await.expect("put");
        let error = load_material(&storage, "jwt", 1).await.expect_err("wrong shape");
        assert!(error.to_string().contains("a stored material record is unreadable: Data error"), "{error}");
        assert!(!error.to_string().contains(secret), "{error}");
        assert!(!error.to_string().contains("material/jwt"), "the storage key is named: {error}");
        storage.put("material/jwt/2", format!("{secret}!").into_bytes()).await.expect("put");
        let error = load_material(&storage, "jwt", 2).await.expect_err("not json");
        assert!(!error.to_string().contains("c2Vj"), "{error}");
    }

    #[tokio::test]
    async fn repair_removes_only_orphaned_material() {
        use lockstep_model::{KeyType, Policy};
        let storage = MemoryStorage::default();
        let mut ring = Keyring::new("jwt".into(), KeyType::HmacSha256, Policy::default(), false);
        ring.publish("k1".into(), 0, 0);
        let material = crate::keygen::generate(KeyType::HmacSha256).expect("keygen");
        let writes = vec![put_material("jwt", 1, &material).expect("w"), put_material("jwt", 2, &material).expect("w")];
        apply(&storage, writes).await.expect("apply");
        assert_eq!(repair(&storage, &ring).await, Ok(vec![2]));
        assert!(load_material(&storage, "jwt", 1).await.expect("load").is_some());
        assert!(load_material(&storage, "jwt", 2).await.expect("load").is_none());
    }
}
