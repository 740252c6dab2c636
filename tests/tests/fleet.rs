//! The fleet invariant through OpenBao's real plugin client: three pools
//! whose sidecars poll at different moments, across several scheduled
//! rotations. Every 10 s each signing pool issues a token valid for the
//! keyring's max_token_ttl; at every instant, every token not yet expired
//! verifies at every pool — each pool computing its state from its own
//! latest bundle with the shared model, as sidecars do.

use lockstep_model::bundle::Bundle;
use lockstep_model::key_state;
use lockstep_tests::sdkhost::{HostKind, SdkHost};
use serde_json::{Value, json};

const M: &str = "lockstep/";
const STEP: u64 = 10;
/// The keyring's max_token_ttl (10 minutes), in seconds.
const TOKEN_TTL: i64 = 600;

/// A simulated sidecar: its pool, when it polls, its latest bundle.
struct Sidecar {
    pool: &'static str,
    interval: u64,
    phase: u64,
    bundle: Option<Bundle>,
}

impl Sidecar {
    fn held(&self) -> String {
        let Some(bundle) = &self.bundle else { return String::new() };
        bundle
            .keyrings
            .iter()
            .filter_map(|(name, k)| k.versions.iter().map(|v| v.meta.number).max().map(|n| format!("{name}:{n}")))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn poll(&mut self, host: &SdkHost) {
        let revision = self.bundle.as_ref().map(|b| b.revision.clone()).unwrap_or_default();
        let body = json!({"instance": format!("{}-1", self.pool), "held": self.held(), "revision": revision});
        let reply = host.request(M, "read", &format!("bundle/{}", self.pool), body);
        assert_eq!(reply.status, 200, "{reply:?}");
        if reply.data["not_modified"] == true {
            return;
        }
        let bundle: Bundle = serde_json::from_value(reply.data).expect("a bundle");
        bundle.validate(self.pool, self.bundle.as_ref()).expect("the sidecar accepts every bundle");
        self.bundle = Some(bundle);
    }

    fn state(&self, t: i64) -> lockstep_model::KeyState {
        let versions: Vec<_> = self
            .bundle
            .as_ref()
            .map(|b| b.keyrings["jwt"].versions.iter().map(|v| v.meta.clone()).collect())
            .unwrap_or_default();
        key_state(&versions, t)
    }
}

#[test]
fn every_signed_token_verifies_at_every_pool_across_rotations() {
    let host = SdkHost::start(HostKind::OpenBao);
    host.mount(M);
    // The edge pool polls only every 5 minutes, longer than the 2-minute
    // prepublish: without the gate it would meet versions it never fetched.
    let config = host.request(M, "update", "config", json!({"poll_interval": "5m", "liveness_window": "15m"}));
    assert_eq!(config.status, 200, "{config:?}");
    let created = host.request(
        M,
        "create",
        "keys/jwt",
        json!({"type": "ed25519", "rotation_period": "1h", "prepublish": "2m", "grace_period": "20m",
               "max_token_ttl": "10m", "commit_timeout": "30m"}),
    );
    assert_eq!(created.status, 200, "{created:?}");
    let mut sidecars = Vec::new();
    for (pool, interval, phase) in [("web", 30, 0), ("api", 30, 10), ("edge", 300, 20)] {
        let mode = if pool == "edge" { "verify" } else { "sign" };
        host.request(M, "create", &format!("pools/{pool}"), json!({"keyrings": "jwt", "mode": mode}));
        sidecars.push(Sidecar { pool, interval, phase, bundle: None });
    }
    // A pool with no keyrings, only to read the plugin's clock.
    host.request(M, "create", "pools/clock", json!({}));
    let mut elapsed = 0;
    let mut checked = 0;
    // (signing pool, version, expiry) of every token issued so far.
    let mut tokens: Vec<(&str, u64, i64)> = Vec::new();
    // Three and a half hours in 10-second steps; the scheduler runs every
    // 60 s.
    while elapsed < 3 * 3_600 + 1_800 {
        for sidecar in sidecars.iter_mut().filter(|s| elapsed % s.interval == s.phase) {
            sidecar.poll(&host);
        }
        if elapsed % 60 == 0 {
            assert!(host.request(M, "rollback", "", Value::Null).status < 300);
        }
        let t = now(&host);
        // Every signing pool issues a token now, valid for max_token_ttl.
        for signer in sidecars.iter().filter(|s| s.pool != "edge" && s.bundle.is_some()) {
            if let Some(signing) = signer.state(t).signing {
                tokens.push((signer.pool, signing, t + TOKEN_TTL));
            }
        }
        tokens.retain(|(_, _, exp)| *exp >= t);
        // Every token not yet expired verifies at every pool, now.
        for (pool, version, exp) in &tokens {
            for verifier in sidecars.iter().filter(|s| s.bundle.is_some()) {
                let verifying = verifier.state(t).verifying;
                assert!(
                    verifying.contains(version),
                    "at +{elapsed}s a token {pool} signed with v{version} (valid until {exp}) fails at {}, which \
                     verifies only {verifying:?}",
                    verifier.pool
                );
                checked += 1;
            }
        }
        host.clock.advance(STEP);
        elapsed += STEP;
    }
    let key = host.request(M, "read", "keys/jwt", Value::Null).data;
    assert!(key["latest_version"].as_u64().unwrap_or_default() >= 4, "rotations happened: {key}");
    assert!(checked > 1_000, "{checked} checks");
}

fn now(host: &SdkHost) -> i64 {
    // The plugin's view of now, which the test clock moves.
    let info = host.request(M, "read", "bundle/clock", json!({"instance": "probe", "revision": "x"}));
    info.data["server_time"].as_i64().expect("server_time")
}
