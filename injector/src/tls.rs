//! The webhook's serving certificate, read from PEM files and read again
//! whenever either file changes (cert-manager and the kubelet replace
//! Secret files in place), without a restart and without dropping the
//! connections already open.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate could not be loaded. Never quotes the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file.
    #[error("certificate file {0}: {1}")]
    Certificate(PathBuf, String),
    /// The key file.
    #[error("key file {0}: {1}")]
    Key(PathBuf, String),
}

/// The certificate and key files, and what they held when last read.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: std::sync::Mutex<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp_of(paths: [&Path; 2]) -> Stamp {
    paths.map(|p| std::fs::metadata(p).map_or((None, 0), |m| (m.modified().ok(), m.len())))
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| TlsError::Certificate(cert.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Certificate(cert.to_path_buf(), "no certificate in it".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| TlsError::Key(key.to_path_buf(), "no private key in it".into()))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|_| TlsError::Key(key.to_path_buf(), "not an RSA, ECDSA or Ed25519 private key".into()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|_| TlsError::Key(key.to_path_buf(), "it does not match the certificate".into()))?;
    Ok(certified)
}

impl Reloading {
    /// Reads both files once; fails when they do not make a certificate.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let stamp = stamp_of([&cert, &key]);
        let current = ArcSwap::from_pointee(load(&cert, &key)?);
        Ok(Self { cert, key, current, stamp: std::sync::Mutex::new(stamp) })
    }

    /// Reads the files again if either changed since last time: true when
    /// a new certificate is now served. A pair that does not load (a
    /// half-written replacement) keeps the old one and is tried again.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = stamp_of([&self.cert, &self.key]);
        let mut stamp = self.stamp.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *stamp == now {
            return Ok(false);
        }
        let loaded = load(&self.cert, &self.key)?;
        self.current.store(Arc::new(loaded));
        *stamp = now;
        Ok(true)
    }

    /// The rustls configuration serving whatever is current.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("the default provider supports the default versions")
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert =
            rcgen::CertificateParams::new(vec![name.to_string()]).expect("params").self_signed(&key).expect("cert");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("cert file");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("key file");
        cert.der().to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("dir");
        let first = write_pair(dir.path(), "one.example");
        let tls = Reloading::new(dir.path().join("tls.crt"), dir.path().join("tls.key")).expect("loads");
        assert_eq!(tls.current.load().cert[0].as_ref(), first.as_slice());
        assert!(!tls.refresh().expect("unchanged"), "nothing changed");

        // A certificate whose key is not there yet: refused, the old one stays.
        let key = std::fs::read(dir.path().join("tls.key")).expect("key");
        write_pair(dir.path(), "two.example");
        std::fs::write(dir.path().join("tls.key"), &key).expect("old key back");
        let error = tls.refresh().expect_err("mismatched pair");
        assert!(error.to_string().contains("does not match"), "{error}");
        assert!(!error.to_string().contains("PRIVATE KEY"), "{error}");
        assert_eq!(tls.current.load().cert[0].as_ref(), first.as_slice());

        let third = write_pair(dir.path(), "three.example");
        assert!(tls.refresh().expect("reloads"));
        assert_eq!(tls.current.load().cert[0].as_ref(), third.as_slice());
    }

    #[test]
    fn files_without_a_key_or_certificate_are_refused_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        write_pair(dir.path(), "one.example");
        std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
        let error = Reloading::new(dir.path().join("tls.crt"), dir.path().join("tls.key")).expect_err("no key");
        assert!(error.to_string().contains("key file"), "{error}");
        std::fs::write(dir.path().join("tls.crt"), "").expect("write");
        let error = Reloading::new(dir.path().join("tls.crt"), dir.path().join("tls.key")).expect_err("no cert");
        assert!(error.to_string().contains("certificate file"), "{error}");
    }
}
