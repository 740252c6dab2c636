//! The README's main job, `make demo`'s script, run whole on its default
//! server: OpenBao's pinned release (the first line of
//! `tests/openbao/releases.tsv`), which must be the very binary the pin
//! names (its `bao version` commit), and at the end a token one pool signed
//! with the rotated key verifies in the other. It is not in the server
//! matrix: the demo picks its server itself, and that choice is what it
//! checks (`make demo DEMO_SERVER=vault` runs the same script on Vault).

use std::process::Command;

use lockstep_tests::workspace_root;

#[test]
fn the_demo_runs_on_the_pinned_openbao_release_and_the_pools_converge() {
    let root = workspace_root();
    let releases = std::fs::read_to_string(root.join("tests/openbao/releases.tsv")).expect("releases.tsv");
    let default = releases.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).expect("a pinned release");
    let mut cols = default.split('\t');
    let (version, commit) = (cols.next().unwrap_or_default(), cols.next().unwrap_or_default());

    let out = Command::new(root.join("tests/demo/demo.sh"))
        .current_dir(&root)
        .env_remove("LOCKSTEP_VAULT_BIN")
        .env_remove("LOCKSTEP_PLUGIN_BIN")
        .env_remove("LOCKSTEP_SIDECAR_BIN")
        .env_remove("DEMO_SERVER")
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .output()
        .expect("run tests/demo/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed: {}\n{stdout}\n{stderr}", out.status);

    let server = stdout.lines().find(|l| l.starts_with("demo: server ")).expect("the demo names its server");
    let expected = format!("/target/openbao/{version}/bao: OpenBao v{version} ({commit})");
    assert!(server.contains(&expected), "{server:?} is not {expected:?}");
    for pool in ["checkout", "edge"] {
        assert!(stdout.contains(&format!("{pool} now signs demo-jwt with version 2")), "{stdout}");
    }
    let verified = stdout.lines().find(|l| l.starts_with("edge verifies it: ")).expect("the verification");
    assert!(verified.contains(r#""valid":true"#) && verified.contains(r#""version":2"#), "{verified}");
}
