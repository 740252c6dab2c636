//! The sidecar's metrics, kept and rendered by the Prometheus client
//! library (`prometheus-client`) in the OpenMetrics text format: counters
//! are counters (`_total`), and the gauges that describe the bundle are
//! set from the store when a scrape asks.

use std::sync::Mutex;

use lockstep_model::UnixSeconds;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::Store;

/// The content type of [`Metrics::render`]'s answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`to_classic`]'s answer: Prometheus's text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header prefers OpenMetrics: its quality
/// is above zero and at least that of the classic text format (`text/plain`,
/// `text/*` or `*/*`). Otherwise the scraper gets the classic format, which
/// every Prometheus-compatible scraper reads.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let (mut openmetrics, mut classic) = (0.0_f64, 0.0_f64);
    for range in accept.into_iter().flat_map(|a| a.split(',')) {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, q)| q.trim().parse::<f64>().unwrap_or(0.0));
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
            "text/plain" | "text/*" | "*/*" => classic = classic.max(quality),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= classic
}

/// [`Metrics::render`]'s OpenMetrics text in the classic text format: a
/// counter family is named as its samples are (`…_total`), and the lines
/// the classic format does not have (`# UNIT`, `# EOF`) are left out. Only
/// for this registry's own output, whose families are counters and gauges.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    route: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyringLabel {
    keyring: String,
}

/// Every kind of sync error, each series present from the start at 0 so
/// that `rate()` and alerts see the first failure.
pub const SYNC_ERROR_KINDS: &[&str] = &[
    "unreachable",
    "denied",
    "not_found",
    "status",
    "decode",
    "auth",
    "auth_file",
    "invalid",
    "setup",
    "cache_read",
    "cache_write",
    "sink",
];

/// What a scrape knows beyond the store.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// The instant the gauges describe.
    pub now: UnixSeconds,
    /// `vault.max_clock_skew_secs`.
    pub max_clock_skew: u64,
    /// `cache.max_age_secs`.
    pub cache_max_age: u64,
    /// What `/readyz` answers now.
    pub ready: bool,
}

/// The sidecar's metrics. Labels are fixed names (route templates, error
/// kinds) or the bundle's keyring names, never caller input, so the series
/// stay few.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sync_errors: Family<KindLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    results: Family<ResultLabels, Counter>,
    bundles_applied: Counter,
    clock_skew: Gauge,
    watches: Gauge,
    signing_version: Family<KeyringLabel, Gauge>,
    signing_stopped: Family<KeyringLabel, Gauge>,
    signing_bound: Family<KeyringLabel, Gauge>,
    last_sync: Gauge,
    cache_age: Gauge,
    cache_max_age: Gauge,
    max_clock_skew: Gauge,
    ready: Gauge,
    // One scrape at a time sets the bundle's gauges and encodes.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lockstep_sidecar");
        let metrics = Self {
            sync_errors: Family::default(),
            requests: Family::default(),
            results: Family::default(),
            bundles_applied: Counter::default(),
            clock_skew: Gauge::default(),
            watches: Gauge::default(),
            signing_version: Family::default(),
            signing_stopped: Family::default(),
            signing_bound: Family::default(),
            last_sync: Gauge::default(),
            cache_age: Gauge::default(),
            cache_max_age: Gauge::default(),
            max_clock_skew: Gauge::default(),
            ready: Gauge::default(),
            scrape: Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register("sync_errors", "Failed syncs by kind", metrics.sync_errors.clone());
        registry.register("requests", "Socket API requests by route and status", metrics.requests.clone());
        registry.register(
            "results",
            "Socket API answers by route and result: ok or the error code; each item of a batch also counts, \
             under the route with _item",
            metrics.results.clone(),
        );
        registry.register("bundles_applied", "Bundles validated and swapped in", metrics.bundles_applied.clone());
        registry.register(
            "clock_skew_seconds",
            "Local clock minus Vault's, at the last sync",
            metrics.clock_skew.clone(),
        );
        registry.register("watches_in_flight", "Watch long-polls waiting", metrics.watches.clone());
        registry.register(
            "keyring_signing_version",
            "Version that signs now, per keyring (0: none)",
            metrics.signing_version.clone(),
        );
        registry.register(
            "signing_stopped",
            "1 when this sidecar no longer signs with the keyring: cut off from the coordinator past the signing bound",
            metrics.signing_stopped.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync (0: never)",
            metrics.last_sync.clone(),
        );
        registry.register(
            "cache_age_seconds",
            "Seconds since the last successful sync (-1: never)",
            metrics.cache_age.clone(),
        );
        registry.register(
            "signing_bound_timestamp_seconds",
            "Unix time after which this sidecar stops signing with the keyring unless a bundle arrives (0: no bound)",
            metrics.signing_bound.clone(),
        );
        registry.register(
            "cache_max_age_seconds",
            "cache.max_age_secs: readiness turns false beyond",
            metrics.cache_max_age.clone(),
        );
        registry.register(
            "max_clock_skew_seconds",
            "vault.max_clock_skew_secs: the skew warned about",
            metrics.max_clock_skew.clone(),
        );
        registry.register("ready", "1 when /readyz answers 200", metrics.ready.clone());
        for kind in SYNC_ERROR_KINDS {
            let _created = metrics.sync_errors.get_or_create(&KindLabel { kind });
        }
        Self { registry, ..metrics }
    }
}

/// Counts a watch in flight for as long as it lives.
#[derive(Debug)]
pub struct WatchGuard<'a>(&'a Metrics);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.watches.dec();
    }
}

impl Metrics {
    /// Counts a failed sync by kind (`unreachable`, `denied`, `invalid`…).
    pub fn sync_error(&self, kind: &'static str) {
        self.sync_errors.get_or_create(&KindLabel { kind }).inc();
    }

    /// How many failures of `kind` so far.
    pub fn sync_errors(&self, kind: &'static str) -> u64 {
        self.sync_errors.get_or_create(&KindLabel { kind }).get()
    }

    /// Counts a request.
    pub fn request(&self, route: &'static str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// Counts an answer of `route` by its result: `ok` or the error code.
    pub fn result(&self, route: &'static str, result: &'static str) {
        self.results.get_or_create(&ResultLabels { route, result }).inc();
    }

    /// Local clock minus server clock, seconds.
    pub fn set_clock_skew(&self, seconds: i64) {
        self.clock_skew.set(seconds);
    }

    /// Counts a watch long-poll until the guard is dropped.
    pub fn watch_started(&self) -> WatchGuard<'_> {
        self.watches.inc();
        WatchGuard(self)
    }

    /// Counts a bundle swapped in.
    pub fn bundle_applied(&self) {
        self.bundles_applied.inc();
    }

    /// The exposition (OpenMetrics text, [`CONTENT_TYPE`]), with the
    /// bundle's gauges computed at `now`.
    pub fn render(&self, store: &Store, scrape: &Scrape) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let (now, skew) = (scrape.now, scrape.max_clock_skew);
        // Keyrings leave bundles: their series go with them.
        self.signing_version.clear();
        self.signing_stopped.clear();
        self.signing_bound.clear();
        if let Some(snapshot) = store.snapshot() {
            let stopped = store.signing_stopped(&snapshot, now, skew);
            for (name, keyring) in &snapshot.keyrings {
                let label = KeyringLabel { keyring: name.clone() };
                let version = keyring.state_at(now).signing.unwrap_or(0);
                self.signing_version.get_or_create(&label).set(i64::try_from(version).unwrap_or(i64::MAX));
                self.signing_stopped.get_or_create(&label).set(i64::from(stopped.contains(name)));
                self.signing_bound.get_or_create(&label).set(store.sign_until(&snapshot, name, skew).unwrap_or(0));
            }
        }
        self.cache_max_age.set(i64::try_from(scrape.cache_max_age).unwrap_or(i64::MAX));
        self.max_clock_skew.set(i64::try_from(skew).unwrap_or(i64::MAX));
        self.ready.set(i64::from(scrape.ready));
        let last = store.last_sync();
        self.last_sync.set(last.unwrap_or(0));
        self.cache_age.set(last.map_or(-1, |t| now - t));
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
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
        metrics.result("decrypt", "version_revoked");
        metrics.set_clock_skew(-3);
        store.mark_synced(90);
        let text = metrics.render(&store, &Scrape { now: 100, max_clock_skew: 5, cache_max_age: 600, ready: true });
        for line in [
            "lockstep_sidecar_sync_errors_total{kind=\"unreachable\"} 2",
            "lockstep_sidecar_sync_errors_total{kind=\"sink\"} 0",
            "lockstep_sidecar_requests_total{route=\"keys\",status=\"200\"} 1",
            "lockstep_sidecar_results_total{route=\"decrypt\",result=\"version_revoked\"} 1",
            "# TYPE lockstep_sidecar_results counter",
            "lockstep_sidecar_cache_age_seconds 10",
            "lockstep_sidecar_clock_skew_seconds -3",
            "lockstep_sidecar_last_sync_timestamp_seconds 90",
            "# TYPE lockstep_sidecar_requests counter",
            "# TYPE lockstep_sidecar_bundles_applied counter",
            "# TYPE lockstep_sidecar_cache_age_seconds gauge",
            "lockstep_sidecar_cache_max_age_seconds 600",
            "lockstep_sidecar_max_clock_skew_seconds 5",
            "lockstep_sidecar_ready 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // The library ends each help text with a period; ours add none.
        assert!(text.lines().filter(|l| l.starts_with("# HELP ")).all(|l| !l.ends_with("..")), "{text}");
        let classic = to_classic(&text);
        for line in [
            "# HELP lockstep_sidecar_requests_total Socket API requests by route and status.",
            "# TYPE lockstep_sidecar_requests_total counter",
            "lockstep_sidecar_requests_total{route=\"keys\",status=\"200\"} 1",
            "# TYPE lockstep_sidecar_cache_age_seconds gauge",
        ] {
            assert!(classic.lines().any(|l| l == line), "{line} missing in\n{classic}");
        }
        assert!(!classic.contains("# EOF") && !classic.contains("# TYPE lockstep_sidecar_requests counter"));
    }

    #[test]
    fn a_scraper_gets_openmetrics_only_when_it_asks() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/OpenMetrics-text")));
        assert!(wants_openmetrics(Some("text/plain; q=0.2, application/openmetrics-text; Q = 0.9")));
        for classic in [
            None,
            Some("text/plain"),
            Some("*/*"),
            Some("application/openmetrics-text; q=0, text/plain"),
            Some("application/openmetrics-text;Q=0"),
            Some("text/plain;q=1, application/openmetrics-text;q=0.1"),
        ] {
            assert!(!wants_openmetrics(classic), "{classic:?}");
        }
    }
}
