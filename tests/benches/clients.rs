//! The client libraries' per-call cost over the raw socket request, each
//! measured in its own language, side by side in one run: `make
//! bench-clients` runs it; docs/performance.md records its figures.
//!
//! The fixture is the clients' test fixture (a real server, release
//! sidecars). Each language's script (sidecar/clients/*/bench) alternates
//! batches of a client call and of the same HTTP exchange written by hand
//! on a kept-alive Unix socket, and prints medians. Options (after `--`):
//! `--secs 3` per call. Writes target/bench-clients/results.json.

use std::process::Command;

use lockstep_tests::clients::{ClientFixture, run_runner};
use lockstep_tests::{required_binary, workspace_root};
use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args.windows(2).find(|w| w[0] == "--secs").map_or("3".to_string(), |w| w[1].clone());
    let fixture = ClientFixture::start();
    let clients = workspace_root().join("sidecar/clients");
    let python = required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools");
    let mut runs = Vec::new();
    let mut py = Command::new(python);
    py.args(["bench/overhead.py", "--secs", &secs]).current_dir(clients.join("python"));
    runs.push(("python", py));
    let mut go = Command::new("go");
    go.args(["run", "./cmd/overhead", "-secs", &secs]).current_dir(clients.join("go"));
    runs.push(("go", go));
    let mut node = Command::new("node");
    node.args(["bench/overhead.mjs", "--secs", &secs]).current_dir(clients.join("typescript"));
    runs.push(("typescript", node));
    let mut results = Vec::new();
    println!(
        "{:<11} {:<11} {:>10} {:>10} {:>10} {:>7}",
        "language", "call", "client µs", "raw µs", "overhead", "ratio"
    );
    for (language, command) in runs {
        let out = run_runner(&fixture, command, &format!("the {language} benchmark"));
        for line in out.lines().filter(|l| l.starts_with('{')) {
            let row: Value = serde_json::from_str(line).expect("a JSON line");
            let (client, raw) = (row["client_us"].as_f64().unwrap_or(0.0), row["raw_us"].as_f64().unwrap_or(1.0));
            println!(
                "{:<11} {:<11} {:>10.1} {:>10.1} {:>10.1} {:>6.2}×",
                language,
                row["call"].as_str().unwrap_or(""),
                client,
                raw,
                client - raw,
                client / raw
            );
            results.push(row);
        }
    }
    let dir = workspace_root().join("target/bench-clients");
    std::fs::create_dir_all(&dir).expect("target/bench-clients");
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&results).expect("JSON"))
        .expect("results.json");
}
