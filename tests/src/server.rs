//! A real server process with the plugin registered and mounted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    Reply, TestClock, dump_log_if_panicking, free_port, free_port_pair, http, plugin_binary, plugin_version,
    required_binary, sha256_file,
};

/// The file name of the plugin in the server's plugin directory.
pub const PLUGIN_FILE: &str = "vault-plugin-secrets-lockstep";
/// The catalog name.
pub const PLUGIN_NAME: &str = "lockstep";

/// How the server stores its data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// `-dev`: in memory, unsealed, root token given.
    Dev,
    /// File storage, initialised and unsealed by the harness.
    Persistent { unseal_key: String },
    /// Raft storage; `leader` is the API address of the node to join
    /// (none for the first node, which the harness initialises).
    Raft { unseal_key: String, node_id: String, cluster_port: u16, leader: Option<String>, standby_reads: bool },
}

impl Mode {
    fn unseal_key(&self) -> Option<&str> {
        match self {
            Self::Dev => None,
            Self::Persistent { unseal_key } | Self::Raft { unseal_key, .. } => Some(unseal_key),
        }
    }
}

/// A second, TLS listener (persistent servers only).
#[derive(Debug, Clone)]
struct TlsListener {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
}

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    mode: Mode,
    token: String,
    tls: Option<TlsListener>,
    /// Times this raft node was started again.
    restarts: u32,
    /// Where a file audit device writes, for servers that have one.
    audit_log: Option<PathBuf>,
    /// The cluster listener's port, the same at every start (a raft node's
    /// address is in its stored configuration).
    cluster_port: u16,
    /// The plugin's clock (the server passes its environment to plugins).
    pub clock: TestClock,
}

/// Whether servers started from now on get their own address in their
/// environment (`BAO_ADDR`, `VAULT_ADDR`), as the official images set it;
/// on by default. The drain benchmark turns it off to measure a plugin
/// that cannot probe its server.
static OWN_ADDRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets whether servers started from now on get their own address in their
/// environment (see [`OWN_ADDRESS`]).
pub fn pass_own_address(on: bool) {
    OWN_ADDRESS.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// The server the end-to-end suites run on when `LOCKSTEP_SERVER` is unset.
pub const DEFAULT_SERVER: &str = "openbao-2.7.2";

/// Whose server a binary is: the two differ in a few documented ways
/// (`docs/compatibility.md`), which the harness handles here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OpenBao's release binary (`bao`).
    OpenBao,
    /// HashiCorp Vault, built from Go modules (`vault`).
    Vault,
}

/// The server binary under test and what it says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKind {
    /// The executable.
    pub bin: PathBuf,
    /// OpenBao or Vault.
    pub flavor: Flavor,
    /// The version it prints, without the leading `v` (`2.7.2`).
    pub version: String,
    /// The whole first line of `<bin> version`.
    pub version_line: String,
}

impl ServerKind {
    /// Whether this is OpenBao.
    pub fn is_openbao(&self) -> bool {
        self.flavor == Flavor::OpenBao
    }

    /// `OpenBao 2.7.2` or `Vault 1.21.1`, for messages.
    pub fn label(&self) -> String {
        format!("{:?} {}", self.flavor, self.version)
    }
}

/// The server binary: `LOCKSTEP_VAULT_BIN` names one outright; otherwise
/// `LOCKSTEP_SERVER` picks one that `make test` installs or builds:
/// `openbao-<version>` (a release pinned in `tests/openbao/releases.tsv`,
/// under `target/openbao/`) or `vault-1.21.1` (built under
/// `target/goserver/`). Unset, it is [`DEFAULT_SERVER`].
pub fn server_binary() -> PathBuf {
    server_kind().bin.clone()
}

/// The server under test, asked once per test binary.
pub fn server_kind() -> &'static ServerKind {
    static KIND: std::sync::OnceLock<ServerKind> = std::sync::OnceLock::new();
    KIND.get_or_init(|| identify(&chosen_binary()))
}

fn chosen_binary() -> PathBuf {
    if std::env::var_os("LOCKSTEP_VAULT_BIN").is_some() {
        return required_binary("LOCKSTEP_VAULT_BIN", "", "");
    }
    let name = std::env::var("LOCKSTEP_SERVER").unwrap_or_else(|_| DEFAULT_SERVER.to_string());
    if let Some(version) = name.strip_prefix("openbao-") {
        let hint = format!("tests/openbao/install.sh {version} target/openbao");
        return required_binary("LOCKSTEP_VAULT_BIN", &format!("openbao/{version}/bao"), &hint);
    }
    if name.starts_with("vault-") {
        return required_binary("LOCKSTEP_VAULT_BIN", "goserver/vault", "tests/goserver/build.sh target/goserver");
    }
    panic!("LOCKSTEP_SERVER={name:?} names no server: use openbao-<version> or vault-<version>");
}

/// The plugin process: a child of the server `server` running the plugin
/// binary (whose name the kernel cuts to 15 bytes).
pub fn plugin_pid(server: u32) -> u32 {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(server) && stat.contains("(vault-plugin-se") {
            return pid;
        }
    }
    panic!("no plugin process under server {server}")
}

/// Runs `<bin> version` and reads whose server it is.
fn identify(bin: &Path) -> ServerKind {
    let output = Command::new(bin).arg("version").output().unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let line = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().trim().to_string();
    let (flavor, rest) = if let Some(rest) = line.strip_prefix("OpenBao v") {
        (Flavor::OpenBao, rest)
    } else if let Some(rest) = line.strip_prefix("Vault v") {
        (Flavor::Vault, rest)
    } else {
        panic!("{} is neither OpenBao nor Vault: `version` printed {line:?}", bin.display());
    };
    // `OpenBao v2.7.2 (commit), …` or `Vault v1.21.1, built …`.
    let version = rest.split([' ', ',']).next().unwrap_or_default().to_string();
    if let Ok(name) = std::env::var("LOCKSTEP_SERVER")
        && std::env::var_os("LOCKSTEP_VAULT_BIN").is_none()
    {
        let wanted = name.rsplit('-').next().unwrap_or_default();
        assert_eq!(version, wanted, "LOCKSTEP_SERVER={name} but {} is version {version}", bin.display());
    }
    ServerKind { bin: bin.to_path_buf(), flavor, version, version_line: line }
}

impl Server {
    /// A dev-mode server (in-memory storage).
    pub fn dev() -> Self {
        let mut server = Self::new(Mode::Dev);
        server.token = "root-token-for-tests".into();
        server.spawn();
        server.wait_until_up();
        server
    }

    /// A dev-mode server with a file audit device at
    /// [`Server::audit_log`]. OpenBao refuses to enable audit devices
    /// through the API unless its configuration allows it, and documents
    /// declaring them in the configuration file instead: that is how this
    /// one gets it. Vault enables it through `sys/audit`.
    pub fn dev_audited() -> Self {
        let mut server = Self::new(Mode::Dev);
        server.token = "root-token-for-tests".into();
        server.audit_log = Some(server.dir.path().join("audit.log"));
        server.spawn();
        server.wait_until_up();
        if !server_kind().is_openbao() {
            let options = json!({"file_path": server.audit_log.as_ref().map(|p| p.display().to_string())});
            server
                .request("PUT", "sys/audit/file", Some(json!({"type": "file", "options": options})))
                .expect_status(204);
        }
        server
    }

    /// The file audit device's log, if the server has one.
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// A server on file storage, initialised and unsealed here, so tests
    /// can restart it and find their data.
    pub fn persistent() -> Self {
        Self::start_persistent(None)
    }

    /// A persistent server that also listens with TLS (`cert_file` and
    /// `key_file`, PEM) on [`Server::tls_address`]; the harness keeps
    /// using the plain listener.
    pub fn persistent_with_tls(cert_file: &Path, key_file: &Path) -> Self {
        let tls = TlsListener { port: free_port_pair(), cert: cert_file.into(), key: key_file.into() };
        Self::start_persistent(Some(tls))
    }

    fn start_persistent(tls: Option<TlsListener>) -> Self {
        let mut server = Self::new(Mode::Persistent { unseal_key: String::new() });
        server.tls = tls;
        server.spawn();
        server.wait_until_up();
        let key = server.initialise();
        server.mode = Mode::Persistent { unseal_key: key };
        server.unseal();
        server
    }

    /// `sys/init` with one key share; keeps the root token, returns the
    /// unseal key.
    fn initialise(&mut self) -> String {
        let init = http(ureq::put(&self.url("sys/init")), Some(&json!({"secret_shares": 1, "secret_threshold": 1})))
            .expect_status(200)
            .body;
        self.token = init["root_token"].as_str().expect("root token").to_string();
        init["keys_base64"][0].as_str().expect("unseal key").to_string()
    }

    /// Two servers on raft storage forming one cluster: the first
    /// initialised, unsealed and active, the second joined to it and
    /// unsealed as its standby (which forwards requests to the active node).
    pub fn raft_pair() -> (Self, Self) {
        let mut nodes = Self::raft_cluster(2);
        let second = nodes.pop().expect("two nodes");
        let first = nodes.pop().expect("two nodes");
        (first, second)
    }

    /// `nodes` servers on raft storage forming one cluster: `node-1`
    /// initialised, unsealed and active, the others joined to it, unsealed,
    /// and voters (autopilot has seen them stable, so any could take over).
    pub fn raft_cluster(nodes: usize) -> Vec<Self> {
        Self::raft_cluster_with(nodes, false)
    }

    /// As [`Server::raft_cluster`], with OpenBao's standbys serving reads
    /// themselves (OpenBao's default since 2.5): a request that must write
    /// is sent on to the active node by the standby.
    pub fn raft_cluster_reading(nodes: usize) -> Vec<Self> {
        assert!(server_kind().is_openbao(), "standbys that serve reads are OpenBao's (and Vault Enterprise's)");
        Self::raft_cluster_with(nodes, true)
    }

    fn raft_cluster_with(nodes: usize, standby_reads: bool) -> Vec<Self> {
        let raft = |node_id: String, leader: Option<String>| Mode::Raft {
            unseal_key: String::new(),
            node_id,
            cluster_port: free_port(),
            leader,
            standby_reads,
        };
        let mut first = Self::new(raft("node-1".into(), None));
        first.spawn();
        first.wait_until_up();
        let key = first.initialise();
        if let Mode::Raft { unseal_key, .. } = &mut first.mode {
            unseal_key.clone_from(&key);
        }
        first.unseal();
        let mut cluster = vec![first];
        for n in 2..=nodes {
            let mut node = Self::new(raft(format!("node-{n}"), Some(cluster[0].address())));
            if let Mode::Raft { unseal_key, .. } = &mut node.mode {
                unseal_key.clone_from(&key);
            }
            node.token.clone_from(&cluster[0].token);
            node.spawn();
            node.wait_until_up();
            node.unseal();
            cluster.push(node);
        }
        // A joined node votes only once autopilot has seen it stable; until
        // then it could not take over.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let config = cluster[0].read("sys/storage/raft/configuration");
            let servers = config.body["data"]["config"]["servers"].as_array().cloned().unwrap_or_default();
            let voters = servers.iter().filter(|s| s["voter"] == true).count();
            if voters == nodes {
                break;
            }
            assert!(Instant::now() < deadline, "only {voters} of {nodes} nodes became voters: {config:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
        cluster
    }

    /// Puts `binary` in place of the plugin this server registers (for
    /// tests of the release build); call before [`Server::register_plugin`].
    pub fn install_plugin(&self, binary: &Path) {
        std::fs::copy(binary, self.plugin_dir().join(PLUGIN_FILE)).expect("copy the plugin");
    }

    /// Kills the server at once (SIGKILL): no step-down, no flush, no
    /// word to its plugins.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops a raft node gracefully (SIGTERM).
    pub fn shut_down(&mut self) {
        self.stop();
    }

    /// Starts a stopped or killed raft node again on its data and unseals
    /// it; it rejoins as active or standby, whichever the cluster decides.
    pub fn start_again(&mut self) {
        assert!(matches!(self.mode, Mode::Raft { .. }), "only raft nodes restart on their data here");
        assert!(self.child.is_none(), "the node is running");
        self.restarts += 1;
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Up means the HTTP API answers at all.
        while self.health_status().is_none() {
            assert!(Instant::now() < deadline, "the node did not start\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.unseal();
    }

    /// Whether this node is the cluster's active node.
    pub fn is_active(&self) -> bool {
        self.health_status() == Some(200)
    }

    /// `sys/health`'s status, or `None` when the node does not answer.
    fn health_status(&self) -> Option<u16> {
        match ureq::get(&self.url("sys/health")).timeout(Duration::from_secs(5)).call() {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(status, _)) => Some(status),
            Err(_) => None,
        }
    }

    /// Waits until this node is the active node.
    pub fn wait_active(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.is_active() {
            assert!(Instant::now() < deadline, "{} did not become active within {secs} s", self.address());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn new(mode: Mode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugin dir");
        std::fs::copy(plugin_binary(), dir.path().join("plugins").join(PLUGIN_FILE)).expect("copy plugin");
        let clock = TestClock::new(dir.path());
        Self {
            child: None,
            bin: server_binary(),
            dir,
            port: free_port_pair(),
            mode,
            token: String::new(),
            tls: None,
            restarts: 0,
            cluster_port: free_port(),
            audit_log: None,
            clock,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The plugin directory.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:<port>` of the TLS listener, if there is one.
    pub fn tls_address(&self) -> Option<String> {
        self.tls.as_ref().map(|tls| format!("https://127.0.0.1:{}", tls.port))
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The unseal key, for a server the harness initialised.
    pub fn unseal_key(&self) -> Option<&str> {
        self.mode.unseal_key()
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.address(), path.trim_start_matches('/'))
    }

    fn spawn(&mut self) {
        let config = self.dir.path().join("server.hcl");
        let plugins = self.plugin_dir();
        let mut command = Command::new(&self.bin);
        match &self.mode {
            Mode::Dev => {
                let mut text = format!("plugin_directory = {:?}\n", plugins.display().to_string());
                if let Some(log) = self.audit_log.as_ref().filter(|_| server_kind().is_openbao()) {
                    text.push_str(&format!(
                        "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
                        log.display().to_string()
                    ));
                }
                std::fs::write(&config, text).expect("config");
                command.args(["server", "-dev", "-dev-no-store-token"]);
                command.arg(format!("-dev-root-token-id={}", self.token));
                command.arg(format!("-dev-listen-address=127.0.0.1:{}", self.port));
            }
            Mode::Raft { node_id, cluster_port, leader, standby_reads, .. } => {
                let data = self.dir.path().join("raft");
                std::fs::create_dir_all(&data).expect("raft dir");
                let join = leader
                    .as_ref()
                    .map(|l| format!("  retry_join {{\n    leader_api_addr = \"{l}\"\n  }}\n"))
                    .unwrap_or_default();
                let text = format!(
                    "storage \"raft\" {{\n  path = {:?}\n  node_id = \"{node_id}\"\n{join}}}\nlistener \"tcp\" {{\n  \
                     address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                     api_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"https://127.0.0.1:{cluster_port}\"\n\
                     plugin_directory = {:?}\ndisable_mlock = true\nui = false\n",
                    data.display().to_string(),
                    plugins.display().to_string(),
                    port = self.port,
                );
                // OpenBao's standbys serve reads themselves by default; most
                // tests' clusters have them forward every request (as
                // Vault's do), and raft_cluster_reading's serve reads.
                let text = if server_kind().is_openbao() && !standby_reads {
                    text + "disable_standby_reads = true\n"
                } else {
                    text
                };
                std::fs::write(&config, text).expect("config");
                command.arg("server");
            }
            Mode::Persistent { .. } => {
                let data = self.dir.path().join("data");
                std::fs::create_dir_all(&data).expect("data dir");
                // OpenBao 2 has no file storage; a one-node raft cluster
                // keeps everything in the same directory instead.
                let (storage, extra) = if server_kind().is_openbao() {
                    (
                        format!(
                            "storage \"raft\" {{\n  path = {:?}\n  node_id = \"node-1\"\n}}\n",
                            data.display().to_string()
                        ),
                        format!("cluster_addr = \"https://127.0.0.1:{}\"\n", self.cluster_port),
                    )
                } else {
                    (
                        format!("storage \"file\" {{\n  path = {:?}\n}}\n", data.display().to_string()),
                        "disable_mlock = true\n".into(),
                    )
                };
                let mut text = format!(
                    "{storage}listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
                     cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\nplugin_directory = {:?}\n\
                     {extra}ui = false\n",
                    plugins.display().to_string(),
                    port = self.port,
                    cluster = self.cluster_port,
                );
                if let Some(tls) = &self.tls {
                    text.push_str(&format!(
                        "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster}\"\n  \
                         tls_cert_file = {:?}\n  tls_key_file = {:?}\n}}\n",
                        tls.cert.display().to_string(),
                        tls.key.display().to_string(),
                        port = tls.port,
                        cluster = free_port(),
                    ));
                }
                std::fs::write(&config, text).expect("config");
                command.arg("server");
            }
        }
        command.arg(format!("-config={}", config.display()));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let (clock_var, clock_path) = self.clock.env();
        // The server's own address in its environment, as the official
        // images and Helm charts set it: plugins inherit it, and Lockstep's
        // probes it to learn of a seal or step-down (plugin/sdk/src/drain.rs).
        if OWN_ADDRESS.load(std::sync::atomic::Ordering::SeqCst) {
            command.env("VAULT_ADDR", self.address()).env("BAO_ADDR", self.address());
        } else {
            command.env_remove("VAULT_ADDR").env_remove("BAO_ADDR").env_remove("LOCKSTEP_SERVER_ADDR");
        }
        let child = command
            .env(clock_var, clock_path)
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    /// Waits until the HTTP API answers (sealed or not).
    fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("the server exited during start-up ({status}); its log:\n{log}");
            }
            if let Ok(response) = ureq::get(&self.url("sys/seal-status")).timeout(Duration::from_secs(2)).call()
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "the server did not answer within 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn unseal(&self) {
        let Some(unseal_key) = self.mode.unseal_key() else {
            return;
        };
        // A joining raft node may answer "sealed" until it has joined.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let reply = http(ureq::put(&self.url("sys/unseal")), Some(&json!({"key": unseal_key})));
            if reply.status == 200 && reply.body["sealed"] == false {
                break;
            }
            assert!(Instant::now() < deadline, "still sealed: {reply:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(500));
        }
        // Active (200) or, for a joined node, standby (429); a raft node
        // started again may come back as either.
        let joined = matches!(&self.mode, Mode::Raft { leader: Some(_), .. });
        let restarted = matches!(&self.mode, Mode::Raft { .. }) && self.restarts > 0;
        let ready = |status: Option<u16>| match status {
            Some(429) => joined || restarted,
            Some(200) => !joined || restarted,
            _ => false,
        };
        while !ready(self.health_status()) {
            assert!(Instant::now() < deadline, "the server did not become ready\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server gracefully and starts it again on the same data,
    /// unsealing it. Only for persistent servers.
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// Like [`Server::restart`], with `between` run on the storage
    /// directory while the server is down (to copy or restore it).
    pub fn restart_with(&mut self, between: impl FnOnce(&Path)) {
        assert!(matches!(self.mode, Mode::Persistent { .. }), "a dev server loses its data on restart");
        self.stop();
        between(&self.dir.path().join("data"));
        self.spawn();
        self.wait_until_up();
        self.unseal();
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Registers the plugin in the catalog by SHA-256 and version, through
    /// the HTTP API.
    pub fn register_plugin(&self) -> Reply {
        self.register_plugin_with_env(&[])
    }

    /// [`Server::register_plugin`] with `KEY=VALUE` entries for the plugin
    /// process's environment (the catalog's `env`).
    pub fn register_plugin_with_env(&self, env: &[&str]) -> Reply {
        let sha256 = sha256_file(&self.plugin_dir().join(PLUGIN_FILE));
        let body = json!({"sha256": sha256, "command": PLUGIN_FILE, "version": plugin_version(), "env": env});
        self.request("PUT", &format!("sys/plugins/catalog/secret/{PLUGIN_NAME}"), Some(body))
    }

    /// Enables the plugin at `path`.
    pub fn enable(&self, path: &str) -> Reply {
        let body = json!({"type": PLUGIN_NAME, "plugin_version": plugin_version()});
        self.request("POST", &format!("sys/mounts/{path}"), Some(body))
    }

    /// A dev server with the plugin registered and mounted at `mounts`.
    pub fn dev_with_mounts(mounts: &[&str]) -> Self {
        Self::dev().with_mounts(mounts)
    }

    /// Registers the plugin and mounts it at `mounts`.
    pub fn with_mounts(self, mounts: &[&str]) -> Self {
        self.register_plugin().expect_status(204);
        for mount in mounts {
            self.enable(mount).expect_status(204);
        }
        self
    }

    /// Any API request with the root token.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        request_with(&self.url(path), &self.token, method, body)
    }

    /// A client of this server with another token.
    pub fn with_token(&self, token: &str) -> Client {
        Client { base: format!("{}/v1", self.address()), token: token.to_string() }
    }

    /// GET.
    pub fn read(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// POST with a JSON body.
    pub fn write(&self, path: &str, body: Value) -> Reply {
        self.request("POST", path, Some(body))
    }

    /// LIST.
    pub fn list(&self, path: &str) -> Reply {
        self.request("LIST", path, None)
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    /// Runs the server binary as the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("VAULT_ADDR", self.address())
            .env("VAULT_TOKEN", &self.token)
            // OpenBao's CLI prefers these when they are set.
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", &self.token)
            .env("HOME", self.dir.path())
            .output()
            .expect("run the CLI")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Where the server's data lives.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn request_with(url: &str, token: &str, method: &str, body: Option<Value>) -> Reply {
    let request = ureq::request(method, url).set("X-Vault-Token", token).timeout(Duration::from_secs(120));
    http(request, body.as_ref())
}

/// Requests to a server with a given token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
}

impl Client {
    /// Any API request.
    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        request_with(&format!("{}/{}", self.base, path.trim_start_matches('/')), &self.token, method, body)
    }

    /// GET.
    pub fn read(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// POST with a JSON body.
    pub fn write(&self, path: &str, body: Value) -> Reply {
        self.request("POST", path, Some(body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        dump_log_if_panicking("server", &self.log_path());
        self.stop();
    }
}
