//! `lockstep-injector`: serves the mutating admission webhook over TLS.
//!
//! `POST /mutate` answers the API server's AdmissionReviews for pods;
//! `GET /healthz` answers probes. The certificate files are read again
//! when they change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use lockstep_injector::inject::Defaults;
use lockstep_injector::tls::{CHECK_EVERY, Reloading};
use lockstep_injector::webhook::{Outcome, review};

/// The largest admission review read (the API server's own request limit
/// is 3 MiB of object).
const MAX_BODY: usize = 8 << 20;
/// The longest a client may take over its TLS handshake or its headers.
const STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Adds Lockstep's sidecar to pods annotated `lockstep.dev/pool`.
#[derive(Debug, Parser)]
#[command(name = "lockstep-injector", version)]
struct Args {
    /// Where to serve HTTPS.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The serving certificate (PEM, chain first); read again on change.
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// The sidecar image pods get unless they name one.
    #[arg(long)]
    sidecar_image: String,
    /// The server address every sidecar uses (`vault.addr`; a list fails
    /// over in turn); empty leaves it to the sidecar's ConfigMap.
    #[arg(long, default_value = "")]
    vault_addr: String,
    /// The ConfigMap with `sidecar.toml` unless a pod names one.
    #[arg(long, default_value = "lockstep-sidecar")]
    config_map: String,
    /// The Secret with the cache key unless a pod names one.
    #[arg(long, default_value = "lockstep-cache-key")]
    cache_key_secret: String,
    /// `json` or `text`.
    #[arg(long, default_value = "json")]
    log_format: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LOCKSTEP_LOG").unwrap_or_else(|_| "info".into()));
    match args.log_format.as_str() {
        "json" => subscriber.json().init(),
        "text" => subscriber.init(),
        other => {
            eprintln!("lockstep-injector: --log-format: {other:?} is neither \"json\" nor \"text\"");
            return std::process::ExitCode::from(2);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "lockstep-injector stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let defaults = Arc::new(Defaults {
        image: args.sidecar_image,
        vault_addr: args.vault_addr,
        config_map: args.config_map,
        cache_key_secret: args.cache_key_secret,
    });
    let tls = Arc::new(Reloading::new(args.tls_cert, args.tls_key).map_err(|e| e.to_string())?);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config()));
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| format!("{}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, image = %defaults.image, "serving admission reviews");

    let reload = tls.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            match reload.refresh() {
                Ok(true) => tracing::info!("serving certificate reloaded"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "serving certificate changed but does not load; keeping the old one")
                }
            }
        }
    });

    let mut stop =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            _ = stop.recv() => {
                tracing::info!("SIGTERM: stopping");
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (acceptor, defaults) = (acceptor.clone(), defaults.clone());
        tokio::spawn(async move {
            // A client that stalls its handshake or its headers is dropped.
            let Ok(Ok(stream)) = tokio::time::timeout(STALL, acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |request| handle(request, defaults.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(STALL)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("content type"));
    response
}

async fn handle(request: Request<Incoming>, defaults: Arc<Defaults>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let text = "text/plain; charset=utf-8";
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => Ok(reply(StatusCode::OK, text, "ok\n")),
        (&Method::POST, "/mutate") => {
            let body = match tokio::time::timeout(STALL, Limited::new(request.into_body(), MAX_BODY).collect()).await {
                Ok(Ok(body)) => body.to_bytes(),
                Ok(Err(_)) => return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, text, "admission review too large\n")),
                Err(_) => return Ok(reply(StatusCode::REQUEST_TIMEOUT, text, "admission review not sent in time\n")),
            };
            match review(&body, &defaults) {
                Ok((answer, outcome)) => {
                    match &outcome {
                        Outcome::Injected => tracing::info!("pod injected"),
                        Outcome::Untouched(why) => tracing::debug!(why, "pod admitted unchanged"),
                        Outcome::Refused(message) => tracing::info!(%message, "pod refused"),
                    }
                    Ok(reply(StatusCode::OK, "application/json", answer))
                }
                Err(error) => Ok(reply(StatusCode::BAD_REQUEST, text, format!("{error}\n"))),
            }
        }
        _ => Ok(reply(StatusCode::NOT_FOUND, text, "not found\n")),
    }
}
