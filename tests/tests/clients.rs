//! The client libraries (sidecar/clients/) run their own test runners —
//! pytest, `go test`, `node --test` — against real release sidecars with
//! bundles from a real server ([`lockstep_tests::clients::ClientFixture`]):
//! the shared cases of tests/testdata/, a rotation seen by the background
//! key set, a sidecar restart, and each framework's middleware.

use std::process::Command;

use lockstep_tests::clients::{ClientFixture, run_runner};
use lockstep_tests::{required_binary, workspace_root};

fn clients_dir(language: &str) -> std::path::PathBuf {
    workspace_root().join("sidecar/clients").join(language)
}

#[test]
fn the_python_client_passes_its_tests_against_real_sidecars() {
    let fixture = ClientFixture::start();
    let python = required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools");
    let mut command = Command::new(python);
    command.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]).current_dir(clients_dir("python"));
    let out = run_runner(&fixture, command, "pytest (sidecar/clients/python)");
    println!("{out}");
    assert!(out.contains(" passed"), "{out}");
}

#[test]
fn the_go_client_passes_its_tests_against_real_sidecars() {
    let fixture = ClientFixture::start();
    let mut command = Command::new("go");
    // -count=1: the fixture is new each run, which Go's test cache cannot see.
    command.args(["test", "-count=1", "-v", "./..."]).current_dir(clients_dir("go"));
    let out = run_runner(&fixture, command, "go test (sidecar/clients/go)");
    assert!(out.contains("--- PASS: TestSharedCases") && out.contains("ok"), "{out}");
    println!("{}", out.lines().filter(|l| l.starts_with("--- ") || l.starts_with("ok")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn the_typescript_client_passes_its_tests_against_real_sidecars() {
    let fixture = ClientFixture::start();
    let dir = clients_dir("typescript");
    assert!(
        dir.join("dist/index.js").is_file() && dir.join("node_modules").is_dir(),
        "the TypeScript client is not built; build it with `make clients`"
    );
    // The test files by name: given the directory, node would also run the
    // fixture module as a test.
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("test/")
        .flatten()
        .map(|e| format!("test/{}", e.file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    files.sort();
    let mut command = Command::new("node");
    command.args(["--test", "--test-concurrency=1"]).args(&files).current_dir(&dir);
    let out = run_runner(&fixture, command, "node --test (sidecar/clients/typescript)");
    assert!(out.contains("# fail 0") && !out.contains("# pass 0"), "{out}");
    println!("{}", out.lines().filter(|l| l.starts_with("# ")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn the_shared_error_table_names_only_codes_the_sidecar_answers() {
    let table: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("tests/testdata/client-errors.json")).expect("client-errors.json"),
    )
    .expect("JSON");
    let mut source = String::new();
    for dir in ["sidecar/src", "sidecar/src/api"] {
        for entry in std::fs::read_dir(workspace_root().join(dir)).expect("sidecar sources").flatten() {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(entry.path()).expect("source"));
            }
        }
    }
    let codes = table["codes"].as_object().expect("codes");
    for code in codes.keys() {
        assert!(source.contains(&format!("\"{code}\"")), "{code} is in the table but not in the sidecar's sources");
    }
    assert!(codes.len() >= 50, "{}", codes.len());
}
