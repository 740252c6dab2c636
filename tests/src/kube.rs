//! A stand-in for the one Kubernetes API call Vault's `kubernetes` auth
//! method makes at login: the TokenReview. It authenticates exactly the
//! service-account tokens the test has issued and not revoked, as one
//! service account, and records every token it was asked about.
//!
//! The server under test is the real one; only the cluster is simulated.
//! Beside it, what a cluster would hand a pod: RS256 service-account
//! tokens ([`service_account_jwt`]), signed with a key made by openssl.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use serde_json::{Value, json};

/// The service account the stand-in vouches for.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

#[derive(Debug, Default)]
struct Tokens {
    valid: Vec<String>,
    reviewed: Vec<String>,
}

/// The stand-in API server on 127.0.0.1; stopped on drop.
#[derive(Debug)]
pub struct FakeKubernetes {
    address: String,
    tokens: Arc<Mutex<Tokens>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKubernetes {
    /// Starts answering TokenReviews for `account`.
    pub fn start(account: ServiceAccount) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Kubernetes stand-in");
        let address = format!("http://{}", listener.local_addr().expect("local address"));
        let tokens = Arc::new(Mutex::new(Tokens::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (tokens.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    // A malformed request only ends its own connection.
                    let _ = answer(stream, &account, &shared);
                }
            }
        });
        Self { address, tokens, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`, for the auth method's `kubernetes_host`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Starts accepting `token`.
    pub fn issue(&self, token: &str) {
        self.lock().valid.push(token.to_string());
    }

    /// Stops accepting `token`.
    pub fn revoke(&self, token: &str) {
        self.lock().valid.retain(|t| t != token);
    }

    /// Every token a review asked about, in order.
    pub fn reviewed(&self) -> Vec<String> {
        self.lock().reviewed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request and answers it; the connection is closed after.
fn answer(stream: TcpStream, account: &ServiceAccount, tokens: &Mutex<Tokens>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (status, reply) = if request_line.starts_with("POST /apis/authentication.k8s.io/v1/tokenreviews ") {
        (200, review(&body, account, tokens))
    } else {
        (404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}))
    };
    let text = reply.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

/// A TokenReview's answer: authenticated as `account` when the token is
/// one the test issued; the requested audiences are echoed back.
fn review(body: &[u8], account: &ServiceAccount, tokens: &Mutex<Tokens>) -> Value {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let token = request["spec"]["token"].as_str().unwrap_or_default().to_string();
    let audiences = request["spec"]["audiences"].clone();
    let mut tokens = tokens.lock().unwrap_or_else(|p| p.into_inner());
    tokens.reviewed.push(token.clone());
    let status = if tokens.valid.contains(&token) {
        json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{}:{}", account.namespace, account.name),
                "uid": account.uid,
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", account.namespace)],
            },
            "audiences": audiences,
        })
    } else {
        json!({"authenticated": false, "error": "token is not valid"})
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
}

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (is it installed?)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// An RSA key pair in `dir` (`jwt-private.pem`, `jwt-public.pem`); returns
/// the public key PEM.
pub fn rsa_key_pair(dir: &Path) -> String {
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "jwt-private.pem"], dir);
    openssl(&["pkey", "-in", "jwt-private.pem", "-pubout", "-out", "jwt-public.pem"], dir);
    std::fs::read_to_string(dir.join("jwt-public.pem")).expect("public key")
}

/// A self-signed CA certificate (PEM) made in `dir`, to give the
/// `kubernetes` auth method as the cluster's CA. The stand-in cluster
/// speaks plain HTTP, so no connection checks it, but OpenBao refuses a
/// configuration without one once the server's own CA is switched off.
pub fn cluster_ca_pem(dir: &Path) -> String {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "cluster-ca.key",
            "-out",
            "cluster-ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=cluster-ca",
        ],
        dir,
    );
    std::fs::read_to_string(dir.join("cluster-ca.pem")).expect("CA certificate")
}

/// An RS256 JWT with `claims`, signed with `dir/jwt-private.pem`.
pub fn rs256_jwt(dir: &Path, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    std::fs::write(dir.join("jwt-input"), &input).expect("signing input");
    let signature = openssl(&["dgst", "-sha256", "-sign", "jwt-private.pem", "jwt-input"], dir);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A projected service-account token for `account` (RS256, signed with
/// `dir/jwt-private.pem`), valid for 10 minutes; `serial` makes each one
/// distinct, as the kubelet's rotations are.
#[allow(clippy::disallowed_methods)] // a token's times are the wall clock's
pub fn service_account_jwt(dir: &Path, account: &ServiceAccount, serial: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": "https://kubernetes.default.svc.cluster.local", "aud": ["vault"],
        "sub": format!("system:serviceaccount:{}:{}", account.namespace, account.name),
        "iat": now, "nbf": now, "exp": now + 600, "jti": format!("token-{serial}"),
        "kubernetes.io": {"namespace": account.namespace,
                          "serviceaccount": {"name": account.name, "uid": account.uid},
                          "pod": {"name": "web-7f9c", "uid": "3c1f3a52-61e2-4f1c-9d57-2f7b1c3e8a10"}},
    });
    rs256_jwt(dir, &claims)
}
