//! Counters and gauges, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use lockstep_model::UnixSeconds;

use crate::store::Store;

/// The sidecar's metrics. Labels are fixed names (route templates, error
/// kinds), never caller input, so the series stay few.
#[derive(Debug, Default)]
pub struct Metrics {
    sync_errors: Mutex<BTreeMap<&'static str, u64>>,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    clock_skew: AtomicI64,
    bundles_applied: AtomicI64,
    watches: AtomicI64,
}

/// Counts a watch in flight for as long as it lives.
#[derive(Debug)]
pub struct WatchGuard<'a>(&'a Metrics);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts a failed sync by kind (`unreachable`, `denied`, `invalid`…).
    pub fn sync_error(&self, kind: &'static str) {
        if let Ok(mut map) = self.sync_errors.lock() {
            *map.entry(kind).or_default() += 1;
        }
    }

    /// How many failures of `kind` so far.
    pub fn sync_errors(&self, kind: &str) -> u64 {
        self.sync_errors.lock().map(|m| m.get(kind).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Counts a request.
    pub fn request(&self, route: &'static str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route, status)).or_default() += 1;
        }
    }

    /// Local clock minus server clock, seconds.
    pub fn set_clock_skew(&self, seconds: i64) {
        self.clock_skew.store(seconds, Ordering::Relaxed);
    }

    /// Counts a watch long-poll until the guard is dropped.
    pub fn watch_started(&self) -> WatchGuard<'_> {
        self.watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self)
    }

    /// Counts a bundle swapped in.
    pub fn bundle_applied(&self) {
        self.bundles_applied.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, computed at `now`.
    pub fn render(&self, store: &Store, now: UnixSeconds, skew: u64) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# HELP lockstep_sidecar_keyring_signing_version Version that signs now, per keyring (0: none).\n\
             # TYPE lockstep_sidecar_keyring_signing_version gauge"
        );
        if let Some(snapshot) = store.snapshot() {
            for (name, keyring) in &snapshot.keyrings {
                let version = keyring.state_at(now).signing.unwrap_or(0);
                let _ = writeln!(text, "lockstep_sidecar_keyring_signing_version{{keyring=\"{name}\"}} {version}");
            }
        }
        let _ = writeln!(
            text,
            "# HELP lockstep_sidecar_signing_stopped 1 when this sidecar no longer signs with the keyring: cut off \
             from the coordinator past the signing bound.\n# TYPE lockstep_sidecar_signing_stopped gauge"
        );
        if let Some(snapshot) = store.snapshot() {
            let stopped = store.signing_stopped(&snapshot, now, skew);
            for name in snapshot.keyrings.keys() {
                let value = u8::from(stopped.contains(name));
                let _ = writeln!(text, "lockstep_sidecar_signing_stopped{{keyring=\"{name}\"}} {value}");
            }
        }
        let last = store.last_sync();
        gauge(
            &mut text,
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync (0: never).",
            last.unwrap_or(0),
        );
        let age = last.map_or(-1, |t| now - t);
        gauge(&mut text, "cache_age_seconds", "Seconds since the last successful sync (-1: never).", age);
        gauge(
            &mut text,
            "clock_skew_seconds",
            "Local clock minus Vault's, at the last sync.",
            self.clock_skew.load(Ordering::Relaxed),
        );
        gauge(&mut text, "watches_in_flight", "Watch long-polls waiting.", self.watches.load(Ordering::Relaxed));
        gauge(
            &mut text,
            "bundles_applied_total",
            "Bundles validated and swapped in.",
            self.bundles_applied.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            text,
            "# HELP lockstep_sidecar_sync_errors_total Failed syncs by kind.\n# TYPE lockstep_sidecar_sync_errors_total counter"
        );
        if let Ok(map) = self.sync_errors.lock() {
            for (kind, n) in map.iter() {
                let _ = writeln!(text, "lockstep_sidecar_sync_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(
            text,
            "# HELP lockstep_sidecar_requests_total Socket API requests by route and status.\n# TYPE lockstep_sidecar_requests_total counter"
        );
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(text, "lockstep_sidecar_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        text
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP lockstep_sidecar_{name} {help}\n# TYPE lockstep_sidecar_{name} gauge\nlockstep_sidecar_{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let metrics = Metrics::default();
        let store = Store::new("web");
        metrics.sync_error("unreachable");
        metrics.sync_error("unreachable");
        metrics.request("keys", 200);
        metrics.set_clock_skew(-3);
        store.mark_synced(90);
        let text = metrics.render(&store, 100, 0);
        for line in [
            "lockstep_sidecar_sync_errors_total{kind=\"unreachable\"} 2",
            "lockstep_sidecar_requests_total{route=\"keys\",status=\"200\"} 1",
            "lockstep_sidecar_cache_age_seconds 10",
            "lockstep_sidecar_clock_skew_seconds -3",
            "lockstep_sidecar_last_sync_timestamp_seconds 90",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
