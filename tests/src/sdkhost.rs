//! The plugin under a real Go plugin client (OpenBao's SDK, or Vault's).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{Reply, TestClock, dump_log_if_panicking, http, plugin_binary, plugin_version, required_binary};

/// Which SDK's plugin client hosts the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// `github.com/openbao/openbao/sdk/v2`.
    OpenBao,
    /// `github.com/hashicorp/vault/sdk`.
    Vault,
}

/// A running host process; killed on drop.
#[derive(Debug)]
pub struct SdkHost {
    child: Child,
    base: String,
    log: PathBuf,
    /// The plugin's clock.
    pub clock: TestClock,
    _dir: tempfile::TempDir,
}

/// The answer to a logical request, as the server would give it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostReply {
    /// The HTTP status the server would answer.
    pub status: u16,
    /// `data` of the response, `null` without one.
    pub data: Value,
    /// Error text, empty on success.
    pub error: String,
    /// Warnings of the response.
    pub warnings: Vec<String>,
}

impl HostReply {
    /// The data of a reply that must have succeeded.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(self.status < 300, "request failed: {self:?}");
        self.data
    }
}

impl SdkHost {
    /// OpenBao's host with the plugin mounted at `mount`.
    pub fn mounted(mount: &str) -> Self {
        let host = Self::start(HostKind::OpenBao);
        host.mount(mount);
        host
    }

    /// Starts a host with the plugin registered as `lockstep`.
    pub fn start(kind: HostKind) -> Self {
        Self::start_with(kind, &[])
    }

    /// Starts a host that does not multiplex: no multiplexing probe, no
    /// multiplex id on calls, one plugin process per mount.
    pub fn start_without_multiplexing(kind: HostKind) -> Self {
        Self::start_with(kind, &["-no-multiplex"])
    }

    fn start_with(kind: HostKind, extra: &[&str]) -> Self {
        let (var, name) = match kind {
            HostKind::OpenBao => ("LOCKSTEP_SDKHOST_BIN", "gohost/lockstep-sdkhost"),
            HostKind::Vault => ("LOCKSTEP_SDKHOST_VAULT_BIN", "gohost/lockstep-sdkhost-vault"),
        };
        let host = required_binary(var, name, "tests/gohost/build.sh target/gohost");
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("plugin dir");
        std::fs::copy(plugin_binary(), plugins.join("lockstep")).expect("copy plugin");
        let log = dir.path().join("host.log");
        let clock = TestClock::new(dir.path());
        let (clock_var, clock_path) = clock.env();
        let mut child = Command::new(host)
            .env(clock_var, clock_path)
            .arg("-plugin-dir")
            .arg(&plugins)
            .args(["-name", "lockstep", "-version", &plugin_version(), "-log"])
            .arg(&log)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SDK host");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the host's LISTEN line");
        let addr = line.trim().strip_prefix("LISTEN ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { base: format!("http://{addr}"), child, log, clock, _dir: dir }
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        http(ureq::post(&format!("{}{path}", self.base)), Some(&body))
    }

    /// Mounts the plugin at `path`; panics if the host refuses.
    pub fn mount(&self, path: &str) -> Value {
        self.post("/v1/mounts", json!({"path": path, "config": {}})).expect_status(200).body
    }

    /// Mounts and returns the host's answer whatever it is.
    pub fn try_mount(&self, path: &str) -> Reply {
        self.post("/v1/mounts", json!({"path": path, "config": {}}))
    }

    /// Unmounts (the plugin's cleanup runs).
    pub fn unmount(&self, path: &str) {
        http(ureq::delete(&format!("{}/v1/mounts/{}", self.base, path.trim_end_matches('/'))), None).expect_status(200);
    }

    /// Reloads the plugin behind `path`: new process, same storage.
    pub fn reload(&self, path: &str) {
        let path = path.trim_end_matches('/');
        self.post(&format!("/v1/mounts/{path}/reload"), json!({})).expect_status(200);
    }

    /// `(started, running)` plugin processes.
    pub fn processes(&self) -> (u64, u64) {
        let body = http(ureq::get(&format!("{}/v1/processes", self.base)), None).expect_status(200).body;
        (body["started"].as_u64().unwrap_or_default(), body["running"].as_u64().unwrap_or_default())
    }

    /// Sends one logical request to the mount.
    pub fn request(&self, mount: &str, operation: &str, path: &str, data: Value) -> HostReply {
        self.request_as(mount, operation, path, data, "token-test")
    }

    /// Sends one logical request as the caller `display_name`.
    pub fn request_as(&self, mount: &str, operation: &str, path: &str, data: Value, display_name: &str) -> HostReply {
        let body = json!({
            "mount": mount, "operation": operation, "path": path, "data": data,
            "display_name": display_name, "entity_id": "",
        });
        let reply = self.post("/v1/request", body).expect_status(200).body;
        let response = &reply["response"];
        HostReply {
            status: u16::try_from(reply["status"].as_u64().unwrap_or_default()).unwrap_or_default(),
            data: response["data"].clone(),
            error: reply["error"].as_str().unwrap_or_default().to_string(),
            warnings: response["warnings"]
                .as_array()
                .map(|w| w.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    /// Makes the next `count` storage operations `op` on keys under
    /// `key_prefix` in `mount` fail.
    pub fn fault(&self, mount: &str, op: &str, key_prefix: &str, count: u32) {
        let body = json!({"mount": mount, "op": op, "key_prefix": key_prefix, "after": 0, "count": count});
        self.post("/v1/faults", body).expect_status(200);
    }

    /// Starts counting the mount's storage operations of kind `op` ("get",
    /// "list", "put", "delete"): a fault rule that lets the first 2^30
    /// through. Returns the rule's id for [`Self::storage_ops`].
    pub fn count_storage(&self, mount: &str, op: &str) -> u64 {
        let body = json!({"mount": mount, "op": op, "key_prefix": "", "after": 1u64 << 30, "count": 1});
        let reply = self.post("/v1/faults", body).expect_status(200);
        reply.body["id"].as_u64().expect("fault rule id")
    }

    /// How many operations the counting rule `id` has seen.
    pub fn storage_ops(&self, id: u64) -> u64 {
        let body = http(ureq::get(&format!("{}/v1/faults", self.base)), None).expect_status(200).body;
        let rules = body["faults"].as_array().cloned().unwrap_or_default();
        let rule = rules.iter().find(|r| r["id"] == id).expect("the counting rule is registered");
        rule["seen"].as_u64().expect("seen")
    }

    /// Writes `value` at `key` in the mount's storage behind the plugin's
    /// back, as a write through another node would.
    pub fn put_storage(&self, mount: &str, key: &str, value: &[u8]) {
        let value = base64::engine::general_purpose::STANDARD.encode(value);
        http(
            ureq::put(&format!("{}/v1/storage", self.base)),
            Some(&json!({"mount": mount, "key": key, "value": value})),
        )
        .expect_status(200);
    }

    /// Tells the plugin that `key` changed, as the server does on a
    /// standby or a replicated cluster.
    pub fn invalidate(&self, mount: &str, key: &str) {
        self.post("/v1/invalidate", json!({"mount": mount, "key": key})).expect_status(200);
    }

    /// Every key and value in the mount's storage.
    pub fn storage(&self, mount: &str) -> BTreeMap<String, Vec<u8>> {
        let url = format!("{}/v1/storage?mount={mount}&prefix=", self.base);
        let body = http(ureq::get(&url), None).expect_status(200).body;
        let entries = body["entries"].as_object().cloned().unwrap_or_default();
        entries
            .into_iter()
            .map(|(key, value)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.as_str().unwrap_or_default())
                    .expect("base64 value");
                (key, bytes)
            })
            .collect()
    }

    /// The host's log so far (plugin records included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SdkHost {
    fn drop(&mut self) {
        dump_log_if_panicking("SDK host", &self.log);
        // Closing stdin asks the host to clean up its mounts and exit.
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
