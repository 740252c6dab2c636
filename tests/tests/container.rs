//! The static builds where servers run: an image FROM scratch holding only
//! OpenBao's official (static) release binary and the static plugin, run
//! with podman, mounts the plugin and serves a bundle. The plugin image and
//! the sidecar image hold their one static executable and nothing else.
//!
//! Needs `make static image openbao` (make test builds them) and podman and
//! buildah (`make tools`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lockstep_tests::workspace_root;
use serde_json::{Value, json};

const STATIC: &str = "target/x86_64-unknown-linux-musl/release";
const OPENBAO: &str = "target/openbao/2.7.2/bao";

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// One test at a time uses the container storage: podman and buildah
/// running at once on it may fail on its locks.
static STORAGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn storage() -> std::sync::MutexGuard<'static, ()> {
    STORAGE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// podman or buildah with the project's configuration and storage
/// (sidecar/deploy/podman/env.sh).
fn tool(name: &str, args: &[&str]) -> Output {
    let env = workspace_root().join("sidecar/deploy/podman/env.sh");
    let script = format!("source {} && exec {name} \"$@\"", env.display());
    Command::new("bash").args(["-c", &script, name]).args(args).output().unwrap_or_else(|e| panic!("run {name}: {e}"))
}

#[track_caller]
fn ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert!(out.status.success(), "{name} {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn built(path: &str, hint: &str) -> PathBuf {
    let path = workspace_root().join(path);
    assert!(path.is_file(), "{} is missing: run `{hint}`", path.display());
    path
}

/// Whether an ELF file names shared libraries it needs.
fn needs_libraries(path: &Path) -> bool {
    let out = Command::new("readelf").arg("-d").arg(path).output().expect("readelf (binutils)");
    assert!(out.status.success(), "{} is not an ELF executable: {}", path.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).contains("(NEEDED)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn sha256(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read the plugin")))
}

/// The workspace's version, as images are tagged.
fn workspace_version() -> String {
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    let version =
        cargo.lines().find_map(|l| l.strip_prefix("version = \"")).map(|v| v.trim_end_matches('"').to_string());
    version.expect("a version in Cargo.toml")
}

/// Removes a podman volume when the test ends.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tool("podman", &["volume", "rm", "-f", &self.0]);
    }
}

/// Removes the container and its image when the test ends, however it
/// ends.
struct Running(String, &'static str);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = tool("podman", &["rm", "-f", "-t", "2", &self.0]);
        let _ = tool("podman", &["rmi", "-f", self.1]);
    }
}

#[test]
fn the_static_builds_need_no_library() {
    for binary in ["vault-plugin-secrets-lockstep", "lockstep-sidecar"] {
        let path = built(&format!("{STATIC}/{binary}"), "make static");
        assert!(!needs_libraries(&path), "{} links shared libraries", path.display());
        let version = Command::new(&path).arg("--version").output().expect("run it");
        assert!(version.status.success(), "{binary} --version: {}", text(&version));
    }
}

#[test]
fn openbao_and_the_plugin_alone_in_a_scratch_image_mount_it_and_serve_a_bundle() {
    let _storage = storage();
    let plugin_image = format!("localhost/lockstep-plugin:{}", workspace_version());
    assert!(tool("podman", &["image", "exists", &plugin_image]).status.success(), "{plugin_image}: run `make image`");
    let bao = built(OPENBAO, "make openbao");
    assert!(!needs_libraries(&bao), "OpenBao's release binary is static");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.hcl");
    let mut file = std::fs::File::create(&config).expect("config");
    writeln!(file, "plugin_directory = \"/plugins\"").expect("write config");
    drop(file);

    // FROM scratch: OpenBao and its configuration, nothing else.
    let ctr = ok("buildah", &["from", "scratch"]);
    let copy = |mode: &str, from: &Path, to: &str| {
        ok("buildah", &["copy", "--chmod", mode, &ctr, &from.display().to_string(), to]);
    };
    copy("0755", &bao, "/bin/bao");
    copy("0644", &config, "/etc/openbao/config.hcl");
    ok("buildah", &["config", "--user", "65532:65532", "--entrypoint", "[\"/bin/bao\"]", &ctr]);
    let image = "localhost/lockstep-test-openbao-scratch:latest";
    ok("buildah", &["commit", "-q", "--rm", &ctr, image]);

    // The plugin's image installs the plugin into a volume the server
    // mounts as its plugin directory, as the Helm values' init container
    // does (docs/registering.md); it prints the register command.
    let port = free_port();
    let volume = format!("lockstep-plugins-{port}");
    ok("podman", &["volume", "create", &volume]);
    let _volume = Volume(volume.clone());
    let mount = format!("{volume}:/plugins:U");
    let installed = ok("podman", &["run", "--rm", "-v", &mount, &plugin_image, "--install", "/plugins"]);
    assert!(installed.starts_with("installed /plugins/vault-plugin-secrets-lockstep\n"), "{installed}");
    let sha = installed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("-sha256="))
        .map(str::to_string)
        .expect("the register command in the install's output");
    let plugin = built(&format!("{STATIC}/vault-plugin-secrets-lockstep"), "make static");
    assert_eq!(sha, sha256(&plugin), "the image holds the static build, and the install printed its checksum");

    let address = format!("http://127.0.0.1:{port}");
    let name = format!("lockstep-scratch-{port}");
    ok(
        "podman",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--tmpfs",
            "/tmp:mode=1777",
            "-v",
            &mount,
            "-e",
            &format!("BAO_ADDR={address}"),
            image,
            "server",
            "-dev",
            "-dev-no-store-token",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            "-config=/etc/openbao/config.hcl",
        ],
    );
    let running = Running(name, image);

    let call = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let request = ureq::request(method, &format!("{address}/v1/{path}")).set("X-Vault-Token", "root");
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                let status = r.status();
                (status, serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while call("GET", "sys/health", None).0 != 200 {
        let logs = text(&tool("podman", &["logs", &running.0]));
        assert!(Instant::now() < deadline, "the server in the container did not come up:\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let reported = installed
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .expect("a version");
    let register = json!({"sha256": sha, "command": "vault-plugin-secrets-lockstep", "version": reported});
    let (status, body) = call("PUT", "sys/plugins/catalog/secret/lockstep", Some(register));
    assert_eq!(status, 204, "register: {body}");
    let (status, body) = call("POST", "sys/mounts/lockstep", Some(json!({"type": "lockstep"})));
    assert_eq!(status, 204, "mount: {body}\n{}", text(&tool("podman", &["logs", &running.0])));
    let (status, body) = call("POST", "lockstep/keys/jwt", Some(json!({"type": "ed25519"})));
    assert_eq!(status, 200, "{body}");
    let (status, body) = call("POST", "lockstep/pools/web", Some(json!({"keyrings": "jwt", "mode": "sign"})));
    assert_eq!(status, 200, "{body}");
    let (status, bundle) = call("GET", "lockstep/bundle/web?instance=web-1", None);
    assert_eq!(status, 200, "{bundle}");
    let private = &bundle["data"]["keyrings"]["jwt"]["versions"][0]["private_key"];
    assert!(private.as_str().is_some_and(|k| !k.is_empty()), "a bundle with the key: {bundle}");
    // The plugin ran inside the container, as the server's child.
    // (`podman logs` may trail the container's output by a moment.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = text(&tool("podman", &["logs", &running.0]));
        if logs.contains("successful mount") && logs.contains("path=lockstep/") {
            break;
        }
        assert!(Instant::now() < deadline, "{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_plugin_and_sidecar_images_hold_one_static_executable_each() {
    let _storage = storage();
    let version = workspace_version();
    for (name, binary) in
        [("lockstep-plugin", "vault-plugin-secrets-lockstep"), ("lockstep-sidecar", "lockstep-sidecar")]
    {
        let image = format!("localhost/{name}:{version}");
        let mounted = tool("podman", &["image", "exists", &image]);
        assert!(mounted.status.success(), "{image} is not built: run `make image`");
        // The image's file system, mounted read-only, and every file in it.
        let root = PathBuf::from(ok("podman", &["image", "mount", &image]));
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read the image").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path.strip_prefix(&root).expect("inside").display().to_string());
                }
            }
        }
        let _ = tool("podman", &["image", "unmount", &image]);
        assert_eq!(files, vec![binary.to_string()], "{image} holds exactly its executable");
    }
}
