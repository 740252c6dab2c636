//! The host's "system view": facts about the mount and the server.

use std::time::Duration;

use tonic::transport::Channel;

use crate::proto::pb;
use crate::proto::pb::system_view_client::SystemViewClient;

/// Why a system-view call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("system view {call} failed: {message}")]
pub struct SystemError {
    call: &'static str,
    message: String,
}

/// Client for the host's system view.
#[derive(Debug, Clone)]
pub struct SystemView {
    client: SystemViewClient<Channel>,
    /// False for [`SystemView::unavailable`]: calls fail at once.
    connected: bool,
}

/// The replication state's flag for a standby that serves reads
/// (`ReplicationPerformanceStandby`, bit 14 of the host's bitmask).
pub const PERFORMANCE_STANDBY: i32 = 1 << 14;

impl SystemView {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { client: SystemViewClient::new(channel).max_decoding_message_size(usize::MAX), connected: true }
    }

    /// A system view with no host behind it: every call fails. For unit
    /// tests of engines, and for code paths that must not need the host.
    pub fn unavailable() -> Self {
        let channel = tonic::transport::Endpoint::from_static("http://unavailable.invalid").connect_lazy();
        Self { connected: false, ..Self::new(channel) }
    }

    fn fail(call: &'static str) -> impl Fn(tonic::Status) -> SystemError {
        move |status| SystemError { call, message: status.message().to_string() }
    }

    /// The mount's default lease TTL.
    pub async fn default_lease_ttl(&self) -> Result<Duration, SystemError> {
        let reply = self.client.clone().default_lease_ttl(pb::Empty {}).await.map_err(Self::fail("DefaultLeaseTTL"))?;
        Ok(Duration::from_nanos(reply.into_inner().ttl.max(0).unsigned_abs()))
    }

    /// Whether the mount is being removed.
    pub async fn tainted(&self) -> Result<bool, SystemError> {
        let reply = self.client.clone().tainted(pb::Empty {}).await.map_err(Self::fail("Tainted"))?;
        Ok(reply.into_inner().tainted)
    }

    /// The replication state bitmask (0 on a plain server).
    pub async fn replication_state(&self) -> Result<i32, SystemError> {
        if !self.connected {
            return Err(SystemError { call: "ReplicationState", message: "no host".into() });
        }
        let reply =
            self.client.clone().replication_state(pb::Empty {}).await.map_err(Self::fail("ReplicationState"))?;
        Ok(reply.into_inner().state)
    }

    /// Whether this node is a standby that serves reads itself (OpenBao's
    /// raft standbys, Vault Enterprise's performance standbys): its storage
    /// takes no writes. False when the host cannot say.
    pub async fn is_read_standby(&self) -> bool {
        self.replication_state().await.is_ok_and(|state| state & PERFORMANCE_STANDBY != 0)
    }

    /// The server's version string.
    pub async fn server_version(&self) -> Result<String, SystemError> {
        let reply = self.client.clone().plugin_env(pb::Empty {}).await.map_err(Self::fail("PluginEnv"))?.into_inner();
        if !reply.err.is_empty() {
            return Err(SystemError { call: "PluginEnv", message: reply.err });
        }
        Ok(reply.plugin_environment.map(|env| env.vault_version).unwrap_or_default())
    }
}
