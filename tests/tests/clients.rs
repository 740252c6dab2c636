//! The client libraries (sidecar/clients/) run their own test runners —
//! pytest, `go test`, `node --test` — against real release sidecars with
//! bundles from a real server ([`lockstep_tests::clients::ClientFixture`]):
//! the shared cases of tests/testdata/, a rotation seen by the background
//! key set, a sidecar restart, and each framework's middleware; and the
//! README examples of each language, run as they are written.

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
            // The code that answers, not its tests or the fake Vault.
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().extension().is_some_and(|e| e == "rs") && name != "tests.rs" && name != "fakevault.rs" {
                source.push_str(&std::fs::read_to_string(entry.path()).expect("source"));
            }
        }
    }
    let codes = table["codes"].as_object().expect("codes");
    for code in codes.keys() {
        assert!(source.contains(&format!("\"{code}\"")), "{code} is in the table but not in the sidecar's sources");
    }
    // And the other way: every code the sources answer is in the table, so
    // no client falls back to a status's kind for a code it should know.
    let answered = answered_codes(&source);
    assert!(answered.len() >= 50, "the scan found only {answered:?}");
    for code in &answered {
        assert!(codes.contains_key(code), "the sidecar answers {code}, which the shared table lacks");
    }
}

/// The error codes in the sidecar's sources: the literal after
/// `bad_request(` or after a `StatusCode::…,`, and every literal a
/// `fn code(&self)` answers.
fn answered_codes(source: &str) -> std::collections::BTreeSet<String> {
    let literal = |rest: &str| -> Option<String> {
        let rest = rest.trim_start().strip_prefix('"')?;
        let (code, _) = rest.split_once('"')?;
        code.chars().all(|c| c.is_ascii_lowercase() || c == '_').then(|| code.to_string())
    };
    let mut codes = std::collections::BTreeSet::new();
    for (at, _) in source.match_indices("bad_request(") {
        codes.extend(literal(&source[at + "bad_request(".len()..]));
    }
    for (at, _) in source.match_indices("StatusCode::") {
        let rest = &source[at + "StatusCode::".len()..];
        let after = rest.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
        codes.extend(after.strip_prefix(',').and_then(literal));
    }
    for (at, _) in source.match_indices("fn code(&self) -> &'static str {") {
        let body = source[at..].split("\n    }\n").next().unwrap_or_default();
        for (arm, _) in body.match_indices("=> ") {
            codes.extend(literal(&body[arm + 3..]));
        }
    }
    codes
}

/// The fenced blocks of `language` in a markdown file.
fn blocks(markdown: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    markdown
        .split(&fence)
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(code, _)| format!("{code}\n")))
        .collect()
}

/// Runs an example with the fixture's environment; answers what it printed.
fn run_example(fixture: &ClientFixture, command: Command, what: &str) -> String {
    let out = run_runner(fixture, command, what);
    assert!(out.contains("alice"), "{what} printed:\n{out}");
    out
}

#[test]
fn the_readme_examples_run_against_a_real_sidecar() {
    let fixture = ClientFixture::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let readme = |path: &str| std::fs::read_to_string(workspace_root().join(path)).expect("README");
    let (main, python, go, ts) = (
        readme("README.md"),
        readme("sidecar/clients/python/README.md"),
        readme("sidecar/clients/go/README.md"),
        readme("sidecar/clients/typescript/README.md"),
    );
    let mut ran = 0;
    let interpreter = required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools");
    for code in blocks(&main, "python").into_iter().chain(blocks(&python, "python")) {
        let mut command = Command::new(&interpreter);
        command.args(["-c", &code]);
        run_example(&fixture, command, &format!("the Python example\n{code}"));
        ran += 1;
    }
    // A Go example is a whole program, or (in the top README) the body of
    // one, wrapped here.
    for (i, code) in blocks(&main, "go").into_iter().chain(blocks(&go, "go")).enumerate() {
        let program = if code.starts_with("package main") {
            code.clone()
        } else {
            format!(
                "package main\n\nimport (\n\t\"context\"\n\t\"fmt\"\n\t\"log\"\n\n\tlockstep \"lockstep/client\"\n)\n\n\
                 var _, _ = fmt.Sprint, log.Fatal\n\nfunc main() {{\n\tctx := context.Background()\n{code}}}\n"
            )
        };
        let module = dir.path().join(format!("go-{i}"));
        std::fs::create_dir_all(&module).expect("module dir");
        std::fs::write(module.join("main.go"), program).expect("main.go");
        std::fs::write(
            module.join("go.mod"),
            format!(
                "module readme\n\ngo 1.22\n\nrequire lockstep/client v0.0.0\n\nreplace lockstep/client => {}\n",
                clients_dir("go").display()
            ),
        )
        .expect("go.mod");
        let mut command = Command::new("go");
        command.args(["run", "."]).current_dir(&module);
        run_example(&fixture, command, &format!("the Go example\n{code}"));
        ran += 1;
    }
    // The package resolves by its name, as it would from node_modules.
    let scope = dir.path().join("node/node_modules/@lockstep");
    std::fs::create_dir_all(&scope).expect("node_modules");
    std::os::unix::fs::symlink(clients_dir("typescript"), scope.join("client")).expect("link the package");
    for (i, code) in blocks(&main, "ts").into_iter().chain(blocks(&ts, "ts")).enumerate() {
        let file = dir.path().join(format!("node/example-{i}.mjs"));
        std::fs::write(&file, &code).expect("example");
        let mut command = Command::new("node");
        command.arg(&file);
        run_example(&fixture, command, &format!("the TypeScript example\n{code}"));
        ran += 1;
    }
    assert_eq!(ran, 6, "one example per language in the README and in each client's README");
}
