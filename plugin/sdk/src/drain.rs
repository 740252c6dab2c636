//! Whether the server running this plugin is about to stop serving
//! requests: sealing, stepping down or shutting down.
//!
//! For each of those the server takes a write lock over its state, and it
//! waits for every request in flight to end first. It does not cancel them:
//! their context ends only once the lock is held, or after the server's
//! maximum request duration (90 s by default). Nothing in the plugin
//! protocol says that a seal has begun, so a handler that waits (a
//! long-poll) holds up the seal, and every request queued behind it, for as
//! long as it waits.
//!
//! A seal or shutdown marks the server sealed before it waits for that
//! lock, and while it waits every new request that reads its state waits
//! too. The server's `sys/leader` endpoint shows both: it answers "sealed"
//! (503) at once, and on an HA node it reads the state under the lock. So
//! a probe of `sys/leader` answered with anything but success, or not
//! answered within [`STALLED`], or refused, from a server that answered
//! before, is the signal: handlers that wait select on
//! [`Waiting::drained`] and answer at once, the requests in flight end,
//! and the server proceeds. Until the probe is answered promptly and with
//! success again (at most [`WINDOW`] after the last signal),
//! [`Drain::draining`] is true and handlers should not
//! start to wait; so a server merely slow for a moment costs one early
//! answer per waiting poll, not a burst of polls.
//!
//! The probe runs only while a handler waits, one request at a time, every
//! [`PERIOD`]. Its address comes from the environment the server passes on
//! to its plugins: `LOCKSTEP_SERVER_ADDR`, else `BAO_ADDR`, else
//! `VAULT_ADDR`, each set per node to that node's own listener. For `https`, the
//! CA comes from `LOCKSTEP_SERVER_CACERT`, `BAO_CACERT` or `VAULT_CACERT`.
//! The probe carries no token and reads nothing but timing. Without an
//! address, no probe runs, and waits are bounded only by their own length.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How often the probe asks while a handler waits.
pub const PERIOD: Duration = Duration::from_millis(500);
/// A probe unanswered for this long means the server is draining.
pub const STALLED: Duration = Duration::from_millis(1_000);
/// The longest handlers answer without waiting after a signal.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Where and how to probe the server.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// The process-wide drain signal (see the module documentation).
pub struct Drain {
    target: Option<Target>,
    waiters: AtomicUsize,
    probing: Mutex<bool>,
    signals: watch::Sender<u64>,
    /// Milliseconds since `epoch` until which the server is draining.
    until: AtomicI64,
    /// Whether the server ever answered a probe.
    answered: AtomicBool,
    /// Whether a probe that never got an answer was logged.
    warned: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain").field("probing", &self.target.is_some()).finish_non_exhaustive()
    }
}

/// The drain signal of this process, configured from its environment at
/// first use.
pub fn drain() -> &'static Drain {
    static DRAIN: OnceLock<Drain> = OnceLock::new();
    DRAIN.get_or_init(|| {
        let target = match target_from_env(|name| std::env::var(name).ok()) {
            Ok(target) => target,
            Err(why) => {
                tracing::warn!(
                    "not probing the server for seals and step-downs: {why}; long-polls run their full length"
                );
                None
            }
        };
        Drain::new(target)
    })
}

impl Drain {
    fn new(target: Option<Target>) -> Self {
        Self {
            target,
            waiters: AtomicUsize::new(0),
            probing: Mutex::new(false),
            signals: watch::channel(0).0,
            until: AtomicI64::new(i64::MIN),
            answered: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// Whether the server was seen draining within the last [`WINDOW`]: a
    /// handler should answer at once rather than wait.
    pub fn draining(&self) -> bool {
        self.now_ms() < self.until.load(Ordering::Acquire)
    }

    /// Registers a handler about to wait; the probe runs while any does.
    /// The answer resolves [`Waiting::drained`] when the server starts to
    /// drain.
    pub fn waiting(&'static self) -> Waiting {
        let receiver = self.signals.subscribe();
        self.waiters.fetch_add(1, Ordering::AcqRel);
        if self.target.is_some() {
            let mut probing = self.probing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !*probing && tokio::runtime::Handle::try_current().is_ok() {
                *probing = true;
                tokio::spawn(self.probe_while_waited_on());
            }
        }
        Waiting { drain: self, receiver }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Marks the server draining for [`WINDOW`] and wakes every waiter.
    fn signal(&self, why: &str) {
        let until = self.now_ms().saturating_add(i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX));
        let was = self.until.swap(until, Ordering::AcqRel);
        if was < self.now_ms() {
            tracing::info!(
                waiting = self.waiters.load(Ordering::Acquire),
                "the server is draining ({why}): waiting requests answer now"
            );
        }
        self.signals.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn probe_while_waited_on(&'static self) {
        let Some(target) = self.target.clone() else { return };
        loop {
            if self.waiters.load(Ordering::Acquire) == 0 {
                let mut probing = self.probing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if self.waiters.load(Ordering::Acquire) == 0 {
                    *probing = false;
                    return;
                }
            }
            // Only a server that has answered before can stall or go away;
            // one that never answered is misaddressed, and says so once
            // rather than cutting every wait short.
            let ever = self.answered.load(Ordering::Acquire);
            let started = Instant::now();
            let probe = probe(&target);
            tokio::pin!(probe);
            let answered = match tokio::time::timeout(STALLED, &mut probe).await {
                Ok(answered) => answered,
                Err(_) => {
                    if ever {
                        self.signal("it stopped answering sys/leader in time");
                    }
                    // Let the stuck probe finish (or give up) before the
                    // next: one request at a time.
                    let _ = tokio::time::timeout(WINDOW, probe).await;
                    continue;
                }
            };
            match answered {
                Ok(status) if (200..300).contains(&status) => {
                    self.answered.store(true, Ordering::Release);
                    if started.elapsed() < STALLED {
                        // Serving, and promptly: whatever slowed it has
                        // passed, and waits may resume.
                        self.until.store(i64::MIN, Ordering::Release);
                    }
                }
                Ok(status) => {
                    // Sealed (503) or otherwise not serving: draining until
                    // it serves again.
                    self.answered.store(true, Ordering::Release);
                    self.signal(&format!("sys/leader answered {status}"));
                }
                Err(why) if ever => {
                    self.signal("its sys/leader endpoint went away");
                    tracing::debug!(%why, "probe failed");
                }
                Err(why) => {
                    if !self.warned.swap(true, Ordering::AcqRel) {
                        tracing::warn!(%why, "the server's sys/leader does not answer at the address in its environment: not probing for seals and step-downs until it does");
                    }
                }
            }
            tokio::time::sleep(PERIOD.saturating_sub(started.elapsed())).await;
        }
    }
}

/// A handler's registration as waiting; dropping it ends the registration.
#[derive(Debug)]
pub struct Waiting {
    drain: &'static Drain,
    receiver: watch::Receiver<u64>,
}

impl Waiting {
    /// Resolves when the server starts to drain (never, without a probe).
    pub async fn drained(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.drain.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Parses the probe's target from the environment `var` reads.
fn target_from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Target>, String> {
    let pick = |names: &[&'static str]| -> Option<(&'static str, String)> {
        names.iter().find_map(|n| var(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
    };
    let Some((name, addr)) = pick(&["LOCKSTEP_SERVER_ADDR", "BAO_ADDR", "VAULT_ADDR"]) else {
        return Err("no LOCKSTEP_SERVER_ADDR, BAO_ADDR or VAULT_ADDR in its environment".into());
    };
    let addr = addr.trim();
    let (tls, rest) = if let Some(rest) = addr.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = addr.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("{name} is not an http:// or https:// address"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port = port.parse::<u16>().map_err(|_| format!("{name} has no valid port"))?;
            (host, port)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("{name} names no host"));
    }
    let tls = if tls {
        let Some((ca_name, ca)) = pick(&["LOCKSTEP_SERVER_CACERT", "BAO_CACERT", "VAULT_CACERT"]) else {
            return Err(format!(
                "{name} is https and no LOCKSTEP_SERVER_CACERT, BAO_CACERT or VAULT_CACERT names its CA"
            ));
        };
        Some(client_config(&ca, &host).map_err(|why| format!("{ca_name}: {why}"))?)
    } else {
        None
    };
    Ok(Some(Target { host, port, tls }))
}

fn client_config(ca_file: &str, host: &str) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no certificate in the file".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    Ok((Arc::new(config), name))
}

/// One `GET /v1/sys/leader` (unauthenticated); answers its HTTP status.
async fn probe(target: &Target) -> Result<u16, String> {
    let request = format!("GET /v1/sys/leader HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.host);
    let stream = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| e.to_string())?;
    let mut first = [0u8; 12];
    match &target.tls {
        None => exchange(stream, request.as_bytes(), &mut first).await?,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let stream = connector.connect(name.clone(), stream).await.map_err(|e| e.to_string())?;
            exchange(stream, request.as_bytes(), &mut first).await?;
        }
    }
    let status = first.strip_prefix(b"HTTP/1.1 ").or_else(|| first.strip_prefix(b"HTTP/1.0 "));
    let status = status.and_then(|s| std::str::from_utf8(s.get(..3)?).ok()?.parse::<u16>().ok());
    status.ok_or_else(|| "not an HTTP answer".into())
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    first: &mut [u8],
) -> Result<(), String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.read_exact(first).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_string())
    }

    #[test]
    fn the_probe_address_comes_from_the_servers_environment_in_order() {
        let target =
            target_from_env(env(&[("VAULT_ADDR", "http://127.0.0.1:8200"), ("BAO_ADDR", "http://10.0.0.1:9")]))
                .expect("valid")
                .expect("a target");
        assert_eq!((target.host.as_str(), target.port, target.tls.is_none()), ("10.0.0.1", 9, true));
        let own = env(&[("LOCKSTEP_SERVER_ADDR", "http://[::1]:8300/"), ("BAO_ADDR", "http://10.0.0.1:9")]);
        let target = target_from_env(own).expect("valid").expect("a target");
        assert_eq!((target.host.as_str(), target.port), ("::1", 8300));
        let default_port = target_from_env(env(&[("VAULT_ADDR", "http://vault")])).expect("valid").expect("target");
        assert_eq!(default_port.port, 80);
    }

    #[test]
    fn an_address_that_cannot_be_probed_says_why() {
        let none = target_from_env(env(&[])).err().unwrap_or_default();
        assert!(none.contains("no LOCKSTEP_SERVER_ADDR"), "{none}");
        let scheme = target_from_env(env(&[("VAULT_ADDR", "127.0.0.1:8200")])).err().unwrap_or_default();
        assert_eq!(scheme, "VAULT_ADDR is not an http:// or https:// address");
        let port = target_from_env(env(&[("BAO_ADDR", "http://h:x")])).err().unwrap_or_default();
        assert_eq!(port, "BAO_ADDR has no valid port");
        let ca = target_from_env(env(&[("BAO_ADDR", "https://h:8200")])).err().unwrap_or_default();
        assert!(ca.contains("no LOCKSTEP_SERVER_CACERT, BAO_CACERT or VAULT_CACERT"), "{ca}");
        let missing = target_from_env(env(&[("BAO_ADDR", "https://h:8200"), ("BAO_CACERT", "/nonexistent/ca.pem")]));
        assert!(missing.err().unwrap_or_default().starts_with("BAO_CACERT: "));
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_wakes_every_waiter() {
        // A listener that answers the first probe and then holds every
        // later one, as a server waiting for its state lock does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut served = 0;
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf).await;
                served += 1;
                if served == 1 {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                } else {
                    held.push(stream);
                }
            }
        });
        let target = Target { host: "127.0.0.1".into(), port, tls: None };
        let drain: &'static Drain = Box::leak(Box::new(Drain::new(Some(target))));
        assert!(!drain.draining());
        let started = Instant::now();
        let mut first = drain.waiting();
        let mut second = drain.waiting();
        tokio::time::timeout(Duration::from_secs(5), async {
            first.drained().await;
            second.drained().await;
        })
        .await
        .expect("woken");
        let took = started.elapsed();
        assert!(took >= STALLED && took < PERIOD + STALLED + Duration::from_secs(3), "{took:?}");
        assert!(drain.draining());
        drop((first, second));
    }

    #[tokio::test]
    async fn an_answer_that_changes_wakes_every_waiter() {
        // Active, then sealed: the server marks itself sealed before it
        // waits for the requests in flight.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf).await;
                served += 1;
                let status: &[u8] = if served < 3 { b"200 OK" } else { b"503 Service Unavailable" };
                let _ = stream.write_all(&[b"HTTP/1.1 ", status, b"\r\nContent-Length: 0\r\n\r\n"].concat()).await;
            }
        });
        let target = Target { host: "127.0.0.1".into(), port, tls: None };
        let drain: &'static Drain = Box::leak(Box::new(Drain::new(Some(target))));
        let mut waiting = drain.waiting();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), waiting.drained()).await.expect("woken");
        assert!(started.elapsed() >= PERIOD * 2, "not before the answer changed");
        assert!(drain.draining());
        // Still sealed at the next probes: still draining.
        tokio::time::sleep(PERIOD * 3).await;
        assert!(drain.draining(), "a sealed server stays draining");
    }

    #[tokio::test]
    async fn a_server_that_never_answered_ends_no_wait() {
        // Misaddressed: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let target = Target { host: "127.0.0.1".into(), port, tls: None };
        let drain: &'static Drain = Box::leak(Box::new(Drain::new(Some(target))));
        let mut waiting = drain.waiting();
        assert!(tokio::time::timeout(PERIOD * 4, waiting.drained()).await.is_err(), "no signal");
        assert!(!drain.draining());
    }

    #[tokio::test]
    async fn without_an_address_nothing_probes_and_nothing_wakes() {
        let drain: &'static Drain = Box::leak(Box::new(Drain::new(None)));
        let mut waiting = drain.waiting();
        assert!(tokio::time::timeout(Duration::from_millis(300), waiting.drained()).await.is_err());
        assert!(!drain.draining());
    }
}
