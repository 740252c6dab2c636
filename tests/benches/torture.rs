//! The fault-injection fleet run, long form: `make torture` (a random seed,
//! printed) or `make torture TORTURE_ARGS="--seed 7 --minutes 5"`;
//! `--broken` runs the test build of the plugin with the gate switched off,
//! which the checker must catch; `--minutes 0` is the short plan;
//! `--standby-reads` runs OpenBao's standbys serving reads, each sidecar
//! polling one node first, and pauses and kills standbys too;
//! `--broken-liveness` does that with the test build whose standbys never
//! ask for heartbeats, which the checker must catch. Writes
//! target/torture/<seed>[-broken]/{history.jsonl,report.txt,timeline.svg}.
//! `--replot <dir>` draws `<dir>/timeline.svg` again from `<dir>/history.jsonl`
//! and checks that history again, without a run.

use lockstep_tests::torture::{self, Options, Plan};
use lockstep_tests::{required_binary, workspace_root};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    if let Some(dir) = value("--replot") {
        std::process::exit(replot(std::path::Path::new(&dir)));
    }
    let seed = value("--seed").and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..1_000_000));
    let minutes: u64 = value("--minutes").and_then(|m| m.parse().ok()).unwrap_or(4);
    let standby_reads = args.iter().any(|a| a == "--standby-reads");
    let skip_heartbeats = args.iter().any(|a| a == "--broken-liveness");
    let broken = args.iter().any(|a| a == "--broken") || skip_heartbeats;
    let plugin = if broken {
        required_binary("LOCKSTEP_PLUGIN_BIN", "test-plugin/vault-plugin-secrets-lockstep", "make test-plugin")
    } else {
        required_binary(
            "LOCKSTEP_RELEASE_PLUGIN_BIN",
            "release/vault-plugin-secrets-lockstep",
            "cargo build --release -p lockstep-plugin",
        )
    };
    let sidecar = required_binary(
        "LOCKSTEP_SIDECAR_RELEASE_BIN",
        "release/lockstep-sidecar",
        "cargo build --release -p lockstep-sidecar",
    );
    let suffix = match (standby_reads, skip_heartbeats, broken) {
        (_, true, _) => "-reads-broken-liveness",
        (true, _, true) => "-reads-broken",
        (true, _, false) => "-reads",
        (false, _, true) => "-broken",
        (false, _, false) => "",
    };
    let out = workspace_root().join("target/torture").join(format!("{seed}{suffix}"));
    let plan =
        if minutes == 0 { Plan::short(seed) } else { Plan::long_with(seed, minutes, standby_reads || skip_heartbeats) };
    let options = Options {
        plugin,
        sidecar,
        skip_gate: broken && !skip_heartbeats,
        out: out.clone(),
        standby_reads: standby_reads || skip_heartbeats,
        skip_heartbeats,
    };
    let outcome = torture::run(&plan, &options);
    println!("\n{}", outcome.report.render().lines().take(60).collect::<Vec<_>>().join("\n"));
    println!("faults run: {:?}", outcome.executed);
    println!("notes:\n  {}", outcome.notes.join("\n  "));
    println!("secrets in logs: {:?}; converged at the end: {:?}", outcome.leaks, outcome.converged);
    println!("faults that did not go as they must: {:?}", outcome.unexpected);
    println!("seed {seed}; history, report and timeline in {}", out.display());
    let failed = !outcome.report.violations.is_empty()
        || !outcome.leaks.is_empty()
        || outcome.converged.is_err()
        || !outcome.unexpected.is_empty();
    if failed != broken {
        std::process::exit(1);
    }
}

/// Redraws a run's timeline from its history and checks it again; the exit
/// code is 1 when it has a violation, 2 when the history cannot be read or
/// the picture written.
fn replot(dir: &std::path::Path) -> i32 {
    let text = match std::fs::read_to_string(dir.join("history.jsonl")) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.join("history.jsonl").display());
            return 2;
        }
    };
    let events = match lockstep_tests::fleet_check::parse(&text) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("{}: {e}", dir.join("history.jsonl").display());
            return 2;
        }
    };
    let svg = dir.join("timeline.svg");
    if let Err(e) = std::fs::write(&svg, torture::timeline(&events)) {
        eprintln!("cannot write {}: {e}", svg.display());
        return 2;
    }
    println!("{} events; timeline in {}", events.len(), svg.display());
    // The final record of the coordinator is not in the history: every
    // rule but "each version issued once" is checked again.
    let report = lockstep_tests::fleet_check::check(&events, &[], torture::params());
    println!("{}", report.render().lines().take(40).collect::<Vec<_>>().join("\n"));
    i32::from(!report.violations.is_empty())
}
