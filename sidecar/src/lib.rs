//! Lockstep's sidecar: pulls its pool's key bundle from Vault and serves
//! keys, JWT signing and verification to the pod's apps over a Unix socket.
//!
//! - [`config`]: TOML file, `LOCKSTEP_*` environment, `--set` flags;
//! - [`vault`]: the Vault client and token handling;
//! - [`sync`]: the refresh loop (long-poll, validate, swap, persist);
//! - [`store`]: the atomically swapped snapshot of the last good bundle;
//! - [`crypto`], [`jwt`]: key material and JWS on aws-lc-rs;
//! - [`view`]: what callers see of a keyring at an instant;
//! - [`api`]: the socket API; [`client`]: a client of it;
//! - [`cachefile`]: the encrypted persistent cache; [`sink`]: key files;
//! - [`metrics`], [`clock`], [`backoff`]: support;
//! - [`cli`]: the command line, exit codes and logging set-up.

pub mod api;
pub mod backoff;
pub mod cachefile;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod jwt;
pub mod metrics;
pub mod ops;
pub mod sink;
pub mod store;
pub mod sync;
pub mod vault;
pub mod view;
pub mod webhook;

#[cfg(test)]
mod fakevault;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{ApiState, BindError};
use crate::cachefile::{CacheError, CacheFile};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Source};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync::Syncer;
use crate::vault::VaultError;

/// What the sync loop and the socket API share.
#[derive(Debug, Clone)]
pub struct Context {
    /// The last good bundle.
    pub store: Arc<Store>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// The wall clock.
    pub clock: SharedClock,
    /// Encryptions made per version, for the nonce bound.
    pub ops: Arc<ops::Counters>,
}

impl Context {
    /// A fresh context for `pool`.
    pub fn new(pool: &str, clock: SharedClock) -> Self {
        Self {
            store: Arc::new(Store::new(pool)),
            metrics: Arc::new(Metrics::default()),
            clock,
            ops: Arc::new(ops::Counters::default()),
        }
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cache key could not be read.
    #[error("{0}")]
    Cache(#[from] CacheError),
    /// The socket could not be bound.
    #[error("{0}")]
    Bind(#[from] BindError),
    /// The Vault client could not be built.
    #[error("{0}")]
    Vault(#[from] VaultError),
    /// The telemetry listener could not be bound.
    #[error("{0}")]
    Telemetry(#[from] api::telemetry::TelemetryBindError),
}

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the sidecar until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    run_with(config, Arc::new(SystemClock), None, shutdown).await
}

/// [`run`] with an injected clock, and SIGHUP reloads from `reload`.
pub async fn run_with(
    config: Config,
    clock: SharedClock,
    reload: Option<Source>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let ctx = Context::new(&config.pool, clock);
    let cache = match (&config.cache.file, &config.cache.key_file) {
        (Some(file), Some(key)) => Some(CacheFile::new(file, key, &config.pool)?),
        _ => None,
    };
    if let Some(cache) = &cache {
        restore(cache, &ctx);
    }
    let socket = config.socket.clone();
    let telemetry_addr = config.telemetry.as_ref().and_then(|t| t.socket_addr().ok());
    let (config_tx, configs) = watch::channel(Arc::new(config));
    // Everything that can fail comes before the socket exists.
    let syncer = Syncer::new(ctx.clone(), configs.clone(), cache)?;
    let telemetry = match telemetry_addr {
        Some(addr) => Some(api::telemetry::bind(addr).await?),
        None => None,
    };
    let listener = api::bind(&socket)?;
    let state = Arc::new(ApiState { ctx, configs, shutdown: shutdown.clone() });
    let sync_task = tokio::spawn(syncer.run(shutdown.clone()));
    let sink_task = tokio::spawn(sink::run(state.ctx.clone(), state.configs.clone(), shutdown.clone()));
    let reload_task = reload.map(|source| tokio::spawn(reload_on_sighup(source, config_tx, shutdown.clone())));
    let telemetry_task = telemetry.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "telemetry listener: /healthz, /readyz, /metrics");
        }
        tokio::spawn(api::telemetry::serve(listener, state.clone()))
    });
    tracing::info!(socket = %socket.path.display(), "serving on the socket");
    api::serve(listener, state).await;
    let _ = sync_task.await;
    let _ = sink_task.await;
    if let Some(task) = telemetry_task {
        let _ = task.await;
    }
    if let Some(task) = reload_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves the cached bundle at once, before Vault answers.
fn restore(cache: &CacheFile, ctx: &Context) {
    match cache.load_kept() {
        Ok(Some((bundle, received_at, kept))) => {
            match ctx.store.publish_kept(bundle, kept, received_at, ctx.clock.now()) {
                Ok(snapshot) => {
                    ctx.store.mark_synced(received_at);
                    tracing::info!(revision = %snapshot.bundle.revision, received_at, "serving the cached bundle until vault answers");
                }
                Err(error) => {
                    ctx.metrics.sync_error("cache_read");
                    tracing::warn!(%error, "ignoring the cache file");
                }
            }
        }
        Ok(None) => {}
        Err(error) => {
            ctx.metrics.sync_error("cache_read");
            tracing::warn!(%error, "ignoring the cache file");
        }
    }
}

/// Settings that only a restart changes.
fn restart_only_changed(old: &Config, new: &Config) -> bool {
    old.pool != new.pool
        || old.instance != new.instance
        || old.socket.path != new.socket.path
        // Set on the socket file and the accept loop when they are made.
        || old.socket.mode != new.socket.mode
        || old.socket.group != new.socket.group
        || old.socket.max_connections != new.socket.max_connections
        || old.cache != new.cache
        || old.telemetry != new.telemetry
}

async fn reload_on_sighup(source: Source, configs: watch::Sender<Arc<Config>>, mut shutdown: watch::Receiver<bool>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; configuration reload disabled");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            () = shutdown_signalled(&mut shutdown) => return,
        }
        match source.load() {
            Ok(new) if restart_only_changed(&configs.borrow(), &new) => {
                tracing::error!(
                    "reload refused: pool, instance, socket.path, socket.mode, socket.group, socket.max_connections, \
                     [cache] and [telemetry] change only with a restart"
                );
            }
            Ok(new) => {
                configs.send_replace(Arc::new(new));
                tracing::info!("configuration reloaded");
            }
            Err(error) => tracing::error!(%error, "reload refused; keeping the running configuration"),
        }
    }
}

/// A shutdown channel set by SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot listen for SIGTERM/SIGINT");
            // Keep the sender: dropping it would read as a shutdown.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        let _ = tx.send(true);
    });
    rx
}
