//! Typed request fields: declaration, parsing and access.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::logical::{LogicalError, Operation, json_kind};

/// The type of a field, which decides how its raw JSON is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string; numbers and booleans are accepted and turned into text.
    String,
    /// A whole number, or a string holding one (query parameters are strings).
    Int,
    /// `true`/`false`, or a string holding one.
    Bool,
    /// A duration in whole seconds: a number, or a string such as `90`,
    /// `90s`, `15m`, `2h`, `7d` or `1h30m`. Negative values are refused.
    DurationSeconds,
    /// A list of strings: a JSON array, or one comma-separated string.
    CommaStringSlice,
    /// A JSON object.
    Map,
}

impl FieldType {
    /// The name shown in help.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::DurationSeconds => "duration (sec)",
            Self::CommaStringSlice => "comma-string-slice",
            Self::Map => "map",
        }
    }
}

/// One declared field of a path.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its name in the body, query or URL.
    pub name: &'static str,
    /// How to parse it.
    pub kind: FieldType,
    /// What it means, for help.
    pub description: &'static str,
    /// Used when the request does not set it.
    pub default: Option<Value>,
    /// Whether a write must set it.
    pub required: bool,
}

impl Field {
    /// A field with no default that is not required.
    pub fn new(name: &'static str, kind: FieldType, description: &'static str) -> Self {
        Self { name, kind, description, default: None, required: false }
    }

    /// Sets the default.
    pub fn default_value(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    /// Marks the field as required on create.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// The validated fields of one request.
#[derive(Debug, Clone, Default)]
pub struct FieldData {
    /// Parsed values of the fields the request set.
    set: BTreeMap<&'static str, Value>,
    /// Defaults of the fields it did not set.
    defaults: BTreeMap<&'static str, Value>,
}

// Query parameters the host itself adds and engines never declare.
const HOST_PARAMETERS: &[&str] = &["list", "help"];

impl FieldData {
    /// Parses `raw` (the body and the path's captures) against `fields`.
    /// Unknown fields are refused on writes, so a mistyped name is never
    /// silently ignored.
    pub fn parse(fields: &[Field], raw: &Map<String, Value>, operation: &Operation) -> Result<Self, LogicalError> {
        let mut data = Self::default();
        for (name, value) in raw {
            match fields.iter().find(|f| f.name == name) {
                Some(field) => {
                    data.set.insert(field.name, parse_value(field, value)?);
                }
                None if operation.is_write() => {
                    let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
                    return Err(LogicalError::InvalidRequest(format!(
                        "unknown field {name:?}; this path accepts: {}",
                        known.join(", ")
                    )));
                }
                None if HOST_PARAMETERS.contains(&name.as_str()) => {}
                None => {
                    return Err(LogicalError::InvalidRequest(format!("unknown parameter {name:?}")));
                }
            }
        }
        for field in fields {
            if let Some(default) = &field.default {
                data.defaults.insert(field.name, default.clone());
            }
        }
        Ok(data)
    }

    /// Fails with a message naming the first required field not set.
    pub fn require(&self, fields: &[Field]) -> Result<(), LogicalError> {
        match fields.iter().find(|f| f.required && !self.set.contains_key(f.name)) {
            Some(field) => Err(LogicalError::InvalidRequest(format!("missing required field {:?}", field.name))),
            None => Ok(()),
        }
    }

    /// Whether the request set this field.
    pub fn is_set(&self, name: &str) -> bool {
        self.set.contains_key(name)
    }

    fn value(&self, name: &str) -> Option<&Value> {
        self.set.get(name).or_else(|| self.defaults.get(name))
    }

    /// A string field (set, else its default).
    pub fn str(&self, name: &str) -> Option<&str> {
        self.value(name).and_then(Value::as_str)
    }

    /// An int field.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.value(name).and_then(Value::as_i64)
    }

    /// A bool field.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.value(name).and_then(Value::as_bool)
    }

    /// A duration field, in seconds.
    pub fn duration_secs(&self, name: &str) -> Option<u64> {
        self.value(name).and_then(Value::as_u64)
    }

    /// A string-list field.
    pub fn strings(&self, name: &str) -> Option<Vec<String>> {
        let items = self.value(name)?.as_array()?;
        Some(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
    }

    /// A map field.
    pub fn map(&self, name: &str) -> Option<&Map<String, Value>> {
        self.value(name).and_then(Value::as_object)
    }
}

fn invalid(field: &Field, expected: &str, got: &Value) -> LogicalError {
    LogicalError::InvalidRequest(format!("field {:?}: expected {expected}, got a {}", field.name, json_kind(got)))
}

fn parse_value(field: &Field, value: &Value) -> Result<Value, LogicalError> {
    match field.kind {
        FieldType::String => match value {
            Value::String(_) => Ok(value.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(invalid(field, "a string", other)),
        },
        FieldType::Int => match value {
            Value::Number(n) if n.is_i64() => Ok(value.clone()),
            Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| {
                LogicalError::InvalidRequest(format!("field {:?}: {s:?} is not a whole number", field.name))
            }),
            other => Err(invalid(field, "a whole number", other)),
        },
        FieldType::Bool => match value {
            Value::Bool(_) => Ok(value.clone()),
            Value::String(s) => match s.trim() {
                "true" | "1" => Ok(Value::Bool(true)),
                "false" | "0" => Ok(Value::Bool(false)),
                _ => Err(LogicalError::InvalidRequest(format!("field {:?}: {s:?} is not true or false", field.name))),
            },
            other => Err(invalid(field, "true or false", other)),
        },
        FieldType::DurationSeconds => parse_duration(value)
            .map(Value::from)
            .map_err(|why| LogicalError::InvalidRequest(format!("field {:?}: {why}", field.name))),
        FieldType::CommaStringSlice => match value {
            Value::String(s) => Ok(Value::Array(
                s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
            )),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
            other => Err(invalid(field, "a list of strings", other)),
        },
        FieldType::Map => match value {
            Value::Object(_) => Ok(value.clone()),
            other => Err(invalid(field, "an object", other)),
        },
    }
}

/// Parses a duration into whole seconds.
pub fn parse_duration(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(secs) if secs >= 0 => Ok(secs.unsigned_abs()),
            Some(_) => Err("must not be negative".into()),
            None => Err(format!("{n} is not a whole number of seconds")),
        },
        Value::String(s) => parse_duration_text(s.trim()),
        other => Err(format!("expected a duration, got a {}", json_kind(other))),
    }
}

fn parse_duration_text(text: &str) -> Result<u64, String> {
    if text.starts_with('-') {
        return Err("must not be negative".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let bad = || format!("{text:?} is not a duration (examples: 90, 90s, 15m, 2h, 7d, 1h30m)");
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| "is too large".to_string())?;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<Field> {
        vec![
            Field::new("name", FieldType::String, "the name").required(),
            Field::new("count", FieldType::Int, "a count").default_value(json!(3)),
            Field::new("enabled", FieldType::Bool, "a flag"),
            Field::new("period", FieldType::DurationSeconds, "a period"),
            Field::new("items", FieldType::CommaStringSlice, "some items"),
        ]
    }

    fn parse(raw: Value, op: Operation) -> Result<FieldData, LogicalError> {
        FieldData::parse(&fields(), raw.as_object().expect("object"), &op)
    }

    #[test]
    fn values_are_parsed_by_type_and_defaults_apply() {
        let data =
            parse(json!({"name": "a", "enabled": "true", "period": "1h30m", "items": "x, y,,z"}), Operation::Update)
                .expect("valid");
        assert_eq!(data.str("name"), Some("a"));
        assert_eq!(data.int("count"), Some(3));
        assert!(!data.is_set("count"));
        assert_eq!(data.bool("enabled"), Some(true));
        assert_eq!(data.duration_secs("period"), Some(5_400));
        assert_eq!(data.strings("items"), Some(vec!["x".into(), "y".into(), "z".into()]));
    }

    #[test]
    fn errors_name_the_field() {
        let error = parse(json!({"count": "ten"}), Operation::Update).expect_err("bad int");
        assert_eq!(error, LogicalError::InvalidRequest("field \"count\": \"ten\" is not a whole number".into()));
        let error = parse(json!({"period": "-5s"}), Operation::Update).expect_err("negative");
        assert_eq!(error.to_string(), "field \"period\": must not be negative");
        let error = parse(json!({"period": "5 weeks"}), Operation::Update).expect_err("unit");
        assert!(error.to_string().starts_with("field \"period\": \"5 weeks\" is not a duration"));
        let error = parse(json!({"enabled": [true]}), Operation::Update).expect_err("array");
        assert_eq!(error.to_string(), "field \"enabled\": expected true or false, got a array");
    }

    #[test]
    fn unknown_fields_are_refused_on_writes_and_reads() {
        let error = parse(json!({"nmae": "a"}), Operation::Create).expect_err("unknown");
        assert!(error.to_string().starts_with("unknown field \"nmae\""), "{error}");
        assert!(parse(json!({"list": "true"}), Operation::List).is_ok());
        assert!(parse(json!({"verbose": "1"}), Operation::Read).is_err());
    }

    #[test]
    fn required_fields_are_named() {
        let data = parse(json!({"count": 1}), Operation::Create).expect("parse");
        let error = data.require(&fields()).expect_err("missing");
        assert_eq!(error.to_string(), "missing required field \"name\"");
    }

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        assert_eq!(parse_duration(&json!(90)), Ok(90));
        assert_eq!(parse_duration(&json!("90")), Ok(90));
        assert_eq!(parse_duration(&json!("7d")), Ok(604_800));
        assert_eq!(parse_duration(&json!("2h15m10s")), Ok(8_110));
        assert!(parse_duration(&json!("h")).is_err());
        assert!(parse_duration(&json!("10x")).is_err());
        assert!(parse_duration(&json!(1.5)).is_err());
        assert!(parse_duration(&json!("99999999999999999999d")).is_err());
    }
}
