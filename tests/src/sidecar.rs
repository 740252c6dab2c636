//! A real `lockstep-sidecar` process for end-to-end tests: configured by a
//! TOML file in a temporary directory, spoken to over its Unix socket with
//! a minimal HTTP/1.1 client, stopped with SIGTERM (and killed if it does
//! not stop) when dropped.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Reply, dump_log_if_panicking, required_binary};

/// The sidecar binary: `LOCKSTEP_SIDECAR_BIN`, else the workspace build.
pub fn sidecar_binary() -> PathBuf {
    required_binary("LOCKSTEP_SIDECAR_BIN", "debug/lockstep-sidecar", "cargo build -p lockstep-sidecar")
}

/// The release build of the sidecar: `LOCKSTEP_SIDECAR_RELEASE_BIN`, else
/// the workspace's.
pub fn release_sidecar_binary() -> PathBuf {
    required_binary(
        "LOCKSTEP_SIDECAR_RELEASE_BIN",
        "release/lockstep-sidecar",
        "cargo build --release -p lockstep-sidecar",
    )
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    child: Option<Child>,
    dir: PathBuf,
    name: String,
    socket: PathBuf,
}

impl Sidecar {
    /// Starts `lockstep-sidecar run` with `config` (TOML) written to
    /// `<dir>/<name>.toml`; waits until its socket exists.
    pub fn start(dir: &Path, name: &str, config: &str) -> Self {
        Self::start_binary(&sidecar_binary(), dir, name, config)
    }

    /// As [`Sidecar::start`], with another build of the sidecar (the
    /// release binary, for tests of what ships).
    pub fn start_binary(binary: &Path, dir: &Path, name: &str, config: &str) -> Self {
        Self::start_command(Command::new(binary), dir, name, config)
    }

    /// As [`Sidecar::start`], with `command` (a binary, or a wrapper such as
    /// `faketime` and its arguments before the binary) followed by
    /// `run --config <file>`.
    pub fn start_command(mut command: Command, dir: &Path, name: &str, config: &str) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("write the sidecar config");
        let socket = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("path = ").filter(|v| v.contains(".sock")))
            .map(|v| PathBuf::from(v.trim_matches('"')))
            .expect("the config names a socket path ending in .sock");
        // A killed sidecar leaves its socket file behind; the new one would
        // replace it, but the wait below must not mistake it for the new one.
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("LOCKSTEP_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start lockstep-sidecar");
        let mut sidecar = Self { child: Some(child), dir: dir.to_path_buf(), name: name.into(), socket };
        sidecar.wait_for_socket();
        sidecar
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("sidecar {} exited ({status}); log:\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sidecar {} did not accept on its socket in 30 s; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`HUP`, `TERM`…) with `kill`.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("running");
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Kills the process at once (SIGKILL), as a crash would; its socket
    /// file and cache stay behind.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Rewrites the configuration file (apply it with `signal("HUP")`).
    pub fn rewrite_config(&self, config: &str) {
        let path = self.dir.join(format!("{}.toml", self.name));
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, config).expect("write the sidecar config");
        std::fs::rename(&tmp, &path).expect("replace the sidecar config");
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// One request (with the guard header) on a fresh connection.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        socket_request(&self.socket, method, path, body)
    }

    /// GET.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    /// Polls `check` every 50 ms for up to `secs` seconds.
    #[track_caller]
    pub fn wait_until(&self, what: &str, secs: u64, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "sidecar {}: timed out waiting for {what}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        self.wait_until("readiness", 60, |s| s.get("/readyz").status == 200);
    }

    /// SIGTERM, then waits (bounded) for the exit; returns whether it exited
    /// on its own with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        dump_log_if_panicking(&format!("sidecar {}", self.name), &self.dir.join(format!("{}.log", self.name)));
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The count of `lockstep_sidecar_sync_errors_total{kind}` in a metrics
/// exposition (every kind's series is there from the start, at 0).
pub fn sync_errors(metrics: &str, kind: &str) -> u64 {
    let series = format!("lockstep_sidecar_sync_errors_total{{kind=\"{kind}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// A minimal HTTP/1.1 exchange over a Unix socket (`Connection: close`).
pub fn socket_request(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(Duration::from_secs(90))).expect("timeout");
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: sidecar\r\nX-Lockstep-Request: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(payload.as_bytes())).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Reply { status, body }
}
