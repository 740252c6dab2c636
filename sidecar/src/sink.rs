//! The file sink: each keyring's view written to `<dir>/<keyring>.json`
//! (write then rename), and a process told after a change. Files carry
//! every version that verifies, pending ones included, so apps hold a new
//! version well before it activates; each version carries its own times.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use lockstep_model::UnixSeconds;

use tokio::sync::watch;

use crate::Context;
use crate::config::{Config, SinkConfig};
use crate::store::Snapshot;
use crate::view::{ViewOptions, keyring_view};

/// Why the sink failed; the sidecar goes on serving its socket.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing a file failed.
    #[error("sink.dir {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The view could not be rendered in the configured format.
    #[error("sink.format: keyring {keyring:?}: {message}")]
    Format {
        /// The keyring.
        keyring: String,
        /// Why.
        message: String,
    },
}

/// The sink and what it wrote last.
#[derive(Debug)]
pub struct Sink {
    config: SinkConfig,
    written: BTreeMap<String, Vec<u8>>,
}

impl Sink {
    /// A sink that has written nothing yet.
    pub fn new(config: SinkConfig) -> Self {
        Self { config, written: BTreeMap::new() }
    }

    /// Writes the keyrings whose view at `now` changed, removes files of
    /// keyrings that left the bundle, and notifies when anything changed.
    /// A keyring that cannot be shown in the configured format (PEM of an
    /// HMAC secret, say) is skipped, never the others; its error is
    /// returned after the rest are written.
    pub async fn refresh(&mut self, snapshot: &Snapshot, now: UnixSeconds) -> Result<bool, SinkError> {
        let mut changed = false;
        let mut skipped = None;
        // Without the signing bound: files change only with their keys,
        // and the command they notify runs only then.
        let options = ViewOptions { format: self.config.format, private: self.config.private, sign_until: None };
        for name in snapshot.keyrings.keys() {
            let mut view = match keyring_view(snapshot, name, now, options) {
                Ok(view) => view,
                Err(error) => {
                    skipped.get_or_insert(SinkError::Format { keyring: name.clone(), message: error.to_string() });
                    continue;
                }
            };
            // `now` alone must not cause a rewrite.
            view.as_object_mut().map(|o| o.remove("now"));
            let text = serde_json::to_vec_pretty(&view).unwrap_or_default();
            let hash = digest::digest(&digest::SHA256, &text).as_ref().to_vec();
            if self.written.get(name) != Some(&hash) {
                write_atomic(&self.file(name), &text)?;
                self.written.insert(name.clone(), hash);
                changed = true;
            }
        }
        let gone: Vec<String> = self.written.keys().filter(|k| !snapshot.keyrings.contains_key(*k)).cloned().collect();
        for name in gone {
            let _ = std::fs::remove_file(self.file(&name));
            self.written.remove(&name);
            changed = true;
        }
        if changed {
            self.notify().await;
        }
        skipped.map_or(Ok(changed), Err)
    }

    fn file(&self, keyring: &str) -> PathBuf {
        self.config.dir.join(format!("{keyring}.json"))
    }

    async fn notify(&self) {
        let argv: Vec<String> = if let Some(pid_file) = &self.config.pid_file {
            match std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
                Some(pid) => vec!["kill".into(), "-HUP".into(), pid.to_string()],
                None => {
                    tracing::warn!(pid_file = %pid_file.display(), "sink.pid_file holds no pid; nobody signalled");
                    return;
                }
            }
        } else {
            self.config.command.clone()
        };
        let Some((program, args)) = argv.split_first() else { return };
        let run = tokio::process::Command::new(program).args(args).kill_on_drop(true).status();
        match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(status)) if status.success() => tracing::info!(%program, "sink change notified"),
            Ok(Ok(status)) => tracing::warn!(%program, %status, "sink notification failed"),
            Ok(Err(error)) => tracing::warn!(%program, %error, "sink notification did not start"),
            Err(_) => tracing::warn!(%program, "sink notification timed out after 30 s"),
        }
    }
}

/// Longest wait between two looks at the files' state: a bound on how late
/// a change is written if a wake-up is missed (the clock jumped, say).
const MAX_WAIT_SECS: i64 = 5;

/// Keeps the sink's files current for as long as the sidecar runs: after
/// every new bundle (or cache restore), and at every instant a version
/// starts or stops signing or verifying, whether Vault answers or not.
/// Follows `sink` changes on configuration reloads.
pub async fn run(ctx: Context, mut configs: watch::Receiver<Arc<Config>>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = ctx.store.subscribe();
    let mut sink = configs.borrow_and_update().sink.clone().map(Sink::new);
    let mut last_failure = None;
    let mut signing: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let now = ctx.clock.now();
        let snapshot = ctx.store.snapshot();
        if let Some(snapshot) = &snapshot {
            note_signing(snapshot, now, &mut signing);
        }
        if let (Some(sink), Some(snapshot)) = (sink.as_mut(), &snapshot) {
            let failure = sink.refresh(snapshot, now).await.err().map(|e| e.to_string());
            // Counted every time, logged when it changes.
            if failure.is_some() {
                ctx.metrics.sync_error("sink");
            }
            if failure != last_failure
                && let Some(error) = &failure
            {
                tracing::warn!(%error, "file sink failed");
            }
            last_failure = failure;
        }
        let next = snapshot.as_ref().and_then(|s| s.keyrings.values().filter_map(|k| k.next_change_after(now)).min());
        let wait = next.map_or(MAX_WAIT_SECS, |at| (at - now).clamp(1, MAX_WAIT_SECS));
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())) => {}
            Ok(()) = configs.changed() => {
                let config = configs.borrow_and_update().sink.clone();
                if config.as_ref() != sink.as_ref().map(|s| &s.config) {
                    sink = config.map(Sink::new);
                }
            }
            () = crate::shutdown_signalled(&mut shutdown) => return,
        }
    }
}

/// Logs each keyring whose signing version changed since `signing` was
/// last noted: a new version taking over at its activation, the first one
/// at start, or none left.
fn note_signing(snapshot: &crate::store::Snapshot, now: UnixSeconds, signing: &mut BTreeMap<String, u64>) {
    for (name, keyring) in &snapshot.keyrings {
        let now_signing = keyring.state_at(now).signing;
        match (signing.get(name).copied(), now_signing) {
            (was, Some(number)) if was != Some(number) => {
                let kid = keyring.data.versions.iter().find(|v| v.meta.number == number).map(|v| v.meta.kid.as_str());
                tracing::info!(keyring = %name, version = number, kid = kid.unwrap_or_default(), "a new version signs now");
                signing.insert(name.clone(), number);
            }
            (Some(number), None) => {
                tracing::warn!(keyring = %name, version = number, "no version of the keyring signs now");
                signing.remove(name);
            }
            _ => {}
        }
    }
    signing.retain(|name, _| snapshot.keyrings.contains_key(name));
}

/// Writes `text` to `path` by a 0640 temporary file renamed over it.
fn write_atomic(path: &Path, text: &[u8]) -> Result<(), SinkError> {
    // A fresh name, created exclusively (never through a planted symlink).
    let tmp = path.with_extension(format!("json.tmp{}-{:016x}", std::process::id(), fastrand::u64(..)));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(&tmp)?;
        file.write_all(text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SinkError::Write { path: path.to_path_buf(), message: e.to_string() }
    })
}

#[cfg(test)]
mod tests {
    use lockstep_model::KeyType;

    use super::*;
    use crate::store::testdata::{bundle, handover, version};

    #[tokio::test]
    async fn writes_changed_keyrings_and_runs_the_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("notified");
        let config = SinkConfig {
            dir: dir.path().to_path_buf(),
            command: vec!["touch".into(), marker.display().to_string()],
            ..SinkConfig::default()
        };
        let mut sink = Sink::new(config);
        let snap = handover(KeyType::HmacSha256);
        assert!(sink.refresh(&snap, 100).await.expect("write"));
        assert!(marker.exists());
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("api.json")).expect("file")).expect("json");
        assert_eq!(file["signing"]["version"], 1);
        assert_eq!(file["verifying"][1]["state"], "scheduled");
        std::fs::remove_file(&marker).expect("rm");
        assert!(!sink.refresh(&snap, 101).await.expect("same"));
        assert!(!marker.exists());
        assert!(sink.refresh(&snap, 200).await.expect("activation"));
    }

    #[tokio::test]
    async fn a_keyring_the_format_cannot_show_is_skipped_and_the_others_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            SinkConfig { dir: dir.path().to_path_buf(), format: crate::config::Format::Pem, ..SinkConfig::default() };
        let mut sink = Sink::new(config);
        let b = bundle(
            "web",
            vec![
                ("a-hmac", KeyType::HmacSha256, 1, vec![version(KeyType::HmacSha256, 1, Some(0), None)]),
                ("b-jwt", KeyType::Ed25519, 1, vec![version(KeyType::Ed25519, 1, Some(0), None)]),
            ],
        );
        let snap = Snapshot::build("web", b, None, 0).expect("good");
        let error = sink.refresh(&snap, 10).await.expect_err("hmac has no pem");
        assert!(error.to_string().contains("\"a-hmac\""), "{error}");
        assert!(!dir.path().join("a-hmac.json").exists());
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("b-jwt.json")).expect("b-jwt written"))
                .expect("json");
        assert!(
            written["signing"]["material"]["public_key"].as_str().is_some_and(|p| p.contains("BEGIN PUBLIC KEY")),
            "{written}"
        );
    }

    /// Waits up to 5 s for `path` to appear.
    fn wait_for(path: &Path) {
        for _ in 0..100 {
            if path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn the_process_in_the_pid_file_gets_sighup_after_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("hup-received");
        // A stand-in app that notes SIGHUP in a file and exits.
        let ready = dir.path().join("trap-installed");
        let script = format!(
            "trap 'touch {}; exit 0' HUP; touch {}; while :; do sleep 0.05; done",
            marker.display(),
            ready.display()
        );
        // A shell cannot trap a signal ignored when it started (as under
        // `nohup`): `env` gives it SIGHUP's default first.
        let mut app = std::process::Command::new("env")
            .args(["--default-signal=HUP", "sh", "-c", &script])
            .spawn()
            .expect("start sh");
        let pid_file = dir.path().join("app.pid");
        std::fs::write(&pid_file, format!("{}\n", app.id())).expect("pid file");
        let config =
            SinkConfig { dir: dir.path().to_path_buf(), pid_file: Some(pid_file.clone()), ..SinkConfig::default() };
        let mut sink = Sink::new(config);
        let b =
            bundle("web", vec![("api", KeyType::HmacSha256, 1, vec![version(KeyType::HmacSha256, 1, Some(0), None)])]);
        let snap = Snapshot::build("web", b, None, 0).expect("good");
        wait_for(&ready);
        assert!(sink.refresh(&snap, 10).await.expect("write"));
        wait_for(&marker);
        let _ = app.kill();
        let _ = app.wait();
        assert!(marker.exists(), "the process in the pid file got no SIGHUP");

        // A pid file without a pid signals nobody, and the files are still written.
        std::fs::write(&pid_file, "not a pid").expect("pid file");
        std::fs::remove_file(&marker).expect("rm");
        std::fs::remove_file(dir.path().join("api.json")).expect("rm");
        let mut fresh =
            Sink::new(SinkConfig { dir: dir.path().to_path_buf(), pid_file: Some(pid_file), ..SinkConfig::default() });
        assert!(fresh.refresh(&snap, 10).await.expect("write"));
        assert!(dir.path().join("api.json").exists());
        assert!(!marker.exists());
    }
}
