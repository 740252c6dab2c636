//! A pool record: which keyrings a pool of services may fetch, and whether
//! it signs with them or only verifies.

use serde::{Deserialize, Serialize};
use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::Storage;

/// Storage prefix of pool records.
pub const PREFIX: &str = "pools/";

/// What a pool may do with its keyrings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Sign and verify: gets private material.
    Sign,
    /// Verify only: gets public keys of asymmetric keyrings.
    Verify,
}

impl Mode {
    /// The bundle's view of the mode.
    pub fn bundle_mode(self) -> lockstep_model::bundle::PoolMode {
        match self {
            Self::Sign => lockstep_model::bundle::PoolMode::Sign,
            Self::Verify => lockstep_model::bundle::PoolMode::Verify,
        }
    }

    pub fn parse(text: &str) -> Result<Self, LogicalError> {
        match text {
            "sign" => Ok(Self::Sign),
            "verify" => Ok(Self::Verify),
            other => Err(LogicalError::InvalidRequest(format!(
                "field \"mode\": {other:?} is not a mode; use \"sign\" or \"verify\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sign => "sign",
            Self::Verify => "verify",
        }
    }
}

/// A stored pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Keyrings the pool may fetch.
    pub keyrings: Vec<String>,
    /// What it may do with them.
    pub mode: Mode,
}

impl Pool {
    /// Whether the pool may fetch `keyring`.
    pub fn has(&self, keyring: &str) -> bool {
        self.keyrings.iter().any(|k| k == keyring)
    }
}

/// Key of a pool record.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Reads a pool record.
pub async fn load(storage: &dyn Storage, name: &str) -> Result<Option<Pool>, LogicalError> {
    crate::storage::load(storage, &key(name)).await
}
