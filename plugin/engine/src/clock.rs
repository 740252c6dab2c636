//! The engine's only source of the current time, so tests can set it.

use std::time::SystemTime;

/// Tells the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> SystemTime;
}

/// The host's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The clock the plugin runs with: the system clock, or in test builds the
/// movable clock described at the `test-clock` feature.
pub fn from_environment() -> std::sync::Arc<dyn Clock> {
    #[cfg(feature = "test-clock")]
    if let Some(path) = std::env::var_os("LOCKSTEP_TEST_CLOCK_FILE") {
        return std::sync::Arc::new(OffsetClock(std::path::PathBuf::from(path)));
    }
    std::sync::Arc::new(SystemClock)
}

/// System time plus an offset in seconds read from a file at every call.
#[cfg(feature = "test-clock")]
#[derive(Debug)]
struct OffsetClock(std::path::PathBuf);

#[cfg(feature = "test-clock")]
impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let offset: u64 = std::fs::read_to_string(&self.0).ok().and_then(|text| text.trim().parse().ok()).unwrap_or(0);
        SystemClock.now() + std::time::Duration::from_secs(offset)
    }
}

/// Formats an instant as RFC 3339 in UTC, as the API shows times.
pub fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
