//! Vault's HTTP API, as far as the sidecar uses it: the pool's bundle, and
//! the auth endpoints (login, renew-self, lookup-self).
//!
//! - [`client`]: the HTTP client (rustls on aws-lc-rs, optional CA bundle);
//! - [`auth`]: obtaining, renewing and replacing the token.

pub mod auth;
pub mod client;

pub use auth::{Auth, AuthError};
pub use client::{BundleQuery, BundleReply, VaultClient, VaultError};
