//! Unix-socket transport with TLS on top, for the main listener and for the
//! brokered connections back to the host.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How long a connecting peer gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connection accepted on the main listener.
#[derive(Debug)]
pub(crate) struct ServerConn(tokio_rustls::server::TlsStream<UnixStream>);

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for ServerConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The listening socket; the file is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct SocketPath(PathBuf);

impl SocketPath {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds a fresh socket named `plugin<random>` in `dir`.
pub(crate) fn bind(dir: &Path, group: Option<&str>) -> io::Result<(UnixListener, SocketPath)> {
    let mut random = [0u8; 8];
    crate::tls::provider().secure_random.fill(&mut random).map_err(|_| io::Error::other("no secure random source"))?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("plugin{name}"));
    let listener = UnixListener::bind(&path)?;
    let socket = SocketPath(path);
    if let Some(group) = group {
        set_group(socket.path(), group)?;
    }
    Ok((listener, socket))
}

/// Hands the socket to the group the host runs as (container runtimes).
fn set_group(path: &Path, group: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let gid = match group.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => lookup_group(group)?,
    };
    std::os::unix::fs::chown(path, None, Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
}

fn lookup_group(name: &str) -> io::Result<u32> {
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let group = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            (group == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("unknown group {name:?}")))
}

/// Accepts connections and completes TLS on each in its own task, so a slow
/// or failing peer never holds up the others.
pub(crate) fn accept_tls(
    listener: UnixListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<io::Result<ServerConn>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(ServerConn(tls))).await;
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "TLS handshake with the host failed"),
                    Err(_) => tracing::warn!("TLS handshake with the host timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A lazily connected gRPC channel to a brokered host listener.
pub(crate) fn broker_channel(
    network: &str,
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tonic::transport::Channel, io::Error> {
    if network != "unix" {
        // TCP brokering only happens on Windows hosts.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("broker network {network:?} is not supported; expected unix"),
        ));
    }
    let address = PathBuf::from(address);
    let connector = tokio_rustls::TlsConnector::from(config);
    let dial = tower::service_fn(move |_: tonic::transport::Uri| {
        let (address, connector) = (address.clone(), connector.clone());
        async move {
            let stream = UnixStream::connect(&address).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
            let tls = connector.connect(name, stream).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    let endpoint = tonic::transport::Endpoint::from_static("http://localhost").connect_timeout(HANDSHAKE_TIMEOUT);
    Ok(endpoint.connect_with_connector_lazy(dial))
}
