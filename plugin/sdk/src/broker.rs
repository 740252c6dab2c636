//! go-plugin's connection broker, plugin side.
//!
//! For each backend instance the host opens a listener serving storage and
//! the system view, and announces it with a `ConnInfo` on the `StartStream`
//! stream. The announcement may arrive before or after the `Setup` call that
//! names its id, so announcements are kept in a table that `Setup` waits on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::goplugin::ConnInfo;
use crate::proto::goplugin::grpc_broker_server::GrpcBroker;

/// Where a brokered listener of the host can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix` or `tcp`.
    pub network: String,
    /// Socket path or `host:port`.
    pub address: String,
}

/// Why a brokered connection could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    /// The host never announced the id.
    #[error("timeout waiting for connection info for broker id {0}")]
    Timeout(u32),
}

/// Announcements received from the host, by broker id.
#[derive(Debug, Default)]
pub struct Broker {
    announced: Mutex<HashMap<u32, Endpoint>>,
    changed: Notify,
}

impl Broker {
    /// Records an announcement and wakes anyone waiting for it.
    pub fn announce(&self, id: u32, endpoint: Endpoint) {
        self.table().insert(id, endpoint);
        self.changed.notify_waiters();
    }

    /// Takes the announcement for `id`, waiting up to `timeout` for it.
    pub async fn take(&self, id: u32, timeout: Duration) -> Result<Endpoint, BrokerError> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                // Register interest before looking, so an announcement made
                // between the look and the wait is not missed.
                notified.as_mut().enable();
                if let Some(endpoint) = self.table().remove(&id) {
                    return endpoint;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| BrokerError::Timeout(id))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Endpoint>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.announced.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `plugin.GRPCBroker` service.
#[derive(Debug, Clone)]
pub(crate) struct BrokerService(pub(crate) Arc<Broker>);

type ConnInfoStream = Pin<Box<dyn Stream<Item = Result<ConnInfo, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcBroker for BrokerService {
    type StartStreamStream = ConnInfoStream;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let broker = self.0.clone();
        // This side never announces anything. The sender lives as long as
        // the reader, so the reply stream stays open until the host closes
        // its half.
        let (keep_open, outbound) = tokio::sync::mpsc::channel::<Result<ConnInfo, Status>>(1);
        tokio::spawn(async move {
            while let Some(Ok(info)) = inbound.next().await {
                if info.knock.is_some() {
                    // Knocks belong to gRPC broker multiplexing, which this
                    // plugin declines in its handshake.
                    continue;
                }
                tracing::debug!(id = info.service_id, network = %info.network, "host announced a brokered connection");
                broker.announce(info.service_id, Endpoint { network: info.network, address: info.address });
            }
            drop(keep_open);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(outbound))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(n: u32) -> Endpoint {
        Endpoint { network: "unix".into(), address: format!("/tmp/plugin{n}") }
    }

    #[tokio::test]
    async fn announcement_before_take_is_found() {
        let broker = Broker::default();
        broker.announce(1, endpoint(1));
        assert_eq!(broker.take(1, Duration::from_millis(10)).await, Ok(endpoint(1)));
        // Taken once: a second Setup with the same id must not reuse it.
        assert_eq!(broker.take(1, Duration::from_millis(10)).await, Err(BrokerError::Timeout(1)));
    }

    #[tokio::test]
    async fn announcement_after_take_wakes_the_waiter() {
        let broker = Arc::new(Broker::default());
        let waiter = tokio::spawn({
            let broker = broker.clone();
            async move { broker.take(7, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        broker.announce(3, endpoint(3));
        broker.announce(7, endpoint(7));
        assert_eq!(waiter.await.expect("join"), Ok(endpoint(7)));
        assert_eq!(broker.take(3, Duration::from_millis(10)).await, Ok(endpoint(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_announcement_times_out() {
        let broker = Broker::default();
        let error = broker.take(9, Duration::from_secs(5)).await.expect_err("no announcement");
        assert_eq!(error.to_string(), "timeout waiting for connection info for broker id 9");
    }
}
