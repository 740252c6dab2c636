//! The fault-injection fleet test, short form (`make test`): a three-node
//! raft cluster, three pools of two release sidecars, continuous signing
//! and verification, and every kind of fault once on a fixed seed
//! (`tests/src/torture.rs`); the independent checker
//! (`tests/src/fleet_check.rs`) must find no violation. `make torture` runs
//! longer plans on random seeds (docs/fleet-testing.md).

use lockstep_tests::fleet_check::Event;
use lockstep_tests::sidecar::release_sidecar_binary;
use lockstep_tests::torture::{self, Options, Plan};
use lockstep_tests::{required_binary, workspace_root};

/// The seed of the short form; a failure prints it with the schedule.
const SEED: u64 = 20_261_201;

#[test]
fn the_fleet_never_disagrees_through_every_kind_of_fault() {
    // Kept after the run: the history, the report and the timeline.
    let out = workspace_root().join("target/torture/short");
    let options = Options {
        plugin: required_binary(
            "LOCKSTEP_RELEASE_PLUGIN_BIN",
            "release/vault-plugin-secrets-lockstep",
            "cargo build --release -p lockstep-plugin",
        ),
        sidecar: release_sidecar_binary(),
        skip_gate: false,
        out: out.clone(),
        standby_reads: false,
        skip_heartbeats: false,
    };
    let plan = Plan::short(SEED);
    let outcome = torture::run(&plan, &options);
    let report = outcome.report.render();
    println!("{report}\nnotes:\n  {}", outcome.notes.join("\n  "));
    let context = format!("seed {SEED}\n{}\n{report}\nfinal state:\n{}", plan.describe(), outcome.final_state);
    assert!(outcome.report.violations.is_empty(), "the checker found violations:\n{context}");
    assert!(outcome.leaks.is_empty(), "secrets in logs: {:?}", outcome.leaks);
    assert!(outcome.unexpected.is_empty(), "faults that did not go as they must:\n{context}\n{:?}", outcome.unexpected);
    assert_eq!(outcome.converged, Ok(()), "the fleet did not converge at the end:\n{context}");
    // The operator's procedure after the restore: the reports are accepted
    // by an explicit decision, which the server took.
    let renumbered = outcome.notes.iter().filter(|n| n.starts_with("renumber ") && n.ends_with(": 200")).count();
    assert!(renumbered >= 1, "no renumber after the restore: {:?}", outcome.notes);
    for kind in [
        "snapshot_save",
        "snapshot_restore",
        "manual_rotation",
        "racing_rotations",
        "race_scheduled",
        "kill_active",
        "stop_follower",
        "revoke",
        "cluster_down",
        "freeze_sidecar",
    ] {
        assert!(outcome.executed.get(kind).is_some_and(|n| *n > 0), "{kind} never ran: {:?}", outcome.executed);
    }
    // Enough happened for the checks to mean something.
    let r = &outcome.report;
    assert!(r.signed > 300 && r.accepted > 2_000 && r.held_checks > 1_000, "too little load:\n{context}");
    assert!(r.served_while_cluster_down > 50, "nothing was asked while the cluster was down:\n{context}");
    assert!(r.excused_revoked > 0, "no token of the revoked version was shown around:\n{context}");
    // After the restore the coordinator issued past every version the fleet
    // held before it (the checker saw no number name two keys), and the
    // fleet signs with that newer version.
    let restored = outcome.events.iter().find_map(|e| match e {
        Event::Fault { t, kind, phase, .. } if kind == "snapshot_restore" && phase == "start" => Some(*t),
        _ => None,
    });
    let restored = restored.expect("the restore ran");
    for keyring in ["jwt", "hooks"] {
        let versions = |before: bool| {
            outcome.events.iter().filter_map(move |e| match e {
                Event::View { t, keyring: k, signing, verifying, .. } if k == keyring && (*t < restored) == before => {
                    verifying.iter().find(|h| Some(&h.kid) == signing.as_ref()).map(|h| h.version)
                }
                _ => None,
            })
        };
        let (held, last) = (versions(true).max().unwrap_or(0), versions(false).next_back().unwrap_or(0));
        assert!(held >= 3, "{keyring}: only {held} versions before the restore");
        assert!(
            last > held,
            "{keyring}: signing {last} at the end, not past the {held} held before the restore\n{context}"
        );
    }
}
