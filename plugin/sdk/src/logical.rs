//! Requests, responses and errors as an engine sees them, and their
//! translation to and from the wire messages.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::proto::pb;
use crate::storage::Storage;

/// The operation a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    /// GET.
    Read,
    /// POST/PUT on something that does not exist yet (per the existence check).
    Create,
    /// POST/PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// LIST, or GET with `list=true`.
    List,
    /// `path-help` and the OpenAPI document.
    Help,
    /// The host's periodic call.
    Rollback,
    /// Anything else (lease renew/revoke, future operations).
    Other(String),
}

impl Operation {
    /// Parses the wire name.
    pub fn parse(name: &str) -> Self {
        match name {
            "read" => Self::Read,
            "create" => Self::Create,
            "update" => Self::Update,
            "patch" => Self::Patch,
            "delete" => Self::Delete,
            "list" => Self::List,
            "help" => Self::Help,
            "rollback" => Self::Rollback,
            other => Self::Other(other.to_string()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Help => "help",
            Self::Rollback => "rollback",
            Self::Other(name) => name,
        }
    }

    /// Whether the request carries a body the caller wrote.
    pub fn is_write(&self) -> bool {
        matches!(self, Self::Create | Self::Update | Self::Patch)
    }
}

/// One request routed to this mount.
#[derive(Clone)]
pub struct Request {
    /// The host's request id.
    pub id: String,
    /// What to do.
    pub operation: Operation,
    /// Path relative to the mount, without a leading slash.
    pub path: String,
    /// Body or query parameters; `null` from the host becomes empty.
    pub data: Map<String, Value>,
    /// Size of the body as the host sent it, in bytes.
    pub data_len: usize,
    /// Display name of the caller's token (who did it, for records).
    pub display_name: String,
    /// Identity entity of the caller, if any.
    pub entity_id: String,
    /// Accessor of the caller's token, if the host sent one: it names the
    /// token in audit logs and `auth/token/lookup-accessor` without being
    /// the token.
    pub accessor: String,
    /// Full mount path with a trailing slash.
    pub mount_point: String,
    /// This mount's private storage.
    pub storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Field values may be secret; only their names are shown.
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("fields", &self.data.keys().collect::<Vec<_>>())
            .field("mount_point", &self.mount_point)
            .finish()
    }
}

/// Why a request body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("request data is not a JSON object: {0}")]
pub struct DataError(String);

impl Request {
    /// Builds a request from the wire form.
    pub(crate) fn from_wire(request: pb::Request, storage: Arc<dyn Storage>) -> Result<Self, DataError> {
        Ok(Self {
            id: request.id,
            operation: Operation::parse(&request.operation),
            path: request.path,
            data_len: request.data.len(),
            data: decode_data(&request.data)?,
            display_name: request.display_name,
            entity_id: request.entity_id,
            accessor: request.client_token_accessor,
            mount_point: request.mount_point,
            storage,
        })
    }

    /// Who made the request, for records: display name, else entity id.
    pub fn actor(&self) -> &str {
        if !self.display_name.is_empty() {
            &self.display_name
        } else if !self.entity_id.is_empty() {
            &self.entity_id
        } else {
            "unknown"
        }
    }
}

fn decode_data(text: &str) -> Result<Map<String, Value>, DataError> {
    if text.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(DataError(format!("found a JSON {}", json_kind(&other)))),
        Err(error) => Err(DataError(error.to_string())),
    }
}

/// A word for the kind of a JSON value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A successful answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// The response body's `data`.
    pub data: Map<String, Value>,
    /// Warnings shown to the caller.
    pub warnings: Vec<String>,
    /// `data` already serialised; when set it is sent instead of `data`.
    pub encoded: Option<EncodedData>,
}

/// A response's `data` serialised by the engine (a JSON object), for
/// answers it keeps ready. It may carry secrets: `Debug` shows its length.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedData(String);

impl EncodedData {
    /// Wraps the text of a JSON object; anything else is refused, so the
    /// host never receives data it cannot decode.
    pub fn new(json: String) -> Result<Self, LogicalError> {
        match serde_json::from_str::<serde::de::IgnoredAny>(&json) {
            Ok(_) if json.trim_start().starts_with('{') => Ok(Self(json)),
            _ => Err(LogicalError::Internal("encoded response data is not a JSON object".into())),
        }
    }

    /// Wraps text the caller built as a JSON object without checking it.
    pub fn trusted(json: String) -> Self {
        Self(json)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for EncodedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncodedData({} bytes)", self.0.len())
    }
}

impl Response {
    /// A response with this data.
    pub fn with_data(data: Map<String, Value>) -> Self {
        Self { data, warnings: Vec::new(), encoded: None }
    }

    /// A response whose data the engine serialised itself.
    pub fn encoded(data: EncodedData) -> Self {
        Self { data: Map::new(), warnings: Vec::new(), encoded: Some(data) }
    }

    /// The `{"keys": [...]}` answer of a list operation.
    pub fn list(keys: impl IntoIterator<Item = String>) -> Self {
        let keys: Vec<Value> = keys.into_iter().map(Value::String).collect();
        let mut data = Map::new();
        data.insert("keys".into(), Value::Array(keys));
        Self::with_data(data)
    }
}

/// How a request failed, and so which HTTP status the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogicalError {
    /// The caller's input is wrong (400, with this message).
    #[error("{0}")]
    InvalidRequest(String),
    /// The named object does not exist (404, with this message).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (409, with this message).
    #[error("{0}")]
    Conflict(String),
    /// No path of this engine matches (404).
    #[error("unsupported path")]
    UnsupportedPath,
    /// The path exists but not with this operation (405).
    #[error("unsupported operation")]
    UnsupportedOperation,
    /// Storage or another dependency failed (500, with this message).
    #[error("{0}")]
    Internal(String),
    /// This node is a standby serving reads and the request must change
    /// storage: the server runs it again on the active node. Its text is
    /// the host's own read-only error, which the server matches on.
    #[error("{}", crate::storage::READ_ONLY)]
    ReadOnly,
}

// Error types the host understands (its `ProtoError.err_type`).
const ERR_UNKNOWN: u32 = 0;
const ERR_INTERNAL: u32 = 2;
const ERR_CODED: u32 = 3;
const ERR_UNSUPPORTED_OPERATION: u32 = 5;
const ERR_UNSUPPORTED_PATH: u32 = 6;

impl LogicalError {
    /// The wire error for this failure. Invalid requests are answered with a
    /// response instead (see [`reply`]), which is how the host's own engines
    /// return a 400 that carries their message.
    pub(crate) fn to_proto(&self) -> pb::ProtoError {
        let (err_type, err_code) = match self {
            Self::InvalidRequest(_) => (ERR_CODED, 400),
            Self::NotFound(_) => (ERR_CODED, 404),
            Self::Conflict(_) => (ERR_CODED, 409),
            Self::UnsupportedPath => (ERR_UNSUPPORTED_PATH, 0),
            Self::UnsupportedOperation => (ERR_UNSUPPORTED_OPERATION, 0),
            Self::Internal(_) => (ERR_INTERNAL, 0),
            // A plain error with the exact text, as the host's own storage
            // returns it: the server recognises it by its text.
            Self::ReadOnly => (ERR_UNKNOWN, 0),
        };
        pb::ProtoError { err_type, err_msg: self.to_string(), err_code }
    }
}

/// Translates an engine's outcome into the wire reply.
pub(crate) fn reply(outcome: Result<Option<Response>, LogicalError>) -> pb::HandleRequestReply {
    match outcome {
        Ok(Some(response)) => pb::HandleRequestReply { response: Some(encode_response(response)), err: None },
        Ok(None) => pb::HandleRequestReply::default(),
        Err(LogicalError::InvalidRequest(message)) => {
            let mut data = Map::new();
            data.insert("error".into(), Value::String(message));
            pb::HandleRequestReply { response: Some(encode_response(Response::with_data(data))), err: None }
        }
        Err(error) => pb::HandleRequestReply { response: None, err: Some(error.to_proto()) },
    }
}

fn encode_response(response: Response) -> pb::Response {
    pb::Response {
        // Serialising a map of JSON values cannot fail.
        data: match response.encoded {
            Some(EncodedData(text)) if response.data.is_empty() => text,
            // Members added to a ready answer (a flag for this caller) join
            // its object.
            Some(EncodedData(text)) => {
                let extra = Value::Object(response.data).to_string();
                let body = text.trim_end().strip_suffix('}').unwrap_or(&text).trim_end();
                let comma = if body.ends_with('{') { "" } else { "," };
                format!("{body}{comma}{}", &extra[1..])
            }
            None => Value::Object(response.data).to_string(),
        },
        warnings: response.warnings,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_data_are_empty_objects() {
        assert!(decode_data("null").expect("null").is_empty());
        assert!(decode_data("").expect("empty").is_empty());
        assert_eq!(decode_data(r#"{"a":1}"#).expect("object")["a"], 1);
        let error = decode_data("[1]").expect_err("array");
        assert_eq!(error.to_string(), "request data is not a JSON object: found a JSON array");
    }

    #[test]
    fn members_added_to_a_ready_answer_join_its_object() {
        let mut ready = Response::encoded(EncodedData::trusted(r#"{"revision":"r1","keyrings":{}}"#.into()));
        ready.data.insert("heartbeat_due".into(), Value::Bool(true));
        let data: Value = serde_json::from_str(&encode_response(ready).data).expect("one JSON object");
        assert_eq!(data, serde_json::json!({"revision": "r1", "keyrings": {}, "heartbeat_due": true}));
        let mut empty = Response::encoded(EncodedData::trusted("{ }".into()));
        empty.data.insert("a".into(), Value::from(1));
        assert_eq!(encode_response(empty).data, r#"{"a":1}"#);
        let untouched = Response::encoded(EncodedData::trusted(r#"{"b":2}"#.into()));
        assert_eq!(encode_response(untouched).data, r#"{"b":2}"#);
    }

    #[test]
    fn invalid_request_becomes_an_error_response_with_the_message() {
        let reply = reply(Err(LogicalError::InvalidRequest("field \"mode\": must be sign or verify".into())));
        assert!(reply.err.is_none());
        let data: Value = serde_json::from_str(&reply.response.expect("response").data).expect("json");
        assert_eq!(data["error"], "field \"mode\": must be sign or verify");
    }

    #[test]
    fn statuses_map_to_host_error_types() {
        let not_found = LogicalError::NotFound("pool \"a\" not found".into()).to_proto();
        assert_eq!((not_found.err_type, not_found.err_code), (3, 404));
        assert_eq!(not_found.err_msg, "pool \"a\" not found");
        assert_eq!(LogicalError::Conflict("x".into()).to_proto().err_code, 409);
        assert_eq!(LogicalError::UnsupportedPath.to_proto().err_type, 6);
        assert_eq!(LogicalError::UnsupportedOperation.to_proto().err_type, 5);
        assert_eq!(LogicalError::Internal("storage".into()).to_proto().err_type, 2);
    }

    #[test]
    fn encoded_data_is_sent_as_is_and_never_shown() {
        let data = EncodedData::new(r#"{"secret":"c2VjcmV0"}"#.into()).expect("object");
        assert_eq!(format!("{data:?}"), "EncodedData(21 bytes)");
        let reply = reply(Ok(Some(Response::encoded(data))));
        assert_eq!(reply.response.expect("response").data, r#"{"secret":"c2VjcmV0"}"#);
        assert!(EncodedData::new("[1]".into()).is_err());
        assert!(EncodedData::new("{".into()).is_err());
    }

    #[test]
    fn empty_outcomes_send_no_response() {
        let reply = reply(Ok(None));
        assert!(reply.response.is_none() && reply.err.is_none());
        let reply = super::reply(Ok(Some(Response::list(vec!["a".into()]))));
        assert_eq!(reply.response.expect("response").data, r#"{"keys":["a"]}"#);
    }
}
