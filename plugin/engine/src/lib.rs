//! Lockstep's secrets engine.
//!
//! Module map:
//! - [`paths`]: one module per API path family, in the order a reader of a
//!   HashiCorp plugin expects (declaration, handlers, storage, help);
//! - [`clock`]: the injected time source;
//! - [`state`]: what a mount keeps in memory between requests.

pub mod acks;
pub mod clock;
pub mod config;
pub mod keygen;
pub mod paths;
pub mod scheduler;
pub mod state;
pub mod storage;

use std::sync::Arc;

pub use clock::{Clock, SystemClock};
use vault_plugin_sdk::SetupContext;
use vault_plugin_sdk::framework::Backend;

/// Largest request body the engine accepts; every legitimate request is a
/// few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The version reported to the server; registration must use the same.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

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
            paths::keys::path(state.clone()),
            paths::pools::list_path(),
            paths::pools::path(),
            paths::bundle::path(state.clone()),
            paths::status::path(state.clone()),
            paths::history::path(),
        ],
        periodic: Some(Arc::new(move |storage| {
            let state = periodic_state.clone();
            Box::pin(async move {
                state.record_periodic();
                scheduler::run(&state, storage.as_ref()).await
            })
        })),
        // Nothing authoritative is cached; a change made elsewhere only
        // needs to wake bundle long-polls.
        invalidate: Some(Arc::new(move |_key| invalidate_state.changed())),
        max_request_bytes: MAX_REQUEST_BYTES,
        ..Backend::default()
    }
}
