use base64::Engine as _;

use super::*;

fn meta(number: u64, not_before: Option<i64>) -> VersionMeta {
    VersionMeta {
        number,
        kid: format!("jwt-{number}"),
        created_at: 0,
        planned_activation: not_before.unwrap_or(100),
        not_before,
        not_after: None,
        expires_at: None,
        emergency: false,
        revoked: None,
        destroyed: false,
    }
}

fn hmac_version(number: u64, not_before: Option<i64>) -> BundleVersion {
    BundleVersion { meta: meta(number, not_before), private_key: Some(SecretBytes::new(vec![7; 32])), public_key: None }
}

fn bundle(mode: PoolMode, generation: u64, versions: Vec<BundleVersion>) -> Bundle {
    let mut keyrings = BTreeMap::new();
    keyrings.insert(
        "session".to_string(),
        BundleKeyring {
            key_type: KeyType::HmacSha256,
            generation,
            versions,
            limits: None,
            revoked: None,
            revoked_versions: None,
        },
    );
    Bundle { format: FORMAT, pool: "web".into(), mode, revision: revision(mode, &keyrings), server_time: 0, keyrings }
}

#[test]
fn a_consistent_bundle_is_accepted() {
    let b = bundle(PoolMode::Sign, 3, vec![hmac_version(1, Some(0)), hmac_version(2, None)]);
    assert_eq!(b.validate("web", None), Ok(()));
    assert_eq!(b.validate("web", Some(&b)), Ok(()));
}

#[test]
fn revision_follows_content() {
    let a = bundle(PoolMode::Sign, 3, vec![hmac_version(1, Some(0))]);
    let b = bundle(PoolMode::Sign, 4, vec![hmac_version(1, Some(0))]);
    assert_ne!(a.revision, b.revision);
    let mut tampered = a.clone();
    if let Some(k) = tampered.keyrings.get_mut("session") {
        k.versions[0].meta.not_before = Some(5);
    }
    assert_eq!(tampered.validate("web", None), Err(BundleError::BadRevision(a.revision.clone())));
}

#[test]
fn wrong_pool_sizes_and_material_are_refused() {
    let b = bundle(PoolMode::Sign, 1, vec![hmac_version(1, Some(0))]);
    assert!(matches!(b.validate("api", None), Err(BundleError::WrongPool { .. })));
    let mut short = hmac_version(1, Some(0));
    short.private_key = Some(SecretBytes::new(vec![1; 16]));
    let error = bundle(PoolMode::Sign, 1, vec![short]).validate("web", None).expect_err("short key");
    assert!(error.to_string().contains("16-byte key"), "{error}");
    let mut missing = hmac_version(1, Some(0));
    missing.private_key = None;
    assert!(bundle(PoolMode::Sign, 1, vec![missing]).validate("web", None).is_err());
    let many = (1..=40).map(|n| hmac_version(n, Some(0))).collect();
    assert!(bundle(PoolMode::Sign, 1, many).validate("web", None).is_err());
    let unordered = vec![hmac_version(2, Some(0)), hmac_version(1, Some(0))];
    assert!(bundle(PoolMode::Sign, 1, unordered).validate("web", None).is_err());
}

#[test]
fn verify_only_pools_never_get_private_keys_of_asymmetric_types() {
    let public = base64::engine::general_purpose::STANDARD.encode([1u8; 44]);
    let mut keyrings = BTreeMap::new();
    let version = BundleVersion {
        meta: meta(1, Some(0)),
        private_key: Some(SecretBytes::new(vec![1; 83])),
        public_key: Some(public.clone()),
    };
    keyrings.insert(
        "jwt".to_string(),
        BundleKeyring {
            key_type: KeyType::Ed25519,
            generation: 1,
            versions: vec![version],
            limits: None,
            revoked: None,
            revoked_versions: None,
        },
    );
    let mut b = Bundle {
        format: FORMAT,
        pool: "web".into(),
        mode: PoolMode::Verify,
        revision: String::new(),
        server_time: 0,
        keyrings,
    };
    b.revision = revision(b.mode, &b.keyrings);
    let error = b.validate("web", None).expect_err("private key");
    assert!(error.to_string().contains("private key for a verify-only pool"), "{error}");
    if let Some(k) = b.keyrings.get_mut("jwt") {
        k.versions[0].private_key = None;
    }
    b.revision = revision(b.mode, &b.keyrings);
    assert_eq!(b.validate("web", None), Ok(()));
}

#[test]
fn rollbacks_are_refused() {
    let new = bundle(PoolMode::Sign, 5, vec![hmac_version(1, Some(0)), hmac_version(2, Some(50))]);
    let old = bundle(PoolMode::Sign, 4, vec![hmac_version(1, Some(0)), hmac_version(2, None)]);
    assert_eq!(new.validate("web", Some(&old)), Ok(()));
    let error = old.validate("web", Some(&new)).expect_err("older generation");
    assert!(error.to_string().contains("generation went back from 5 to 4"), "{error}");
    // Same generation but a committed version gone: refused.
    let dropped = bundle(PoolMode::Sign, 5, vec![hmac_version(2, Some(50))]);
    assert!(dropped.validate("web", Some(&new)).expect_err("vanished").to_string().contains("vanished"));
    // A committed activation instant never moves within a generation, nor
    // earlier in a newer one (but by an emergency, below). Later, or not
    // at all, in a newer generation is a coordinator restored from an
    // older copy: the bundle is taken, the activation held is kept.
    let moved = |generation: u64, not_before: Option<i64>| {
        bundle(PoolMode::Sign, generation, vec![hmac_version(1, Some(0)), hmac_version(2, not_before)])
    };
    for (next, case) in [(moved(5, Some(60)), "same generation"), (moved(6, Some(40)), "earlier")] {
        let error = next.validate("web", Some(&new)).expect_err(case);
        assert!(error.to_string().contains("version 2 changed its activation time"), "{case}: {error}");
    }
    assert_eq!(moved(6, Some(60)).validate("web", Some(&new)), Ok(()));
    assert_eq!(moved(6, None).validate("web", Some(&new)), Ok(()));
    assert!(moved(5, None).validate("web", Some(&new)).is_err(), "uncommitted within a generation");
    // Another key under a committed number is refused in any generation.
    let mut other = moved(6, Some(50));
    if let Some(k) = other.keyrings.get_mut("session") {
        k.versions[1].meta.kid = "another".into();
    }
    other.revision = revision(other.mode, &other.keyrings);
    assert!(other.validate("web", Some(&new)).expect_err("kid").to_string().contains("changed its kid"));
    // The newest version may go back only in a newer generation (revoked,
    // or forgotten by a restored coordinator).
    let back = |generation: u64| bundle(PoolMode::Sign, generation, vec![hmac_version(1, Some(0))]);
    let with_three =
        bundle(PoolMode::Sign, 5, vec![hmac_version(1, Some(0)), hmac_version(2, Some(50)), hmac_version(3, None)]);
    assert!(
        back(5).validate("web", Some(&with_three)).expect_err("back").to_string().contains("went back from 3 to 1")
    );
    assert_eq!(back(6).validate("web", Some(&with_three)), Ok(()));
    // A version past its expiry may leave without a new generation.
    let mut expiring = new.clone();
    if let Some(k) = expiring.keyrings.get_mut("session") {
        k.versions[0].meta.expires_at = Some(80);
    }
    expiring.revision = revision(expiring.mode, &expiring.keyrings);
    let mut gone = bundle(PoolMode::Sign, 5, vec![hmac_version(2, Some(50))]);
    gone.server_time = 79;
    assert!(gone.validate("web", Some(&expiring)).is_err(), "not expired yet");
    gone.server_time = 80;
    assert_eq!(gone.validate("web", Some(&expiring)), Ok(()));
    // Expiry with a new generation is fine.
    let expired = bundle(PoolMode::Sign, 6, vec![hmac_version(2, Some(50))]);
    assert_eq!(expired.validate("web", Some(&new)), Ok(()));
}

#[test]
fn an_emergency_brings_a_committed_activation_forward_and_nothing_else_moves_it() {
    let held = bundle(PoolMode::Sign, 5, vec![hmac_version(1, Some(0)), hmac_version(2, Some(50))]);
    let handover = |generation: u64, not_before: i64, emergency: bool| {
        let mut version = hmac_version(2, Some(not_before));
        version.meta.emergency = emergency;
        bundle(PoolMode::Sign, generation, vec![version])
    };
    // Version 1 revoked at 20: version 2 signs from 20, in a new generation.
    assert_eq!(handover(7, 20, true).validate("web", Some(&held)), Ok(()));
    let refused = [
        (handover(7, 20, false), "without the emergency mark", "version 2 changed its activation time"),
        (handover(5, 20, true), "in the same generation", "committed version 1 vanished"),
    ];
    for (next, case, message) in refused {
        let error = next.validate("web", Some(&held)).expect_err(case);
        assert!(error.to_string().contains(message), "{case}: {error}");
    }
    // In the same generation, with version 1 still there, the move is refused too.
    let mut same = held.clone();
    if let Some(keyring) = same.keyrings.get_mut("session") {
        keyring.versions[1] = handover(5, 20, true).keyrings["session"].versions[0].clone();
    }
    same.revision = revision(same.mode, &same.keyrings);
    let error = same.validate("web", Some(&held)).expect_err("same generation");
    assert!(error.to_string().contains("version 2 changed its activation time"), "{error}");
}

#[test]
fn debug_of_a_bundle_hides_material() {
    let b = bundle(PoolMode::Sign, 1, vec![hmac_version(1, Some(0))]);
    let text = format!("{b:?}");
    assert!(text.contains("SecretBytes(32 bytes …)"));
    assert!(!text.contains("7, 7, 7"));
}

#[test]
fn keyring_names_that_break_the_rule_are_refused() {
    for bad in ["../../etc/passwd", "a/b", "", "x y"] {
        let mut b = bundle(PoolMode::Sign, 1, vec![hmac_version(1, Some(0))]);
        let keyring = b.keyrings.remove("session").expect("keyring");
        b.keyrings.insert(bad.to_string(), keyring);
        b.revision = revision(b.mode, &b.keyrings);
        let error = b.validate("web", None).expect_err(bad);
        assert!(matches!(error, BundleError::BadName(_)), "{bad:?}: {error}");
    }
}

#[test]
fn a_keyring_made_again_may_change_type_one_that_goes_on_may_not() {
    let held = bundle(PoolMode::Sign, 4, vec![hmac_version(1, Some(0)), hmac_version(2, Some(50))]);
    let with_type = |generation: u64, numbers: &[u64]| {
        let mut b = bundle(PoolMode::Sign, generation, numbers.iter().map(|n| hmac_version(*n, Some(0))).collect());
        if let Some(k) = b.keyrings.get_mut("session") {
            k.key_type = KeyType::Aes256Gcm;
        }
        b.revision = revision(b.mode, &b.keyrings);
        b
    };
    // Deleted and made again: numbers go on from 2, the generation is higher.
    assert_eq!(with_type(6, &[3]).validate("web", Some(&held)), Ok(()));
    // Otherwise a type change is refused.
    for (next, case) in [(with_type(6, &[2, 3]), "old version kept"), (with_type(4, &[3]), "same generation")] {
        let error = next.validate("web", Some(&held)).expect_err(case);
        assert!(error.to_string().contains("type changed"), "{case}: {error}");
    }
}

#[test]
fn the_signing_bound_follows_the_last_sync_and_a_pending_version() {
    let limits = Limits { max_token_ttl: 300, prepublish: 600, grace_period: 1_200 };
    let mut keyring = bundle(PoolMode::Sign, 1, vec![]).keyrings.remove("session").expect("keyring");
    assert_eq!(keyring.sign_until(1_000, 5), None, "no limits from an older plugin, no bound");
    keyring.limits = Some(limits);
    // Nothing pending: a version published after the sync activates no
    // sooner than prepublish later.
    assert_eq!(keyring.sign_until(1_000, 5), Some(1_000 + 600 + 1_200 - 300 - 5));
    // A pending version planned sooner than that bounds it.
    let mut pending = crate::bundle::BundleVersion {
        meta: crate::version::VersionMeta {
            number: 2,
            kid: "k2".into(),
            created_at: 900,
            planned_activation: 1_100,
            not_before: None,
            not_after: None,
            expires_at: None,
            emergency: false,
            revoked: None,
            destroyed: false,
        },
        private_key: None,
        public_key: None,
    };
    keyring.versions.push(pending.clone());
    assert_eq!(keyring.sign_until(1_000, 5), Some(1_100 + 1_200 - 300 - 5));
    // Committed, it no longer bounds signing: the sidecar switches to it.
    pending.meta.not_before = Some(1_100);
    keyring.versions[0] = pending;
    assert_eq!(keyring.sign_until(1_000, 5), Some(1_000 + 1_495));
}

#[test]
fn a_newer_plugins_fields_do_not_change_the_revision() {
    let old = bundle(PoolMode::Sign, 3, vec![]);
    let mut text = serde_json::to_value(&old).expect("json");
    text["added"] = serde_json::json!(1);
    text["keyrings"]["session"]["added"] = serde_json::json!({"nested": true});
    let read: Bundle = serde_json::from_value(text).expect("extra fields are ignored");
    assert_eq!(read.validate("web", None), Ok(()));
    let mut newer = old.clone();
    newer.format = FORMAT + 1;
    assert_eq!(newer.validate("web", None), Err(BundleError::Format(FORMAT + 1)));
    assert!(BundleError::Format(FORMAT + 1).to_string().contains("upgrade the sidecar"));
}
