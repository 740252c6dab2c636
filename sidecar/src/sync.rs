//! The refresh loop: fetch the pool's bundle (long-polling when Vault
//! offers it), validate it whole, swap it in, persist it; on any failure
//! keep the last good bundle and retry with jittered backoff. It never
//! dies on error; only shutdown ends it.

use std::sync::Arc;
use std::time::Duration;

use lockstep_model::UnixSeconds;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Context;
use crate::backoff::{Backoff, jitter};
use crate::cachefile::CacheFile;
use crate::config::Config;
use crate::store::PublishError;
use crate::vault::{Auth, AuthError, BundleQuery, BundleReply, VaultClient, VaultError};

/// Why one sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No token.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// The bundle request failed.
    #[error("{0}")]
    Vault(#[from] VaultError),
    /// The bundle was refused; the last good one is kept.
    #[error("{0}")]
    Rejected(#[from] PublishError),
}

impl SyncError {
    /// Label for `sync_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.kind(),
            Self::Vault(e) => e.kind(),
            Self::Rejected(_) => "invalid",
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new bundle was swapped in.
    Changed,
    /// The held revision is current.
    Unchanged,
    /// Something failed; see the logs and metrics.
    Failed,
}

/// The loop's state.
#[derive(Debug)]
pub struct Syncer {
    ctx: Context,
    config: Arc<Config>,
    configs: watch::Receiver<Arc<Config>>,
    client: VaultClient,
    auth: Auth,
    cache: Option<CacheFile>,
    backoff: Backoff,
    skewed: bool,
    /// This process's boot id, sent with every poll.
    boot: String,
    /// The last answer, from a standby, asked for a heartbeat.
    heartbeat_due: bool,
    /// The last poll carried a heartbeat (the active node answers it at
    /// once: the next poll follows at once too).
    sent_heartbeat: bool,
    /// The last poll carried an acknowledgement (it followed a change,
    /// and the engine answers it at once: the next poll follows at once).
    sent_ack: bool,
    /// The last sync failed: the next one does not long-poll.
    failing: bool,
}

impl Syncer {
    /// A loop for the configuration `configs` holds (and later reloads).
    pub fn new(
        ctx: Context,
        configs: watch::Receiver<Arc<Config>>,
        cache: Option<CacheFile>,
    ) -> Result<Self, VaultError> {
        let config = configs.borrow().clone();
        let client = VaultClient::new(&config.vault)?;
        let auth = Auth::new(config.auth.clone(), client.clone());
        let boot = format!("{:016x}", fastrand::u64(..));
        Ok(Self {
            ctx,
            backoff: backoff(&config),
            config,
            configs,
            client,
            auth,
            cache,
            skewed: false,
            boot,
            heartbeat_due: false,
            sent_heartbeat: false,
            sent_ack: false,
            failing: false,
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.apply_reload();
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = self.sync_once() => outcome,
                () = crate::shutdown_signalled(&mut shutdown) => return,
            };
            let delay = self.delay_after(outcome, started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = crate::shutdown_signalled(&mut shutdown) => return,
            }
        }
    }

    /// One fetch; counts and logs failures.
    pub async fn sync_once(&mut self) -> Outcome {
        let outcome = self.try_sync().await;
        self.failing = outcome.is_err();
        match outcome {
            Ok(outcome) => {
                self.backoff.reset();
                outcome
            }
            Err(error) => {
                self.ctx.metrics.sync_error(error.kind());
                tracing::warn!(%error, kind = error.kind(), "sync failed; serving the last good bundle");
                Outcome::Failed
            }
        }
    }

    async fn try_sync(&mut self) -> Result<Outcome, SyncError> {
        let token = self.auth.token().await?;
        let current = self.ctx.store.snapshot();
        let query = BundleQuery {
            instance: self.config.instance.clone(),
            boot: self.boot.clone(),
            revision: current.as_ref().map(|s| s.bundle.revision.clone()),
            held: current.as_ref().map(|s| s.held()).unwrap_or_default(),
            // Nothing to wait for until something is held, or while
            // syncs fail (a quick answer, or a quick failure and the next
            // address: a node that accepts and then hangs costs seconds,
            // not a long-poll). A long-poll never outlasts the token's
            // renewal deadline.
            wait: match (&current, self.auth.renewal_due_in()) {
                _ if self.failing => 0,
                (None, _) => 0,
                (Some(_), Some(due)) => self.config.vault.wait_secs.min(due),
                (Some(_), None) => self.config.vault.wait_secs,
            },
            heartbeat: self.heartbeat_due,
        };
        self.sent_heartbeat = query.heartbeat;
        let reply = match self.client.bundle(&token, &self.config.pool, &query).await {
            Err(VaultError::Denied(message)) => {
                // An expired or revoked token looks like this: get a new one.
                self.auth.invalidate();
                return Err(VaultError::Denied(message).into());
            }
            other => other?,
        };
        // A standby asked for a heartbeat: the next poll carries it (and a
        // poll that carried one was stored by the active node).
        self.heartbeat_due = reply.heartbeat_due;
        let now = self.ctx.clock.now();
        let bundle = match reply.reply {
            BundleReply::NotModified { server_time, .. } => {
                self.check_skew(server_time, now);
                self.ctx.store.mark_synced(now);
                return Ok(Outcome::Unchanged);
            }
            BundleReply::Bundle(bundle) => bundle,
        };
        self.check_skew(bundle.server_time, now);
        if current.as_ref().is_some_and(|c| c.bundle.revision == bundle.revision) {
            self.ctx.store.mark_synced(now);
            return Ok(Outcome::Unchanged);
        }
        let snapshot = self.ctx.store.publish(*bundle, now)?;
        self.ctx.store.mark_synced(now);
        self.ctx.metrics.bundle_applied();
        let held: Vec<String> = snapshot.held().iter().map(|h| format!("{} v{}", h.keyring, h.number)).collect();
        tracing::info!(revision = %snapshot.bundle.revision, held = %held.join(", "), "bundle swapped in");
        if let Some(previous) = &current {
            for (name, version) in revoked_since(previous, &snapshot) {
                tracing::warn!(keyring = %name, version, "a version was revoked: this sidecar signs and verifies with it no more");
            }
        }
        if let Some(cache) = &self.cache
            && let Err(error) = cache.save_kept(&snapshot.bundle, &snapshot.kept(), now)
        {
            self.ctx.metrics.sync_error("cache_write");
            tracing::warn!(%error, "could not write the cache file");
        }
        Ok(Outcome::Changed)
    }

    fn check_skew(&mut self, server_time: UnixSeconds, now: UnixSeconds) {
        let skew = now - server_time;
        self.ctx.metrics.set_clock_skew(skew);
        let bound = i64::try_from(self.config.vault.max_clock_skew_secs).unwrap_or(i64::MAX);
        let skewed = skew.abs() > bound;
        if skewed {
            tracing::warn!(skew_seconds = skew, bound_seconds = bound, "local clock is skewed from vault's");
        } else if self.skewed {
            tracing::info!(skew_seconds = skew, "local clock is back within the skew bound");
        }
        self.skewed = skewed;
    }

    fn delay_after(&mut self, outcome: Outcome, took: Duration) -> Duration {
        let vault = &self.config.vault;
        let poll = jitter(Duration::from_secs(vault.poll_interval_secs), 20);
        let after_ack = std::mem::replace(&mut self.sent_ack, matches!(outcome, Outcome::Changed));
        match outcome {
            Outcome::Failed => self.backoff.next_delay(),
            // Ask again soon: the next request carries the acknowledgement.
            Outcome::Changed => jitter(Duration::from_millis(300), 60),
            // A standby wants a heartbeat: the next poll carries it, soon.
            // After one or an acknowledgement, the next poll goes back to
            // long-polling, soon.
            Outcome::Unchanged if self.heartbeat_due || self.sent_heartbeat || after_ack => {
                jitter(Duration::from_millis(300), 60)
            }
            // Vault held the request: ask again at once.
            Outcome::Unchanged if vault.wait_secs > 0 && took.as_secs() * 2 >= vault.wait_secs => {
                jitter(Duration::from_millis(500), 100)
            }
            // No long-poll (or Vault did not hold it): poll at the interval,
            // or sooner when the token falls due for renewal.
            Outcome::Unchanged => match self.auth.renewal_due_in() {
                Some(due) => poll.min(Duration::from_secs(due.max(1))),
                None => poll,
            },
        }
    }

    fn apply_reload(&mut self) {
        if !self.configs.has_changed().unwrap_or(false) {
            return;
        }
        let config = self.configs.borrow_and_update().clone();
        if config.vault != self.config.vault || config.auth != self.config.auth {
            match VaultClient::new(&config.vault) {
                Ok(client) => {
                    self.auth = Auth::new(config.auth.clone(), client.clone());
                    self.client = client;
                }
                Err(error) => tracing::error!(%error, "reload: keeping the previous vault client"),
            }
        }
        self.backoff = backoff(&config);
        self.config = config;
    }
}

fn backoff(config: &Config) -> Backoff {
    Backoff::new(Duration::from_millis(config.vault.backoff_min_ms), Duration::from_secs(config.vault.backoff_max_secs))
}

/// The versions `previous` held that `next` lists as revoked, by keyring.
fn revoked_since(previous: &crate::store::Snapshot, next: &crate::store::Snapshot) -> Vec<(String, u64)> {
    let mut revoked = Vec::new();
    for (name, keyring) in &next.keyrings {
        let (Some(kids), Some(old)) = (keyring.data.revoked.as_ref(), previous.keyrings.get(name)) else {
            continue;
        };
        for version in old.data.versions.iter().filter(|v| kids.contains(&v.meta.kid)) {
            revoked.push((name.clone(), version.meta.number));
        }
    }
    revoked
}
