//! A mount's private storage, served by the host through the broker.
//!
//! The host encrypts everything written here behind its barrier. Keys are
//! relative to the mount; `list` returns the direct children of a prefix,
//! with sub-folders ending in `/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;

use crate::proto::pb;
use crate::proto::pb::storage_client::StorageClient;

/// The text of the host's error for a write to a standby's storage, which
/// is read-only. The server forwards a request to its active node when the
/// request's error is exactly this text.
pub const READ_ONLY: &str = "cannot write to readonly storage";

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The host's storage answered with an error.
    #[error("storage {op} {key:?} failed: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The host's message.
        message: String,
    },
    /// The node is a standby serving reads: its storage takes no writes.
    /// The request must run on the active node instead.
    #[error("storage {op} {key:?} failed: {READ_ONLY}")]
    ReadOnly {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
    },
    /// The connection to the host failed.
    #[error("storage {op} {key:?} failed: connection to the host: {message}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The gRPC status text.
        message: String,
    },
}

/// Storage as an engine uses it.
#[tonic::async_trait]
pub trait Storage: Send + Sync {
    /// The value at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Writes `value` at `key`.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// The direct children of `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    /// Starts a read-write transaction, or `None` when the host's storage
    /// is not transactional (Vault, or OpenBao on a backend without it).
    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError>;
}

/// A transaction: the same operations, applied all together on commit.
#[tonic::async_trait]
pub trait Transaction: Storage {
    /// Applies every write of the transaction, or none of them.
    async fn commit(self: Box<Self>) -> Result<(), StorageError>;
    /// Discards the transaction.
    async fn rollback(self: Box<Self>) -> Result<(), StorageError>;
}

/// Storage served by the host over a brokered gRPC connection.
#[derive(Debug, Clone)]
pub struct GrpcStorage {
    client: StorageClient<Channel>,
    /// Transaction id when this handle belongs to a transaction.
    txn: String,
}

impl GrpcStorage {
    pub(crate) fn new(channel: Channel) -> Self {
        let client = StorageClient::new(channel).max_decoding_message_size(usize::MAX);
        Self { client, txn: String::new() }
    }

    fn client(&self) -> StorageClient<Channel> {
        // Clones share the channel; a clone per call keeps `&self` methods.
        self.client.clone()
    }
}

fn transport(op: &'static str, key: &str, status: tonic::Status) -> StorageError {
    StorageError::Transport { op, key: key.to_string(), message: status.message().to_string() }
}

fn backend(op: &'static str, key: &str, err: String) -> Result<(), StorageError> {
    if err.is_empty() {
        Ok(())
    } else if err.contains(READ_ONLY) {
        Err(StorageError::ReadOnly { op, key: key.to_string() })
    } else {
        Err(StorageError::Backend { op, key: key.to_string(), message: err })
    }
}

#[tonic::async_trait]
impl Storage for GrpcStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let args = pb::StorageGetArgs { key: key.to_string(), txn: self.txn.clone() };
        let reply = self.client().get(args).await.map_err(|s| transport("get", key, s))?.into_inner();
        backend("get", key, reply.err)?;
        Ok(reply.entry.map(|entry| entry.value))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        let entry = pb::StorageEntry { key: key.to_string(), value, seal_wrap: false };
        let args = pb::StoragePutArgs { entry: Some(entry), txn: self.txn.clone() };
        let reply = self.client().put(args).await.map_err(|s| transport("put", key, s))?.into_inner();
        backend("put", key, reply.err)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let args = pb::StorageDeleteArgs { key: key.to_string(), txn: self.txn.clone() };
        let reply = self.client().delete(args).await.map_err(|s| transport("delete", key, s))?.into_inner();
        backend("delete", key, reply.err)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let args = pb::StorageListArgs { prefix: prefix.to_string(), txn: self.txn.clone() };
        let reply = self.client().list(args).await.map_err(|s| transport("list", prefix, s))?.into_inner();
        backend("list", prefix, reply.err)?;
        Ok(reply.keys)
    }

    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
        match self.client().is_transactional(pb::Empty {}).await {
            Ok(reply) if reply.get_ref().transactional => {}
            // Hosts without transactions do not implement the call at all.
            Ok(_) => return Ok(None),
            Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(status) => return Err(transport("begin", "", status)),
        }
        let reply = self.client().begin_tx(pb::Empty {}).await.map_err(|s| transport("begin", "", s))?.into_inner();
        backend("begin", "", reply.err)?;
        Ok(Some(Box::new(GrpcStorage { client: self.client(), txn: reply.txn })))
    }
}

#[tonic::async_trait]
impl Transaction for GrpcStorage {
    async fn commit(self: Box<Self>) -> Result<(), StorageError> {
        let args = pb::StorageCommitTxArgs { txn: self.txn.clone() };
        let reply = self.client().commit(args).await.map_err(|s| transport("commit", "", s))?.into_inner();
        backend("commit", "", reply.err)
    }

    async fn rollback(self: Box<Self>) -> Result<(), StorageError> {
        let args = pb::StorageRollbackTxArgs { txn: self.txn.clone() };
        let reply = self.client().rollback(args).await.map_err(|s| transport("rollback", "", s))?.into_inner();
        backend("rollback", "", reply.err)
    }
}

/// Storage in memory, for unit tests of engines. Not transactional.
#[derive(Debug, Default, Clone)]
pub struct MemoryStorage {
    entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStorage {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[tonic::async_trait]
impl Storage for MemoryStorage {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.entries().get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StorageError> {
        self.entries().insert(key.to_string(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.entries().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut children: Vec<String> = self
            .entries()
            .keys()
            .filter_map(|key| key.strip_prefix(prefix))
            .map(|rest| match rest.find('/') {
                Some(slash) => rest[..=slash].to_string(),
                None => rest.to_string(),
            })
            .collect();
        children.dedup();
        Ok(children)
    }

    async fn begin(&self) -> Result<Option<Box<dyn Transaction>>, StorageError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_list_returns_direct_children_once() {
        let storage = MemoryStorage::default();
        for key in ["pools/a", "pools/b", "pools/c/x", "pools/c/y", "other"] {
            storage.put(key, b"v".to_vec()).await.expect("put");
        }
        assert_eq!(storage.list("pools/").await.expect("list"), vec!["a", "b", "c/"]);
        storage.delete("pools/a").await.expect("delete");
        assert_eq!(storage.get("pools/a").await.expect("get"), None);
    }
}
