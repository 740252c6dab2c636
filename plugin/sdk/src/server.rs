//! The gRPC services the host calls, and [`serve`], which runs them.

use std::collections::HashMap;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::broker::{Broker, BrokerService};
use crate::framework::Backend;
use crate::handshake::{HandshakeError, HostEnv, handshake_line};
use crate::logical::{self, LogicalError};
use crate::proto::goplugin::grpc_broker_server::GrpcBrokerServer;
use crate::proto::goplugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::proto::goplugin::grpc_stdio_server::{GrpcStdio, GrpcStdioServer};
use crate::proto::goplugin::{self as gp, StdioData};
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::health_server::{Health, HealthServer};
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::proto::logical as lg;
use crate::proto::logical::plugin_version_server::{PluginVersion, PluginVersionServer};
use crate::proto::multiplexing::plugin_multiplexing_server::{PluginMultiplexing, PluginMultiplexingServer};
use crate::proto::multiplexing::{MultiplexingSupportRequest, MultiplexingSupportResponse};
use crate::proto::pb;
use crate::proto::pb::backend_server::{Backend as BackendRpc, BackendServer};
use crate::storage::{GrpcStorage, Storage};
use crate::system::SystemView;
use crate::tls::{self, Identity};
use crate::transport;

/// How long `Setup` waits for the host to announce the broker connection.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// Metadata key the host puts on every backend call of a mount.
const MULTIPLEX_ID: &str = "multiplex_id";
/// Instance key when the host sends no multiplex id.
const SINGLE: &str = "single";
/// `Type()` answer for a secrets engine.
const LOGICAL_TYPE: u32 = 1;

/// What `serve` needs besides the engine.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The version reported to the host, `vMAJOR.MINOR.PATCH`.
    pub version: String,
    /// Whether one process may serve several mounts.
    pub multiplexing: bool,
}

/// What the host passed in `Setup` for one mount.
#[derive(Clone)]
pub struct SetupContext {
    /// The mount's configuration (from `secrets enable -options`).
    pub config: HashMap<String, String>,
    /// The mount's UUID.
    pub backend_uuid: String,
    /// The mount's storage. At registration the host serves none, so any
    /// use during setup fails; use it from `initialize` on.
    pub storage: Arc<dyn Storage>,
    /// The host's system view.
    pub system: SystemView,
}

impl std::fmt::Debug for SetupContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupContext").field("config_keys", &self.config.keys()).finish_non_exhaustive()
    }
}

/// Builds one mount's engine.
pub type BackendFactory = Arc<dyn Fn(SetupContext) -> Result<Backend, String> + Send + Sync>;

/// Why the plugin could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The environment is not that of a plugin host.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The socket could not be created or the handshake written.
    #[error("{0}")]
    Io(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server that started the plugin is gone (killed, or crashed)
    /// without asking it to stop.
    #[error("the server that started the plugin (pid {0}) is gone")]
    HostGone(u32),
}

/// Serves the plugin until the host shuts it down.
pub async fn serve(factory: BackendFactory, options: ServeOptions) -> Result<(), ServeError> {
    // Read first: the host may die during the handshake.
    let host = std::os::unix::process::parent_id();
    let env = HostEnv::from_process()?;
    let identity = Identity::generate()?;
    let host_cert = tls::parse_host_certificate(&env.client_cert_pem)?;
    let server_tls = Arc::new(tls::server_config(&identity, host_cert.clone())?);
    let client_tls = Arc::new(tls::client_config(&identity, host_cert)?);
    let (listener, socket) = transport::bind(&env.socket_dir, env.socket_group.as_deref())
        .map_err(|e| ServeError::Io(format!("creating the plugin socket in {}: {e}", env.socket_dir.display())))?;
    ignore_interrupts();

    let shutdown = Arc::new(Notify::new());
    let broker = Arc::new(Broker::default());
    let backend = BackendService {
        factory,
        broker: broker.clone(),
        client_tls,
        instances: Arc::default(),
        multiplexing: options.multiplexing,
    };
    let housekeeping = Housekeeping { options: options.clone(), shutdown: shutdown.clone() };
    let server = tonic::transport::Server::builder()
        .add_service(BackendServer::new(backend).max_decoding_message_size(usize::MAX))
        .add_service(PluginVersionServer::new(housekeeping.clone()))
        .add_service(PluginMultiplexingServer::new(housekeeping.clone()))
        .add_service(HealthServer::new(housekeeping.clone()))
        .add_service(GrpcControllerServer::new(housekeeping.clone()))
        .add_service(GrpcStdioServer::new(housekeeping))
        .add_service(GrpcBrokerServer::new(BrokerService(broker)))
        .serve_with_incoming(transport::accept_tls(listener, server_tls));

    // The host dials as soon as it reads the line, so it is printed only
    // once the socket listens, and it must be the first thing on stdout.
    let line = handshake_line(socket.path(), identity.cert_der(), env.multiplex_grpc_asked);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| ServeError::Io(format!("writing the handshake: {e}")))?;
    drop(stdout);
    tracing::debug!(version = %options.version, host_version = env.host_version.as_deref().unwrap_or_default(), "plugin serving");

    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(ServeError::from),
        () = shutdown.notified() => {}
        host = host_gone(host) => return Err(ServeError::HostGone(host)),
    }
    // Keep serving briefly so the reply to Shutdown reaches the host; it
    // kills the process two seconds after asking.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut server).await;
    drop(socket);
    Ok(())
}

/// Resolves once the process that started the plugin has gone: the plugin
/// is then a child of another process (init, or a subreaper). A host killed
/// with SIGKILL never sends Shutdown, and a plugin left running would keep
/// key material in memory with no server to answer to. Checked once a
/// second: one cheap system call. (A wrapper between the server and the
/// plugin that forks rather than execs is the parent watched instead.)
async fn host_gone(host: u32) -> u32 {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != host {
            return host;
        }
    }
}

/// The host's process group gets Ctrl-C when an operator stops the server
/// in a terminal; the plugin must outlive that until the host stops it.
fn ignore_interrupts() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(mut interrupts) => {
            tokio::spawn(async move { while interrupts.recv().await.is_some() {} });
        }
        Err(error) => tracing::warn!(%error, "cannot ignore SIGINT"),
    }
}

/// One mount served by this process.
struct Instance {
    backend: Backend,
    storage: Arc<dyn Storage>,
}

/// The `pb.Backend` service: routes each call to its mount's instance.
#[derive(Clone)]
struct BackendService {
    factory: BackendFactory,
    broker: Arc<Broker>,
    client_tls: Arc<rustls::ClientConfig>,
    instances: Arc<Mutex<HashMap<String, Arc<Instance>>>>,
    multiplexing: bool,
}

fn multiplex_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(MULTIPLEX_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| SINGLE.to_string())
}

impl BackendService {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Instance>>> {
        self.instances.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn instance<T>(&self, request: &Request<T>) -> Result<Arc<Instance>, Status> {
        let id = multiplex_id(request);
        let key = if self.multiplexing { id } else { SINGLE.to_string() };
        self.table()
            .get(&key)
            .cloned()
            .ok_or_else(|| Status::failed_precondition(format!("no backend instance for multiplex id {key:?}")))
    }

    async fn setup(&self, key: String, args: pb::SetupArgs) -> Result<(), String> {
        let endpoint = self.broker.take(args.broker_id, BROKER_TIMEOUT).await.map_err(|e| e.to_string())?;
        let channel = transport::broker_channel(&endpoint.network, &endpoint.address, self.client_tls.clone())
            .map_err(|e| e.to_string())?;
        let storage: Arc<dyn Storage> = Arc::new(GrpcStorage::new(channel.clone()));
        let context = SetupContext {
            config: args.config,
            backend_uuid: args.backend_uuid,
            storage: storage.clone(),
            system: SystemView::new(channel),
        };
        let backend = (self.factory)(context)?;
        let mut table = self.table();
        if self.multiplexing && table.contains_key(&key) {
            return Err(format!("a backend instance for multiplex id {key:?} already exists"));
        }
        table.insert(key, Arc::new(Instance { backend, storage }));
        Ok(())
    }
}

#[tonic::async_trait]
impl BackendRpc for BackendService {
    async fn handle_request(
        &self,
        request: Request<pb::HandleRequestArgs>,
    ) -> Result<Response<pb::HandleRequestReply>, Status> {
        let instance = self.instance(&request)?;
        let wire = request.into_inner().request.unwrap_or_default();
        let req = logical::Request::from_wire(wire, instance.storage.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (operation, path) = (req.operation.clone(), req.path.clone());
        let outcome = instance.backend.handle_request(req).await;
        if let Err(LogicalError::Internal(message)) = &outcome {
            tracing::error!(operation = operation.as_str(), %path, error = %message, "request failed");
        }
        Ok(Response::new(logical::reply(outcome)))
    }

    async fn special_paths(&self, request: Request<pb::Empty>) -> Result<Response<pb::SpecialPathsReply>, Status> {
        let paths = self.instance(&request)?.backend.special_paths.clone();
        Ok(Response::new(pb::SpecialPathsReply {
            paths: Some(pb::Paths {
                root: paths.root,
                unauthenticated: paths.unauthenticated,
                local_storage: paths.local_storage,
                seal_wrap_storage: paths.seal_wrap_storage,
                write_forwarded_storage: Vec::new(),
            }),
        }))
    }

    async fn handle_existence_check(
        &self,
        request: Request<pb::HandleExistenceCheckArgs>,
    ) -> Result<Response<pb::HandleExistenceCheckReply>, Status> {
        let instance = self.instance(&request)?;
        let wire = request.into_inner().request.unwrap_or_default();
        let req = logical::Request::from_wire(wire, instance.storage.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reply = match instance.backend.existence_check(req).await {
            Ok((check_found, exists)) => pb::HandleExistenceCheckReply { check_found, exists, err: None },
            Err(error) => pb::HandleExistenceCheckReply { err: Some(existence_error(&error)), ..Default::default() },
        };
        Ok(Response::new(reply))
    }

    async fn cleanup(&self, request: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        let key = if self.multiplexing { multiplex_id(&request) } else { SINGLE.to_string() };
        let removed = self.table().remove(&key);
        if let Some(clean) = removed.as_ref().and_then(|instance| instance.backend.clean.as_ref()) {
            clean();
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn invalidate_key(&self, request: Request<pb::InvalidateKeyArgs>) -> Result<Response<pb::Empty>, Status> {
        let instance = self.instance(&request)?;
        if let Some(invalidate) = &instance.backend.invalidate {
            invalidate(&request.get_ref().key);
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn setup(&self, request: Request<pb::SetupArgs>) -> Result<Response<pb::SetupReply>, Status> {
        let key = if self.multiplexing { multiplex_id(&request) } else { SINGLE.to_string() };
        let err = self.setup(key, request.into_inner()).await.err().unwrap_or_default();
        if !err.is_empty() {
            tracing::error!(error = %err, "setup failed");
        }
        Ok(Response::new(pb::SetupReply { err }))
    }

    async fn initialize(&self, request: Request<pb::InitializeArgs>) -> Result<Response<pb::InitializeReply>, Status> {
        let instance = self.instance(&request)?;
        let err = match &instance.backend.initialize {
            Some(init) => init(instance.storage.clone()).await.err(),
            None => None,
        };
        if let Some(error) = &err {
            tracing::error!(%error, "initialize failed");
        }
        Ok(Response::new(pb::InitializeReply { err: err.map(|e| e.to_proto()) }))
    }

    async fn r#type(&self, _request: Request<pb::Empty>) -> Result<Response<pb::TypeReply>, Status> {
        Ok(Response::new(pb::TypeReply { r#type: LOGICAL_TYPE }))
    }
}

/// The existence check can only carry a user error (400 with our message)
/// or "unsupported path" meaningfully; anything else becomes a 500.
fn existence_error(error: &LogicalError) -> pb::ProtoError {
    const USER_ERROR: u32 = 1;
    match error {
        LogicalError::InvalidRequest(message) => {
            pb::ProtoError { err_type: USER_ERROR, err_msg: message.clone(), err_code: 0 }
        }
        other => other.to_proto(),
    }
}

/// go-plugin's housekeeping services and the plugin's self-description.
#[derive(Debug, Clone)]
struct Housekeeping {
    options: ServeOptions,
    shutdown: Arc<Notify>,
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;
type StdioStream = Pin<Box<dyn Stream<Item = Result<StdioData, Status>> + Send>>;

#[tonic::async_trait]
impl PluginVersion for Housekeeping {
    async fn version(&self, _request: Request<lg::Empty>) -> Result<Response<lg::VersionReply>, Status> {
        Ok(Response::new(lg::VersionReply { plugin_version: self.options.version.clone() }))
    }
}

#[tonic::async_trait]
impl PluginMultiplexing for Housekeeping {
    async fn multiplexing_support(
        &self,
        _request: Request<MultiplexingSupportRequest>,
    ) -> Result<Response<MultiplexingSupportResponse>, Status> {
        Ok(Response::new(MultiplexingSupportResponse { supported: self.options.multiplexing }))
    }
}

#[tonic::async_trait]
impl Health for Housekeeping {
    type WatchStream = HealthStream;

    async fn check(&self, _request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let serving = HealthCheckResponse { status: ServingStatus::Serving as i32 };
        let stream = tokio_stream::StreamExt::chain(tokio_stream::once(Ok(serving)), tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl GrpcController for Housekeeping {
    async fn shutdown(&self, _request: Request<gp::Empty>) -> Result<Response<gp::Empty>, Status> {
        tracing::debug!("host asked the plugin to shut down");
        self.shutdown.notify_one();
        Ok(Response::new(gp::Empty {}))
    }
}

#[tonic::async_trait]
impl GrpcStdio for Housekeeping {
    type StreamStdioStream = StdioStream;

    async fn stream_stdio(&self, _request: Request<gp::Empty>) -> Result<Response<Self::StreamStdioStream>, Status> {
        // Logs go to the real stderr, which the host reads; this stream
        // stays open and silent until the host cancels it.
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}
