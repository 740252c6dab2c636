//! Lockstep's secrets engine.
//!
//! Module map:
//! - [`paths`]: one module per API path family, in the order a reader of a
//!   HashiCorp plugin expects (declaration, handlers, storage, help);
//! - [`clock`]: the injected time source;
//! - [`coordinator`]: the commit decision, acknowledgements, and the reads
//!   of a sidecar's poll through the cache;
//! - [`scheduler`]: what the periodic call does;
//! - [`acks`]: the fleet of sidecar instances and the gates of pending
//!   versions, in memory;
//! - [`cache`]: what the serving node keeps of storage;
//! - [`storage`], [`pool`], [`config`], [`keygen`]: records and material;
//! - [`state`]: what a mount keeps in memory between requests.
//!
//! Dependencies run one way: paths → coordinator and scheduler → cache,
//! acks, storage and the model.

pub mod acks;
pub mod cache;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod keygen;
pub mod paths;
pub mod pool;
pub mod scheduler;
pub mod state;
pub mod storage;

use std::sync::Arc;

pub use clock::{Clock, SystemClock};
use vault_plugin_sdk::SetupContext;
use vault_plugin_sdk::framework::{Backend, SpecialPaths};

/// Largest request body the engine accepts; every legitimate request is a
/// few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The version reported to the server; registration must use the same.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// What `--version` prints for an executable whose bytes are `binary` and
/// whose file name is `command`: the version, its SHA-256, and the commands
/// that register and mount exactly this binary (the server checks the
/// checksum at every start).
pub fn version_text(binary: &[u8], command: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, binary);
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{command} {VERSION}\nsha256 {sha256}\n\nRegister it (bao for OpenBao, vault for Vault), then mount it:\n  \
         vault plugin register -sha256={sha256} -version={VERSION} -command={command} secret lockstep\n  \
         vault secrets enable -path=lockstep -plugin-version={VERSION} lockstep\n"
    )
}

const HELP: &str = "\
Lockstep rotates cryptographic keys for many pools of services at once, \
so that every pool always verifies what any other pool signs.

The engine runs inside the server: its periodic call decides when keys \
rotate, and sidecars in each pool pull their pool's key bundle.";

/// Builds the engine for one mount.
pub fn backend(setup: SetupContext, clock: Arc<dyn Clock>) -> Backend {
    let state = Arc::new(state::MountState::new(clock, setup.system.clone()));
    let (periodic_state, invalidate_state) = (state.clone(), state.clone());
    Backend {
        help: HELP.to_string(),
        paths: vec![
            paths::info::path(state.clone()),
            paths::config::path(state.clone()),
            paths::keys::list_path(),
            paths::keys_rotate::path(state.clone()),
            paths::keys_revoke::path(state.clone()),
            paths::keys_renumber::path(state.clone()),
            paths::keys::path(state.clone()),
            paths::pools::list_path(),
            paths::pools::path(state.clone()),
            paths::bundle::path(state.clone()),
            paths::status::path(state.clone()),
            paths::history::path(),
            paths::jwks::path(state.clone()),
        ],
        periodic: Some(Arc::new(move |storage| {
            let state = periodic_state.clone();
            Box::pin(async move {
                state.record_periodic();
                scheduler::run(&state, storage.as_ref()).await
            })
        })),
        // A change made elsewhere drops what the key feeds and wakes the
        // long-polls it concerns.
        invalidate: Some(Arc::new(move |key| invalidate_state.invalidated(key))),
        // Key material is seal-wrapped on servers that offer it, as
        // Transit's keys are.
        // Public keys of keyrings that opt in are for anyone.
        special_paths: SpecialPaths {
            seal_wrap_storage: vec!["material/".into()],
            unauthenticated: vec!["jwks/*".into()],
            ..SpecialPaths::default()
        },
        max_request_bytes: MAX_REQUEST_BYTES,
        system: Some(setup.system.clone()),
        ..Backend::default()
    }
}
