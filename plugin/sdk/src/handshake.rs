//! What the host tells a plugin through its environment, and the line the
//! plugin answers with on stdout.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;

/// Environment variable the host sets to prove it started the binary.
pub const MAGIC_COOKIE_KEY: &str = "VAULT_BACKEND_PLUGIN";
/// The value the host sets it to (the same for Vault and OpenBao).
pub const MAGIC_COOKIE_VALUE: &str = "6669da05-b1c8-4f49-97d9-c8e5bed98e20";
/// go-plugin's core protocol version.
const CORE_PROTOCOL: u32 = 1;
/// The backend protocol this SDK speaks: gRPC with AutoMTLS.
pub const APP_PROTOCOL: u32 = 5;

/// Why the environment does not allow serving.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The binary was not started by a plugin host.
    #[error(
        "this binary is a Vault/OpenBao plugin and is started by the server; \
         register it instead: `vault plugin register -sha256=<sha256 of this file> \
         -version=<version> secret <name>` (see docs/registering.md)"
    )]
    NotStartedByHost,
    /// The host did not offer protocol version 5.
    #[error("the host offered plugin protocol versions {offered:?}; this plugin speaks only version 5")]
    UnsupportedProtocol {
        /// What `PLUGIN_PROTOCOL_VERSIONS` held.
        offered: String,
    },
    /// The host did not send a client certificate, so mTLS is impossible.
    #[error("the host did not set PLUGIN_CLIENT_CERT; this plugin requires AutoMTLS")]
    NoClientCertificate,
}

/// The settings read from the host's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct HostEnv {
    /// PEM of the host's certificate, pinned in both directions.
    pub client_cert_pem: String,
    /// Where to create the Unix socket.
    pub socket_dir: PathBuf,
    /// Group that should own the socket, when the host runs plugins in containers.
    pub socket_group: Option<String>,
    /// Whether the host asked about gRPC broker multiplexing (a 7th field).
    pub multiplex_grpc_asked: bool,
    /// The host's version, for logs.
    pub host_version: Option<String>,
}

impl std::fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEnv")
            .field("client_cert_pem", &"…")
            .field("socket_dir", &self.socket_dir)
            .field("socket_group", &self.socket_group)
            .field("multiplex_grpc_asked", &self.multiplex_grpc_asked)
            .field("host_version", &self.host_version)
            .finish()
    }
}

impl HostEnv {
    /// Reads the process environment.
    pub fn from_process() -> Result<Self, HandshakeError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the given variables; separate from the process so it can be tested.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, HandshakeError> {
        if vars.get(MAGIC_COOKIE_KEY).map(String::as_str) != Some(MAGIC_COOKIE_VALUE) {
            return Err(HandshakeError::NotStartedByHost);
        }
        let offered = vars.get("PLUGIN_PROTOCOL_VERSIONS").cloned().unwrap_or_default();
        if !offered.split(',').any(|v| v.trim() == APP_PROTOCOL.to_string()) {
            return Err(HandshakeError::UnsupportedProtocol { offered });
        }
        let client_cert_pem = vars
            .get("PLUGIN_CLIENT_CERT")
            .filter(|v| !v.trim().is_empty())
            .cloned()
            .ok_or(HandshakeError::NoClientCertificate)?;
        let socket_dir = vars
            .get("PLUGIN_UNIX_SOCKET_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        // OpenBao sets BAO_* beside VAULT_*; prefer its own name.
        let host_version = vars.get("BAO_VERSION").or_else(|| vars.get("VAULT_VERSION")).cloned();
        Ok(Self {
            client_cert_pem,
            socket_dir,
            socket_group: vars.get("PLUGIN_UNIX_SOCKET_GROUP").filter(|v| !v.is_empty()).cloned(),
            multiplex_grpc_asked: vars.contains_key("PLUGIN_MULTIPLEX_GRPC"),
            host_version,
        })
    }
}

/// The handshake line: `1|5|unix|<path>|grpc|<cert>` and, only when the host
/// asked, a 7th field saying broker multiplexing is not supported.
pub fn handshake_line(socket: &std::path::Path, cert_der: &[u8], multiplex_grpc_asked: bool) -> String {
    // The host decodes the certificate with the standard alphabet, no padding.
    let cert = base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert_der);
    let mut line = format!("{CORE_PROTOCOL}|{APP_PROTOCOL}|unix|{}|grpc|{cert}", socket.display());
    if multiplex_grpc_asked {
        line.push_str("|false");
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_vars() -> HashMap<String, String> {
        [
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "5"),
            ("PLUGIN_CLIENT_CERT", "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"),
            ("BAO_VERSION", "2.6.2"),
            ("VAULT_VERSION", "2.6.2-vault-name"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn missing_or_wrong_cookie_means_started_by_hand() {
        let mut vars = host_vars();
        vars.insert(MAGIC_COOKIE_KEY.into(), "something-else".into());
        assert_eq!(HostEnv::from_vars(&vars), Err(HandshakeError::NotStartedByHost));
        vars.remove(MAGIC_COOKIE_KEY);
        assert_eq!(HostEnv::from_vars(&vars), Err(HandshakeError::NotStartedByHost));
    }

    #[test]
    fn legacy_protocol_offer_is_refused() {
        let mut vars = host_vars();
        vars.insert("PLUGIN_PROTOCOL_VERSIONS".into(), "3,4".into());
        assert_eq!(HostEnv::from_vars(&vars), Err(HandshakeError::UnsupportedProtocol { offered: "3,4".into() }));
        vars.insert("PLUGIN_PROTOCOL_VERSIONS".into(), "4, 5".into());
        assert!(HostEnv::from_vars(&vars).is_ok());
    }

    #[test]
    fn automtls_is_required() {
        let mut vars = host_vars();
        vars.remove("PLUGIN_CLIENT_CERT");
        assert_eq!(HostEnv::from_vars(&vars), Err(HandshakeError::NoClientCertificate));
    }

    #[test]
    fn openbao_names_win_and_socket_dir_is_honoured() {
        let mut vars = host_vars();
        vars.insert("PLUGIN_UNIX_SOCKET_DIR".into(), "/run/plugins".into());
        let env = HostEnv::from_vars(&vars).expect("valid env");
        assert_eq!(env.host_version.as_deref(), Some("2.6.2"));
        assert_eq!(env.socket_dir, PathBuf::from("/run/plugins"));
        assert!(!env.multiplex_grpc_asked);
    }

    #[test]
    fn line_uses_unpadded_standard_base64_and_six_fields() {
        // 4 bytes encode to 6 characters that would need "==" padding.
        let line = handshake_line(std::path::Path::new("/tmp/plugin1"), &[0xfb, 0xff, 0xfe, 0x01], false);
        assert_eq!(line, "1|5|unix|/tmp/plugin1|grpc|+//+AQ\n");
        let line = handshake_line(std::path::Path::new("/tmp/plugin1"), &[1], true);
        assert_eq!(line.trim_end().split('|').count(), 7);
        assert!(line.trim_end().ends_with("|false"));
    }
}
