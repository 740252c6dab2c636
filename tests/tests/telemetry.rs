//! What the platform reaches: the telemetry TCP listener (health,
//! readiness and metrics only, never keys), and the command-line tools for
//! exec probes and scripts (`probe`, `call`, `watch`) against a real
//! release sidecar with a bundle from a real server.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lockstep_tests::clients::ClientFixture;
use lockstep_tests::sidecar::release_sidecar_binary;
use lockstep_tests::{free_port, required_binary, workspace_root};
use serde_json::{Value, json};

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String, String) {
    http_with(addr, method, path, body, "")
}

/// [`http`] with `headers` (each ending in CRLF) added to the request.
fn http_with(addr: &str, method: &str, path: &str, body: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect the telemetry listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: pod\r\nX-Lockstep-Request: 1\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn sidecar_cli(fixture: &ClientFixture, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(release_sidecar_binary())
        .args(args)
        .arg("--socket")
        .arg(fixture.socket("web"))
        .output()
        .expect("run lockstep-sidecar");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Runs `promrules metrics` on a scrape: Prometheus's own parser for the
/// answer's content type, and for the classic format promtool's linter.
fn check_scrape(head: &str, body: &str) {
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim()))
        .expect("a content type");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, body).expect("write the scrape");
    let checker = required_binary("LOCKSTEP_PROMRULES", "promrules/promrules", "make promrules");
    let out = Command::new(checker).args(["metrics", content_type]).arg(&file).output().expect("run promrules");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{content_type}: {report}\n{body}");
    assert!(report.contains(" samples parsed as "), "{report}");
}

#[test]
fn the_telemetry_listener_serves_probes_and_metrics_and_never_keys() {
    let port = free_port();
    let _fixture = ClientFixture::start_with(&format!("[telemetry]\naddr = \"127.0.0.1:{port}\"\n"));
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(http(&addr, "GET", "/healthz", "").0, 200);
    let (status, _, ready) = http(&addr, "GET", "/readyz", "");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(serde_json::from_str::<Value>(&ready).expect("JSON")["ready"], true);
    // What Prometheus asks for by default: OpenMetrics first.
    let accept = "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n";
    let (status, head, metrics) = http_with(&addr, "GET", "/metrics", "", accept);
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    check_scrape(&head, &metrics);
    // A scraper that does not ask for OpenMetrics gets the classic text
    // format, which promtool's linter passes.
    let (status, head, classic) = http(&addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    assert!(classic.contains("# TYPE lockstep_sidecar_requests_total counter"), "{classic}");
    check_scrape(&head, &classic);
    for line in [
        "lockstep_sidecar_ready 1",
        "# TYPE lockstep_sidecar_bundles_applied counter",
        "# TYPE lockstep_sidecar_requests counter",
        "# TYPE lockstep_sidecar_cache_age_seconds gauge",
        "lockstep_sidecar_keyring_signing_version{keyring=\"jwt\"} 1",
        "# EOF",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("lockstep_sidecar_bundles_applied_total ")), "{metrics}");
    // Nothing else, whatever the method or path.
    for (method, path, body) in [
        ("GET", "/v1/keys/jwt", ""),
        ("GET", "/v1/keys/hooks?format=base64", ""),
        ("POST", "/v1/jwt/jwt/sign", r#"{"claims":{"sub":"x"}}"#),
        ("POST", "/v1/mac/hooks", r#"{"data":"eA=="}"#),
        ("GET", "/v1/jwks/jwt", ""),
        ("GET", "/v1/openapi.json", ""),
    ] {
        let (status, _, answer) = http(&addr, method, path, body);
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert!(!answer.contains("material") && !answer.contains("token"), "{answer}");
    }
    assert_eq!(http(&addr, "POST", "/metrics", "").0, 405);

    // The example alert rules name only metrics this exposition has.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("metrics.txt"), &metrics).expect("metrics.txt");
    let rules = workspace_root().join("sidecar/deploy/prometheus/lockstep-sidecar-alerts.yaml");
    let check = |rules: &std::path::Path| {
        let python = required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools");
        let out = Command::new(python)
            .arg(workspace_root().join("tests/python/check_alert_rules.py"))
            .arg(rules)
            .arg(dir.path().join("metrics.txt"))
            .output()
            .expect("run the rule checker");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, report) = check(&rules);
    assert!(ok, "{report}");
    // And the checker does catch a rule on a metric that does not exist.
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&rules).expect("rules");
    std::fs::write(&broken, text.replace("lockstep_sidecar_ready == 0", "lockstep_sidecar_readiness == 0"))
        .expect("write");
    let (ok, report) = check(&broken);
    assert!(!ok && report.contains("lockstep_sidecar_readiness is not in"), "{report}");

    // And they load as Prometheus loads them: its rule-file loader and its
    // PromQL parser (what `promtool check rules` calls), which refuse an
    // unknown function the shape check above cannot see.
    let promrules = |rules: &std::path::Path| {
        let binary = required_binary("LOCKSTEP_PROMRULES", "promrules/promrules", "make promrules");
        let out = Command::new(binary).arg(rules).output().expect("run promrules");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, report) = promrules(&rules);
    assert!(ok && report.contains("1 groups"), "{report}");
    std::fs::write(&broken, text.replacen("rate(", "rte(", 1)).expect("write");
    assert!(check(&broken).0, "the shape check passes an unknown function");
    let (ok, report) = promrules(&broken);
    assert!(!ok && report.contains("unknown function with name \"rte\""), "{report}");
}

#[test]
fn a_sidecar_without_a_bundle_fails_the_readiness_probe_and_passes_the_liveness_one() {
    // Nothing listens at the server's address and there is no cache: the
    // sidecar runs, serves its socket, and has no keys to serve.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("keys")).expect("keys dir");
    std::fs::write(dir.path().join("keys/web.key"), [7u8; 32]).expect("cache key");
    std::fs::write(dir.path().join("web.token"), "hvs.not-a-real-token").expect("token");
    let config = format!(
        "pool = \"web\"\ninstance = \"web-1\"\n[vault]\naddr = \"http://127.0.0.1:{port}\"\n[auth]\nmethod = \"token\"\n\
         token_file = \"{d}/web.token\"\n[socket]\npath = \"{d}/web.sock\"\n[cache]\nfile = \"{d}/web.bin\"\n\
         key_file = \"{d}/keys/web.key\"\n",
        port = free_port(),
    );
    let sidecar = lockstep_tests::sidecar::Sidecar::start(dir.path(), "web", &config);
    let probe = |live: bool| {
        let mut command = Command::new(release_sidecar_binary());
        command.arg("probe").arg("--socket").arg(sidecar.socket());
        if live {
            command.arg("--live");
        }
        command.output().expect("probe")
    };
    let ready = probe(false);
    assert_eq!(ready.status.code(), Some(4), "{}", String::from_utf8_lossy(&ready.stderr));
    assert!(String::from_utf8_lossy(&ready.stderr).contains("/readyz answered 503"), "{ready:?}");
    assert_eq!(probe(true).status.code(), Some(0));
}

#[test]
fn probe_call_and_watch_work_against_a_running_sidecar() {
    let fixture = ClientFixture::start();
    assert_eq!(sidecar_cli(&fixture, &["probe"]).0, 0);
    assert_eq!(sidecar_cli(&fixture, &["probe", "--live"]).0, 0);
    let missing = Command::new(release_sidecar_binary())
        .args(["probe", "--socket", "/nonexistent/lockstep.sock"])
        .output()
        .expect("probe");
    assert_eq!(missing.status.code(), Some(4));

    let (code, out, err) =
        sidecar_cli(&fixture, &["call", "POST", "/v1/jwt/jwt/sign", "--data", r#"{"claims":{"sub":"cli"},"ttl":60}"#]);
    assert_eq!(code, 0, "{err}");
    let token = serde_json::from_str::<Value>(&out).expect("JSON")["token"].as_str().expect("a token").to_string();
    let body = json!({"token": token}).to_string();
    let (code, out, _) = sidecar_cli(&fixture, &["call", "post", "/v1/jwt/jwt/verify", "--data", &body]);
    assert_eq!((code, serde_json::from_str::<Value>(&out).expect("JSON")["claims"]["sub"].clone()), (0, json!("cli")));
    let (code, _, err) = sidecar_cli(&fixture, &["call", "GET", "/v1/keys/nothing"]);
    assert!(code == 4 && err.contains("keyring_not_found"), "{code} {err}");
    assert_eq!(sidecar_cli(&fixture, &["call", "POST", "/v1/mac/hooks", "--data", "{not json"]).0, 2);
    assert_eq!(sidecar_cli(&fixture, &["call", "DELETE", "/v1/keys/jwt"]).0, 2);

    // watch: a line now, a line after a rotation, never material; it says
    // when it reconnected after the sidecar restarted; SIGTERM ends it
    // cleanly.
    let said = fixture.dir().join("watch.stderr");
    let mut watch = Command::new(release_sidecar_binary())
        .args(["watch", "hooks", "--socket"])
        .arg(fixture.socket("web"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&said).expect("stderr file"))
        .spawn()
        .expect("watch");
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let first: Value = serde_json::from_str(&lines.next().expect("a first line").expect("read")).expect("JSON");
    assert_eq!(first["verifying"].as_array().map(Vec::len), Some(1), "{first}");
    let started = Instant::now();
    fixture.server().write("lockstep/keys/hooks/rotate", json!({})).expect_status(200);
    let second: Value =
        serde_json::from_str(&lines.next().expect("a line after the rotation").expect("read")).expect("JSON");
    assert_eq!(second["verifying"].as_array().map(Vec::len), Some(2), "{second}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!first.to_string().contains("material") && !second.to_string().contains("secret"), "{second}");
    let control = fixture.env().into_iter().find(|(k, _)| k == "LOCKSTEP_TEST_CONTROL").map(|(_, v)| v);
    let restarted = ureq::get(&format!("{}/restart/web", control.expect("the control API"))).call();
    assert!(restarted.is_ok_and(|r| r.status() == 200), "the web sidecar restarted");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reconnected = format!("reconnected to the sidecar at {}", fixture.socket("web").display());
    loop {
        let text = std::fs::read_to_string(&said).unwrap_or_default();
        if text.contains(&reconnected) {
            assert!(text.contains("retrying each second"), "it said it lost the sidecar first: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "no reconnection line within 30 s: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").arg("-TERM").arg(watch.id().to_string()).status();
    let status = watch.wait().expect("wait");
    assert!(status.success(), "{status}");
}
