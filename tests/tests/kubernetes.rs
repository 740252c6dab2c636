//! The deployment example (sidecar/deploy/): the images run, the
//! Kubernetes manifests pass strict schema validation for every supported
//! version, and the same example, played as Pods with podman against a real
//! server, authenticates with the Kubernetes auth method (tokens a real API
//! server minted for the pods, see `lockstep_tests::kubecp`), serves keys to an
//! app container on the shared emptyDir, verifies across pods and follows a
//! rotation.
//!
//! Needs `make image kustomize kubecp pytools` (make test builds them) and podman,
//! buildah and runc (`make tools`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lockstep_tests::kubecp::ControlPlane;
use lockstep_tests::server::{Server, server_binary};
use lockstep_tests::{required_binary, workspace_root};
use serde_json::{Value, json};

/// The Kubernetes versions the manifests are validated against: native
/// sidecars are stable from 1.33.
const KUBERNETES_VERSIONS: &[&str] = &["1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];

fn version() -> String {
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("version")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// podman with the project's configuration and storage
/// (sidecar/deploy/podman/env.sh).
fn podman(args: &[&str]) -> Output {
    let env = workspace_root().join("sidecar/deploy/podman/env.sh");
    let script = format!("source {} && exec podman \"$@\"", env.display());
    Command::new("bash").args(["-c", &script, "podman"]).args(args).output().expect("run podman (make tools)")
}

fn image(name: &str) -> String {
    let image = format!("localhost/{name}:{}", version());
    let out = podman(&["image", "exists", &image]);
    assert!(out.status.success(), "{image} is not built: run `make image`");
    image
}

fn kustomize(dir: &Path) -> String {
    let binary = required_binary("LOCKSTEP_KUSTOMIZE", "kustomize/kustomize", "make kustomize");
    let out = Command::new(binary).arg(dir).output().expect("run kustomize");
    assert!(out.status.success(), "kustomize {}: {}", dir.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python() -> PathBuf {
    required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools")
}

fn validate(file: &Path, version: &str) -> Output {
    let validator = python().with_file_name("kubernetes-validate");
    Command::new(validator).args(["--strict", "-k", version]).arg(file).output().expect("run kubernetes-validate")
}

/// What the Containerfile's final stage `target` sets: user, entrypoint,
/// command and labels (with its `ARG` defaults put in), for comparing with
/// the image `make image` builds without it.
fn containerfile_stage(target: &str) -> Value {
    let text = std::fs::read_to_string(workspace_root().join("sidecar/deploy/image/Containerfile")).expect("read");
    // Continuation lines joined, comments dropped.
    let joined = text.replace("\\\n", " ");
    let mut lines = joined.lines().map(str::trim).filter(|l| !l.starts_with('#'));
    let header = format!("FROM scratch AS {target}");
    assert!(lines.any(|l| l == header), "no `{header}` in the Containerfile");
    let (mut args, mut out) = (Vec::<(String, String)>::new(), json!({"Labels": {}}));
    for line in lines.take_while(|l| !l.starts_with("FROM ")) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = args.iter().fold(rest.to_string(), |r, (k, v)| r.replace(&format!("${{{k}}}"), v));
        match instruction {
            "ARG" => {
                let (k, v) = rest.split_once('=').expect("ARG name=default");
                args.push((k.to_string(), v.to_string()));
            }
            "USER" => out["User"] = json!(rest),
            "ENTRYPOINT" => out["Entrypoint"] = serde_json::from_str(&rest).expect("ENTRYPOINT in JSON form"),
            "CMD" => out["Cmd"] = serde_json::from_str(&rest).expect("CMD in JSON form"),
            "LABEL" => {
                // key="value" pairs, values quoted.
                let mut rest = rest.as_str();
                while let Some((key, after)) = rest.trim_start().split_once("=\"") {
                    let (value, tail) = after.split_once('"').expect("a closing quote");
                    out["Labels"][key.trim()] = json!(value);
                    rest = tail;
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_containerfile_and_the_images_built_without_it_agree() {
    for (target, name) in
        [("sidecar", "lockstep-sidecar"), ("plugin", "lockstep-plugin"), ("injector", "lockstep-injector")]
    {
        let expected = containerfile_stage(target);
        let inspect = podman(&["image", "inspect", &image(name)]);
        let built: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
        let built = &built[0]["Config"];
        assert_eq!(built["User"], expected["User"], "{target}: {built}");
        assert_eq!(built["Entrypoint"], expected["Entrypoint"], "{target}: {built}");
        assert_eq!(built["Cmd"], expected.get("Cmd").cloned().unwrap_or(Value::Null), "{target}: {built}");
        let labels = expected["Labels"].as_object().expect("labels");
        assert!(labels.len() >= 4, "{target}: {expected}");
        for (key, value) in labels {
            assert_eq!(&built["Labels"][key], value, "{target}: label {key}: {built}");
        }
        assert_eq!(expected["Labels"]["org.opencontainers.image.version"], json!(version()), "{target}: ARG VERSION");
    }
}

#[test]
fn the_images_run_as_a_non_root_user_without_a_shell() {
    let sidecar = image("lockstep-sidecar");
    let out = podman(&["run", "--rm", &sidecar, "--version"]);
    assert!(out.status.success() && text(&out).contains(&version()), "{}", text(&out));
    let inspect = podman(&["image", "inspect", &sidecar]);
    let config: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    let config = &config[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    for label in ["title", "description", "version", "licenses"] {
        assert!(config["Labels"][format!("org.opencontainers.image.{label}")].is_string(), "{label}: {config}");
    }
    let shell = podman(&["run", "--rm", "--entrypoint", "/bin/sh", &sidecar, "-c", "true"]);
    assert!(!shell.status.success(), "the image has a shell: {}", text(&shell));
    let plugin = image("lockstep-plugin");
    let out = podman(&["run", "--rm", &plugin]);
    assert!(text(&out).contains("this binary is a Vault/OpenBao plugin"), "{}", text(&out));
    let injector = image("lockstep-injector");
    let out = podman(&["run", "--rm", &injector, "--version"]);
    assert!(out.status.success() && text(&out).contains(&version()), "{}", text(&out));
    let shell = podman(&["run", "--rm", "--entrypoint", "/bin/sh", &injector, "-c", "true"]);
    assert!(!shell.status.success(), "the injector image has a shell: {}", text(&shell));
}

#[test]
fn the_manifests_pass_strict_validation_for_every_supported_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = kustomize(&workspace_root().join("sidecar/deploy/kubernetes"));
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &rendered).expect("write");
    for version in KUBERNETES_VERSIONS {
        let out = validate(&file, version);
        assert!(out.status.success(), "Kubernetes {version}: {}", text(&out));
        for kind in ["serviceaccount", "deployment", "configmap"] {
            assert!(
                text(&out).contains(&format!("resource {kind}/")),
                "{version}: {kind} not validated: {}",
                text(&out)
            );
        }
    }
    // The sidecar is a native sidecar with a startup probe, hardened.
    for needle in [
        "initContainers:",
        "restartPolicy: Always",
        "startupProbe:",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "medium: Memory",
        "audience: vault",
        "image: registry.example.com/lockstep/lockstep-sidecar:0.1.0",
        "LOCKSTEP_POOL: checkout",
    ] {
        assert!(rendered.contains(needle), "{needle} missing from the rendered example:\n{rendered}");
    }
    // Strict means strict: a misspelt field fails.
    std::fs::write(&file, rendered.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")).expect("write");
    let out = validate(&file, "1.37.0");
    assert!(!out.status.success(), "a misspelt field passed: {}", text(&out));
}

/// The pods played here; removed when dropped, whatever happened.
struct Pods(Vec<PathBuf>);

impl Drop for Pods {
    fn drop(&mut self) {
        for pod in &self.0 {
            if std::thread::panicking() {
                let name = pod.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                for container in ["lockstep", "app"] {
                    eprintln!(
                        "--- {name}-{container} ---\n{}",
                        text(&podman(&["logs", &format!("{name}-{container}")]))
                    );
                }
            }
            let _ = podman(&["kube", "down", &pod.display().to_string()]);
        }
    }
}

/// The example for `pool` as a user makes it: a copy of the example with
/// the pool, the image and Vault's address changed in the one place the
/// kustomization names, under an overlay that adds what a single machine
/// needs: the host's network (the server listens on 127.0.0.1), the
/// telemetry port, an instance id, and an app container that follows the
/// `jwt` keyring with `lockstep-sidecar watch`.
fn overlay(dir: &Path, pool: &str, server: &Server, telemetry_port: u16) -> String {
    let example = workspace_root().join("sidecar/deploy/kubernetes");
    let base = dir.join(format!("base-{pool}"));
    std::fs::create_dir_all(&base).expect("base dir");
    for entry in std::fs::read_dir(&example).expect("the example") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, base.join(path.file_name().expect("name"))).expect("copy");
    }
    let mut kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).expect("kustomization");
    for (line, value) in [
        ("      - LOCKSTEP_POOL=checkout", format!("      - LOCKSTEP_POOL={pool}")),
        (
            "      - LOCKSTEP_VAULT_ADDR=https://vault.vault.svc:8200",
            format!("      - LOCKSTEP_VAULT_ADDR={}", server.address()),
        ),
        (
            "    newName: registry.example.com/lockstep/lockstep-sidecar",
            "    newName: localhost/lockstep-sidecar".into(),
        ),
        ("    newTag: 0.1.0", format!("    newTag: \"{}\"", version())),
    ] {
        assert_eq!(kustomization.matches(line).count(), 1, "the one place to change, `{line}`, is not one line");
        kustomization = kustomization.replace(line, &value);
    }
    std::fs::write(base.join("kustomization.yaml"), kustomization).expect("kustomization");

    let overlay = dir.join(format!("overlay-{pool}"));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base-{pool}\n\
         configMapGenerator:\n  - name: lockstep-pool\n    behavior: merge\n    literals:\n\
         \x20     - LOCKSTEP_TELEMETRY_ADDR=127.0.0.1:{telemetry_port}\n      - LOCKSTEP_INSTANCE=checkout-{pool}-0\n\
         images:\n  - name: lockstep-sidecar\n    newName: localhost/lockstep-sidecar\n    newTag: \"{version}\"\n\
         patches:\n  - target:\n      kind: Deployment\n    patch: |-\n      - op: add\n        path: /spec/template/spec/hostNetwork\n\
         \x20       value: true\n      - op: replace\n        path: /spec/template/spec/containers/0/image\n\
         \x20       value: lockstep-sidecar\n      - op: add\n        path: /spec/template/spec/containers/0/args\n\
         \x20       value: [\"watch\", \"jwt\"]\n",
        version = version(),
    );
    std::fs::write(overlay.join("kustomization.yaml"), kustomization).expect("kustomization");
    let rendered = kustomize(&overlay);
    // The one change reached every place the pool's name belongs.
    for needle in [
        format!("LOCKSTEP_POOL: {pool}"),
        format!("LOCKSTEP_AUTH_ROLE: lockstep-{pool}"),
        format!("lockstep.dev/pool: {pool}"),
        format!("image: localhost/lockstep-sidecar:{}", version()),
    ] {
        assert!(rendered.contains(&needle), "{needle} missing from the rendered example:\n{rendered}");
    }
    assert!(!rendered.contains("lockstep.dev/pool: checkout"), "the example's pool is left:\n{rendered}");
    rendered
}

fn logs(container: &str) -> String {
    text(&podman(&["logs", container]))
}

/// Waits until the container's log has a `watch` line for which `check`
/// holds.
fn wait_for_line(container: &str, what: &str, secs: u64, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(line) = logs(container)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.is_object())
            .find(&check)
        {
            return line;
        }
        assert!(Instant::now() < deadline, "{container}: no line with {what} in {secs} s:\n{}", logs(container));
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn exec_call(container: &str, path: &str, body: &Value) -> Value {
    let data = body.to_string();
    let out = podman(&["exec", container, "/lockstep-sidecar", "call", "POST", path, "--data", &data]);
    assert!(out.status.success(), "{container} {path}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON answer")
}

/// A dev server with the engine mounted, a one-hour ed25519 keyring `jwt`
/// and a sign pool for each of `pools`.
fn server_with_pools(pools: &[&str]) -> Server {
    let server = Server::dev_with_mounts(&["lockstep"]);
    server
        .write(
            "lockstep/config",
            json!({"poll_interval": "5s", "max_clock_skew": "1s", "liveness_window": "30s", "activation_margin": "1s"}),
        )
        .expect_status(200);
    let policy = json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "3s", "grace_period": "20m",
                        "max_token_ttl": "10m", "commit_timeout": "30m"});
    assert!(server.write("lockstep/keys/jwt", policy).status < 300);
    for pool in pools {
        let made = server.write(&format!("lockstep/pools/{pool}"), json!({"keyrings": "jwt", "mode": "sign"}));
        assert!(made.status < 300, "{made:?}");
    }
    server
}

#[test]
fn the_example_plays_as_pods_against_a_real_server() {
    let _ = image("lockstep-sidecar");
    let dir = tempfile::Builder::new().prefix("lockstep-kube").tempdir().expect("tempdir");
    let server = server_with_pools(&["web", "api"]);

    // The cluster: a real API server with the example's namespace and
    // service account, a pod object per pool, and each pod's token minted
    // by the TokenRequest API (audience "vault", bound to the pod), written
    // where kubelet projects it. The server, outside the cluster, reviews
    // logins as a service account of its own.
    let cluster = ControlPlane::start();
    let reviewer = reviewer(&cluster, dir.path());
    let key_dir = dir.path().join("cache-key");
    std::fs::create_dir_all(&key_dir).expect("dir");
    std::fs::write(key_dir.join("key"), [5u8; 32]).expect("cache key");
    let token_dir = |pool: &str| dir.path().join(format!("token-{pool}"));
    for pool in ["web", "api"] {
        let pod = format!("checkout-{pool}-0");
        let uid = cluster.pod("shop", "checkout", &pod);
        let token = cluster.token("shop", "checkout", Some((&pod, &uid)), "vault");
        std::fs::create_dir_all(token_dir(pool)).expect("dir");
        std::fs::write(token_dir(pool).join("token"), &token).expect("token");
    }
    // The pod runs as 65532: everything it reads is world-readable here.
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()).status();

    // The server side, with the example's own script and the real CLI.
    for pool in ["web", "api"] {
        vault_setup(&server, &cluster, &reviewer, pool, dir.path());
    }

    let mut pods = Pods(Vec::new());
    let ports = [("web", lockstep_tests::free_port()), ("api", lockstep_tests::free_port())];
    for (pool, port) in ports {
        let rendered = dir.path().join(format!("rendered-{pool}.yaml"));
        std::fs::write(&rendered, overlay(dir.path(), pool, &server, port)).expect("rendered");
        let name = format!("checkout-{pool}");
        let pod = dir.path().join(format!("{name}.yaml"));
        let out = Command::new(python())
            .arg(workspace_root().join("tests/python/kube_pod.py"))
            .arg(&rendered)
            .args(["--name", &name, "--workdir"])
            .arg(dir.path())
            .arg("--token-dir")
            .arg(token_dir(pool))
            .arg("--secret")
            .arg(format!("lockstep-cache-key={}", key_dir.display()))
            .output()
            .expect("kube_pod.py");
        assert!(out.status.success(), "kube_pod.py: {}", text(&out));
        std::fs::write(&pod, &out.stdout).expect("pod.yaml");
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()).status();
        let played = podman(&["kube", "play", &pod.display().to_string()]);
        pods.0.push(pod);
        assert!(played.status.success(), "podman kube play {name}: {}", text(&played));
    }

    // Each app container sees its pool's keys through the shared socket.
    for pool in ["web", "api"] {
        let line =
            wait_for_line(&format!("checkout-{pool}-app"), "version 1 signing", 90, |v| v["signing"]["version"] == 1);
        assert_eq!(line["pool"], pool, "{line}");
        assert!(!line.to_string().contains("material"), "{line}");
    }
    // The exec probe as an image without a shell runs it: no arguments,
    // the socket where the example's configuration puts it.
    for pool in ["web", "api"] {
        let probe = podman(&["exec", &format!("checkout-{pool}-lockstep"), "/lockstep-sidecar", "probe"]);
        assert!(probe.status.success(), "the exec probe in {pool}: {}", text(&probe));
    }
    // What kubelet's probes and Prometheus ask, on each pod's telemetry port.
    for (pool, port) in ports {
        for path in ["/readyz", "/healthz", "/metrics"] {
            let reply = ureq_get(&format!("http://127.0.0.1:{port}{path}"));
            assert_eq!(reply.0, 200, "{pool} {path}: {}", reply.1);
        }
        assert_eq!(ureq_get(&format!("http://127.0.0.1:{port}/v1/keys/jwt")).0, 404, "keys on the telemetry port");
    }
    // A token one pod's sidecar signed verifies in the other pod.
    let signed = exec_call("checkout-web-app", "/v1/jwt/jwt/sign", &json!({"claims": {"sub": "pod-web"}, "ttl": 60}));
    let token = signed["token"].as_str().expect("a token");
    let verified = exec_call("checkout-api-app", "/v1/jwt/jwt/verify", &json!({"token": token}));
    assert_eq!(verified["claims"]["sub"], "pod-web", "{verified}");
    // The sidecars logged in with the Kubernetes auth method: the API
    // server reviewed the tokens it minted.
    for pool in ["web", "api"] {
        let log = logs(&format!("checkout-{pool}-lockstep"));
        let kubernetes_login = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["fields"]["message"] == "logged in to vault" && l["fields"]["method"] == "Kubernetes");
        assert!(kubernetes_login, "{pool}: {log}");
    }
    // A rotation reaches both pods, and version 2 signs in both.
    server.write("lockstep/keys/jwt/rotate", json!({"reason": "the pod test"})).expect_status(200);
    for pool in ["web", "api"] {
        wait_for_line(&format!("checkout-{pool}-app"), "version 2 signing", 90, |v| v["signing"]["version"] == 2);
    }
    let status = server.read("lockstep/status/jwt").body;
    assert!(status.to_string().contains("checkout-web-0") && status.to_string().contains("checkout-api-0"), "{status}");
    // Nothing secret in the sidecars' logs.
    for pool in ["web", "api"] {
        let log = logs(&format!("checkout-{pool}-lockstep"));
        assert!(!log.contains(&token_of(&token_dir(pool))) && !log.contains("private_key"), "{log}");
    }
}

fn ureq_get(url: &str) -> (u16, String) {
    match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(response) => (response.status(), response.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap_or_default()),
        Err(error) => (0, error.to_string()),
    }
}

fn token_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token")).expect("token")
}

/// A service account allowed to review tokens (the server's own, as the
/// Vault and OpenBao charts make it), and a file with a token of it for
/// `vault-setup.sh`'s TOKEN_REVIEWER_JWT.
fn reviewer(cluster: &ControlPlane, dir: &Path) -> PathBuf {
    cluster.pod("secrets", "openbao", "openbao-0");
    cluster.allow_token_review("secrets", "openbao");
    let file = dir.join("reviewer.jwt");
    std::fs::write(&file, cluster.token("secrets", "openbao", None, lockstep_tests::kubecp::ISSUER)).expect("reviewer");
    file
}

/// `vault-setup.sh` for `pool` of the service account shop/checkout, with
/// the real CLI, for a server outside the cluster: the cluster's CA and
/// the reviewer's token given as files.
fn vault_setup(server: &Server, cluster: &ControlPlane, reviewer: &Path, pool: &str, dir: &Path) {
    let ca = dir.join("cluster-ca.pem");
    std::fs::write(&ca, cluster.ca_pem()).expect("cluster CA");
    let out = Command::new(workspace_root().join("sidecar/deploy/kubernetes/vault-setup.sh"))
        .envs([
            ("POOL", pool),
            ("NAMESPACE", "shop"),
            ("SERVICE_ACCOUNT", "checkout"),
            ("KUBERNETES_HOST", cluster.url()),
            ("DISABLE_LOCAL_CA_JWT", "1"),
            ("KUBERNETES_CA_CERT", &ca.display().to_string()),
            ("TOKEN_REVIEWER_JWT", &reviewer.display().to_string()),
            ("VAULT_ADDR", &server.address()),
            ("VAULT_TOKEN", server.token()),
        ])
        .env("VAULT_CLI", server_binary())
        .output()
        .expect("vault-setup.sh");
    assert!(out.status.success(), "vault-setup.sh {pool}: {}", text(&out));
}

/// `lockstep-injector` (the workspace's debug build), serving a
/// certificate of its own CA on 127.0.0.1; stopped on drop.
struct Injector {
    child: std::process::Child,
    url: String,
    ca: String,
    ca_file: PathBuf,
    log: PathBuf,
}

impl Injector {
    fn start(dir: &Path, vault_addr: &str) -> Self {
        let binary = lockstep_tests::built_binary("debug/lockstep-injector", "make build");
        let certs = dir.join("injector-tls");
        std::fs::create_dir_all(&certs).expect("dir");
        lockstep_tests::kubecp::serving_pair(&certs);
        let port = lockstep_tests::free_port();
        let log = dir.join("injector.log");
        let child = Command::new(binary)
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--tls-cert={}", certs.join("serving.crt").display()))
            .arg(format!("--tls-key={}", certs.join("serving.key").display()))
            .arg(format!("--sidecar-image=localhost/lockstep-sidecar:{}", version()))
            .arg(format!("--vault-addr={vault_addr}"))
            .args(["--log-format=text"])
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.join("injector.err")).expect("log"))
            .spawn()
            .expect("start lockstep-injector");
        let ca = std::fs::read_to_string(certs.join("ca.crt")).expect("CA");
        let url = format!("https://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "lockstep-injector does not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, url, ca, ca_file: certs.join("ca.crt"), log }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- injector ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// A stored object as the next request would send it again: without what
/// the API server adds on its own.
fn as_sent(stored: &Value, name: &str) -> Value {
    let mut object = stored.clone();
    let metadata = object["metadata"].as_object_mut().expect("metadata");
    for key in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generateName", "namespace"] {
        metadata.remove(key);
    }
    metadata.insert("name".into(), json!(name));
    object.as_object_mut().expect("object").remove("status");
    object
}

#[test]
fn the_injector_adds_the_sidecar_through_the_api_server_and_the_pod_serves_keys() {
    let sidecar_image = image("lockstep-sidecar");
    let dir = tempfile::Builder::new().prefix("lockstep-inject").tempdir().expect("tempdir");
    let server = server_with_pools(&["web"]);

    // The cluster, the injector and its webhook configuration: pods of the
    // namespaces labelled lockstep.dev/injection=enabled are sent to it.
    let cluster = ControlPlane::start();
    let injector = Injector::start(dir.path(), &server.address());
    cluster.create(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "lockstep-injector"},
            "webhooks": [{
                "name": "inject.lockstep.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "reinvocationPolicy": "Never", "timeoutSeconds": 10,
                "clientConfig": {"url": format!("{}/mutate", injector.url),
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(&injector.ca)},
                "namespaceSelector": {"matchLabels": {"lockstep.dev/injection": "enabled"}},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]
            }]
        }),
    );
    let namespace = |name: &str, labels: Value| {
        cluster.create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
        );
    };
    namespace("shop", json!({"lockstep.dev/injection": "enabled"}));
    namespace("plain", json!({}));
    for ns in ["shop", "plain"] {
        cluster.create(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "checkout"}}),
        );
    }
    let reviewer = reviewer(&cluster, dir.path());
    let config =
        std::fs::read_to_string(workspace_root().join("sidecar/deploy/kubernetes/sidecar.toml")).expect("toml");
    cluster.create(
        "/api/v1/namespaces/shop/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lockstep-sidecar"},
               "data": {"sidecar.toml": config}}),
    );

    let telemetry = lockstep_tests::free_port();
    let app = |name: &str, annotations: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations},
            "spec": {"serviceAccountName": "checkout", "automountServiceAccountToken": false, "hostNetwork": true,
                     "containers": [{"name": "app", "image": sidecar_image, "args": ["watch", "jwt"]}]}
        })
    };
    let asked = json!({"lockstep.dev/pool": "web", "lockstep.dev/telemetry-port": telemetry.to_string()});
    let pods = |ns: &str| format!("/api/v1/namespaces/{ns}/pods");

    // An annotated pod is stored with the sidecar.
    let stored = cluster.create(&pods("shop"), app("checkout-web-0", asked.clone()));
    let init = &stored["spec"]["initContainers"];
    assert_eq!(init[0]["name"], "lockstep", "{stored}");
    assert_eq!(init[0]["restartPolicy"], "Always", "{stored}");
    assert_eq!(init[0]["image"], sidecar_image.as_str(), "{stored}");
    assert_eq!(stored["metadata"]["annotations"]["lockstep.dev/injected"], sidecar_image.as_str());
    assert_eq!(
        stored["spec"]["containers"][0]["env"][0],
        json!({"name": "LOCKSTEP_SOCKET", "value": "/run/lockstep/sidecar.sock"})
    );
    // The stored pod passes strict schema validation.
    let file = dir.path().join("stored-pod.json");
    std::fs::write(&file, stored.to_string()).expect("write");
    let out = validate(&file, "1.37.0");
    assert!(out.status.success(), "{}", text(&out));

    // Admitted again (a pod made from the stored one): nothing changes.
    let again = cluster.create(&pods("shop"), as_sent(&stored, "checkout-web-1"));
    assert_eq!(again["spec"], stored["spec"], "a second admission changed the pod");
    // A pod made from a template, as a ReplicaSet makes it (generateName).
    let mut templated = app("", asked.clone());
    templated["metadata"] = json!({"generateName": "checkout-", "annotations": asked});
    let templated = cluster.create(&pods("shop"), templated);
    assert_eq!(templated["spec"]["initContainers"][0]["name"], "lockstep", "{templated}");
    // An un-annotated pod is stored as it would be without the injector.
    let plain = cluster.create(&pods("shop"), app("plain-0", json!({})));
    let untouched = cluster.create(&pods("plain"), app("plain-0", json!({})));
    assert_eq!(plain["spec"], untouched["spec"]);
    assert!(plain["metadata"].get("annotations").is_none_or(|a| a.get("lockstep.dev/injected").is_none()), "{plain}");
    // A malformed ask is refused with the injector's message.
    let refused = cluster.request(
        "POST",
        &pods("shop"),
        Some(&app("bad-0", json!({"lockstep.dev/pool": "web", "lockstep.dev/inject": "maybe"}))),
    );
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body["message"].as_str().is_some_and(|m| m.contains("lockstep.dev/inject")), "{}", refused.body);

    // The injected pod runs: played with podman as the example is, its
    // sidecar logs in with the token the API server mints for the stored
    // pod and serves the app container.
    vault_setup(&server, &cluster, &reviewer, "web", dir.path());
    let uid = stored["metadata"]["uid"].as_str().expect("uid");
    let token = cluster.token("shop", "checkout", Some(("checkout-web-0", uid)), "vault");
    let login = server.write("auth/kubernetes/login", json!({"role": "lockstep-web", "jwt": token}));
    assert_eq!(login.status, 200, "the pod's token does not log in: {}", login.errors());
    let (token_dir, key_dir) = (dir.path().join("token"), dir.path().join("cache-key"));
    for d in [&token_dir, &key_dir] {
        std::fs::create_dir_all(d).expect("dir");
    }
    std::fs::write(token_dir.join("token"), &token).expect("token");
    std::fs::write(key_dir.join("key"), [5u8; 32]).expect("cache key");
    // What a single machine needs on top (as the example's overlay adds
    // it): the telemetry port on 127.0.0.1 only, and the pod's name as the
    // instance id (kubelet would set the hostname).
    let mut spec = stored["spec"].clone();
    let env = spec["initContainers"][0]["env"].as_array_mut().expect("env");
    for var in env.iter_mut().filter(|v| v["name"] == "LOCKSTEP_TELEMETRY_ADDR") {
        var["value"] = json!(format!("127.0.0.1:{telemetry}"));
    }
    env.push(json!({"name": "LOCKSTEP_INSTANCE", "value": "checkout-web-0"}));
    let cluster_view = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lockstep-sidecar"}, "data": {"sidecar.toml": config}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "checkout"},
               "spec": {"template": {"metadata": {"labels": {"app": "checkout"}}, "spec": spec}}}),
    ];
    let rendered = dir.path().join("rendered-injected.yaml");
    let docs: Vec<String> = cluster_view.iter().map(Value::to_string).collect();
    std::fs::write(&rendered, docs.join("\n---\n")).expect("rendered");
    let name = "checkout-injected";
    let out = Command::new(python())
        .arg(workspace_root().join("tests/python/kube_pod.py"))
        .arg(&rendered)
        .args(["--name", name, "--workdir"])
        .arg(dir.path())
        .arg("--token-dir")
        .arg(&token_dir)
        .arg("--secret")
        .arg(format!("lockstep-cache-key={}", key_dir.display()))
        .output()
        .expect("kube_pod.py");
    assert!(out.status.success(), "kube_pod.py: {}", text(&out));
    let pod = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&pod, &out.stdout).expect("pod.yaml");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir.path()).status();
    let mut played = Pods(Vec::new());
    let play = podman(&["kube", "play", &pod.display().to_string()]);
    played.0.push(pod);
    assert!(play.status.success(), "podman kube play {name}: {}", text(&play));
    let line = wait_for_line(&format!("{name}-app"), "version 1 signing", 90, |v| v["signing"]["version"] == 1);
    assert_eq!(line["pool"], "web", "{line}");
    let reply = ureq_get(&format!("http://127.0.0.1:{telemetry}/readyz"));
    assert_eq!(reply.0, 200, "{}", reply.1);
    let log = logs(&format!("{name}-lockstep"));
    assert!(log.contains("logged in to vault") && !log.contains(&token), "{log}");
}

/// One request to the injector through curl (the test library's HTTP
/// client speaks no TLS): its status and body.
fn to_injector(injector: &Injector, method: &str, path: &str, body: Option<&Path>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "60", "-X", method, "--cacert"]).arg(&injector.ca_file).args([
        "-H",
        "Content-Type: application/json",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(file) = body {
        command.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let out = command.arg(format!("{}{path}", injector.url)).output().expect("run curl");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A review whose head promises a body that never comes, sent over TLS by
/// `openssl s_client` (which passes the answer on as it arrives, while the
/// connection stays open): what came back, and after how long.
fn stalled_review(injector: &Injector) -> (String, Duration) {
    use std::io::{Read as _, Write as _};
    let host = injector.url.trim_start_matches("https://");
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile"])
        .arg(&injector.ca_file)
        .args(["-connect", host])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    let started = Instant::now();
    let mut stdin = client.stdin.take().expect("stdin");
    let head =
        "POST /mutate HTTP/1.1\r\nHost: injector\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stdin.write_all(head.as_bytes()).expect("the request's head");
    stdin.flush().expect("flush");
    let mut stdout = client.stdout.take().expect("stdout");
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 || sender.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    // The whole answer: its head and the body it announces.
    while !String::from_utf8_lossy(&answer).ends_with("in time\n") {
        match received.recv_timeout(Duration::from_secs(30)) {
            Ok(bytes) => answer.extend(bytes),
            Err(_) => break,
        }
    }
    let waited = started.elapsed();
    drop(stdin);
    let _ = client.kill();
    let _ = client.wait();
    (String::from_utf8_lossy(&answer).into_owned(), waited)
}

#[test]
fn the_injector_answers_a_wrong_path_an_oversized_review_and_a_stalled_one_with_what_went_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let injector = Injector::start(dir.path(), "");
    assert_eq!(to_injector(&injector, "GET", "/healthz", None), (200, "ok\n".into()));
    for (method, path) in [("GET", "/mutate"), ("POST", "/validate"), ("GET", "/")] {
        let (status, body) = to_injector(&injector, method, path, None);
        assert_eq!((status, body.as_str()), (404, "not found\n"), "{method} {path}");
    }
    // More than the 8 MiB read: refused, not read on.
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 9 << 20]).expect("big body");
    let (status, body) = to_injector(&injector, "POST", "/mutate", Some(&big));
    assert_eq!((status, body.as_str()), (413, "admission review too large\n"));
    // Not an AdmissionReview: 400, saying what is wrong.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"kind\": 7}").expect("junk body");
    let (status, body) = to_injector(&injector, "POST", "/mutate", Some(&junk));
    assert_eq!(status, 400, "{body}");
    assert!(!body.trim().is_empty(), "a 400 that says nothing");
    // A body that never comes: answered once the 10 s the injector waits
    // for it are out, not before.
    let (answer, waited) = stalled_review(&injector);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {waited:?}");
    assert!(answer.ends_with("\r\n\r\nadmission review not sent in time\n"), "{answer:?}");
    assert!(waited >= Duration::from_secs(9), "answered after {waited:?}, before its wait was out");
    // Still serving, and nothing went wrong on its side.
    assert_eq!(to_injector(&injector, "GET", "/healthz", None).0, 200);
    let log = std::fs::read_to_string(&injector.log).unwrap_or_default();
    assert!(!log.contains("panicked") && !log.contains("ERROR"), "{log}");
}
