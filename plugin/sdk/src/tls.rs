//! The plugin's certificate and the mTLS configuration of both connections.
//!
//! The host trusts exactly the certificate the plugin prints in its
//! handshake, and the plugin trusts exactly the certificate the host passes
//! in `PLUGIN_CLIENT_CERT`. Both are self-signed and the host's is marked as
//! a CA, which WebPKI path building refuses to accept as an end entity, so
//! trust here is a byte-for-byte pin plus a real signature check by the
//! crypto provider. The provider is aws-lc-rs because the host signs with
//! P-521, which it can verify.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The host's certificate was not a PEM certificate.
    #[error("PLUGIN_CLIENT_CERT does not hold a PEM certificate")]
    BadHostCertificate,
    /// Certificate generation failed.
    #[error("generating the plugin certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// This process's certificate and key; generated fresh at every start.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("cert_len", &self.cert.len()).field("key", &"…").finish()
    }
}

impl Identity {
    /// A self-signed P-256 certificate for `localhost`, valid from 30 seconds
    /// ago (the host's clock may be slightly behind) for about 30 years,
    /// usable both as a server and as a client.
    pub fn generate() -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyAgreement,
        ];
        // The certificate's validity must match the host's real clock.
        #[allow(clippy::disallowed_methods)]
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = now + time::Duration::days(365 * 30);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert: cert.der().clone(), key: PrivatePkcs8KeyDer::from(key.serialize_der()) })
    }

    /// DER of the certificate, as printed in the handshake.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

fn random_serial() -> Result<rcgen::SerialNumber, TlsError> {
    let mut serial = [0u8; 16];
    provider().secure_random.fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] &= 0x7f; // keep it positive
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

/// The one crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses the PEM certificate the host passed in `PLUGIN_CLIENT_CERT`.
pub fn parse_host_certificate(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::BadHostCertificate)
}

/// Server side of the main connection: require the host's certificate.
pub fn server_config(identity: &Identity, host: CertificateDer<'static>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate::new(host, &provider));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())?;
    // grpc-go refuses TLS connections on which ALPN did not select h2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client side of the brokered connections: present our certificate, accept
/// only the host's.
pub fn client_config(identity: &Identity, host: CertificateDer<'static>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertificate::new(host, &provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Trusts exactly one certificate, compared byte for byte, and checks the
/// handshake signature with that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertificate {
    fn new(pinned: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self { pinned, algorithms: provider.signature_verification_algorithms }
    }

    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.pinned.as_ref() {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }
}

impl ClientCertVerifier for PinnedCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // An empty list stops the Go client from filtering its certificate
        // by issuer; the pin replaces the CA check.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_verifies_p521_signatures() {
        // The host's key is P-521; without this scheme the host's client
        // certificate is silently never sent.
        let schemes = provider().signature_verification_algorithms.supported_schemes();
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP521_SHA512));
    }

    #[test]
    fn pin_accepts_only_the_exact_certificate() {
        let a = Identity::generate().expect("generate");
        let b = Identity::generate().expect("generate");
        let pin = PinnedCertificate::new(a.cert.clone(), &provider());
        assert!(pin.check(&a.cert).is_ok());
        assert!(pin.check(&b.cert).is_err());
        assert!(ClientCertVerifier::root_hint_subjects(&pin).is_empty());
    }

    #[test]
    fn identity_is_fresh_and_names_localhost() {
        let a = Identity::generate().expect("generate");
        let b = Identity::generate().expect("generate");
        assert_ne!(a.cert_der(), b.cert_der());
        // The DNS SAN is stored as an IA5String; its bytes appear verbatim.
        let der = a.cert_der();
        assert!(der.windows(9).any(|w| w == b"localhost"));
        assert!(!format!("{a:?}").contains("key: ["));
    }

    #[test]
    fn host_certificate_must_be_pem() {
        use base64::Engine as _;
        assert!(parse_host_certificate("not a certificate").is_err());
        let id = Identity::generate().expect("generate");
        let body = base64::engine::general_purpose::STANDARD.encode(id.cert_der());
        let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        let parsed = parse_host_certificate(&pem).expect("parse");
        assert_eq!(parsed.as_ref(), id.cert_der());
    }
}
