//! The command line: `run`, `check-config`, and for scripts and probes
//! that talk to a running sidecar, `get <keyring>`, `call`, `watch` and
//! `probe`; exit codes; logging set-up.
//!
//! Exit codes:
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | runtime failure (socket, cache key, Vault client set-up) |
//! | 2 | bad command line (from clap, or a keyring name that breaks the naming rule) |
//! | 3 | bad configuration (the message names the setting) |
//! | 4 | `get`, `call`, `watch`, `probe`: the sidecar is unreachable, answered with an error, or is not ready |

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, LogConfig, Source};

/// Success.
pub const EXIT_OK: u8 = 0;
/// Where the client subcommands look for the socket when nothing says.
pub const DEFAULT_SOCKET: &str = "/run/lockstep/sidecar.sock";
/// How long `get` waits for the sidecar's answer.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// Runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Bad command line (clap's code, also used for a bad keyring name).
pub const EXIT_USAGE: u8 = 2;
/// Bad configuration.
pub const EXIT_CONFIG: u8 = 3;
/// `get` failed.
pub const EXIT_UNAVAILABLE: u8 = 4;

/// Lockstep's sidecar.
#[derive(Debug, Parser)]
#[command(name = "lockstep-sidecar", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar until SIGTERM.
    Run(ConfigArgs),
    /// Check the configuration and exit (0 if valid, 3 if not).
    CheckConfig(ConfigArgs),
    /// Ask a running sidecar for a keyring's keys and print the JSON.
    Get(GetArgs),
    /// One request to a running sidecar's socket API; prints the answer.
    Call(CallArgs),
    /// Print a keyring's keys as one JSON line now and one at every change,
    /// until SIGTERM (for scripts that follow rotations).
    Watch(WatchArgs),
    /// Exit 0 if the sidecar is ready (or, with --live, alive), else 4: an
    /// exec probe for images without a shell.
    Probe(ProbeArgs),
}

/// Where a running sidecar's socket is.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// The sidecar's socket (default: `LOCKSTEP_SOCKET`, or the one in the
    /// configuration file).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Configuration file to find the socket in.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `call`'s arguments.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// GET or POST.
    pub method: String,
    /// The path, like `/v1/jwt/session/sign`.
    pub path: String,
    /// JSON body (POST).
    #[arg(long, short)]
    pub data: Option<String>,
    /// Where the sidecar is.
    #[command(flatten)]
    pub at: SocketArgs,
}

/// `watch`'s arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The keyring.
    pub keyring: String,
    /// Where the sidecar is.
    #[command(flatten)]
    pub at: SocketArgs,
}

/// `probe`'s arguments.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Check liveness (`/healthz`) instead of readiness (`/readyz`).
    #[arg(long)]
    pub live: bool,
    /// Where the sidecar is.
    #[command(flatten)]
    pub at: SocketArgs,
}

/// Where the configuration comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file (also `LOCKSTEP_CONFIG`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a setting: `--set vault.wait_secs=10` (repeatable; wins
    /// over the file and `LOCKSTEP_*` variables).
    #[arg(long = "set", value_name = "SETTING=VALUE", value_parser = parse_set)]
    pub sets: Vec<(String, String)>,
    /// Shorthand for `--set pool=…`.
    #[arg(long)]
    pub pool: Option<String>,
    /// Shorthand for `--set vault.addr=…`.
    #[arg(long)]
    pub vault_addr: Option<String>,
    /// Shorthand for `--set socket.path=…`.
    #[arg(long)]
    pub socket: Option<String>,
}

/// `get`'s arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The keyring.
    pub keyring: String,
    /// Where the sidecar is.
    #[command(flatten)]
    pub at: SocketArgs,
    /// Material format: base64, jwk or pem.
    #[arg(long)]
    pub format: Option<String>,
    /// Include private keys (asymmetric keyrings, sign pools).
    #[arg(long)]
    pub private: bool,
    /// One version by number instead of the whole keyring.
    #[arg(long)]
    pub version: Option<u64>,
}

fn parse_set(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not SETTING=VALUE"))
}

impl ConfigArgs {
    /// The configuration source these arguments describe.
    pub fn source(&self) -> Source {
        let mut sets = self.sets.clone();
        let shorthands = [("pool", &self.pool), ("vault.addr", &self.vault_addr), ("socket.path", &self.socket)];
        for (setting, value) in shorthands {
            if let Some(value) = value {
                sets.push((setting.into(), format!("{value:?}")));
            }
        }
        let path = self.config.clone().or_else(|| std::env::var_os("LOCKSTEP_CONFIG").map(PathBuf::from));
        Source { path, sets }
    }
}

/// Loads the configuration, or prints why not and gives exit code 3.
pub fn load(args: &ConfigArgs) -> Result<(Config, Source), ExitCode> {
    let source = args.source();
    let config = source.load().and_then(|c| check_files(&c).map(|()| c)).map_err(|e| config_failure(&e))?;
    Ok((config, source))
}

/// Reads the files the configuration names and `run` needs at once (the
/// CA bundle, the cache key), so that `check-config` catches them too.
/// Credential files are read at login instead: they may appear later.
fn check_files(config: &Config) -> Result<(), ConfigError> {
    if config.vault.ca_bundle.is_some() {
        crate::vault::client::VaultClient::new(&config.vault)
            .map_err(|e| ConfigError::invalid("vault.ca_bundle", e.to_string()))?;
    }
    if let (Some(file), Some(key)) = (&config.cache.file, &config.cache.key_file) {
        crate::cachefile::CacheFile::new(file, key, &config.pool).map_err(|e| match e {
            crate::cachefile::CacheError::Key { message, .. } => {
                ConfigError::invalid("cache.key_file", format!("{}: {message}", key.display()))
            }
            other => ConfigError::invalid("cache.file", other.to_string()),
        })?;
    }
    Ok(())
}

/// What `check-config` checks beyond `run`: credential files exist now
/// (`run` reads them at login, when they may have appeared since).
pub fn check_credentials(config: &Config) -> Result<(), ConfigError> {
    if let Some(file) = &config.auth.token_file
        && !file.is_file()
    {
        return Err(ConfigError::invalid("auth.token_file", format!("{} is not a readable file", file.display())));
    }
    Ok(())
}

/// Writes `text` and a newline to stdout; a closed stdout is an error
/// message and `EXIT_FAILURE`, never a panic.
pub fn print_out(text: &str) -> ExitCode {
    match writeln_out(text) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) => {
            eprintln!("lockstep-sidecar: cannot write to stdout: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// One line to stdout, flushed.
fn writeln_out(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush())
}

/// Prints a configuration error.
pub fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("lockstep-sidecar: invalid configuration: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// Starts logging to stderr, as text or JSON.
pub fn init_tracing(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// `get`: prints the JSON answer; exit code 4 on any failure.
pub async fn get(args: &GetArgs) -> ExitCode {
    let socket = match socket_of(&args.at) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    if !valid_keyring(&args.keyring) {
        return ExitCode::from(EXIT_USAGE);
    }
    let mut path = match args.version {
        Some(n) => format!("/v1/keys/{}/versions/{n}", args.keyring),
        None => format!("/v1/keys/{}", args.keyring),
    };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("format", args.format.as_deref().unwrap_or("base64"))
        .append_pair("private", if args.private { "true" } else { "false" })
        .finish();
    path.push('?');
    path.push_str(&query);
    // A sidecar that accepts the connection but never answers must not
    // hang a script: `request` has a deadline.
    answered(request(&socket, "GET", &path, None, Duration::ZERO).await)
}

/// The socket `at` names, else `LOCKSTEP_SOCKET`, else `socket.path` of
/// the configuration file (`--config`, else `LOCKSTEP_CONFIG`), else the
/// default. Only that one setting is read: a probe in the sidecar's
/// container must not fail on settings that come from elsewhere.
fn socket_of(at: &SocketArgs) -> Result<PathBuf, ExitCode> {
    if let Some(socket) = &at.socket {
        return Ok(socket.clone());
    }
    if let Some(socket) = std::env::var_os("LOCKSTEP_SOCKET") {
        return Ok(PathBuf::from(socket));
    }
    let file = at.config.clone().or_else(|| std::env::var_os("LOCKSTEP_CONFIG").map(PathBuf::from));
    let Some(file) = file else {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("lockstep-sidecar: reading {}: {error}", file.display());
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    };
    match text.parse::<toml::Table>() {
        Ok(table) => Ok(table
            .get("socket")
            .and_then(|s| s.get("path"))
            .and_then(toml::Value::as_str)
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)),
        Err(error) => {
            eprintln!("lockstep-sidecar: {} is not TOML: {error}", file.display());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

/// One request with a deadline.
async fn request(
    socket: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    wait: Duration,
) -> Result<(u16, bytes::Bytes), crate::client::ClientError> {
    let exchange = async { crate::client::SocketClient::connect(socket).await?.send(method, path, body).await };
    tokio::time::timeout(GET_TIMEOUT + wait, exchange).await.unwrap_or_else(|_| {
        Err(crate::client::ClientError::Http(format!("no answer within {} s", (GET_TIMEOUT + wait).as_secs())))
    })
}

/// `call`: prints the answer; exit 4 unless it is a success.
pub async fn call(args: &CallArgs) -> ExitCode {
    let socket = match socket_of(&args.at) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    let method = args.method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST") || !args.path.starts_with('/') {
        eprintln!("lockstep-sidecar: call takes GET or POST and a path starting with /");
        return ExitCode::from(EXIT_USAGE);
    }
    let body = match args.data.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose() {
        Ok(body) => body,
        Err(error) => {
            eprintln!("lockstep-sidecar: --data is not JSON: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    answered(request(&socket, &method, &args.path, body.as_ref(), Duration::ZERO).await)
}

/// Prints a success's answer (exit 0), or says what failed (exit 4).
fn answered(answer: Result<(u16, bytes::Bytes), crate::client::ClientError>) -> ExitCode {
    match answer {
        Ok((status, body)) if status < 300 => print_out(&String::from_utf8_lossy(&body)),
        Ok((status, body)) => {
            eprintln!("lockstep-sidecar: sidecar answered {status}: {}", String::from_utf8_lossy(&body));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(error) => {
            eprintln!("lockstep-sidecar: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

/// Whether `name` may name a keyring; says why not on stderr.
fn valid_keyring(name: &str) -> bool {
    let valid = lockstep_model::name::is_valid(name);
    if !valid {
        eprintln!("lockstep-sidecar: keyring {name:?} is not a valid name ({})", lockstep_model::name::NAME_RULE);
    }
    valid
}

/// `watch`: one line per state of the keyring, until a signal; rides out a
/// sidecar restart by retrying each second.
pub async fn watch(args: &WatchArgs) -> ExitCode {
    let socket = match socket_of(&args.at) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    if !valid_keyring(&args.keyring) {
        return ExitCode::from(EXIT_USAGE);
    }
    let mut shutdown = crate::shutdown_on_signals();
    let mut state = String::new();
    // Set while the sidecar cannot be reached, to say when it can again.
    let mut lost = false;
    loop {
        // The sidecar's own default wait (30 s, or less if it allows less).
        let mut path = format!("/v1/keys/{}/watch", args.keyring);
        if !state.is_empty() {
            path.push_str("?after=");
            path.push_str(&form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>());
        }
        let answer = tokio::select! {
            answer = request(&socket, "GET", &path, None, Duration::from_secs(30)) => answer,
            () = crate::shutdown_signalled(&mut shutdown) => return ExitCode::from(EXIT_OK),
        };
        if lost && matches!(answer, Ok((200, _))) {
            eprintln!("lockstep-sidecar: reconnected to the sidecar at {}", socket.display());
            lost = false;
        }
        match answer {
            Ok((200, body)) => {
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let now = value["state"].as_str().unwrap_or_default().to_string();
                if now != state {
                    state = now;
                    // A closed stdout (`watch … | head -1`) ends the watch.
                    if writeln_out(&summary(&value).to_string()).is_err() {
                        return ExitCode::from(EXIT_OK);
                    }
                }
                continue;
            }
            Ok((status @ (400 | 404), body)) => {
                eprintln!("lockstep-sidecar: sidecar answered {status}: {}", String::from_utf8_lossy(&body));
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            Ok((status, _)) => {
                lost = true;
                eprintln!("lockstep-sidecar: sidecar answered {status}; retrying each second");
            }
            Err(error) => {
                lost = true;
                eprintln!("lockstep-sidecar: {error}; retrying each second");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = crate::shutdown_signalled(&mut shutdown) => return ExitCode::from(EXIT_OK),
        }
    }
}

/// What `watch` prints of a keys answer: versions, kids and states, never
/// material (its lines end up in logs).
fn summary(keys: &serde_json::Value) -> serde_json::Value {
    // For a person: instants in RFC 3339 (the socket API gives programs
    // seconds since the epoch, as JWT claims do).
    let at = |t: &serde_json::Value| t.as_i64().map_or(serde_json::Value::Null, |t| lockstep_model::rfc3339(t).into());
    let version = |v: &serde_json::Value| {
        serde_json::json!({"version": v["version"], "kid": v["kid"], "state": v["state"], "not_before": at(&v["not_before"]),
                           "expires_at": at(&v["expires_at"])})
    };
    let verifying: Vec<serde_json::Value> = keys["verifying"].as_array().into_iter().flatten().map(version).collect();
    serde_json::json!({"keyring": keys["keyring"], "pool": keys["pool"], "state": keys["state"], "now": at(&keys["now"]),
                       "signing": if keys["signing"].is_null() { serde_json::Value::Null } else { version(&keys["signing"]) },
                       "verifying": verifying})
}

/// `probe`: exit 0 when `/readyz` (or `/healthz`) answers 200.
pub async fn probe(args: &ProbeArgs) -> ExitCode {
    let socket = match socket_of(&args.at) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    let path = if args.live { "/healthz" } else { "/readyz" };
    match request(&socket, "GET", path, None, Duration::ZERO).await {
        Ok((200, _)) => ExitCode::from(EXIT_OK),
        Ok((status, body)) => {
            eprintln!("lockstep-sidecar: {path} answered {status}: {}", String::from_utf8_lossy(&body));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        Err(error) => {
            eprintln!("lockstep-sidecar: {error}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}
