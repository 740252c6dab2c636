//! The one rule for names of keyrings, pools and instances: the coordinator
//! refuses other names, a sidecar's configuration check refuses a pool or
//! instance that breaks it, and a sidecar refuses a bundle that carries
//! one (a keyring name becomes a file name in its sink and a metric label).
//! Every name becomes part of a storage key, so the rule keeps to what
//! every supported server's storage accepts: Vault refuses keys with `..`
//! in them.

/// Longest name.
pub const MAX_NAME_LEN: usize = 64;

/// What a valid name is, for error messages.
pub const NAME_RULE: &str =
    "1 to 64 of a-z, A-Z, 0-9, '_', '-', '.', starting and ending with a letter, digit or '_', without \"..\"";

/// Whether `name` follows [`NAME_RULE`].
pub fn is_valid(name: &str) -> bool {
    let end_ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && name.starts_with(end_ok)
        && name.ends_with(end_ok)
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["jwt", "a", "_x_", "session-jwt.v2", &"k".repeat(64)] {
            assert!(is_valid(good), "{good:?}");
        }
        for bad in ["", "-jwt", "jwt.", "a/b", "../etc", "a..b", "a b", "a@b", "é", &"k".repeat(65)] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }
}
