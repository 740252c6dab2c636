//! Test support: real plugin hosts and real servers for end-to-end tests.
//!
//! - [`sdkhost::SdkHost`] runs the plugin under OpenBao's (or Vault's) own
//!   Go plugin client, with in-memory transactional storage, fault
//!   injection and a JSON control API;
//! - [`server::Server`] runs a real server (dev mode, or file storage
//!   initialised and unsealed here), registers the plugin by SHA-256 and
//!   version, mounts it, and talks to it over HTTP with a root token.
//!
//! Every binary comes from the project's own build (`make test` builds
//! them); a missing one fails the test with the command that builds it,
//! never skips it. Servers listen on 127.0.0.1 only, on free ports, and
//! are stopped when dropped. A failed test prints the server's log.

pub mod clients;
pub mod fleet_check;
pub mod jwt;
pub mod kubecp;
pub mod relay;
pub mod sdkhost;
pub mod server;
pub mod sidecar;
pub mod torture;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// A binary the tests need: from `var` if set, else `default` under
/// `target/`; panics with how to build it when it is missing.
pub fn required_binary(var: &str, default: &str, build_hint: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) => {
            assert!(path.is_file(), "{} not found ({var} is wrong); build it with `{build_hint}`", path.display());
            path
        }
        None => built_binary(default, build_hint),
    }
}

/// `path` under `target/`, where the project's own build puts it; panics
/// with how to build it when it is missing.
pub fn built_binary(path: &str, build_hint: &str) -> PathBuf {
    let path = target_dir().join(path);
    assert!(path.is_file(), "{} not found; build it with `{build_hint}`", path.display());
    path
}

/// The plugin binary under test.
pub fn plugin_binary() -> PathBuf {
    required_binary("LOCKSTEP_PLUGIN_BIN", "test-plugin/vault-plugin-secrets-lockstep", "make test-plugin")
}

/// The version the plugin reports (and is registered with).
pub fn plugin_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it next).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A free port whose successor is free too: a dev-mode server binds its
/// cluster listener on the API port + 1.
pub fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// The plugin's movable clock: an offset in seconds, in a file the test
/// plugin reads at every look at the time (see the `test-clock` feature).
#[derive(Debug)]
pub struct TestClock {
    path: PathBuf,
    offset: std::sync::atomic::AtomicU64,
}

impl TestClock {
    /// A clock at offset zero, kept in `dir`.
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("clock-offset");
        std::fs::write(&path, "0").expect("write the clock file");
        Self { path, offset: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Moves the plugin's clock forward.
    pub fn advance(&self, secs: u64) {
        let offset = self.offset.fetch_add(secs, std::sync::atomic::Ordering::SeqCst) + secs;
        // Written whole then renamed, so the plugin never reads half a number.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, offset.to_string()).expect("write the clock file");
        std::fs::rename(&tmp, &self.path).expect("replace the clock file");
    }

    /// The environment variable that points the plugin at this clock.
    pub fn env(&self) -> (&'static str, &Path) {
        ("LOCKSTEP_TEST_CLOCK_FILE", &self.path)
    }
}

/// An HTTP answer: status and JSON body (`null` when empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

impl Reply {
    /// The `data` object of a successful logical response.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    /// The error messages of a failed one, joined.
    pub fn errors(&self) -> String {
        match self.body["errors"].as_array() {
            Some(errors) => errors.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
            None => String::new(),
        }
    }

    /// Panics with the body unless the status is `expected`.
    #[track_caller]
    pub fn expect_status(self, expected: u16) -> Self {
        assert_eq!(self.status, expected, "unexpected status; body: {}", self.body);
        self
    }
}

/// Sends a request and returns status and body whatever the status.
pub(crate) fn http(request: ureq::Request, body: Option<&Value>) -> Reply {
    let result = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("HTTP request failed: {error}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    let body =
        if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Reply { status, body }
}

/// Prints a log file's tail when the current test is failing.
pub(crate) fn dump_log_if_panicking(what: &str, log: &Path) {
    if std::thread::panicking() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(200).collect();
        eprintln!("----- {what} log ({}) , last {} lines -----", log.display(), tail.len());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}
