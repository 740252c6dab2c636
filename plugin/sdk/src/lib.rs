//! Serve a HashiCorp Vault or OpenBao secrets-engine plugin from Rust.
//!
//! This crate knows the plugin protocol and nothing about any particular
//! engine. It plays the part of the Go SDK's `sdk/plugin` and
//! `sdk/framework` packages:
//!
//! - [`handshake`]: the environment the host sets, the magic cookie, and the
//!   one line printed on stdout that tells the host where to connect;
//! - [`tls`]: the per-process certificate and the pinned-certificate mTLS
//!   configuration both directions of the connection use;
//! - [`server`]: the gRPC services the host calls (the backend, the plugin
//!   version, multiplexing, and go-plugin's health, broker, controller and
//!   stdio services), with one backend instance per mount;
//! - [`broker`]: the connection details the host sends for each instance's
//!   storage and system view;
//! - [`storage`] and [`system`]: clients for what the host serves back;
//! - [`logical`]: requests, responses and errors as an engine sees them;
//! - [`framework`]: paths with typed fields, operations, existence checks,
//!   help and the periodic function;
//! - [`log`]: log records on stderr in the JSON form the host re-logs.
//!
//! An engine's `main` calls [`serve`] with a factory that builds a
//! [`framework::Backend`] for each mount.

pub mod broker;
pub mod drain;
pub mod framework;
pub mod handshake;
pub mod log;
pub mod logical;
mod proto;
pub mod server;
pub mod storage;
pub mod system;
pub mod tls;
mod transport;

pub use server::{BackendFactory, ServeError, ServeOptions, SetupContext, serve};
