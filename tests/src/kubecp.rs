//! A real Kubernetes control plane for the tests: one etcd member and
//! kube-apiserver, both run from `target/kubecp/kubecp` (built from the
//! Kubernetes Go modules by `make kubecp`, see `tests/kubecp/`), on
//! 127.0.0.1 and free ports, each with its own certificate authority,
//! serving certificate and service-account signing key. Stopped on drop.
//!
//! The API server authenticates the tests with a static token of the
//! `system:masters` group, authorizes with RBAC and admits with its default
//! plugins, so service-account tokens are minted, bound and reviewed as a
//! cluster would.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where `make kubecp` puts the control plane's binary.
const BINARY: &str = "kubecp/kubecp";
/// The issuer of the cluster's service-account tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// etcd and kube-apiserver, running.
#[derive(Debug)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    url: String,
}

/// An answer of the API server: status code and JSON body (null when the
/// body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// Panics with the body unless the status is `expected`.
    #[track_caller]
    pub fn expect(self, expected: u16) -> Value {
        assert_eq!(self.status, expected, "Kubernetes API answered {}: {}", self.status, self.body);
        self.body
    }
}

/// The binary, or a panic that says how to build it.
pub fn binary() -> PathBuf {
    crate::built_binary(BINARY, "make kubecp")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (is it installed?)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A certificate authority (`ca.crt`, `ca.key`) and a serving certificate
/// for 127.0.0.1 it signed (`serving.crt`, `serving.key`), all P-256, in
/// `dir`: what the API server serves, and what a webhook it calls serves.
pub fn serving_pair(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=lockstep-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "serving.key", "-out", "serving.csr"]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "serving.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            "serving.crt",
        ],
    );
}

/// The API server's certificates, and the service-account signing key.
fn keys(dir: &Path) {
    serving_pair(dir);
    openssl(
        dir,
        &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "service-accounts.key"],
    );
    openssl(dir, &["pkey", "-in", "service-accounts.key", "-pubout", "-out", "service-accounts.pub"]);
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl ControlPlane {
    /// Starts etcd, then the API server, and waits until it is ready.
    pub fn start() -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        keys(&path);
        let admin = format!("admin-{:016x}", fastrand::u64(..));
        std::fs::write(path.join("tokens.csv"), format!("{admin},lockstep-test-admin,admin,\"system:masters\"\n"))
            .expect("token file");
        std::fs::write(path.join("curl.conf"), format!("header = \"Authorization: Bearer {admin}\"\n"))
            .expect("curl config");

        let (client, peer) = (crate::free_port(), crate::free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let etcd = Command::new(&bin)
            .args(["etcd", &path.join("etcd").display().to_string(), &etcd_url, &format!("http://127.0.0.1:{peer}")])
            .stdout(log_file(&path, "etcd.out"))
            .stderr(log_file(&path, "etcd.log"))
            .spawn()
            .expect("start etcd");
        let port = crate::free_port();
        let file = |name: &str| path.join(name).display().to_string();
        let apiserver = Command::new(&bin)
            .arg("kube-apiserver")
            .args([
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", file("certs")),
                format!("--tls-cert-file={}", file("serving.crt")),
                format!("--tls-private-key-file={}", file("serving.key")),
                format!("--client-ca-file={}", file("ca.crt")),
                format!("--token-auth-file={}", file("tokens.csv")),
                format!("--service-account-issuer={ISSUER}"),
                format!("--service-account-key-file={}", file("service-accounts.pub")),
                format!("--service-account-signing-key-file={}", file("service-accounts.key")),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                "--endpoint-reconciler-type=none".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
            ])
            .stdout(log_file(&path, "apiserver.out"))
            .stderr(log_file(&path, "apiserver.log"))
            .spawn()
            .expect("start kube-apiserver");
        let mut plane = Self { dir, etcd, apiserver, url: format!("https://127.0.0.1:{port}") };
        plane.wait_ready();
        plane
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.request("GET", "/readyz", None).status == 200 {
                return;
            }
            for (child, log) in [(&mut self.etcd, "etcd.log"), (&mut self.apiserver, "apiserver.log")] {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{log}: exited {status}:\n{}", tail(&self.dir.path().join(log)));
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 120 s:\n{}",
                tail(&self.dir.path().join("apiserver.log"))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PEM of the CA that signed the API server's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).expect("CA certificate")
    }

    /// A request as the cluster's administrator, through curl (which the
    /// tests already need: the test library's HTTP client speaks no TLS).
    /// The token reaches curl in a config file, never on a command line.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let dir = self.dir.path();
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "30", "-X", method, "--cacert"])
            .arg(dir.join("ca.crt"))
            .arg("-K")
            .arg(dir.join("curl.conf"))
            .args(["-H", "Content-Type: application/json", "-H", "Accept: application/json", "-w", "\n%{http_code}"]);
        if body.is_some() {
            command.args(["--data-binary", "@-"]);
        }
        let mut child = command
            .arg(format!("{}{path}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run curl (is it installed?)");
        let input = body.map(Value::to_string).unwrap_or_default();
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("request body");
        let out = child.wait_with_output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status.trim().parse().unwrap_or(0);
        Answer { status, body: serde_json::from_str(body).unwrap_or(Value::Null) }
    }

    /// Creates what `path` (a collection) names from `body`; panics unless
    /// the API server answers 201.
    #[track_caller]
    pub fn create(&self, path: &str, body: Value) -> Value {
        self.request("POST", path, Some(&body)).expect(201)
    }

    /// A namespace, a service account in it and a pod object that runs as
    /// it (never scheduled: no node runs here); the pod's UID.
    pub fn pod(&self, namespace: &str, account: &str, pod: &str) -> String {
        if self.request("GET", &format!("/api/v1/namespaces/{namespace}"), None).status == 404 {
            self.create(
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            );
        }
        if self.request("GET", &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}"), None).status == 404
        {
            self.create(
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}),
            );
        }
        let created = self.create(
            &format!("/api/v1/namespaces/{namespace}/pods"),
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                "spec": {"serviceAccountName": account, "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "localhost/app:test"}]}
            }),
        );
        created["metadata"]["uid"].as_str().expect("pod uid").to_string()
    }

    /// A token for `account` and `audience` from the TokenRequest API;
    /// bound to a pod (name, UID) as the kubelet asks for a projected token,
    /// when one is given.
    pub fn token(&self, namespace: &str, account: &str, pod: Option<(&str, &str)>, audience: &str) -> String {
        let mut spec = json!({"audiences": [audience], "expirationSeconds": 3600});
        if let Some((name, uid)) = pod {
            spec["boundObjectRef"] = json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
        }
        let answer = self.create(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
        );
        answer["status"]["token"].as_str().expect("token").to_string()
    }

    /// Lets `account` ask the API server to review tokens (the binding the
    /// Vault and OpenBao Helm charts make for their own service account).
    pub fn allow_token_review(&self, namespace: &str, account: &str) {
        let name = format!("lockstep-test-review-{namespace}-{account}");
        self.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
            }),
        );
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            // SIGTERM first: both shut down cleanly on it.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for log in ["apiserver.log", "etcd.log"] {
                eprintln!("--- {log}\n{}", tail(&self.dir.path().join(log)));
            }
        }
    }
}
