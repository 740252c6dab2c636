//! JWTs the tests sign themselves, for the server's `jwt` auth method: an
//! RSA key pair and RS256 tokens, made with the openssl CLI. (Kubernetes
//! service-account tokens come from a real API server, see
//! [`crate::kubecp`].)

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

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

/// An RS256 JWT with `claims`, signed with `dir/jwt-private.pem`.
pub fn rs256_jwt(dir: &Path, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    std::fs::write(dir.join("jwt-input"), &input).expect("signing input");
    let signature = openssl(&["dgst", "-sha256", "-sign", "jwt-private.pem", "jwt-input"], dir);
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
