//! What the injector does to one pod: leave it alone, refuse it with a
//! message naming the annotation at fault, or return it with Lockstep's
//! sidecar added as a native sidecar.
//!
//! The pod asks with annotations (see [`POOL`] and the constants after
//! it); the rest comes from the injector's [`Defaults`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod,
    PodSecurityContext, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The pool whose keys the pod's sidecar fetches; the pod asks for the
/// sidecar by carrying it.
pub const POOL: &str = "lockstep.dev/pool";
/// `"false"` leaves an annotated pod alone (`"true"` is the default).
pub const INJECT: &str = "lockstep.dev/inject";
/// The sidecar's image, instead of the injector's default.
pub const IMAGE: &str = "lockstep.dev/image";
/// The ConfigMap holding the sidecar's `sidecar.toml`.
pub const CONFIG_MAP: &str = "lockstep.dev/config-map";
/// The server's `kubernetes` auth role; `lockstep-<pool>` by default.
pub const ROLE: &str = "lockstep.dev/role";
/// The app containers that get the socket, separated by commas; all of
/// them by default.
pub const CONTAINERS: &str = "lockstep.dev/containers";
/// The Secret holding the key that seals the sidecar's cache file.
pub const CACHE_KEY_SECRET: &str = "lockstep.dev/cache-key-secret";
/// The telemetry port (probes, metrics), when the app already uses 9090.
pub const TELEMETRY_PORT: &str = "lockstep.dev/telemetry-port";
/// Set by the injector on a pod it changed: the image it added.
pub const INJECTED: &str = "lockstep.dev/injected";

/// Every annotation a pod may set (the injector's own [`INJECTED`] aside).
pub const ANNOTATIONS: &[&str] = &[POOL, INJECT, IMAGE, CONFIG_MAP, ROLE, CONTAINERS, CACHE_KEY_SECRET, TELEMETRY_PORT];

/// The sidecar's container name.
pub const SIDECAR: &str = "lockstep";
/// Where every container sees the socket's directory.
pub const SOCKET_DIR: &str = "/run/lockstep";
/// The socket, as `LOCKSTEP_SOCKET` tells the apps.
pub const SOCKET: &str = "/run/lockstep/sidecar.sock";
/// The user and group the sidecar runs as (the image's own).
const SIDECAR_ID: i64 = 65532;
const DEFAULT_TELEMETRY_PORT: i32 = 9090;
const CONFIG_DIR: &str = "/etc/lockstep/config";
const CACHE_DIR: &str = "/var/cache/lockstep";
const CACHE_KEY_DIR: &str = "/etc/lockstep/cache-key";
const TOKEN_DIR: &str = "/var/run/secrets/lockstep";
/// The volumes the injector adds, by name.
const VOLUMES: [&str; 5] =
    ["lockstep-socket", "lockstep-cache", "lockstep-config", "lockstep-cache-key", "lockstep-token"];
/// Longest image reference accepted.
const MAX_IMAGE: usize = 512;
/// Longest part of a refused value a message quotes.
const MAX_QUOTED: usize = 64;

/// What the injector adds when the pod does not say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// The sidecar image.
    pub image: String,
    /// `vault.addr` for every sidecar (empty: the ConfigMap's).
    pub vault_addr: String,
    /// The ConfigMap with `sidecar.toml`.
    pub config_map: String,
    /// The Secret with the cache key.
    pub cache_key_secret: String,
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admit it unchanged, for the reason given.
    Leave(&'static str),
    /// Admit it as this pod.
    Inject(Box<Pod>),
}

/// A pod that asked for the sidecar with an annotation that cannot be
/// honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Lockstep injector: annotation {annotation}: {problem}")]
pub struct Refusal {
    /// The annotation at fault.
    pub annotation: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn refuse(annotation: &'static str, problem: impl Into<String>) -> Refusal {
    Refusal { annotation, problem: problem.into() }
}

/// A value as a message quotes it: in quotes, cut short, no control
/// characters.
fn quoted(value: &str) -> String {
    let clean: String = value.chars().filter(|c| !c.is_control()).take(MAX_QUOTED).collect();
    let more = if value.chars().count() > MAX_QUOTED { "…" } else { "" };
    format!("{clean:?}{more}")
}

/// A DNS-1123 subdomain: what ConfigMap and Secret names must be.
fn is_object_name(name: &str) -> bool {
    let end_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && end_ok(name.chars().next())
        && end_ok(name.chars().last())
}

/// Decides what happens to `pod`.
pub fn decide(pod: &Pod, defaults: &Defaults) -> Result<Decision, Refusal> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let Some(pool) = annotations.get(POOL) else {
        return Ok(Decision::Leave("no lockstep.dev/pool annotation"));
    };
    match annotations.get(INJECT).map(String::as_str) {
        None | Some("true") => {}
        Some("false") => return Ok(Decision::Leave("lockstep.dev/inject is \"false\"")),
        Some(other) => return Err(refuse(INJECT, format!("{} is neither \"true\" nor \"false\"", quoted(other)))),
    }
    let spec = pod.spec.as_ref().ok_or_else(|| refuse(POOL, "the pod has no spec"))?;
    let carries = |list: &Option<Vec<Container>>| list.iter().flatten().any(|c| c.name == SIDECAR);
    if annotations.contains_key(INJECTED)
        || carries(&spec.init_containers)
        || spec.containers.iter().any(|c| c.name == SIDECAR)
    {
        return Ok(Decision::Leave("the pod already carries the sidecar"));
    }
    if !lockstep_model::name::is_valid(pool) {
        return Err(refuse(POOL, format!("{} is not a pool name ({})", quoted(pool), lockstep_model::name::NAME_RULE)));
    }
    let image = annotations.get(IMAGE).unwrap_or(&defaults.image);
    if image.is_empty() || image.len() > MAX_IMAGE || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(IMAGE, format!("{} is not an image reference", quoted(image))));
    }
    let object = |annotation: &'static str, default: &String| {
        let name = annotations.get(annotation).unwrap_or(default);
        if is_object_name(name) {
            Ok(name.clone())
        } else {
            Err(refuse(annotation, format!("{} is not a Kubernetes object name", quoted(name))))
        }
    };
    let config_map = object(CONFIG_MAP, &defaults.config_map)?;
    let cache_key_secret = object(CACHE_KEY_SECRET, &defaults.cache_key_secret)?;
    let role = annotations.get(ROLE).cloned().unwrap_or_else(|| format!("lockstep-{pool}"));
    if !lockstep_model::name::is_valid(&role) {
        return Err(refuse(
            ROLE,
            format!("{} is not a role name ({})", quoted(&role), lockstep_model::name::NAME_RULE),
        ));
    }
    let port = match annotations.get(TELEMETRY_PORT) {
        None => DEFAULT_TELEMETRY_PORT,
        Some(text) => match text.parse::<i32>() {
            Ok(port) if (1..=65535).contains(&port) => port,
            _ => return Err(refuse(TELEMETRY_PORT, format!("{} is not a port number (1 to 65535)", quoted(text)))),
        },
    };
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let chosen: Vec<String> = match annotations.get(CONTAINERS) {
        None => names.iter().map(|n| (*n).to_string()).collect(),
        Some(list) => {
            let chosen: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
            if let Some(unknown) = chosen.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(refuse(
                    CONTAINERS,
                    format!("{} is not a container of this pod (it has {})", quoted(unknown), names.join(", ")),
                ));
            }
            chosen
        }
    };
    if let Some(taken) = spec.volumes.iter().flatten().find(|v| VOLUMES.contains(&v.name.as_str())) {
        return Err(refuse(
            POOL,
            format!("the pod already has a volume named {:?}, which the sidecar needs", taken.name),
        ));
    }
    for container in spec.containers.iter().filter(|c| chosen.contains(&c.name)) {
        if container.volume_mounts.iter().flatten().any(|m| m.mount_path.trim_end_matches('/') == SOCKET_DIR) {
            return Err(refuse(
                CONTAINERS,
                format!(
                    "container {:?} already mounts something at {SOCKET_DIR}, where the socket goes",
                    container.name
                ),
            ));
        }
    }

    let mut pod = pod.clone();
    let spec = pod.spec.as_mut().expect("checked above");
    let sidecar = sidecar(Sidecar { image, pool, role: &role, vault_addr: &defaults.vault_addr, port });
    spec.init_containers.get_or_insert_with(Vec::new).insert(0, sidecar);
    for container in spec.containers.iter_mut().filter(|c| chosen.contains(&c.name)) {
        container.volume_mounts.get_or_insert_with(Vec::new).push(mount("lockstep-socket", SOCKET_DIR, false));
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == "LOCKSTEP_SOCKET") {
            env.push(var("LOCKSTEP_SOCKET", SOCKET));
        }
    }
    // With an fsGroup, kubelet gives the cache key and the token to that
    // group, and the socket (mode 0660) is made in its directory. Without
    // one, the key and the token are files of root: they are made
    // readable to every user of the one container that mounts them, the
    // sidecar; and the apps share the sidecar's group as a supplemental
    // one, to open the socket.
    let security = spec.security_context.get_or_insert_with(PodSecurityContext::default);
    let grouped = security.fs_group.is_some();
    if !grouped {
        let groups = security.supplemental_groups.get_or_insert_with(Vec::new);
        if !groups.contains(&SIDECAR_ID) {
            groups.push(SIDECAR_ID);
        }
    }
    let mode = if grouped { 0o440 } else { 0o444 };
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes(&config_map, &cache_key_secret, mode));
    pod.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(INJECTED.to_string(), image.clone());
    Ok(Decision::Inject(Box::new(pod)))
}

struct Sidecar<'a> {
    image: &'a str,
    pool: &'a str,
    role: &'a str,
    vault_addr: &'a str,
    port: i32,
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), ..EnvVar::default() }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), Quantity((*v).to_string()))).collect()
}

/// The native sidecar: an init container that keeps running, started
/// before the apps, its startup probe holding them back until it serves
/// keys.
fn sidecar(s: Sidecar<'_>) -> Container {
    let mut env = vec![
        var("LOCKSTEP_POOL", s.pool),
        var("LOCKSTEP_AUTH_METHOD", "kubernetes"),
        var("LOCKSTEP_AUTH_ROLE", s.role),
        var("LOCKSTEP_JWT_FILE", &format!("{TOKEN_DIR}/token")),
        var("LOCKSTEP_SOCKET", SOCKET),
        var("LOCKSTEP_CACHE_FILE", &format!("{CACHE_DIR}/bundle.bin")),
        var("LOCKSTEP_CACHE_KEY_FILE", &format!("{CACHE_KEY_DIR}/key")),
        var("LOCKSTEP_TELEMETRY_ADDR", &format!("0.0.0.0:{}", s.port)),
    ];
    if !s.vault_addr.is_empty() {
        env.push(var("LOCKSTEP_VAULT_ADDR", s.vault_addr));
    }
    Container {
        name: SIDECAR.to_string(),
        image: Some(s.image.to_string()),
        restart_policy: Some("Always".to_string()),
        args: Some(["run", "--config", &format!("{CONFIG_DIR}/sidecar.toml")].map(String::from).to_vec()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("lockstep".to_string()),
            container_port: s.port,
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe("/readyz", s.port, 1, 120)),
        readiness_probe: Some(probe("/readyz", s.port, 10, 3)),
        liveness_probe: Some(probe("/healthz", s.port, 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
            limits: Some(quantities(&[("cpu", "500m"), ("memory", "64Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_ID),
            run_as_group: Some(SIDECAR_ID),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Capabilities::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..SeccompProfile::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("lockstep-socket", SOCKET_DIR, false),
            mount("lockstep-cache", CACHE_DIR, false),
            mount("lockstep-config", CONFIG_DIR, true),
            mount("lockstep-cache-key", CACHE_KEY_DIR, true),
            mount("lockstep-token", TOKEN_DIR, true),
        ]),
        ..Container::default()
    }
}

/// The sidecar's volumes; `mode` for the files of the cache key and the
/// token.
fn volumes(config_map: &str, cache_key_secret: &str, mode: i32) -> Vec<Volume> {
    let named = |name: &str| Volume { name: name.to_string(), ..Volume::default() };
    vec![
        Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_string()),
                size_limit: Some(Quantity("1Mi".to_string())),
            }),
            ..named("lockstep-socket")
        },
        Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("16Mi".to_string())),
                ..Default::default()
            }),
            ..named("lockstep-cache")
        },
        Volume {
            config_map: Some(ConfigMapVolumeSource { name: config_map.to_string(), ..Default::default() }),
            ..named("lockstep-config")
        },
        Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(cache_key_secret.to_string()),
                default_mode: Some(mode),
                ..Default::default()
            }),
            ..named("lockstep-cache-key")
        },
        Volume {
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some("vault".to_string()),
                        expiration_seconds: Some(3600),
                        path: "token".to_string(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: Some(mode),
            }),
            ..named("lockstep-token")
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> Defaults {
        Defaults {
            image: "registry.example/lockstep-sidecar:0.1.0".into(),
            vault_addr: "https://openbao-standby.openbao:8200,https://openbao-active.openbao:8200".into(),
            config_map: "lockstep-sidecar".into(),
            cache_key_secret: "lockstep-cache-key".into(),
        }
    }

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "checkout-1", "annotations": annotations},
            "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "MODE", "value": "x"}]},
                {"name": "worker", "image": "worker:1"}
            ]}
        }))
        .expect("pod")
    }

    fn injected(annotations: serde_json::Value) -> Pod {
        match decide(&pod(annotations), &defaults()) {
            Ok(Decision::Inject(pod)) => *pod,
            other => panic!("not injected: {other:?}"),
        }
    }

    fn refusal(annotations: serde_json::Value) -> Refusal {
        decide(&pod(annotations), &defaults()).expect_err("refused")
    }

    /// The file modes of the cache key's and the token's volumes.
    fn modes(pod: &Pod) -> (Option<i32>, Option<i32>) {
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        let find = |name: &str| volumes.iter().find(|v| v.name == name).cloned().expect("volume");
        let key = find("lockstep-cache-key").secret.and_then(|s| s.default_mode);
        let token = find("lockstep-token").projected.and_then(|p| p.default_mode);
        (key, token)
    }

    fn env(container: &Container, name: &str) -> Option<String> {
        container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
    }

    #[test]
    fn an_annotated_pod_gets_the_sidecar_as_a_native_sidecar() {
        let pod = injected(json!({POOL: "checkout"}));
        let spec = pod.spec.as_ref().expect("spec");
        let sidecar = &spec.init_containers.as_ref().expect("init containers")[0];
        assert_eq!(sidecar.name, SIDECAR);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("registry.example/lockstep-sidecar:0.1.0"));
        assert_eq!(env(sidecar, "LOCKSTEP_POOL").as_deref(), Some("checkout"));
        assert_eq!(env(sidecar, "LOCKSTEP_AUTH_ROLE").as_deref(), Some("lockstep-checkout"));
        assert_eq!(env(sidecar, "LOCKSTEP_VAULT_ADDR"), Some(defaults().vault_addr));
        for probe in [&sidecar.startup_probe, &sidecar.readiness_probe, &sidecar.liveness_probe] {
            let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("an HTTP probe");
            assert_eq!(get.port, IntOrString::Int(9090));
        }
        let security = sidecar.security_context.as_ref().expect("security context");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        // Every app container gets the socket, and keeps its own settings.
        for container in &spec.containers {
            assert_eq!(env(container, "LOCKSTEP_SOCKET").as_deref(), Some(SOCKET), "{}", container.name);
            assert!(container.volume_mounts.iter().flatten().any(|m| m.mount_path == SOCKET_DIR));
        }
        assert_eq!(env(&spec.containers[0], "MODE").as_deref(), Some("x"));
        let token = spec.volumes.iter().flatten().find(|v| v.name == "lockstep-token").expect("token volume");
        let projection = token.projected.as_ref().and_then(|p| p.sources.as_ref()).expect("sources")[0]
            .service_account_token
            .clone()
            .expect("a service-account token");
        assert_eq!(projection.audience.as_deref(), Some("vault"));
        assert_eq!(spec.security_context.as_ref().and_then(|s| s.supplemental_groups.clone()), Some(vec![65532]));
        // No fsGroup: the key and the token must be readable by the sidecar's user.
        assert_eq!(modes(&pod), (Some(0o444), Some(0o444)));
        assert_eq!(
            pod.metadata.annotations.as_ref().and_then(|a| a.get(INJECTED)).map(String::as_str),
            Some("registry.example/lockstep-sidecar:0.1.0")
        );
    }

    #[test]
    fn annotations_choose_the_image_config_map_role_port_and_containers() {
        let pod =
            injected(json!({POOL: "checkout", IMAGE: "mirror.example/sidecar:2", CONFIG_MAP: "checkout-lockstep",
                                  ROLE: "checkout-signer", TELEMETRY_PORT: "9191", CONTAINERS: "worker"}));
        let spec = pod.spec.as_ref().expect("spec");
        let sidecar = &spec.init_containers.as_ref().expect("init containers")[0];
        assert_eq!(sidecar.image.as_deref(), Some("mirror.example/sidecar:2"));
        assert_eq!(env(sidecar, "LOCKSTEP_AUTH_ROLE").as_deref(), Some("checkout-signer"));
        assert_eq!(env(sidecar, "LOCKSTEP_TELEMETRY_ADDR").as_deref(), Some("0.0.0.0:9191"));
        let config = spec.volumes.iter().flatten().find(|v| v.name == "lockstep-config").expect("config volume");
        assert_eq!(config.config_map.as_ref().map(|c| c.name.as_str()), Some("checkout-lockstep"));
        assert_eq!(env(&spec.containers[0], "LOCKSTEP_SOCKET"), None, "app was not chosen");
        assert_eq!(env(&spec.containers[1], "LOCKSTEP_SOCKET").as_deref(), Some(SOCKET));
    }

    #[test]
    fn pods_that_did_not_ask_or_already_carry_it_are_left_alone() {
        assert_eq!(decide(&pod(json!({})), &defaults()), Ok(Decision::Leave("no lockstep.dev/pool annotation")));
        assert!(matches!(
            decide(&pod(json!({POOL: "checkout", INJECT: "false"})), &defaults()),
            Ok(Decision::Leave(_))
        ));
        // Idempotent: a second admission of the injected pod changes nothing.
        let once = injected(json!({POOL: "checkout"}));
        assert_eq!(decide(&once, &defaults()), Ok(Decision::Leave("the pod already carries the sidecar")));
        // A pod that carries its own sidecar, by hand, too.
        let mut by_hand = pod(json!({POOL: "checkout"}));
        by_hand.spec.as_mut().expect("spec").init_containers =
            Some(vec![Container { name: SIDECAR.into(), ..Container::default() }]);
        assert!(matches!(decide(&by_hand, &defaults()), Ok(Decision::Leave(_))));
    }

    #[test]
    fn malformed_annotations_are_refused_naming_the_annotation() {
        let cases = [
            (json!({POOL: "no spaces allowed"}), POOL),
            (json!({POOL: "checkout", INJECT: "yes"}), INJECT),
            (json!({POOL: "checkout", IMAGE: "two words"}), IMAGE),
            (json!({POOL: "checkout", CONFIG_MAP: "Not_A_Name"}), CONFIG_MAP),
            (json!({POOL: "checkout", CACHE_KEY_SECRET: "-bad"}), CACHE_KEY_SECRET),
            (json!({POOL: "checkout", ROLE: "a/b"}), ROLE),
            (json!({POOL: "checkout", TELEMETRY_PORT: "70000"}), TELEMETRY_PORT),
            (json!({POOL: "checkout", CONTAINERS: "app,sidecar-that-is-not-here"}), CONTAINERS),
        ];
        for (annotations, annotation) in cases {
            let refused = refusal(annotations.clone());
            assert_eq!(refused.annotation, annotation, "{annotations}");
            assert!(refused.to_string().contains(annotation), "{refused}");
        }
        let long = "x".repeat(5_000);
        let refused = refusal(json!({POOL: "checkout", IMAGE: format!("{long} y")}));
        assert!(refused.to_string().len() < 300, "the message quotes the whole value: {refused}");
    }

    #[test]
    fn a_pod_whose_volume_or_mount_is_in_the_way_is_refused() {
        let mut taken = pod(json!({POOL: "checkout"}));
        taken.spec.as_mut().expect("spec").volumes =
            Some(vec![Volume { name: "lockstep-socket".into(), ..Volume::default() }]);
        assert!(decide(&taken, &defaults()).expect_err("refused").problem.contains("lockstep-socket"));
        let mut mounted = pod(json!({POOL: "checkout"}));
        mounted.spec.as_mut().expect("spec").containers[0].volume_mounts =
            Some(vec![mount("mine", "/run/lockstep/", false)]);
        assert_eq!(decide(&mounted, &defaults()).expect_err("refused").annotation, CONTAINERS);
    }

    #[test]
    fn an_fs_group_is_kept_and_no_supplemental_group_added() {
        let mut with_group = pod(json!({POOL: "checkout"}));
        with_group.spec.as_mut().expect("spec").security_context =
            Some(PodSecurityContext { fs_group: Some(2000), ..PodSecurityContext::default() });
        let Ok(Decision::Inject(pod)) = decide(&with_group, &defaults()) else { panic!("not injected") };
        assert_eq!(modes(&pod), (Some(0o440), Some(0o440)));
        let security = pod.spec.and_then(|s| s.security_context).expect("security context");
        assert_eq!((security.fs_group, security.supplemental_groups), (Some(2000), None));
    }
}
