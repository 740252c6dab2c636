//! The engine's API paths, one module per path family.

pub mod bundle;
pub mod config;
pub mod history;
pub mod info;
pub mod jwks;
pub mod keys;
pub mod keys_renumber;
pub mod keys_revoke;
pub mod keys_rotate;
pub mod pools;
pub mod status;

use lockstep_model::schedule::Actor;
use lockstep_model::{FleetTimings, Policy, PolicyError, PolicyInput};
use serde_json::{Map, Value, json};
use vault_plugin_sdk::framework::{Field, FieldData, FieldType};
use vault_plugin_sdk::logical::{LogicalError, Request};

/// Longest free text accepted (reasons).
pub const MAX_TEXT_LEN: usize = 1_024;

pub(crate) use crate::storage::storage_error;

/// A policy or config error is the caller's.
pub(crate) fn invalid(error: PolicyError) -> LogicalError {
    LogicalError::InvalidRequest(error.to_string())
}

/// Checks a name taken from the URL or a field against the model's rule.
/// The error quotes a long name only in part.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), LogicalError> {
    if !lockstep_model::name::is_valid(name) {
        return Err(LogicalError::InvalidRequest(format!(
            "field {field:?}: {} is not a valid name ({})",
            quoted(name),
            lockstep_model::name::NAME_RULE
        )));
    }
    Ok(())
}

/// Longest part of a refused value an error quotes.
const MAX_QUOTED: usize = 80;

/// A value for an error message: quoted, and cut to its first
/// [`MAX_QUOTED`] characters with its length when longer.
pub(crate) fn quoted(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// Checks free text for length.
pub(crate) fn check_text(field: &str, text: &str) -> Result<(), LogicalError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(LogicalError::InvalidRequest(format!(
            "field {field:?}: {} bytes is longer than the maximum of {MAX_TEXT_LEN}",
            text.len()
        )));
    }
    Ok(())
}

/// The six policy fields, shared by `config` (defaults) and `keys/<name>`.
pub(crate) fn policy_fields() -> Vec<Field> {
    vec![
        Field::new(
            "rotation_period",
            FieldType::DurationSeconds,
            "How long a version signs before the next one takes over.",
        ),
        Field::new(
            "grace_period",
            FieldType::DurationSeconds,
            "How long a version stays valid for verification and decryption after it stops signing. Must cover \
             max_token_ttl + the sidecar poll interval + the allowed clock skew.",
        ),
        Field::new(
            "prepublish",
            FieldType::DurationSeconds,
            "How long before its activation a new version is published to pools. Shorter than rotation_period.",
        ),
        Field::new(
            "max_token_ttl",
            FieldType::DurationSeconds,
            "The longest lifetime of anything signed or encrypted with the keyring.",
        ),
        Field::new(
            "commit_timeout",
            FieldType::DurationSeconds,
            "How long a published version waits for every live pool to hold it; after that it is committed anyway \
             and status raises an alert.",
        ),
        Field::new(
            "retention",
            FieldType::DurationSeconds,
            "How long an expired version's record (never its material) stays listed.",
        ),
    ]
}

/// `base` with the policy fields the request names; fields it leaves out
/// keep `base`'s values where they fit and are derived where they do not
/// ([`Policy::fit`]), with a warning for the answer per derived field.
pub(crate) fn fit_policy(base: &Policy, data: &FieldData, fleet: &FleetTimings) -> (Policy, Vec<String>) {
    let given = |name: &str| data.is_set(name).then(|| data.duration_secs(name)).flatten();
    let input = PolicyInput {
        rotation_period: given("rotation_period"),
        grace_period: given("grace_period"),
        prepublish: given("prepublish"),
        max_token_ttl: given("max_token_ttl"),
        commit_timeout: given("commit_timeout"),
        retention: given("retention"),
    };
    let (policy, derived) = Policy::fit(base, &input, fleet);
    (policy, derived.iter().map(ToString::to_string).collect())
}

/// Checks a policy [`fit_policy`] made; an error in a field that was
/// derived says so, since the caller never set it.
pub(crate) fn validate_fitted(policy: &Policy, fleet: &FleetTimings, derived: &[String]) -> Result<(), LogicalError> {
    policy.validate(fleet).map_err(|e| {
        let was_derived = derived.iter().any(|d| d.starts_with(&format!("{} was not given", e.field)));
        match was_derived {
            true => LogicalError::InvalidRequest(format!(
                "{e} ({} was not given, and no value of it fits the fields given)",
                e.field
            )),
            false => invalid(e),
        }
    })
}

/// The policy as response fields.
pub(crate) fn policy_json(policy: &Policy, out: &mut Map<String, Value>) {
    out.insert("rotation_period".into(), json!(policy.rotation_period));
    out.insert("grace_period".into(), json!(policy.grace_period));
    out.insert("prepublish".into(), json!(policy.prepublish));
    out.insert("max_token_ttl".into(), json!(policy.max_token_ttl));
    out.insert("commit_timeout".into(), json!(policy.commit_timeout));
    out.insert("retention".into(), json!(policy.retention));
}

/// Who sent a request, as history records it.
pub(crate) fn who(req: &Request) -> Actor<'_> {
    Actor { name: req.actor(), entity_id: &req.entity_id, accessor: &req.accessor }
}

/// RFC 3339 for a time in seconds, `null` for none (or one before 1970).
pub(crate) fn time_json(t: Option<i64>) -> Value {
    t.filter(|t| *t >= 0).map_or(Value::Null, |t| Value::String(lockstep_model::rfc3339(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_names_are_quoted_in_part() {
        let error = check_name("name", &"x@".repeat(5_000)).expect_err("invalid").to_string();
        assert!(error.len() < 400, "{error}");
        assert!(error.contains("… (10000 bytes)"), "{error}");
        assert_eq!(quoted("a@b"), "\"a@b\"");
    }
}
