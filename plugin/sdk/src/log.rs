//! Log records on stderr in the JSON form the host parses and re-logs
//! under the plugin's name, with levels preserved.
//!
//! Each line is an object with string `@level`, `@message`, `@timestamp`
//! (`2006-01-02T15:04:05.000000Z07:00` layout, or the host ignores the line's
//! structure) and `@module`; an event's other fields follow as keys.

use std::io::Write as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Crates whose chatter is only passed on from warnings up.
const NOISY: &[&str] = &["h2", "hyper", "hyper_util", "tower", "tonic", "rustls", "tokio_rustls"];

/// Installs the JSON logger for the whole process.
pub fn init(module: &'static str) {
    let _ = tracing_subscriber::registry().with(HostLog { module }).try_init();
}

/// A layer writing one JSON object per event to stderr.
#[derive(Debug, Clone, Copy)]
pub struct HostLog {
    module: &'static str,
}

impl<S: Subscriber> Layer<S> for HostLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        let noisy = NOISY.iter().any(|c| metadata.target() == *c || metadata.target().starts_with(&format!("{c}::")));
        !noisy || *metadata.level() <= Level::WARN
    }

    // A log record is stamped with the wall clock; it decides nothing.
    #[allow(clippy::disallowed_methods)]
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_record(self.module, event, time::OffsetDateTime::now_utc());
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(line.as_bytes());
    }
}

fn format_record(module: &str, event: &Event<'_>, now: time::OffsetDateTime) -> String {
    let mut fields = FieldMap::default();
    event.record(&mut fields);
    let mut record = Map::new();
    record.insert("@level".into(), Value::String(level_name(*event.metadata().level()).into()));
    record.insert("@message".into(), Value::String(fields.message.unwrap_or_default()));
    record.insert("@timestamp".into(), Value::String(timestamp(now)));
    record.insert("@module".into(), Value::String(module.into()));
    record.extend(fields.others);
    format!("{}\n", Value::Object(record))
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// UTC with microseconds, the only layout the host accepts.
pub fn timestamp(now: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    now.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_default()
}

#[derive(Default)]
struct FieldMap {
    message: Option<String>,
    others: Map<String, Value>,
}

impl Visit for FieldMap {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

impl FieldMap {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            // The message must be a string for the host.
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.others.insert(field.name().into(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures formatted records instead of writing to stderr.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let now = time::macros::datetime!(2026-11-26 12:00:00.5 UTC);
            self.0.lock().expect("lock").push(format_record("lockstep", event, now));
        }
    }

    #[test]
    fn records_carry_host_keys_as_strings() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(mount = "lockstep/", attempts = 3u64, "storage is slow");
        });
        let line = lines.lock().expect("lock").pop().expect("one record");
        let record: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(record["@level"], "warn");
        assert_eq!(record["@message"], "storage is slow");
        assert_eq!(record["@timestamp"], "2026-11-26T12:00:00.500000Z");
        assert_eq!(record["@module"], "lockstep");
        assert_eq!(record["mount"], "lockstep/");
        assert_eq!(record["attempts"], 3);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
    }
}
