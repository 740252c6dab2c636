//! The values in docs/helm/ for the official charts: linted and rendered
//! by the real Helm (built from its Go module) with the official Vault
//! chart, and the rendered manifests pass strict schema validation. The
//! init container they add runs the plugin image's `--install`, which
//! tests/tests/container.rs runs with podman.
//!
//! The injector's own chart (charts/lockstep-injector): linted, rendered in
//! each TLS mode and validated the same way, its certificate checked with
//! openssl, and the committed manifests compared with its output.
//!
//! Needs `make helm pytools` (make test builds them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockstep_tests::{required_binary, workspace_root};
use serde_json::Value;

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn helm() -> PathBuf {
    required_binary("LOCKSTEP_HELM", "helm/helm", "make helm")
}

fn vault_chart() -> PathBuf {
    let chart = workspace_root().join("target/helm/charts/vault");
    assert!(chart.join("Chart.yaml").is_file(), "{} is missing: run `make helm`", chart.display());
    chart
}

fn python() -> PathBuf {
    required_binary("LOCKSTEP_PYTHON", "pyenv/bin/python", "make pytools")
}

fn version() -> String {
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo.lines().find_map(|l| l.strip_prefix("version = \"")).map(|v| v.trim_end_matches('"'));
    version.expect("a version in Cargo.toml").to_string()
}

#[track_caller]
fn run(binary: &Path, args: &[&str]) -> String {
    let out = Command::new(binary).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    assert!(out.status.success(), "{} {args:?}: {}", binary.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every document of a YAML stream, as JSON (PyYAML's safe loader).
fn documents(yaml: &str, dir: &Path) -> Vec<Value> {
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write");
    let script = "import json, sys, yaml\n\
                  docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n\
                  print(json.dumps(docs))";
    let json = run(&python(), &["-c", script, &file.display().to_string()]);
    serde_json::from_str::<Vec<Value>>(&json).expect("JSON from the YAML")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array().and_then(|l| l.iter().find(|v| v["name"] == name)).unwrap_or(&Value::Null)
}

/// What the values promise, checked in what the chart rendered: the init
/// container installs the plugin image into the volume the server mounts
/// read-only as its plugin directory, the server's configuration names that
/// directory, and the plugin learns its server's address.
fn check_rendered(docs: &[Value], plugin_dir: &str) {
    let sets = of_kind(docs, "StatefulSet");
    assert_eq!(sets.len(), 1, "one StatefulSet: {docs:?}");
    let pod = &sets[0]["spec"]["template"]["spec"];
    let init = named(&pod["initContainers"], "lockstep-plugin");
    assert_eq!(init["image"], format!("registry.example.com/lockstep/lockstep-plugin:{}", version()), "{init}");
    assert_eq!(init["args"], serde_json::json!(["--install", plugin_dir]), "{init}");
    assert_eq!(named(&init["volumeMounts"], "plugins")["mountPath"], plugin_dir, "{init}");
    assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true, "{init}");
    assert_eq!(named(&pod["volumes"], "plugins")["emptyDir"], serde_json::json!({}), "{pod}");
    let server = pod["containers"].as_array().and_then(|c| c.first()).expect("the server's container");
    let mount = named(&server["volumeMounts"], "plugins");
    assert_eq!((&mount["mountPath"], &mount["readOnly"]), (&Value::from(plugin_dir), &Value::Bool(true)), "{server}");
    assert_eq!(named(&server["env"], "LOCKSTEP_SERVER_ADDR")["value"], "http://127.0.0.1:8200", "{server}");
    assert_eq!(sets[0]["spec"]["replicas"], 3, "a 3-node raft cluster");
    let configs: Vec<&str> = of_kind(docs, "ConfigMap")
        .into_iter()
        .flat_map(|c| c["data"].as_object().into_iter().flat_map(|d| d.values().filter_map(Value::as_str)))
        .collect();
    let directive = format!("plugin_directory = \"{plugin_dir}\"");
    assert!(configs.iter().any(|c| c.contains(&directive) && c.contains("storage \"raft\"")), "{configs:?}");
}

#[test]
fn the_vault_chart_values_lint_render_and_validate_strictly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = workspace_root().join("docs/helm/vault-values.yaml");
    let values = values.display().to_string();
    let chart = vault_chart().display().to_string();
    let linted = run(&helm(), &["lint", "--strict", &chart, "-f", &values]);
    assert!(linted.contains("1 chart(s) linted, 0 chart(s) failed"), "{linted}");
    let rendered = run(&helm(), &["template", "vault", &chart, "--namespace", "vault", "-f", &values]);
    let docs = documents(&rendered, dir.path());
    check_rendered(&docs, "/usr/local/libexec/vault");

    let file = dir.path().join("rendered.yaml");
    let validator = python().with_file_name("kubernetes-validate");
    for kubernetes in ["1.33.0", "1.37.0"] {
        let out = Command::new(&validator).args(["--strict", "-k", kubernetes]).arg(&file).output().expect("validate");
        assert!(out.status.success(), "Kubernetes {kubernetes}: {}", text(&out));
        assert!(text(&out).contains("resource statefulset/"), "the StatefulSet was validated: {}", text(&out));
    }
    // Strict means strict: a misspelt field in the values fails validation.
    std::fs::write(&file, rendered.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")).expect("write");
    let out = Command::new(&validator).args(["--strict", "-k", "1.37.0"]).arg(&file).output().expect("validate");
    assert!(!out.status.success(), "a misspelt field passed: {}", text(&out));
}

/// The OpenBao chart is a fork of the Vault chart and keeps the same keys
/// for everything these values set (server.extraInitContainers, volumes,
/// volumeMounts, extraEnvironmentVars, ha.raft.config). Rendered through
/// the Vault chart, they must give the same shape with OpenBao's paths.
#[test]
fn the_openbao_chart_values_set_the_same_keys_with_openbaos_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = workspace_root().join("docs/helm/openbao-values.yaml").display().to_string();
    let chart = vault_chart().display().to_string();
    let rendered = run(&helm(), &["template", "openbao", &chart, "--namespace", "openbao", "-f", &values]);
    let docs = documents(&rendered, dir.path());
    check_rendered(&docs, "/usr/local/libexec/openbao");
    let configs = of_kind(&docs, "ConfigMap").iter().map(|c| c["data"].to_string()).collect::<String>();
    assert!(configs.contains("/openbao/data"), "OpenBao's data path: {configs}");
}

fn injector_chart() -> String {
    workspace_root().join("charts/lockstep-injector").display().to_string()
}

/// `helm template` of the injector's chart as release `lockstep-injector`
/// in `lockstep-system`, with `args` added; the output, or the error.
fn render_injector(args: &[&str]) -> Result<String, String> {
    let chart = injector_chart();
    let mut all = vec!["template", "lockstep-injector", chart.as_str(), "--namespace", "lockstep-system"];
    all.extend(args);
    let out = Command::new(helm()).args(&all).output().expect("run helm");
    if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).into_owned()) } else { Err(text(&out)) }
}

/// Every document Kubernetes itself defines passes strict validation
/// (cert-manager's kinds have no schema there).
#[track_caller]
fn validate_strictly(docs: &[Value], dir: &Path) {
    let core: Vec<String> = docs
        .iter()
        .filter(|d| !d["apiVersion"].as_str().is_some_and(|v| v.starts_with("cert-manager.io/")))
        .map(Value::to_string)
        .collect();
    let file = dir.join("injector.yaml");
    std::fs::write(&file, core.join("\n---\n")).expect("write");
    let validator = python().with_file_name("kubernetes-validate");
    for kubernetes in ["1.33.0", "1.37.0"] {
        let out = Command::new(&validator).args(["--strict", "-k", kubernetes]).arg(&file).output().expect("validate");
        assert!(out.status.success(), "Kubernetes {kubernetes}: {}", text(&out));
        for kind in ["deployment", "service", "mutatingwebhookconfiguration", "serviceaccount"] {
            assert!(text(&out).contains(&format!("resource {kind}/")), "{kind} not validated: {}", text(&out));
        }
    }
}

fn decoded(base64_text: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(base64_text.as_str().expect("base64 text")).expect("base64")
}

#[test]
fn the_injector_chart_lints_and_renders_a_webhook_the_api_server_can_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let linted = run(&helm(), &["lint", "--strict", &injector_chart()]);
    assert!(linted.contains("1 chart(s) linted, 0 chart(s) failed"), "{linted}");
    let rendered =
        render_injector(&["--set", "sidecar.vaultAddr=https://openbao-standby.openbao:8200"]).expect("renders");
    let docs = documents(&rendered, dir.path());
    validate_strictly(&docs, dir.path());

    // The injector runs hardened, told the sidecar's defaults, serving the
    // Secret's certificate.
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--sidecar-image=registry.example.com/lockstep/lockstep-sidecar:0.1.0"), "{args:?}");
    assert!(args.contains(&"--vault-addr=https://openbao-standby.openbao:8200"), "{args:?}");
    assert_eq!(container["image"], format!("registry.example.com/lockstep/lockstep-injector:{}", version()));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{container}");
    assert_eq!(pod["automountServiceAccountToken"], false, "{pod}");
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS", "{container}");
    assert!(of_kind(&docs, "Role").is_empty() && of_kind(&docs, "ClusterRole").is_empty(), "it needs no API access");

    // The generated certificate verifies against the CA the webhook hands
    // the API server, for the service's name.
    let secret = of_kind(&docs, "Secret")[0];
    assert_eq!(named(&pod["volumes"], "tls")["secret"]["secretName"], secret["metadata"]["name"]);
    let webhook = &of_kind(&docs, "MutatingWebhookConfiguration")[0]["webhooks"][0];
    assert_eq!(webhook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
    assert_eq!(webhook["clientConfig"]["service"]["name"], "lockstep-injector");
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["namespaceSelector"]["matchLabels"]["lockstep.dev/injection"], "enabled");
    std::fs::write(dir.path().join("ca.pem"), decoded(&secret["data"]["ca.crt"])).expect("write");
    std::fs::write(dir.path().join("tls.pem"), decoded(&secret["data"]["tls.crt"])).expect("write");
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", "ca.pem", "-verify_hostname", "lockstep-injector.lockstep-system.svc", "tls.pem"])
        .current_dir(dir.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "the serving certificate does not verify: {}", text(&out));
}

#[test]
fn the_injector_chart_asks_cert_manager_or_takes_a_secret_and_refuses_half_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = documents(&render_injector(&["--set", "tls.mode=cert-manager"]).expect("renders"), dir.path());
    validate_strictly(&docs, dir.path());
    let certificate = of_kind(&docs, "Certificate")[0];
    let configuration = of_kind(&docs, "MutatingWebhookConfiguration")[0];
    assert_eq!(
        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "lockstep-system/lockstep-injector"
    );
    assert!(configuration["webhooks"][0]["clientConfig"].get("caBundle").is_none(), "{configuration}");
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(named(&pod["volumes"], "tls")["secret"]["secretName"], certificate["spec"]["secretName"]);
    assert!(of_kind(&docs, "Secret").is_empty(), "cert-manager makes the Secret");

    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let docs = documents(
        &render_injector(&[
            "--set",
            "tls.mode=secret",
            "--set",
            "tls.existingSecret=mine",
            "--set",
            &format!("tls.caBundle={ca}"),
        ])
        .expect("renders"),
        dir.path(),
    );
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(named(&pod["volumes"], "tls")["secret"]["secretName"], "mine");
    let webhook = &of_kind(&docs, "MutatingWebhookConfiguration")[0]["webhooks"][0];
    assert_eq!(decoded(&webhook["clientConfig"]["caBundle"]), ca.as_bytes());

    let missing =
        render_injector(&["--set", "tls.mode=secret", "--set", "tls.existingSecret=mine"]).expect_err("refused");
    assert!(missing.contains("tls.caBundle"), "{missing}");
    let unknown = render_injector(&["--set", "tls.mode=self"]).expect_err("refused");
    assert!(unknown.contains("tls.mode"), "{unknown}");
}

#[test]
fn the_committed_injector_manifests_are_the_charts_output() {
    let rendered = render_injector(&["--set", "tls.mode=cert-manager"]).expect("renders");
    let path = workspace_root().join("injector/deploy/kubernetes/lockstep-injector.yaml");
    let committed = std::fs::read_to_string(&path).expect("the committed manifests");
    let body = committed.lines().skip_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert_eq!(
        body.trim(),
        rendered.trim(),
        "{} is not the chart's output: regenerate it with the command in its first lines",
        path.display()
    );
}
