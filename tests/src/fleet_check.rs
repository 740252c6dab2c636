//! The checker of the fleet invariant over a recorded history, independent
//! of the code under test: it knows only what the driver saw (every sign,
//! every verify, every view of a sidecar's keys, every fault and every
//! revocation, as JSON lines) and the coordinator's final history.
//!
//! What it checks, with counts ([`Report`]):
//! - every token any pool signed was accepted by every sidecar of every
//!   pool it was shown to, from its issue until its `exp`, except a token of
//!   a revoked version after the revocation, and a sidecar that was down
//!   (frozen or killed) when asked, which is "unavailable", not a rejection;
//! - no sidecar served a version past its `expires_at`;
//! - no request to a sidecar that was up failed while the cluster was down;
//! - each version of each keyring was issued exactly once.
//!
//! A violation keeps the slice of history around it, so a failed run shows
//! what happened.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One observation, a JSON line of the history. Times are seconds since
/// the Unix epoch (fractions allowed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// A signing sidecar was asked to sign token `token`.
    Sign {
        /// When.
        t: f64,
        /// The signer's pool and instance.
        pool: String,
        /// Its instance.
        instance: String,
        /// The keyring.
        keyring: String,
        /// The driver's id of the token.
        token: u64,
        /// The kid it was signed with (when it was signed).
        kid: Option<String>,
        /// Its `exp`.
        exp: i64,
        /// `ok`, an error code, or `unavailable`.
        result: String,
    },
    /// A sidecar was asked to verify token `token`.
    Verify {
        /// When.
        t: f64,
        /// The verifier's pool.
        pool: String,
        /// Its instance.
        instance: String,
        /// The keyring.
        keyring: String,
        /// The token's id.
        token: u64,
        /// `ok`, an error code (a rejection), or `unavailable`.
        result: String,
    },
    /// What a sidecar served for a keyring at `t`.
    View {
        /// When.
        t: f64,
        /// The pool.
        pool: String,
        /// The instance.
        instance: String,
        /// The keyring.
        keyring: String,
        /// The signing kid.
        signing: Option<String>,
        /// The verification set: kid and `expires_at`.
        verifying: Vec<(String, Option<i64>)>,
    },
    /// A fault started or ended.
    Fault {
        /// When.
        t: f64,
        /// `kill_active`, `stop_follower`, `cluster_down`, `freeze_sidecar`,
        /// `kill_sidecar`, `skew_sidecar`, `manual_rotation`, `revoke`,
        /// `snapshot_restore`…
        kind: String,
        /// What it hit (a node, an instance, a keyring).
        target: String,
        /// `start` or `end`.
        phase: String,
    },
    /// A version was revoked.
    Revoke {
        /// When the revocation was written.
        t: f64,
        /// The keyring.
        keyring: String,
        /// The revoked version's kid.
        kid: String,
    },
}

impl Event {
    /// When.
    pub fn t(&self) -> f64 {
        match self {
            Self::Sign { t, .. }
            | Self::Verify { t, .. }
            | Self::View { t, .. }
            | Self::Fault { t, .. }
            | Self::Revoke { t, .. } => *t,
        }
    }
}

/// One entry of the coordinator's history of a keyring, as the checker
/// needs it: which version an issuing decision created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The keyring.
    pub keyring: String,
    /// The version number.
    pub version: u64,
    /// Its kid.
    pub kid: String,
}

/// A broken promise, with the history around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Which rule.
    pub rule: &'static str,
    /// What happened.
    pub what: String,
    /// The events within two seconds of it, as JSON lines.
    pub around: Vec<String>,
}

/// What the checker counted and found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Tokens signed.
    pub signed: usize,
    /// Verifications asked within a token's lifetime.
    pub verifications: usize,
    /// Of those, accepted.
    pub accepted: usize,
    /// Rejections excused: the version was revoked first.
    pub excused_revoked: usize,
    /// Asked of a sidecar that was down (frozen, killed): unavailable.
    pub unavailable_down: usize,
    /// Requests answered while the cluster was down.
    pub served_while_cluster_down: usize,
    /// Views of a sidecar's keys checked.
    pub views: usize,
    /// Versions issued, per keyring.
    pub issued: BTreeMap<String, usize>,
    /// What broke.
    pub violations: Vec<Violation>,
}

impl Report {
    /// One paragraph of counts, then each violation with its slice.
    pub fn render(&self) -> String {
        let mut out = format!(
            "signed {} tokens; {} verifications within their lifetimes: {} accepted, {} rejected after a revocation \
             (excused), {} unavailable while the sidecar was down; {} requests served while the cluster was down; \
             {} views checked; versions issued {:?}; {} violations\n",
            self.signed,
            self.verifications,
            self.accepted,
            self.excused_revoked,
            self.unavailable_down,
            self.served_while_cluster_down,
            self.views,
            self.issued,
            self.violations.len()
        );
        for v in &self.violations {
            let _ = writeln!(out, "VIOLATION [{}] {}", v.rule, v.what);
            for line in &v.around {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

/// Windows `[start, end)` of faults of `kind` (an unfinished one lasts
/// forever), by target.
fn windows(events: &[Event], kind: &str) -> Vec<(String, f64, f64)> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for event in events {
        if let Event::Fault { t, kind: k, target, phase } = event
            && k == kind
        {
            if phase == "start" {
                open.insert(target.clone(), *t);
            } else if let Some(start) = open.remove(target) {
                out.push((target.clone(), start, *t));
            }
        }
    }
    out.extend(open.into_iter().map(|(target, start)| (target, start, f64::INFINITY)));
    out
}

fn within(windows: &[(String, f64, f64)], target: Option<&str>, t: f64) -> bool {
    windows.iter().any(|(w, start, end)| target.is_none_or(|x| x == w) && *start <= t && t < *end)
}

fn around(events: &[Event], t: f64) -> Vec<String> {
    events.iter().filter(|e| (e.t() - t).abs() <= 2.0).map(|e| serde_json::to_string(e).unwrap_or_default()).collect()
}

/// Checks `events` (in any order) and the coordinator's `issued` versions.
/// `leeway` is the verification leeway on `exp` (seconds).
pub fn check(events: &[Event], issued: &[Issued], leeway: f64) -> Report {
    let mut events = events.to_vec();
    events.sort_by(|a, b| a.t().total_cmp(&b.t()));
    let mut report = Report::default();
    // Sidecars that were down: frozen or killed, by instance.
    let mut down = windows(&events, "freeze_sidecar");
    down.extend(windows(&events, "kill_sidecar"));
    let cluster_down = windows(&events, "cluster_down");
    let revoked: Vec<(&str, &str, f64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Revoke { t, keyring, kid } => Some((keyring.as_str(), kid.as_str(), *t)),
            _ => None,
        })
        .collect();
    let mut tokens: BTreeMap<u64, (&str, &str, f64, i64)> = BTreeMap::new();
    for event in &events {
        if let Event::Sign { t, keyring, token, kid: Some(kid), exp, result, .. } = event
            && result == "ok"
        {
            report.signed += 1;
            tokens.insert(*token, (keyring.as_str(), kid.as_str(), *t, *exp));
        }
    }
    for event in &events {
        let t = event.t();
        match event {
            Event::Verify { pool, instance, token, result, .. } => {
                let Some(&(keyring, kid, issued_at, exp)) = tokens.get(token) else { continue };
                // Only within the token's lifetime.
                if t < issued_at || t >= exp as f64 - leeway {
                    continue;
                }
                report.verifications += 1;
                let is_down = within(&down, Some(instance), t);
                if within(&cluster_down, None, t) && !is_down {
                    report.served_while_cluster_down += 1;
                }
                match result.as_str() {
                    "ok" => report.accepted += 1,
                    "unavailable" if is_down => report.unavailable_down += 1,
                    "unavailable" if within(&cluster_down, None, t) => report.violations.push(Violation {
                        rule: "served while the cluster is down",
                        what: format!("{pool}/{instance} failed a verification of token {token} with the cluster down"),
                        around: around(&events, t),
                    }),
                    "unavailable" => report.violations.push(Violation {
                        rule: "available",
                        what: format!("{pool}/{instance} was up but did not answer for token {token}"),
                        around: around(&events, t),
                    }),
                    code if revoked.iter().any(|(k, v, at)| *k == keyring && *v == kid && *at <= t) => {
                        let _ = code;
                        report.excused_revoked += 1;
                    }
                    code => report.violations.push(Violation {
                        rule: "every token verifies everywhere until exp",
                        what: format!(
                            "{pool}/{instance} rejected token {token} ({keyring} {kid}, exp {exp}) with {code} at {t:.1}"
                        ),
                        around: around(&events, t),
                    }),
                }
            }
            Event::View { pool, instance, keyring, verifying, .. } => {
                report.views += 1;
                for (kid, expires_at) in verifying {
                    if let Some(expires_at) = expires_at
                        && (*expires_at as f64) < t - leeway
                    {
                        report.violations.push(Violation {
                            rule: "no version served past its expires_at",
                            what: format!(
                                "{pool}/{instance} served {keyring} {kid} at {t:.1}, expired at {expires_at}"
                            ),
                            around: around(&events, t),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    let mut seen: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for entry in issued {
        *report.issued.entry(entry.keyring.clone()).or_default() += 1;
        if let Some(first) = seen.insert((entry.keyring.as_str(), entry.version), entry.kid.as_str()) {
            report.violations.push(Violation {
                rule: "each version issued once",
                what: format!("{} version {} issued twice ({first}, then {})", entry.keyring, entry.version, entry.kid),
                around: Vec::new(),
            });
        }
    }
    report
}

/// Parses a history file's JSON lines.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(t: f64, token: u64, kid: &str, exp: i64) -> Event {
        Event::Sign {
            t,
            pool: "web".into(),
            instance: "web-1".into(),
            keyring: "jwt".into(),
            token,
            kid: Some(kid.into()),
            exp,
            result: "ok".into(),
        }
    }

    fn verify(t: f64, instance: &str, token: u64, result: &str) -> Event {
        Event::Verify {
            t,
            pool: instance.split('-').next().unwrap_or_default().into(),
            instance: instance.into(),
            keyring: "jwt".into(),
            token,
            result: result.into(),
        }
    }

    fn fault(t: f64, kind: &str, target: &str, phase: &str) -> Event {
        Event::Fault { t, kind: kind.into(), target: target.into(), phase: phase.into() }
    }

    fn issued(version: u64) -> Issued {
        Issued { keyring: "jwt".into(), version, kid: format!("jwt-v{version}") }
    }

    #[test]
    fn a_clean_history_passes_with_its_counts() {
        let events =
            vec![sign(100.0, 1, "jwt-v1", 160), verify(101.0, "api-1", 1, "ok"), verify(150.0, "web-2", 1, "ok")];
        let report = check(&events, &[issued(1), issued(2)], 1.0);
        assert!(report.violations.is_empty(), "{}", report.render());
        assert_eq!((report.signed, report.verifications, report.accepted), (1, 2, 2));
        assert_eq!(report.issued["jwt"], 2);
    }

    #[test]
    fn a_rejection_within_the_lifetime_is_a_violation_with_its_slice() {
        let events = vec![sign(100.0, 1, "jwt-v1", 160), verify(120.0, "api-1", 1, "token_kid_unknown")];
        let report = check(&events, &[], 1.0);
        assert_eq!(report.violations.len(), 1, "{}", report.render());
        assert_eq!(report.violations[0].rule, "every token verifies everywhere until exp");
        assert_eq!(report.violations[0].around.len(), 1, "the rejection itself is in the slice");
        // After exp (minus the leeway) a rejection is not a violation.
        let late = check(&[sign(100.0, 1, "jwt-v1", 160), verify(159.5, "api-1", 1, "token_expired")], &[], 1.0);
        assert!(late.violations.is_empty() && late.verifications == 0);
    }

    #[test]
    fn revocations_and_down_sidecars_are_excused_and_counted() {
        let events = vec![
            sign(100.0, 1, "jwt-v1", 300),
            Event::Revoke { t: 110.0, keyring: "jwt".into(), kid: "jwt-v1".into() },
            verify(111.0, "api-1", 1, "token_kid_unknown"),
            fault(120.0, "freeze_sidecar", "api-2", "start"),
            verify(125.0, "api-2", 1, "unavailable"),
            fault(130.0, "freeze_sidecar", "api-2", "end"),
        ];
        let report = check(&events, &[], 1.0);
        assert!(report.violations.is_empty(), "{}", report.render());
        assert_eq!((report.excused_revoked, report.unavailable_down), (1, 1));
        // A rejection before the revocation is still a violation.
        let early = check(&[sign(100.0, 1, "jwt-v1", 300), verify(105.0, "api-1", 1, "token_signature")], &[], 1.0);
        assert_eq!(early.violations.len(), 1);
    }

    #[test]
    fn a_failure_while_the_cluster_is_down_is_a_violation() {
        let events = vec![
            sign(100.0, 1, "jwt-v1", 300),
            fault(110.0, "cluster_down", "all", "start"),
            verify(115.0, "api-1", 1, "ok"),
            verify(116.0, "web-2", 1, "unavailable"),
            fault(140.0, "cluster_down", "all", "end"),
        ];
        let report = check(&events, &[], 1.0);
        assert_eq!(report.served_while_cluster_down, 2);
        assert_eq!(report.violations.len(), 1, "{}", report.render());
        assert_eq!(report.violations[0].rule, "served while the cluster is down");
    }

    #[test]
    fn an_expired_version_served_and_a_version_issued_twice_are_violations() {
        let view = Event::View {
            t: 200.0,
            pool: "web".into(),
            instance: "web-1".into(),
            keyring: "jwt".into(),
            signing: Some("jwt-v2".into()),
            verifying: vec![("jwt-v1".into(), Some(150)), ("jwt-v2".into(), None)],
        };
        let twice = Issued { keyring: "jwt".into(), version: 2, kid: "jwt-v2-other".into() };
        let report = check(&[view], &[issued(1), issued(2), twice], 1.0);
        let rules: Vec<&str> = report.violations.iter().map(|v| v.rule).collect();
        assert_eq!(rules, ["no version served past its expires_at", "each version issued once"], "{}", report.render());
    }

    #[test]
    fn histories_round_trip_as_json_lines() {
        let events = vec![sign(1.5, 7, "k", 9), fault(2.0, "kill_active", "node-1", "start")];
        let text: String = events.iter().map(|e| serde_json::to_string(e).expect("JSON") + "\n").collect();
        assert_eq!(parse(&text), Ok(events));
        assert!(parse("{\"op\":\"nonsense\"}").is_err());
    }
}
