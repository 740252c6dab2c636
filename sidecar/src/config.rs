//! Configuration: a TOML file, then `LOCKSTEP_*` environment variables, then
//! `--set setting=value` flags, each overriding the one before; checked as a
//! whole before anything starts, with errors that name the setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Every setting an environment variable can override: (setting, variable).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("pool", "LOCKSTEP_POOL"),
    ("instance", "LOCKSTEP_INSTANCE"),
    ("vault.addr", "LOCKSTEP_VAULT_ADDR"),
    ("vault.namespace", "LOCKSTEP_VAULT_NAMESPACE"),
    ("vault.mount", "LOCKSTEP_VAULT_MOUNT"),
    ("vault.ca_bundle", "LOCKSTEP_VAULT_CA_BUNDLE"),
    ("vault.poll_interval_secs", "LOCKSTEP_POLL_INTERVAL_SECS"),
    ("vault.wait_secs", "LOCKSTEP_WAIT_SECS"),
    ("auth.method", "LOCKSTEP_AUTH_METHOD"),
    ("auth.mount", "LOCKSTEP_AUTH_MOUNT"),
    ("auth.token_file", "LOCKSTEP_TOKEN_FILE"),
    ("auth.role", "LOCKSTEP_AUTH_ROLE"),
    ("auth.role_id", "LOCKSTEP_ROLE_ID"),
    ("auth.secret_id_file", "LOCKSTEP_SECRET_ID_FILE"),
    ("auth.jwt_file", "LOCKSTEP_JWT_FILE"),
    ("socket.path", "LOCKSTEP_SOCKET"),
    ("cache.file", "LOCKSTEP_CACHE_FILE"),
    ("cache.key_file", "LOCKSTEP_CACHE_KEY_FILE"),
    ("log.format", "LOCKSTEP_LOG_FORMAT"),
    ("log.level", "LOCKSTEP_LOG_LEVEL"),
    ("telemetry.addr", "LOCKSTEP_TELEMETRY_ADDR"),
];

/// Why a configuration was refused. Each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a setting of the wrong type or an
    /// unknown one.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file (or `<overrides>`).
        path: String,
        /// The parser's message, which names the setting and line.
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("setting {setting}: {message}")]
    Invalid {
        /// Dotted name, as in the file (`vault.addr`).
        setting: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A setting whose value cannot work.
    pub fn invalid(setting: &str, message: impl Into<String>) -> Self {
        Self::Invalid { setting: setting.into(), message: message.into() }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The pool whose bundle this sidecar fetches.
    pub pool: String,
    /// This sidecar's id in acknowledgements (the pod name); defaults to
    /// `$HOSTNAME`.
    pub instance: String,
    /// Where Vault is and how often to ask it.
    pub vault: VaultConfig,
    /// How to get a Vault token.
    pub auth: AuthConfig,
    /// The local socket API.
    pub socket: SocketConfig,
    /// Fail-static settings and the persistent cache.
    pub cache: CacheConfig,
    /// Files written for apps that read keys from disk.
    pub sink: Option<SinkConfig>,
    /// A TCP listener for kubelet's probes and Prometheus: health,
    /// readiness and metrics only, never keys.
    pub telemetry: Option<TelemetryConfig>,
    /// Logging.
    pub log: LogConfig,
}

/// Vault connection and polling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// `https://vault.example:8200`: one address (a load balancer in front
    /// of every node, or the active node's service), or several separated
    /// by commas, one per node, to fail over between in turn.
    pub addr: String,
    /// Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Where the Lockstep engine is mounted.
    pub mount: String,
    /// PEM file of CAs to trust instead of the built-in roots.
    pub ca_bundle: Option<PathBuf>,
    /// Pause between polls when long-polling is off or not honoured.
    pub poll_interval_secs: u64,
    /// Long-poll: how long Vault may hold a bundle request (0 turns it off).
    pub wait_secs: u64,
    /// First retry delay after a failure.
    pub backoff_min_ms: u64,
    /// Ceiling of the retry delay.
    pub backoff_max_secs: u64,
    /// Warn when the local clock differs from Vault's by more than this.
    pub max_clock_skew_secs: u64,
    /// When the active node of a cluster says its standbys answer polls,
    /// poll a standby instead: the next address, or a new connection
    /// through a single (load-balanced) address.
    pub prefer_standby: bool,
}

impl VaultConfig {
    /// The addresses `addr` names, in order.
    pub fn addrs(&self) -> Vec<&str> {
        self.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).collect()
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            addr: String::new(),
            namespace: None,
            mount: "lockstep".into(),
            ca_bundle: None,
            poll_interval_secs: 30,
            wait_secs: 30,
            backoff_min_ms: 500,
            backoff_max_secs: 60,
            max_clock_skew_secs: 5,
            prefer_standby: true,
        }
    }
}

/// Auth method names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A token read from a file (re-read when it changes).
    #[default]
    Token,
    /// AppRole: role id and a secret id file.
    Approle,
    /// Kubernetes: the service-account JWT, re-read at every login.
    Kubernetes,
    /// JWT/OIDC auth with a JWT file.
    Jwt,
}

/// How to obtain a token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Which method.
    pub method: AuthMethod,
    /// Auth mount path; defaults to the method's name.
    pub mount: Option<String>,
    /// `token`: the file holding the token.
    pub token_file: Option<PathBuf>,
    /// `kubernetes`, `jwt`: the role to log in as.
    pub role: Option<String>,
    /// `approle`: the role id (not a secret).
    pub role_id: Option<String>,
    /// `approle`: the file holding the secret id.
    pub secret_id_file: Option<PathBuf>,
    /// `kubernetes`, `jwt`: the JWT file.
    pub jwt_file: Option<PathBuf>,
}

/// Where the service-account token is in a pod.
pub const K8S_JWT_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl AuthConfig {
    /// The auth mount path in use.
    pub fn mount_path(&self) -> String {
        self.mount.clone().unwrap_or_else(|| {
            match self.method {
                AuthMethod::Token => "token",
                AuthMethod::Approle => "approle",
                AuthMethod::Kubernetes => "kubernetes",
                AuthMethod::Jwt => "jwt",
            }
            .into()
        })
    }
}

/// The local socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// The socket file.
    pub path: PathBuf,
    /// Permission bits, octal text.
    pub mode: String,
    /// Group id to give the socket to (apps in that group may connect).
    pub group: Option<u32>,
    /// If not empty, only callers with one of these uids are served.
    pub allowed_uids: Vec<u32>,
    /// If not empty, only callers with one of these gids are served.
    pub allowed_gids: Vec<u32>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest request head (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout_secs: u64,
    /// Longest watch long-poll.
    pub max_watch_secs: u64,
    /// Leeway on `exp`/`nbf` when verifying JWTs.
    pub jwt_leeway_secs: u64,
    /// How long a request body may take to arrive.
    pub body_timeout_secs: u64,
    /// Most connections served at once (read at start).
    pub max_connections: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            mode: "0660".into(),
            group: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            drain_timeout_secs: 10,
            max_watch_secs: 300,
            jwt_leeway_secs: 30,
            body_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

impl SocketConfig {
    /// The permission bits.
    pub fn mode_bits(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| ConfigError::invalid("socket.mode", "must be octal permission bits such as \"0660\""))
    }
}

/// Fail-static settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The encrypted cache file (none: memory only).
    pub file: Option<PathBuf>,
    /// The file holding the 32-byte cache key (raw or base64); required
    /// with `file` and kept apart from it (another volume or a secret).
    pub key_file: Option<PathBuf>,
    /// Readiness turns false when the last successful sync is older.
    pub max_age_secs: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { file: None, key_file: None, max_age_secs: 3600 }
    }
}

/// Material formats the socket and sink can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Base64 of the DER (or raw secret).
    #[default]
    Base64,
    /// JSON Web Key.
    Jwk,
    /// PEM.
    Pem,
}

impl Format {
    /// Parses a query value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "base64" => Some(Self::Base64),
            "jwk" => Some(Self::Jwk),
            "pem" => Some(Self::Pem),
            _ => None,
        }
    }
}

/// The file sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Directory of `<keyring>.json` files.
    pub dir: PathBuf,
    /// Material format in the files.
    pub format: Format,
    /// Include private keys of asymmetric keyrings.
    pub private: bool,
    /// Send SIGHUP to the pid in this file after a change.
    pub pid_file: Option<PathBuf>,
    /// Or run this command (argv) after a change.
    pub command: Vec<String>,
}

/// The telemetry listener (`[telemetry]`), read at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `host:port` to listen on, for example `0.0.0.0:9090` in a pod.
    pub addr: String,
}

impl TelemetryConfig {
    /// The address, parsed.
    pub fn socket_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.addr.parse().map_err(|_| ConfigError::invalid("telemetry.addr", "must be host:port, like 0.0.0.0:9090"))
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter (`info`, `lockstep_sidecar=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: "text".into(), level: "info".into() }
    }
}

/// Where a configuration came from, to load it again on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The file, if any.
    pub path: Option<PathBuf>,
    /// `--set` flags, in order.
    pub sets: Vec<(String, String)>,
}

impl Source {
    /// Loads and checks the configuration with the process environment.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut env: BTreeMap<String, String> = std::env::vars().collect();
        // $HOSTNAME where the container runtime or the shell exports it,
        // else the kernel's host name.
        if env.get("HOSTNAME").is_none_or(|h| h.trim().is_empty())
            && let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        {
            env.insert(String::from("HOSTNAME"), name.trim().to_string());
        }
        self.load_with(&env)
    }

    /// Loads and checks the configuration with the given environment.
    pub fn load_with(&self, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut table = match &self.path {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        for (setting, var) in ENV_OVERRIDES {
            if let Some(value) = env.get(*var) {
                set_path(&mut table, setting, value_for(setting, value))?;
            }
        }
        for (setting, value) in &self.sets {
            set_path(&mut table, setting, value_for(setting, value))?;
        }
        // The full text: the message alone leaves out the setting's name.
        let mut config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            ConfigError::Parse { path: self.display_path(), message: e.to_string().trim().replace('\n', " ") }
        })?;
        if config.instance.is_empty() {
            // A pod's name is its host name (see `Source::load`).
            config.instance = env.get("HOSTNAME").map(|h| h.trim().to_string()).unwrap_or_default();
            if config.instance.is_empty() {
                return Err(ConfigError::invalid(
                    "instance",
                    "is not set and the host has no name: set instance in the configuration or LOCKSTEP_INSTANCE \
                     (one id per pod, such as the pod's name)",
                ));
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn display_path(&self) -> String {
        self.path.as_ref().map_or_else(|| "<overrides>".into(), |p| p.display().to_string())
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(read(std::io::Error::other(format!("larger than {MAX_CONFIG_BYTES} bytes"))));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
}

/// The value of an override. The text settings that have environment
/// variables stay text even when they look like numbers (a pool named
/// 2024); any other value is typed as TOML when it parses as an integer,
/// boolean or array, else taken as text.
fn value_for(setting: &str, raw: &str) -> toml::Value {
    let text = ENV_OVERRIDES.iter().any(|(s, _)| *s == setting) && !setting.ends_with("_secs");
    if text { toml::Value::String(raw.to_string()) } else { typed(raw) }
}

/// `raw` typed as TOML when it parses as an integer, boolean or array,
/// else as a string.
fn typed(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_str() && !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Sets a dotted setting to `value`.
fn set_path(table: &mut toml::Table, setting: &str, value: toml::Value) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = setting.split('.').collect();
    let last =
        parts.pop().filter(|l| !l.is_empty()).ok_or_else(|| ConfigError::invalid(setting, "empty setting name"))?;
    let mut here = table;
    for part in parts {
        here = here
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::invalid(setting, format!("{part} is not a table")))?;
    }
    here.insert(last.to_string(), value);
    Ok(())
}

impl Config {
    /// Checks every setting; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_name("pool", &self.pool)?;
        check_name("instance", &self.instance)?;
        self.validate_vault()?;
        self.validate_auth()?;
        self.validate_socket()?;
        self.validate_cache()?;
        if let Some(sink) = &self.sink
            && sink.dir.as_os_str().is_empty()
        {
            return Err(ConfigError::invalid("sink.dir", "is required when [sink] is present"));
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.socket_addr()?;
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::invalid("log.format", "must be \"text\" or \"json\""));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        Ok(())
    }

    fn validate_vault(&self) -> Result<(), ConfigError> {
        let vault = &self.vault;
        if vault.addrs().is_empty() {
            return Err(ConfigError::invalid("vault.addr", "is required"));
        }
        for addr in vault.addrs() {
            let url = reqwest::Url::parse(addr)
                .map_err(|e| ConfigError::invalid("vault.addr", format!("{addr:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    "vault.addr",
                    format!("{addr:?} must start with http:// or https://"),
                ));
            }
        }
        check_mount_path("vault.mount", &vault.mount)?;
        if vault.wait_secs > 60 {
            return Err(ConfigError::invalid("vault.wait_secs", "must be between 0 and 60"));
        }
        if !(1..=86_400).contains(&vault.poll_interval_secs) {
            return Err(ConfigError::invalid("vault.poll_interval_secs", "must be between 1 and 86400"));
        }
        if vault.backoff_min_ms == 0 || vault.backoff_max_secs * 1000 < vault.backoff_min_ms {
            return Err(ConfigError::invalid(
                "vault.backoff_max_secs",
                "must be at least vault.backoff_min_ms, which must be positive",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        // The login posts the credential there: a path reaching another
        // mount would hand it to that mount.
        check_mount_path("auth.mount", &auth.mount_path())?;
        let need = |setting: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(ConfigError::invalid(setting, format!("is required by auth.method = {:?}", auth.method)))
            }
        };
        match auth.method {
            AuthMethod::Token => need("auth.token_file", auth.token_file.is_some()),
            AuthMethod::Approle => {
                need("auth.role_id", auth.role_id.is_some())?;
                need("auth.secret_id_file", auth.secret_id_file.is_some())
            }
            AuthMethod::Kubernetes => need("auth.role", auth.role.is_some()),
            AuthMethod::Jwt => {
                need("auth.role", auth.role.is_some())?;
                need("auth.jwt_file", auth.jwt_file.is_some())
            }
        }
    }

    fn validate_socket(&self) -> Result<(), ConfigError> {
        let socket = &self.socket;
        if socket.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("socket.path", "is required"));
        }
        // sun_path holds 108 bytes including the terminating NUL, and the
        // socket is first bound in a staging directory beside it.
        if socket.path.as_os_str().len() > 107 {
            return Err(ConfigError::invalid("socket.path", "is longer than 107 bytes"));
        }
        let dir = socket.path.parent().map_or(0, |p| p.as_os_str().len().max(1));
        if dir + crate::api::STAGING_OVERHEAD > 107 {
            return Err(ConfigError::invalid(
                "socket.path",
                format!("its directory is longer than {} bytes", 107 - crate::api::STAGING_OVERHEAD),
            ));
        }
        socket.mode_bits()?;
        if !(1..=300).contains(&socket.body_timeout_secs) {
            return Err(ConfigError::invalid("socket.body_timeout_secs", "must be between 1 and 300"));
        }
        if !(1..=16_384).contains(&socket.max_connections) {
            return Err(ConfigError::invalid("socket.max_connections", "must be between 1 and 16384"));
        }
        if !(1024..=1024 * 1024).contains(&socket.max_body_bytes) {
            return Err(ConfigError::invalid("socket.max_body_bytes", "must be between 1024 and 1048576"));
        }
        if socket.jwt_leeway_secs > crate::jwt::MAX_LEEWAY_SECS {
            return Err(ConfigError::invalid(
                "socket.jwt_leeway_secs",
                format!("must be at most {}", crate::jwt::MAX_LEEWAY_SECS),
            ));
        }
        if !(8192..=65_536).contains(&socket.max_header_bytes) {
            return Err(ConfigError::invalid("socket.max_header_bytes", "must be between 8192 and 65536"));
        }
        if socket.max_watch_secs == 0 {
            return Err(ConfigError::invalid("socket.max_watch_secs", "must be positive"));
        }
        Ok(())
    }

    fn validate_cache(&self) -> Result<(), ConfigError> {
        let cache = &self.cache;
        if cache.file.is_some() && cache.key_file.is_none() {
            return Err(ConfigError::invalid("cache.key_file", "is required when cache.file is set"));
        }
        if let (Some(file), Some(key)) = (&cache.file, &cache.key_file)
            && file.parent() == key.parent()
        {
            return Err(ConfigError::invalid("cache.key_file", "must not be in the same directory as cache.file"));
        }
        if cache.max_age_secs == 0 {
            return Err(ConfigError::invalid("cache.max_age_secs", "must be positive"));
        }
        Ok(())
    }
}

/// A mount path that names one mount: a `..` segment would reach another
/// (`../sys`), and the server would route it there.
fn check_mount_path(setting: &str, mount: &str) -> Result<(), ConfigError> {
    let ok = !mount.is_empty()
        && mount.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            setting,
            "must be a path without leading or trailing '/', of segments of letters, digits, '_', '-' and '.', \
             none of them '.' or '..'",
        ))
    }
}

/// Pool and instance follow the coordinator's name rule: a name it would
/// refuse leaves the sidecar never ready.
fn check_name(setting: &str, value: &str) -> Result<(), ConfigError> {
    if lockstep_model::name::is_valid(value) {
        Ok(())
    } else {
        Err(ConfigError::invalid(setting, format!("is required: {}", lockstep_model::name::NAME_RULE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("sidecar.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    const GOOD: &str = r#"
pool = "web"
instance = "pod-1"
[vault]
addr = "http://127.0.0.1:8200"
[auth]
token_file = "/run/token"
[socket]
path = "/run/lockstep.sock"
"#;

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = Source { path: Some(write(dir.path(), GOOD)), sets: vec![("vault.wait_secs".into(), "5".into())] };
        let config = source.load_with(&env(&[("LOCKSTEP_POOL", "api"), ("LOCKSTEP_WAIT_SECS", "10")])).expect("valid");
        assert_eq!(config.pool, "api");
        assert_eq!(config.vault.wait_secs, 5);
        assert_eq!(config.vault.mount, "lockstep");
        assert_eq!(config.socket.mode_bits().expect("mode"), 0o660);
    }

    #[test]
    fn errors_name_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), GOOD);
        let cases = [
            ("vault.wait_secs", "61", "vault.wait_secs"),
            ("vault.addr", "ftp://x", "vault.addr"),
            ("vault.addr", "http://a:8200, ftp://x", "vault.addr"),
            ("vault.addr", " , ", "vault.addr"),
            ("socket.mode", "0999", "socket.mode"),
            ("auth.method", "approle", "auth.role_id"),
            ("cache.file", "/var/cache/c", "cache.key_file"),
            ("pool", "a b", "pool"),
            ("log.format", "xml", "log.format"),
            ("socket.jwt_leeway_secs", "301", "socket.jwt_leeway_secs"),
            ("socket.path", &format!("/{}/s.sock", "d".repeat(94)), "socket.path"),
        ];
        for (setting, value, named) in cases {
            let source = Source { path: Some(path.clone()), sets: vec![(setting.into(), value.into())] };
            let error = source.load_with(&env(&[])).expect_err(setting).to_string();
            assert!(error.contains(named), "{setting}={value}: {error}");
        }
        // A value of the wrong type names its setting too.
        let wrong = write(dir.path(), &GOOD.replace("[vault]\n", "[vault]\nwait_secs = \"ten\"\n"));
        let error = Source { path: Some(wrong), sets: vec![] }.load_with(&env(&[])).expect_err("type").to_string();
        assert!(error.contains("vault.wait_secs"), "{error}");
        // Environment values of string settings stay strings, digits or not.
        let source = Source { path: Some(path.clone()), sets: vec![] };
        let config = source
            .load_with(&env(&[("LOCKSTEP_INSTANCE", "12345"), ("LOCKSTEP_POOL", "2024"), ("LOCKSTEP_WAIT_SECS", "7")]))
            .expect("digits are names here");
        assert_eq!((config.instance.as_str(), config.pool.as_str(), config.vault.wait_secs), ("12345", "2024", 7));
        // So do flags.
        let good = write(dir.path(), GOOD);
        let source = Source { path: Some(good), sets: vec![("pool".into(), "2025".into())] };
        assert_eq!(source.load_with(&env(&[])).expect("digits are names here").pool, "2025");
        let typo = write(dir.path(), &format!("{GOOD}\npoll = 3\n"));
        let error = Source { path: Some(typo), sets: vec![] }.load_with(&env(&[])).expect_err("unknown").to_string();
        assert!(error.contains("poll"), "{error}");
    }

    #[test]
    fn without_an_instance_or_a_host_name_the_error_says_what_to_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = GOOD.replace("instance = \"pod-1\"\n", "");
        let source = Source { path: Some(write(dir.path(), &text)), sets: vec![] };
        let error = source.load_with(&env(&[("HOSTNAME", " ")])).expect_err("no instance").to_string();
        assert!(error.contains("instance") && error.contains("LOCKSTEP_INSTANCE"), "{error}");
    }

    #[test]
    fn instance_defaults_to_hostname() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = GOOD.replace("instance = \"pod-1\"\n", "");
        let source = Source { path: Some(write(dir.path(), &text)), sets: vec![] };
        let config = source.load_with(&env(&[("HOSTNAME", "web-7f9")])).expect("valid");
        assert_eq!(config.instance, "web-7f9");
    }

    #[test]
    fn pool_and_instance_follow_the_coordinators_name_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let long = "p".repeat(65);
        for (setting, value) in [("instance", "a..b"), ("instance", "-pod"), ("pool", long.as_str()), ("pool", "web/1")]
        {
            let text = GOOD.replace("instance = \"pod-1\"\n", "");
            let source = Source { path: Some(write(dir.path(), &text)), sets: vec![(setting.into(), value.into())] };
            let error = source.load_with(&env(&[("HOSTNAME", "pod-1")])).expect_err(value).to_string();
            assert!(error.contains(setting) && error.contains("without \"..\""), "{value}: {error}");
        }
    }
}
