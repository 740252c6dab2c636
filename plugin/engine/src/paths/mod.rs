//! The engine's API paths, one module per path family.

pub mod info;
pub mod pools;

use vault_plugin_sdk::logical::LogicalError;
use vault_plugin_sdk::storage::StorageError;

/// Longest name accepted for pools and keyrings.
pub const MAX_NAME_LEN: usize = 64;

/// Storage failures are the server's problem, not the caller's.
pub(crate) fn storage_error(error: StorageError) -> LogicalError {
    LogicalError::Internal(error.to_string())
}

/// Checks a name taken from the URL or a field: the URL pattern already
/// limits the characters, this also limits the length.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), LogicalError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let valid_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || !valid_ends {
        return Err(LogicalError::InvalidRequest(format!(
            "field {field:?}: {name:?} is not a valid name (1 to {MAX_NAME_LEN} of a-z, A-Z, 0-9, '_', '-', '.', \
             starting and ending with a letter, digit or '_')"
        )));
    }
    Ok(())
}
