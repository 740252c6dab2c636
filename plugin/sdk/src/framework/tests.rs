use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::*;
use crate::storage::MemoryStorage;

fn request(operation: Operation, path: &str, data: Value) -> Request {
    Request {
        id: "req-1".into(),
        operation,
        path: path.into(),
        data_len: data.to_string().len(),
        data: data.as_object().cloned().unwrap_or_default(),
        display_name: "token".into(),
        entity_id: String::new(),
        accessor: String::new(),
        mount_point: "lockstep/".into(),
        storage: Arc::new(MemoryStorage::default()),
    }
}

fn echo_backend() -> Backend {
    let echo = handler(|req: Request, data: FieldData| async move {
        let mut out = Map::new();
        out.insert("op".into(), Value::String(req.operation.as_str().into()));
        out.insert("name".into(), json!(data.str("name")));
        out.insert("size".into(), json!(data.int("size")));
        Ok(Some(Response::with_data(out)))
    });
    let path = Path::new(format!("things/{}", name_segment("name")))
        .field(Field::new("name", FieldType::String, "Name of the thing."))
        .field(Field::new("size", FieldType::Int, "Its size.").default_value(json!(1)).required())
        .operation(Operation::Read, "Read a thing.", echo.clone())
        .operation(Operation::Update, "Write a thing.", echo)
        .exists(existence_check(|_req, data: FieldData| async move { Ok(data.str("name") == Some("old")) }))
        .help("Manage things.", "Things are stored.");
    Backend { help: "An engine of things.".into(), paths: vec![path], ..Backend::default() }
}

#[test]
fn the_openapi_document_lists_the_fields_a_write_must_carry() {
    let backend = echo_backend();
    let document = super::openapi::document(&backend.help, &backend.paths);
    let body = &document["paths"]["/things/{name}"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["required"], json!(["size"]), "{document}");
    assert_eq!(body["properties"]["size"]["type"], "integer", "{document}");
}

#[tokio::test]
async fn routes_by_pattern_and_captures_fields() {
    let out = echo_backend().handle_request(request(Operation::Read, "things/a.b-c", json!(null))).await;
    let data = out.expect("ok").expect("response").data;
    assert_eq!(data["name"], "a.b-c");
    assert_eq!(data["size"], 1);
}

#[tokio::test]
async fn unknown_path_and_operation_are_distinguished() {
    let backend = echo_backend();
    let out = backend.handle_request(request(Operation::Read, "nothing/here", json!(null))).await;
    assert_eq!(out, Err(LogicalError::UnsupportedPath));
    let out = backend.handle_request(request(Operation::Delete, "things/a", json!(null))).await;
    assert_eq!(out, Err(LogicalError::UnsupportedOperation));
    // A name segment takes any one segment (the handler judges it), never two.
    let out = backend.handle_request(request(Operation::Read, "things/-a", json!(null))).await;
    assert_eq!(out.ok().flatten().map(|r| r.data["name"].clone()), Some(json!("-a")));
    let out = backend.handle_request(request(Operation::Read, "things/a/b", json!(null))).await;
    assert_eq!(out, Err(LogicalError::UnsupportedPath));
}

#[tokio::test]
async fn create_uses_the_update_handler_and_checks_required_fields() {
    let backend = echo_backend();
    let out = backend.handle_request(request(Operation::Create, "things/a", json!({}))).await;
    assert_eq!(out, Err(LogicalError::InvalidRequest("missing required field \"size\"".into())));
    let out = backend.handle_request(request(Operation::Create, "things/a", json!({"size": 5}))).await;
    assert_eq!(out.expect("ok").expect("response").data["op"], "create");
}

#[tokio::test]
async fn existence_check_reports_found_and_exists() {
    let backend = echo_backend();
    let found = backend.existence_check(request(Operation::Update, "things/old", json!({}))).await;
    assert_eq!(found, Ok((true, true)));
    let found = backend.existence_check(request(Operation::Update, "things/new", json!({}))).await;
    assert_eq!(found, Ok((true, false)));
    let found = backend.existence_check(request(Operation::Update, "other", json!({}))).await;
    assert_eq!(found, Err(LogicalError::UnsupportedPath));
}

#[tokio::test]
async fn help_describes_fields_and_the_root_lists_paths() {
    let backend = echo_backend();
    let out = backend.handle_request(request(Operation::Help, "things/a", json!(null))).await;
    let help = out.expect("ok").expect("response").data["help"].as_str().expect("text").to_string();
    assert!(help.contains("Manage things."), "{help}");
    assert!(help.contains("size (int)") && help.contains("Its size."), "{help}");
    let out = backend.handle_request(request(Operation::Help, "", json!({"requestResponsePrefix": "x"}))).await;
    let help = out.expect("ok").expect("response").data["help"].as_str().expect("text").to_string();
    assert!(help.contains("An engine of things.") && help.contains("^things/"), "{help}");
}

#[tokio::test]
async fn rollback_without_periodic_is_unsupported() {
    let out = echo_backend().handle_request(request(Operation::Rollback, "", json!(null))).await;
    assert_eq!(out, Err(LogicalError::UnsupportedOperation));
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_any_handler_runs() {
    let backend = Backend { max_request_bytes: 64, ..echo_backend() };
    let big = json!({"size": 1, "name": "x".repeat(100)});
    let out = backend.handle_request(request(Operation::Update, "things/a", big)).await;
    assert!(matches!(out, Err(LogicalError::InvalidRequest(m)) if m.contains("at most 64")));
    let small = backend.handle_request(request(Operation::Update, "things/a", json!({"size": 1}))).await;
    assert!(small.is_ok());
}
