//! The binary started by hand explains itself and fails; `--version`
//! says what it is and how to register it.

use std::process::Command;

#[test]
fn started_by_hand_it_explains_how_to_register_and_exits_non_zero() {
    let output = Command::new(lockstep_tests::plugin_binary())
        .env_remove("VAULT_BACKEND_PLUGIN")
        .output()
        .expect("run the plugin");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "nothing on stdout, which hosts read as the handshake");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("vault plugin register -sha256="), "{stderr}");
}

#[test]
fn a_host_offering_only_the_legacy_protocol_is_refused() {
    let output = Command::new(lockstep_tests::plugin_binary())
        .env("VAULT_BACKEND_PLUGIN", "6669da05-b1c8-4f49-97d9-c8e5bed98e20")
        .env("PLUGIN_PROTOCOL_VERSIONS", "3,4")
        .output()
        .expect("run the plugin");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("speaks only version 5"));
}

#[test]
fn version_prints_the_version_the_checksum_and_the_register_command() {
    let binary = lockstep_tests::plugin_binary();
    let output = Command::new(&binary).arg("--version").output().expect("run the plugin");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = lockstep_tests::plugin_version();
    let sha256 = lockstep_tests::sha256_file(&binary);
    assert!(stdout.starts_with(&format!("vault-plugin-secrets-lockstep {version}\nsha256 {sha256}\n")), "{stdout}");
    let register =
        format!("plugin register -sha256={sha256} -version={version} -command=vault-plugin-secrets-lockstep");
    assert!(stdout.contains(&register), "{stdout}");
}
