//! Getting and keeping a Vault token: read from a file (and re-read when
//! the file changes), or logged in with AppRole, Kubernetes or JWT; renewed
//! when two thirds of its ttl have passed; replaced by a new login when
//! renewal fails or Vault refuses it.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::client::{Lease, VaultClient, VaultError};
use crate::config::{AuthConfig, AuthMethod, K8S_JWT_FILE};

/// Largest credential file read.
const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// Why no token could be had. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credential file could not be read.
    #[error("{setting} {path}: {message}")]
    File {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Vault refused or failed the login, renewal or lookup.
    #[error("{0}")]
    Vault(#[from] VaultError),
}

impl AuthError {
    /// Label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "auth_file",
            Self::Vault(VaultError::Unreachable(_)) => "unreachable",
            Self::Vault(_) => "auth",
        }
    }
}

struct Current {
    token: Zeroizing<String>,
    ttl: u64,
    renewable: bool,
    since: Instant,
}

/// Holds the token; one per sync loop.
pub struct Auth {
    config: AuthConfig,
    client: VaultClient,
    current: Option<Current>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("method", &self.config.method)
            .field("has_token", &self.current.is_some())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// No token yet; the first [`Auth::token`] gets one.
    pub fn new(config: AuthConfig, client: VaultClient) -> Self {
        Self { config, client, current: None }
    }

    /// A token good for the next request.
    pub async fn token(&mut self) -> Result<Zeroizing<String>, AuthError> {
        if self.config.method == AuthMethod::Token {
            self.reload_token_file().await?;
        } else if self.current.as_ref().is_none_or(expired) {
            self.login().await?;
        }
        if self.current.as_ref().is_some_and(due_for_renewal) {
            self.renew().await?;
        }
        let current = self.current.as_ref().ok_or_else(|| VaultError::Denied("no token".into()))?;
        Ok(current.token.clone())
    }

    /// Seconds until the token is due for renewal (renewable tokens with a
    /// known TTL). Renewal happens when a sync asks for the token, so the
    /// sync loop never waits longer than this.
    pub fn renewal_due_in(&self) -> Option<u64> {
        let current = self.current.as_ref().filter(|c| c.renewable && c.ttl > 0)?;
        Some((current.ttl * 2 / 3).saturating_sub(current.since.elapsed().as_secs()))
    }

    /// Vault refused the token: forget it, so the next call logs in again
    /// (or re-reads the token file).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    async fn reload_token_file(&mut self) -> Result<(), AuthError> {
        let path = self.config.token_file.clone().unwrap_or_default();
        let token = read_credential("auth.token_file", &path)?;
        if self.current.as_ref().is_some_and(|c| c.token == token) {
            return Ok(());
        }
        let (ttl, renewable) = match self.client.lookup_self(&token).await {
            Ok(found) => found,
            // A policy may forbid lookup-self; the token may still work.
            Err(VaultError::Status { .. } | VaultError::Decode(_)) => (0, false),
            Err(error) => return Err(error.into()),
        };
        tracing::info!(ttl, renewable, "token read from auth.token_file");
        self.current = Some(Current { token, ttl, renewable, since: Instant::now() });
        Ok(())
    }

    async fn login(&mut self) -> Result<(), AuthError> {
        let body = match self.config.method {
            AuthMethod::Approle => {
                let secret = read_credential(
                    "auth.secret_id_file",
                    self.config.secret_id_file.as_deref().unwrap_or(Path::new("")),
                )?;
                json!({"role_id": self.config.role_id, "secret_id": secret.as_str()})
            }
            AuthMethod::Kubernetes | AuthMethod::Jwt => {
                // Projected service-account tokens rotate: read at every login.
                let path = self.config.jwt_file.clone().unwrap_or_else(|| K8S_JWT_FILE.into());
                let jwt = read_credential("auth.jwt_file", &path)?;
                json!({"role": self.config.role, "jwt": jwt.as_str()})
            }
            AuthMethod::Token => return self.reload_token_file().await,
        };
        let lease = self.client.login(&self.config.mount_path(), &body).await?;
        tracing::info!(method = ?self.config.method, ttl = lease.ttl, "logged in to vault");
        self.set(lease);
        Ok(())
    }

    async fn renew(&mut self) -> Result<(), AuthError> {
        let Some(current) = &self.current else {
            return Ok(());
        };
        match self.client.renew_self(&current.token, current.ttl.max(60)).await {
            Ok(mut lease) => {
                if lease.token.is_empty() {
                    lease.token = current.token.clone();
                }
                tracing::debug!(ttl = lease.ttl, "token renewed");
                self.set(lease);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "token renewal failed; logging in again");
                self.current = None;
                self.login().await
            }
        }
    }

    fn set(&mut self, lease: Lease) {
        self.current =
            Some(Current { token: lease.token, ttl: lease.ttl, renewable: lease.renewable, since: Instant::now() });
    }
}

fn due_for_renewal(current: &Current) -> bool {
    current.renewable && current.ttl > 0 && current.since.elapsed().as_secs() * 3 >= current.ttl * 2
}

fn expired(current: &Current) -> bool {
    current.ttl > 0 && current.since.elapsed().as_secs() >= current.ttl
}

/// Reads a credential file, trimmed; errors name the setting, never the
/// content.
fn read_credential(setting: &'static str, path: &Path) -> Result<Zeroizing<String>, AuthError> {
    let fail = |message: String| AuthError::File { setting, path: path.to_path_buf(), message };
    let size = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if size > MAX_CREDENTIAL_BYTES {
        return Err(fail(format!("larger than {MAX_CREDENTIAL_BYTES} bytes")));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
    let trimmed = Zeroizing::new(text.trim().to_string());
    if trimmed.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::VaultConfig;
    use crate::fakevault::FakeVault;

    /// A fake Vault and an AppRole login to it, its secret id in `dir`.
    async fn approle(dir: &std::path::Path) -> (FakeVault, Auth) {
        let vault = FakeVault::start().await;
        std::fs::write(dir.join("secret-id"), "s3cret").expect("secret");
        let config = AuthConfig {
            method: AuthMethod::Approle,
            role_id: Some("role".into()),
            secret_id_file: Some(dir.join("secret-id")),
            ..AuthConfig::default()
        };
        let vault_config = VaultConfig { addr: vault.addr.clone(), ..VaultConfig::default() };
        let auth = Auth::new(config, VaultClient::new(&vault_config).expect("client"));
        (vault, auth)
    }

    fn age(auth: &mut Auth, secs: u64) {
        if let Some(current) = auth.current.as_mut() {
            current.since = Instant::now().checked_sub(Duration::from_secs(secs)).expect("instant");
        }
    }

    #[tokio::test]
    async fn renews_at_two_thirds_of_the_ttl_and_logs_in_again_when_renewal_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (vault, mut auth) = approle(dir.path()).await;
        let first = auth.token().await.expect("login");
        assert_eq!(vault.state().logins, 1);
        assert_eq!(vault.state().renewals, 0);
        age(&mut auth, 2_000);
        assert_eq!(auth.token().await.expect("no renewal yet"), first);
        assert_eq!(vault.state().renewals, 0);
        age(&mut auth, 2_400);
        assert_eq!(auth.token().await.expect("renewed"), first);
        assert_eq!(vault.state().renewals, 1);
        vault.state().tokens.clear();
        age(&mut auth, 2_400);
        let second = auth.token().await.expect("new login");
        assert_ne!(second, first);
        assert_eq!(vault.state().logins, 2);
        assert!(!format!("{auth:?}").contains(second.as_str()));
    }

    #[tokio::test]
    async fn tells_the_sync_loop_when_renewal_falls_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_vault, mut auth) = approle(dir.path()).await;
        assert_eq!(auth.renewal_due_in(), None, "no token yet");
        auth.token().await.expect("login");
        let fresh = auth.renewal_due_in().expect("renewable");
        age(&mut auth, 2_000);
        let later = auth.renewal_due_in().expect("renewable");
        assert!(fresh >= 2_000 && later <= fresh - 2_000, "{fresh} then {later}");
        age(&mut auth, 10_000);
        assert_eq!(auth.renewal_due_in(), Some(0));
    }

    #[tokio::test]
    async fn kubernetes_and_jwt_logins_read_the_jwt_file_at_every_login() {
        let vault = FakeVault::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt_file = dir.path().join("sa-token");
        let vault_config = VaultConfig { addr: vault.addr.clone(), ..VaultConfig::default() };
        for method in [AuthMethod::Kubernetes, AuthMethod::Jwt] {
            let config = AuthConfig {
                method,
                role: Some("web".into()),
                jwt_file: Some(jwt_file.clone()),
                ..AuthConfig::default()
            };
            let mut auth = Auth::new(config, VaultClient::new(&vault_config).expect("client"));
            std::fs::write(&jwt_file, "eyJ.first\n").expect("jwt");
            auth.token().await.expect("login");
            assert_eq!(vault.state().last_jwt, "eyJ.first");
            // A projected token rotated by the kubelet is used at the next login.
            std::fs::write(&jwt_file, "eyJ.second").expect("jwt");
            auth.invalidate();
            auth.token().await.expect("login again");
            assert_eq!(vault.state().last_jwt, "eyJ.second");
        }
        assert_eq!(vault.state().logins, 4);
    }

    #[tokio::test]
    async fn credential_errors_name_the_setting_not_the_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "  \n").expect("write");
        let error = read_credential("auth.secret_id_file", &empty).expect_err("empty").to_string();
        assert!(error.contains("auth.secret_id_file") && error.contains("is empty"), "{error}");
    }
}
