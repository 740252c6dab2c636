use proptest::prelude::*;

use super::*;
use crate::key_state;

const HOUR: u64 = 3_600;

fn policy() -> Policy {
    Policy {
        rotation_period: 24 * HOUR,
        grace_period: 4 * HOUR,
        prepublish: 2 * HOUR,
        max_token_ttl: HOUR,
        commit_timeout: HOUR,
        retention: 24 * HOUR,
    }
}

fn keyring() -> Keyring {
    Keyring::new("jwt".into(), KeyType::Ed25519, policy(), false)
}

/// Runs the scheduler once at `t`, acknowledging every publication.
fn tick(ring: &mut Keyring, t: UnixSeconds) {
    ring.expire(t);
    if let Some(planned) = ring.due_publication(t) {
        let n = ring.latest + 1;
        ring.publish(format!("jwt-{n}"), t, planned);
    }
    if ring.pending().is_some() {
        ring.commit(t, 30);
    }
}

#[test]
fn first_version_signs_at_once_and_the_next_is_published_ahead() {
    let mut ring = keyring();
    tick(&mut ring, 1_000);
    assert_eq!(key_state(&ring.versions, 1_000).signing, Some(1));
    // Not due until rotation_period - prepublish has passed.
    assert_eq!(ring.due_publication(1_000 + 21 * 3_600), None);
    let due = 1_000 + 22 * 3_600;
    assert_eq!(ring.due_publication(due), Some(1_000 + 24 * 3_600));
    let n = ring.publish("jwt-2".into(), due, 1_000 + 24 * 3_600);
    assert_eq!(n, 2);
    assert_eq!(key_state(&ring.versions, due).verifying, vec![1, 2], "published versions verify at once");
    ring.commit(due, 30);
    let v2 = ring.versions.iter().find(|v| v.number == 2).expect("v2");
    assert_eq!(v2.not_before, Some(1_000 + 24 * 3_600), "commit keeps the planned instant when it is later");
    let v1 = ring.versions.iter().find(|v| v.number == 1).expect("v1");
    assert_eq!(v1.not_after, v2.not_before);
    assert_eq!(v1.expires_at, Some(1_000 + 28 * 3_600));
}

#[test]
fn a_fleet_report_never_makes_a_rotation_due() {
    let mut ring = keyring();
    tick(&mut ring, 1_000);
    assert_eq!(ring.due_publication(2_000), None);
    // The fleet says it holds a version 4 this record never issued: the
    // alert is up, and the schedule stays as it was.
    ring.record_fleet_report(2_000, "web/w-1", "report".into(), 4);
    assert!(ring.fleet_ahead());
    assert_eq!(ring.due_publication(2_000), None, "a report decides nothing");
    let due = ring.current().and_then(|v| v.not_before).expect("signing") + 24 * 3_600 - 2 * 3_600;
    assert_eq!(ring.due_publication(due - 1), None);
    assert!(ring.due_publication(due).is_some(), "the rotation comes when it was planned");
    // A version numbered past the report resolves it.
    ring.continue_numbering_past(4);
    let n = ring.publish("jwt-5".into(), due, due + 7_200);
    ring.record(due, "publish", Cause::Scheduled, "scheduler", String::new(), vec![n]);
    assert_eq!(n, 5);
    assert!(!ring.fleet_ahead());
    // A revocation that brings no version past the fleet's resolves nothing.
    ring.record_fleet_report(due + 300, "web/w-1", "report".into(), 9);
    ring.record(due + 400, "revoke", Cause::Emergency, "operator", String::new(), vec![4, 5]);
    assert!(ring.fleet_ahead(), "5 is not past the fleet's 9");
    ring.record(due + 500, "revoke", Cause::Emergency, "operator", String::new(), vec![5, 10]);
    assert!(!ring.fleet_ahead(), "the emergency version 10 is");
}

#[test]
fn a_fleet_past_the_pending_version_supersedes_it() {
    let mut ring = keyring();
    tick(&mut ring, 1_000);
    // A copy taken with version 2 published, restored after the fleet went
    // on to version 3.
    ring.publish("jwt-2".into(), 2_000, 2_000 + 7_200);
    ring.continue_past(3, 7);
    let generation = ring.generation;
    assert_eq!(ring.supersede_pending(3, 3_000, 2_500), Some(2));
    assert!(ring.generation > generation, "sidecars must take the change");
    assert_eq!(ring.pending(), None);
    let v2 = ring.versions.iter().find(|v| v.number == 2).expect("v2");
    assert!(v2.is_superseded() && !v2.is_pending());
    let until = 3_000 + 2 * 3_600 + 3_600 + 4 * 3_600;
    assert_eq!(v2.expires_at, Some(until), "prepublish + commit timeout + grace");
    assert_eq!(crate::version::version_state(v2, Some(1), 3_000), crate::version::VersionState::Grace);
    assert_eq!(ring.supersede_pending(3, 3_001, 2_500), None, "nothing left to supersede");
    let state = key_state(&ring.versions, 3_000 + 3 * 3_600);
    assert_eq!((state.signing, state.verifying.clone()), (Some(1), vec![1, 2]), "2 never signs");
    assert_eq!(key_state(&ring.versions, until).verifying, vec![1]);
    // Nothing waits any more: a manual rotation may go ahead, and the
    // signer's revocation asks for an emergency version, not 2.
    assert_eq!(ring.upcoming(3_000), None);
    assert!(ring.check_rotation(None, 3_000).is_ok());
    let mut revoked = ring.clone();
    assert_eq!(revoked.revoke(1, 3_000, "test".into()), Ok(RevokeOutcome::NeedsNewVersion));
    let n = ring.publish("jwt-4".into(), 3_000, 3_000 + 7_200);
    assert_eq!(n, 4, "past the fleet's 3");
    assert_eq!(ring.commit(3_100, 30), Some(4), "the new version is the pending one");
}

#[test]
fn only_a_pending_version_at_or_below_the_fleets_is_superseded() {
    let mut ring = keyring();
    tick(&mut ring, 1_000);
    ring.publish("jwt-2".into(), 2_000, 2_000 + 7_200);
    assert_eq!(ring.supersede_pending(1, 3_000, 2_500), None, "the fleet is behind it");
    // The fleet holds another key under number 2: ours never signed.
    let mut same = ring.clone();
    assert_eq!(same.supersede_pending(2, 3_000, 1_500), Some(2));
    let v2 = same.versions.iter().find(|v| v.number == 2).expect("v2");
    assert_eq!(v2.expires_at, Some(3_000), "it leaves at once");
    assert_eq!(key_state(&same.versions, 3_000).verifying, vec![1]);
    assert_eq!(same.expire(3_000), vec![2]);
    // Published by this coordinator since the restore (at 1 500), under a
    // number the fleet may hold as another key: it leaves at once too.
    assert_eq!(ring.supersede_pending(5, 3_000, 1_500), Some(2));
    assert_eq!(ring.versions.iter().find(|v| v.number == 2).and_then(|v| v.expires_at), Some(3_000));
}

#[test]
fn a_shortened_prepublish_or_grace_applies_only_once_no_cut_off_sidecar_relies_on_the_old_one() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    // Shortened at 1 000 from 2 h / 4 h to 10 min / 1 h.
    let short = Policy { prepublish: 600, grace_period: HOUR, ..policy() };
    ring.set_policy(short, 1_000);
    let until = 1_000 + 2 * 3_600 + 4 * 3_600;
    assert_eq!((ring.prepublish(1_000), ring.grace(1_000)), (2 * HOUR, 4 * HOUR));
    assert_eq!((ring.prepublish(until), ring.grace(until)), (600, HOUR), "then the new ones");
    // A rotation now is published 2 h ahead, and the signer it ends
    // verifies 4 h after: what a pool cut off since before 1 000 assumes.
    assert_eq!(ring.prepublish(1_500), 2 * HOUR, "a rotation at 1 500 is planned 2 h ahead, not 10 min");
    ring.publish("jwt-2".into(), 2_000, 2_000 + 2 * 3_600);
    ring.commit(2_000, 30);
    let v1 = ring.versions.iter().find(|v| v.number == 1).expect("v1");
    assert_eq!(v1.expires_at, Some(2_000 + 2 * 3_600 + 4 * 3_600));
    // Lengthening needs nothing honoured; shortening again keeps the
    // longest values and the latest end.
    ring.set_policy(policy(), until + 1);
    assert_eq!(ring.prepublish(until + 1), 2 * HOUR);
    ring.set_policy(short, until + 2);
    let honoured = ring.honoured.expect("honoured");
    assert_eq!(
        (honoured.prepublish, honoured.grace_period, honoured.until),
        (2 * HOUR, 4 * HOUR, until + 2 + 6 * 3_600)
    );
}

#[test]
fn downtime_gives_one_rotation_not_a_burst() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    // Ten periods pass without a periodic call.
    let later = 10 * 24 * 3_600;
    tick(&mut ring, later);
    assert_eq!(ring.latest, 2, "one new version, not ten");
    let v2 = ring.versions.iter().find(|v| v.number == 2).expect("v2");
    assert_eq!(v2.not_before, Some(later + 2 * 3_600), "planned from now, still prepublished");
    tick(&mut ring, later + 60);
    assert_eq!(ring.latest, 2);
}

#[test]
fn commit_waits_for_the_margin_when_the_plan_has_passed() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    ring.publish("jwt-2".into(), 100, 200);
    ring.commit(500, 30);
    assert_eq!(ring.versions[1].not_before, Some(530));
}

#[test]
fn cas_and_pending_rules_for_manual_rotation() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    assert_eq!(ring.check_rotation(Some(1), 5), Ok(()));
    assert_eq!(ring.check_rotation(None, 5), Ok(()));
    assert_eq!(ring.check_rotation(Some(7), 5), Err(RotateError::Conflict { expected: 7, latest: 1 }));
    ring.publish("jwt-2".into(), 10, 7_210);
    assert!(matches!(ring.check_rotation(Some(2), 10), Err(RotateError::AlreadyPending { pending: 2, .. })));
    // Committed but not active yet still counts as waiting.
    ring.commit(10, 30);
    assert!(matches!(ring.check_rotation(Some(2), 20), Err(RotateError::AlreadyPending { pending: 2, .. })));
    assert_eq!(ring.check_rotation(Some(2), 7_210), Ok(()));
    ring.remember("req-1".into(), 2, 10);
    assert_eq!(ring.idempotent_result("req-1"), Some(2));
    assert_eq!(ring.idempotent_result("req-2"), None);
}

#[test]
fn revoking_the_signer_hands_over_to_the_published_version_at_once() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    ring.publish("jwt-2".into(), 100, 7_300);
    let outcome = ring.revoke(1, 200, "key leaked in a log".into());
    assert_eq!(outcome, Ok(RevokeOutcome::Replaced(2)));
    let state = key_state(&ring.versions, 200);
    assert_eq!(state, crate::KeyState { signing: Some(2), verifying: vec![2], expired: vec![1] });
    assert!(ring.versions[1].emergency);
    assert_eq!(ring.revoke(1, 201, "again".into()), Err(RevokeError::AlreadyRevoked(1)));
    assert_eq!(ring.revoke(9, 201, "none".into()), Err(RevokeError::NoSuchVersion(9)));
}

#[test]
fn revoking_the_signer_hands_over_to_a_committed_future_version_too() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    ring.publish("jwt-2".into(), 100, 7_300);
    ring.commit(100, 30);
    assert_eq!(ring.revoke(1, 200, "leaked".into()), Ok(RevokeOutcome::Replaced(2)));
    assert_eq!(key_state(&ring.versions, 200).signing, Some(2));
    assert_eq!(ring.versions[1].not_before, Some(200));
}

#[test]
fn revoking_a_committed_version_before_it_activates_keeps_the_signer_signing() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    ring.publish("jwt-2".into(), 100, 7_300);
    ring.commit(100, 30);
    assert_eq!(ring.versions[0].not_after, Some(7_300));
    assert_eq!(ring.revoke(2, 200, "leaked before use".into()), Ok(RevokeOutcome::Revoked));
    // Version 1 signs and verifies past the cancelled handover, with no gap.
    let grace_end = 7_300 + 4 * 3_600;
    for t in [200, 7_299, 7_300, grace_end, grace_end + 1] {
        let state = key_state(&ring.versions, t);
        assert_eq!(state.signing, Some(1), "at {t}");
        assert_eq!(state.verifying, vec![1], "at {t}");
    }
    // The next rotation follows the schedule, as if version 2 never was.
    tick(&mut ring, 300);
    assert_eq!(ring.latest, 2, "nothing due yet");
    tick(&mut ring, 22 * 3_600);
    assert_eq!(ring.latest, 3);
    assert_eq!(key_state(&ring.versions, 24 * 3_600 - 1).signing, Some(1));
    assert_eq!(key_state(&ring.versions, 24 * 3_600).signing, Some(3));
}

#[test]
fn manual_rotations_stop_at_what_a_bundle_can_carry() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    let mut t = 10;
    // Rotations every few seconds keep every version in its 4 h grace.
    while ring.check_rotation(None, t).is_ok() {
        let n = ring.latest + 1;
        ring.publish(format!("jwt-{n}"), t, t + 1);
        ring.commit(t, 1);
        t += 3;
    }
    let most = crate::bundle::MAX_VERSIONS;
    assert_eq!(ring.check_rotation(None, t), Err(RotateError::TooManyLive { live: most - 1 }), "at {}", ring.latest);
    // The room kept is the scheduler's: its next version makes 32, and
    // then it waits rather than publish a 33rd, even when one is due.
    let mut crowded = ring.clone();
    crowded.publish("scheduled".into(), t, t + 1);
    crowded.commit(t, 1);
    for v in &mut crowded.versions {
        v.expires_at = v.expires_at.map(|e| e + 30 * 24 * 3_600);
    }
    let signer_start = crowded.current().and_then(|v| v.not_before).unwrap_or_default();
    assert_eq!(key_state(&crowded.versions, t + 2).verifying.len(), most);
    assert_eq!(crowded.due_publication(signer_start + 23 * 3_600), None, "no 33rd version while 32 verify");
    assert!(ring.due_publication(signer_start + 23 * 3_600).is_some(), "due, without the crowd");
    // Once the oldest leave their grace period, rotation is possible again.
    assert_eq!(ring.check_rotation(None, t + 4 * 3_600 + 10), Ok(()));
}

#[test]
fn records_of_destroyed_versions_are_bounded_whatever_the_retention() {
    let mut ring = keyring();
    ring.policy.retention = 10 * 365 * 24 * 3_600;
    for day in 0..200 {
        tick(&mut ring, day * 24 * 3_600);
    }
    let destroyed = ring.versions.iter().filter(|v| v.destroyed).count();
    assert_eq!(destroyed, RETAINED_LIMIT, "{} versions issued", ring.latest);
    assert!(ring.latest > 150);
    // The newest records are the ones kept.
    let oldest_kept = ring.versions.iter().map(|v| v.number).min().unwrap_or_default();
    assert!(oldest_kept > ring.latest - RETAINED_LIMIT as u64 - 4, "oldest kept: {oldest_kept}");
}

#[test]
fn revoking_the_only_signer_asks_for_an_emergency_version() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    assert_eq!(ring.revoke(1, 50, "compromised".into()), Ok(RevokeOutcome::NeedsNewVersion));
    assert_eq!(key_state(&ring.versions, 50).signing, None);
    let n = ring.emergency_version("jwt-2".into(), 50);
    assert_eq!(key_state(&ring.versions, 50).signing, Some(n));
}

#[test]
fn expiry_destroys_material_once_and_forgets_records_after_retention() {
    let mut ring = keyring();
    tick(&mut ring, 0);
    ring.publish("jwt-2".into(), 10, 7_210);
    ring.commit(10, 30);
    let expiry = 7_210 + 4 * 3_600;
    assert!(ring.expire(expiry - 1).is_empty());
    let generation = ring.generation;
    assert_eq!(ring.expire(expiry), vec![1]);
    assert!(ring.generation > generation, "pools must see the expiry");
    assert!(ring.expire(expiry + 1).is_empty(), "destroyed once");
    assert_eq!(ring.versions.len(), 2, "the record stays during retention");
    ring.expire(expiry + 24 * 3_600);
    assert_eq!(ring.versions.iter().map(|v| v.number).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn history_and_idempotency_are_bounded() {
    let mut ring = keyring();
    for i in 0..(HISTORY_LIMIT as i64 + 10) {
        ring.record(i, "policy", Cause::Manual, "alice", String::new(), vec![]);
        ring.remember(format!("k{i}"), 1, i);
    }
    // Kept whole until stored, then trimmed to the mount's setting.
    assert_eq!(ring.history.len(), HISTORY_LIMIT + 10);
    assert!(ring.history_beyond(HISTORY_LIMIT) && !ring.history_beyond(HISTORY_LIMIT + 10));
    ring.keep_history(HISTORY_LIMIT);
    assert_eq!(ring.history.len(), HISTORY_LIMIT);
    assert_eq!(ring.history.front().map(|e| e.seq), Some(11));
    // Whatever the setting, never more than the largest it accepts.
    for i in 0..HISTORY_MAX as i64 {
        ring.record(i, "policy", Cause::Manual, "alice", String::new(), vec![]);
    }
    assert_eq!(ring.history.len(), HISTORY_MAX);
    assert_eq!(ring.idempotency.len(), IDEMPOTENCY_LIMIT);
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (100u64..20_000, 1u64..100, 1u64..5_000, 1u64..5_000).prop_flat_map(|(rotation, ttl, extra_grace, retention)| {
        (1..rotation, 1..=rotation).prop_map(move |(prepublish, commit_timeout)| Policy {
            rotation_period: rotation,
            grace_period: ttl + 60 + extra_grace,
            prepublish,
            max_token_ttl: ttl,
            commit_timeout,
            retention,
        })
    })
}

#[derive(Debug, Clone)]
enum Step {
    /// Time passes; the scheduler runs; pools acknowledge or not.
    Tick { dt: u64, acked: bool },
    /// A live version (the `pick`-th of those verifying) is revoked.
    Revoke { dt: u64, pick: usize },
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            20 => (1u64..40_000, any::<bool>()).prop_map(|(dt, acked)| Step::Tick { dt, acked }),
            1 => (1u64..1_000, 0usize..4).prop_map(|(dt, pick)| Step::Revoke { dt, pick }),
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// For any policy and any sequence of scheduler runs, acknowledgements
    /// and revocations of any live version: exactly one version signs once
    /// the first is active; a version signs only after being published for
    /// `prepublish` (unless it is the first or an emergency); verification
    /// sets of consecutive instants overlap, across the scheduler's changes
    /// too; nothing expired or revoked is ever returned; and a token signed
    /// at any instant still verifies `max_token_ttl` later, whatever the
    /// scheduler did meanwhile, unless its version was revoked.
    #[test]
    fn key_state_invariants(policy in arb_policy(), steps in arb_steps()) {
        let mut ring = Keyring::new("k".into(), KeyType::HmacSha256, policy, false);
        let mut t: i64 = 1_000_000;
        let mut published_at: i64 = t;
        let ttl = i64::try_from(ring.policy.max_token_ttl).unwrap_or(0);
        // (version, signed at) of tokens sampled along the way.
        let mut tokens: Vec<(u64, i64)> = Vec::new();
        tick(&mut ring, t);
        for step in steps {
            match step {
                Step::Tick { dt, acked } => {
                    let before = t;
                    t += i64::try_from(dt).unwrap_or(1);
                    tokens.extend(check_interval(&ring, before, t)?);
                    let unchanged = key_state(&ring.versions, t);
                    ring.expire(t);
                    if let Some(planned) = ring.due_publication(t) {
                        let n = ring.latest + 1;
                        ring.publish(format!("k-{n}"), t, planned);
                        published_at = t;
                    }
                    let timed_out = t - published_at >= i64::try_from(ring.policy.commit_timeout).unwrap_or(0);
                    if acked || timed_out {
                        ring.commit(t, 30);
                    }
                    let changed = key_state(&ring.versions, t);
                    prop_assert!(
                        changed.verifying.iter().any(|n| unchanged.verifying.contains(n)),
                        "the scheduler's change at {} left no overlap: {:?} then {:?}", t, unchanged.verifying, changed.verifying
                    );
                    prop_assert_eq!(changed.signing, unchanged.signing, "the signer changed by a tick at {}", t);
                }
                Step::Revoke { dt, pick } => {
                    t += i64::try_from(dt).unwrap_or(1);
                    ring.expire(t);
                    let state = key_state(&ring.versions, t);
                    let live: Vec<u64> = ring.versions.iter().filter(|v| v.verifies_at(t)).map(|v| v.number).collect();
                    let victim = live[pick % live.len()];
                    if ring.revoke(victim, t, "test".into()) == Ok(RevokeOutcome::NeedsNewVersion) {
                        prop_assert_eq!(state.signing, Some(victim));
                        let n = ring.latest + 1;
                        ring.emergency_version(format!("k-{n}"), t);
                    }
                }
            }
            prop_assert!(ring.versions.iter().filter(|v| !v.is_committed() && v.revoked.is_none()).count() <= 1);
            let state = key_state(&ring.versions, t);
            prop_assert!(state.signing.is_some(), "a signing version exists at {} in {:?}", t, ring.versions);
            // Tokens that expired before this step cannot be affected by it.
            tokens.retain(|(_, signed_at)| signed_at + ttl >= t);
            for (version, signed_at) in &tokens {
                let Some(meta) = ring.versions.iter().find(|v| v.number == *version) else {
                    prop_assert!(false, "the record of v{} signed at {} is gone while its tokens live", version, signed_at);
                    continue;
                };
                if meta.revoked.is_none() {
                    let exp = signed_at + ttl;
                    prop_assert!(meta.verifies_at(exp), "a token of v{} signed at {} fails before {}: {:?}", version, signed_at, exp, meta);
                }
            }
        }
    }
}

/// Checks instants in `(from, to]` with the keyring as it stood; returns a
/// token (version, instant) signed at each.
fn check_interval(ring: &Keyring, from: i64, to: i64) -> Result<Vec<(u64, i64)>, TestCaseError> {
    let mut tokens = Vec::new();
    let step = ((to - from) / 16).max(1);
    let mut previous = key_state(&ring.versions, from);
    let mut t = from;
    while t < to {
        t = (t + step).min(to);
        let state = key_state(&ring.versions, t);
        prop_assert!(state.signing.is_some(), "nothing signs at {}", t);
        let signer = state.signing.unwrap_or_default();
        prop_assert!(state.verifying.contains(&signer));
        let meta = ring.versions.iter().find(|v| v.number == signer).ok_or_else(|| TestCaseError::fail("signer"))?;
        if signer > 1 && !meta.emergency {
            let lead = meta.not_before.unwrap_or(t) - meta.created_at;
            prop_assert!(
                lead >= i64::try_from(ring.policy.prepublish).unwrap_or(0),
                "v{} signed after {}s",
                signer,
                lead
            );
        }
        for n in &state.verifying {
            let v = ring.versions.iter().find(|v| v.number == *n).ok_or_else(|| TestCaseError::fail("verifier"))?;
            prop_assert!(v.expires_at.is_none_or(|e| t < e) && v.revoked.is_none(), "expired v{} returned", n);
        }
        let overlap = state.verifying.iter().any(|n| previous.verifying.contains(n));
        prop_assert!(overlap, "no overlap between {:?} and {:?} at {}", previous.verifying, state.verifying, t);
        tokens.push((signer, t));
        previous = state;
    }
    Ok(tokens)
}

#[test]
fn numbering_continues_past_a_version_the_fleet_holds() {
    let mut ring = keyring();
    ring.publish("k1".into(), 0, 0);
    let generation = ring.generation;
    assert!(!ring.continue_past(1, 0), "a number this keyring issued changes nothing");
    assert!(ring.continue_past(3, generation + 5));
    assert_eq!((ring.latest, ring.generation), (3, generation + 6), "past the fleet's generation too");
    assert!(ring.continue_past(2, generation + 9));
    assert_eq!((ring.latest, ring.generation), (3, generation + 10));
    assert_eq!(ring.publish("k4".into(), 10, 20), 4, "the next version is past the fleet's");
}

#[test]
fn fleet_reports_never_push_other_entries_out_of_the_history() {
    let mut ring = keyring();
    ring.record(0, "create", Cause::Manual, "alice", "type ed25519".into(), vec![]);
    ring.record(1, "revoke", Cause::Emergency, "alice", "leaked in a log".into(), vec![1]);
    // A thousand reports: from one claimant with ever higher numbers, then
    // from forty claimants.
    for i in 0..1_000u64 {
        ring.record_fleet_report(10 + i as i64, "audit/a-1", format!("report {i}"), 2 + i);
    }
    for c in 0..40u64 {
        ring.record_fleet_report(2_000 + c as i64, &format!("audit/x-{c}"), "report".into(), 5);
    }
    // Other pools' reports, then forty more from the audit pool.
    for pool in ["web", "api", "batch", "edge"] {
        ring.record_fleet_report(3_000, &format!("{pool}/a-1"), "report".into(), 5);
    }
    for c in 40..80u64 {
        ring.record_fleet_report(4_000 + c as i64, &format!("audit/x-{c}"), "report".into(), 5);
    }
    let actions: Vec<&str> = ring.history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(&actions[..2], ["create", "revoke"], "{actions:?}");
    // One pool keeps its newest four claimants and pushes no other pool's out.
    let claimants: Vec<&str> =
        ring.history.iter().filter_map(|e| e.reports.as_ref()).map(|r| r.claimant.as_str()).collect();
    assert_eq!(
        claimants,
        ["web/a-1", "api/a-1", "batch/a-1", "edge/a-1", "audit/x-76", "audit/x-77", "audit/x-78", "audit/x-79"]
    );
    // The busy claimant kept only its highest numbers.
    assert!(ring.history.len() <= 2 + FLEET_REPORTS_KEPT);
}

#[test]
fn a_full_history_drops_fleet_reports_before_anything_else() {
    let mut ring = keyring();
    ring.record(0, "create", Cause::Manual, "alice", "type ed25519".into(), vec![]);
    for n in 1..HISTORY_LIMIT as u64 {
        ring.record(n as i64, "publish", Cause::Scheduled, "scheduler", "next".into(), vec![n]);
    }
    assert_eq!(ring.history.len(), HISTORY_LIMIT);
    ring.record_fleet_report(1_000, "web/w-1", "report".into(), 9_999);
    ring.record_fleet_report(1_001, "web/w-1", "report".into(), 9_998);
    ring.keep_history(HISTORY_LIMIT);
    // The history was full: the report is kept beside it, pushing nothing
    // out, and a second one from the same claimant replaces the first.
    assert_eq!(ring.history.len(), HISTORY_LIMIT + 1);
    assert_eq!(ring.history.front().map(|e| e.action.as_str()), Some("create"));
    assert_eq!(ring.history.iter().filter(|e| e.action == FLEET_AHEAD).count(), 1);
    assert_eq!(ring.history.back().map(|e| e.versions.clone()), Some(vec![9_998, 9_999]));
    // The next decision drops the oldest decision, not the report.
    ring.record(2_000, "publish", Cause::Scheduled, "scheduler", "next".into(), vec![300]);
    ring.keep_history(HISTORY_LIMIT);
    assert_eq!(ring.history.front().map(|e| e.action.as_str()), Some("publish"));
    assert_eq!(ring.history.iter().filter(|e| e.action == FLEET_AHEAD).count(), 1);
}

#[test]
fn one_claimants_reports_are_one_entry_with_their_count_and_highest_number() {
    let mut ring = keyring();
    ring.record_fleet_report(10, "web/web-1", "first".into(), 7);
    ring.record(11, "publish", Cause::Scheduled, "scheduler", "next".into(), vec![8]);
    ring.record_fleet_report(20, "web/web-1", "second".into(), 5);
    let last = ring.history.back().expect("an entry");
    assert_eq!((last.action.as_str(), last.detail.as_str(), &last.versions), ("fleet-ahead", "second", &vec![5, 7]));
    let reports = last.reports.clone().expect("coalesced");
    assert_eq!((reports.claimant.as_str(), reports.count, reports.first_at), ("web/web-1", 2, 10));
    // Moved past the publish: it is the newest report the scheduler sees.
    assert_eq!(ring.history.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["publish", "fleet-ahead"]);
}
