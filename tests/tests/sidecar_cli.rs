//! The sidecar's command line: `check-config` exit codes and messages, and
//! `get` against a sidecar that is not there or never answers, bad keyring
//! names, and `run` with a bad configuration. No server needed.

use std::process::Command;

use lockstep_tests::sidecar::sidecar_binary;

fn check_config(dir: &std::path::Path, text: &str, extra: &[&str]) -> (i32, String) {
    let path = dir.join("sidecar.toml");
    // The token file GOOD names, in this test's directory.
    let token = dir.join("token");
    std::fs::write(&token, "s.test-token").expect("write token");
    std::fs::write(&path, text.replace("/run/token", &token.display().to_string())).expect("write config");
    let out = Command::new(sidecar_binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .args(extra)
        .env_remove("LOCKSTEP_POOL")
        .output()
        .expect("run check-config");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const GOOD: &str = r#"
pool = "web"
instance = "web-1"
[vault]
addr = "http://127.0.0.1:8200"
[auth]
token_file = "/run/token"
[socket]
path = "/run/lockstep.sock"
"#;

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_setting_with_exit_code_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(check_config(dir.path(), GOOD, &[]).0, 0);
    let (code, message) = check_config(dir.path(), GOOD, &["--set", "vault.wait_secs=600"]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("vault.wait_secs"), "{message}");
    let (code, message) = check_config(dir.path(), &GOOD.replace("[auth]\n", "[auth]\nmethod = \"approle\"\n"), &[]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("auth.role_id"), "{message}");
    let (code, message) = check_config(dir.path(), "pool = [", &[]);
    assert_eq!(code, 3, "{message}");
    // A mount path that reaches another mount, and a token file that is not
    // there.
    for setting in ["vault.mount", "auth.mount"] {
        for mount in ["../sys", "lockstep/../sys", "a//b"] {
            let (code, message) = check_config(dir.path(), GOOD, &["--set", &format!("{setting}={mount}")]);
            assert_eq!(code, 3, "{setting}={mount}: {message}");
            assert!(message.contains(setting), "{message}");
        }
    }
    let (code, message) = check_config(dir.path(), &GOOD.replace("/run/token", "/nonexistent/token"), &[]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("auth.token_file") && message.contains("/nonexistent/token"), "{message}");
}

#[test]
fn a_stdout_that_refuses_writes_is_an_error_message_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s.test-token").expect("write token");
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, GOOD.replace("/run/token", &token.display().to_string())).expect("write config");
    // /dev/full refuses every write (a closed pipe does too, but races).
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" check-config --config "$1" >/dev/full"#)
        .arg(sidecar_binary())
        .arg(&path)
        .env_remove("LOCKSTEP_POOL")
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn get_without_a_sidecar_exits_with_code_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(sidecar_binary())
        .args(["get", "jwt", "--socket"])
        .arg(dir.path().join("absent.sock"))
        .output()
        .expect("run get");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn get_gives_up_on_a_silent_sidecar_and_refuses_bad_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("silent.sock");
    // Accepts connections and never answers.
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let holder = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = std::time::Instant::now();
    let out = Command::new(sidecar_binary()).args(["get", "jwt", "--socket"]).arg(&socket).output().expect("run get");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no answer within 10 s"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    drop(holder.join());

    let out =
        Command::new(sidecar_binary()).args(["get", "../jwt", "--socket"]).arg(&socket).output().expect("run get");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"../jwt\" is not a valid name"), "{stderr}");
}

#[test]
fn run_with_a_bad_configuration_exits_with_code_3_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, GOOD.replace("[vault]\n", "[vault]\nwait_secs = \"ten\"\n")).expect("write config");
    let out = Command::new(sidecar_binary())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("LOCKSTEP_POOL")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("vault.wait_secs"), "{stderr}");
}

#[test]
fn check_config_reads_the_ca_bundle_and_the_cache_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing-ca.pem");
    let text = GOOD.replace("[vault]\n", &format!("[vault]\nca_bundle = {:?}\n", missing.display().to_string()));
    let (code, message) = check_config(dir.path(), &text, &[]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("vault.ca_bundle"), "{message}");
    std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
    let key = dir.path().join("keys/short.key");
    std::fs::write(&key, [1u8; 7]).expect("key");
    let text = format!(
        "{GOOD}[cache]\nfile = {:?}\nkey_file = {:?}\n",
        dir.path().join("cache.bin").display().to_string(),
        key.display().to_string()
    );
    let (code, message) = check_config(dir.path(), &text, &[]);
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("cache.key_file") && message.contains("32 bytes"), "{message}");
    std::fs::write(&key, [1u8; 32]).expect("key");
    let (code, message) = check_config(dir.path(), &text, &[]);
    assert_eq!(code, 0, "{message}");
}
