//! Benchmark of the release binary: key fetch over the socket (p50/p99
//! latency and requests per second at 1 and 16 clients) and resident
//! memory, with 10 keyrings of 5 versions served from the encrypted cache
//! while Vault is unreachable (so no Vault traffic disturbs the figures).
//!
//! Run: `cargo bench -p lockstep-sidecar --bench socket`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use lockstep_model::KeyType;
use lockstep_model::bundle::{Bundle, BundleKeyring, BundleVersion, PoolMode, revision};
use lockstep_model::secret::SecretBytes;
use lockstep_model::version::VersionMeta;
use lockstep_sidecar::cachefile::CacheFile;
use lockstep_sidecar::client::SocketClient;

const KEYRINGS: usize = 10;
const VERSIONS: u64 = 5;
const REQUESTS_ONE: usize = 20_000;
const REQUESTS_EACH_OF_16: usize = 2_000;

fn material(key_type: KeyType) -> (SecretBytes, Option<String>) {
    let rng = SystemRandom::new();
    let b64 = |der: PublicKeyX509Der<'static>| Some(base64::engine::general_purpose::STANDARD.encode(der.as_ref()));
    match key_type {
        KeyType::Ed25519 => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("gen");
            let public = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse").public_key().as_der().expect("der");
            (SecretBytes::new(pkcs8.as_ref().to_vec()), b64(public))
        }
        KeyType::EcdsaP256 => {
            let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("gen");
            let public =
                EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).expect("parse").public_key().as_der().expect("der");
            (SecretBytes::new(pkcs8.as_ref().to_vec()), b64(public))
        }
        KeyType::Rsa2048 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("gen");
            let pkcs8: Pkcs8V1Der<'static> = pair.as_der().expect("der");
            (SecretBytes::new(pkcs8.as_ref().to_vec()), b64(pair.public_key().as_der().expect("der")))
        }
        KeyType::HmacSha256 | KeyType::Aes256Gcm => {
            let mut secret = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut secret).expect("random");
            (SecretBytes::new(secret), None)
        }
    }
}

fn bundle(now: i64) -> Bundle {
    let types = [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::HmacSha256, KeyType::Rsa2048, KeyType::Aes256Gcm];
    let mut keyrings = BTreeMap::new();
    for k in 0..KEYRINGS {
        let key_type = types[k % types.len()];
        let versions = (1..=VERSIONS)
            .map(|n| {
                let (private_key, public_key) = material(key_type);
                let start = now - 3_600 * i64::try_from(VERSIONS - n + 1).unwrap_or(0);
                let committed = n < VERSIONS;
                let meta = VersionMeta {
                    number: n,
                    kid: format!("k{k}-v{n}"),
                    created_at: start - 60,
                    planned_activation: start,
                    not_before: committed.then_some(start),
                    not_after: (n + 1 < VERSIONS).then_some(start + 3_600),
                    expires_at: (n + 1 < VERSIONS).then_some(now + 86_400),
                    emergency: false,
                    revoked: None,
                    destroyed: false,
                };
                BundleVersion { meta, private_key: Some(private_key), public_key }
            })
            .collect();
        keyrings.insert(
            format!("k{k}"),
            BundleKeyring {
                key_type,
                generation: VERSIONS,
                versions,
                limits: None,
                revoked: None,
                revoked_versions: None,
            },
        );
    }
    Bundle {
        format: lockstep_model::bundle::FORMAT,
        pool: "bench".into(),
        mode: PoolMode::Sign,
        revision: revision(PoolMode::Sign, &keyrings),
        server_time: now,
        keyrings,
    }
}

fn start(dir: &Path) -> Child {
    #[allow(clippy::disallowed_methods)] // the bundle's times, not key state
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    std::fs::create_dir_all(dir.join("keys")).expect("dir");
    std::fs::create_dir_all(dir.join("cache")).expect("dir");
    std::fs::write(dir.join("keys/cache.key"), [3u8; 32]).expect("key");
    std::fs::write(dir.join("token"), "unused").expect("token");
    let cache = CacheFile::new(&dir.join("cache/bundle.bin"), &dir.join("keys/cache.key"), "bench").expect("cache");
    cache.save(&bundle(now), now).expect("save");
    let d = dir.display();
    let config = format!(
        "pool = \"bench\"\ninstance = \"bench-1\"\n[vault]\naddr = \"http://127.0.0.1:9\"\nbackoff_max_secs = 600\n\
         [auth]\ntoken_file = \"{d}/token\"\n[socket]\npath = \"{d}/bench.sock\"\n\
         [cache]\nfile = \"{d}/cache/bundle.bin\"\nkey_file = \"{d}/keys/cache.key\"\n[log]\nlevel = \"error\"\n"
    );
    std::fs::write(dir.join("bench.toml"), config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep-sidecar"))
        .args(["run", "--config"])
        .arg(dir.join("bench.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sidecar");
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(dir.join("bench.sock")).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the sidecar did not start");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn client_run(socket: &Path, requests: usize, keyring: usize) -> Vec<Duration> {
    let mut client = SocketClient::connect(socket).await.expect("connect");
    let path = format!("/v1/keys/k{keyring}");
    let mut took = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let (status, _) = client.send("GET", &path, None).await.expect("request");
        took.push(started.elapsed());
        assert_eq!(status, 200);
    }
    took
}

/// The same fetches from a plain blocking client on one keep-alive
/// connection, as a simple app would make them: no client runtime between
/// the measurement and the socket.
fn blocking_run(socket: &Path, requests: usize, keyring: usize) -> Vec<Duration> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let request =
        format!("GET /v1/keys/k{keyring} HTTP/1.1\r\nhost: lockstep-sidecar\r\nx-lockstep-request: 1\r\n\r\n");
    let mut took = Vec::with_capacity(requests);
    let (mut line, mut body) = (String::new(), Vec::new());
    for _ in 0..requests {
        let started = Instant::now();
        writer.write_all(request.as_bytes()).expect("write");
        let mut length = None;
        line.clear();
        reader.read_line(&mut line).expect("status line");
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        body.resize(length.expect("content-length"), 0);
        reader.read_exact(&mut body).expect("body");
        took.push(started.elapsed());
    }
    took
}

fn report(label: &str, mut took: Vec<Duration>, wall: Duration) {
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    let rate = took.len() as f64 / wall.as_secs_f64();
    println!(
        "| {label} | {} | {:.0} µs | {:.0} µs | {rate:.0} |",
        took.len(),
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = start(dir.path());
    let socket = dir.path().join("bench.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        client_run(&socket, 500, 0).await;
        std::thread::sleep(Duration::from_secs(1));
        let idle = rss_kib(child.id());
        println!("| clients | requests | p50 | p99 | requests/s |\n|---|---|---|---|---|");
        let started = Instant::now();
        let took = client_run(&socket, REQUESTS_ONE, 0).await;
        report("1 (hyper client)", took, started.elapsed());
        let started = Instant::now();
        let took = blocking_run(&socket, REQUESTS_ONE, 0);
        report("1 (blocking client)", took, started.elapsed());
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|c| {
                let socket = socket.clone();
                tokio::spawn(async move { client_run(&socket, REQUESTS_EACH_OF_16, c % KEYRINGS).await })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("client"));
        }
        report("16", all, started.elapsed());
        println!(
            "\nidle RSS ({KEYRINGS} keyrings × {VERSIONS} versions): {idle} KiB; after the load: {} KiB",
            rss_kib(child.id())
        );
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}
