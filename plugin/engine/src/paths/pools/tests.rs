use std::sync::Arc;

use serde_json::{Value, json};
use vault_plugin_sdk::SetupContext;
use vault_plugin_sdk::framework::Backend;
use vault_plugin_sdk::logical::{LogicalError, Operation, Request};
use vault_plugin_sdk::storage::{MemoryStorage, Storage};
use vault_plugin_sdk::system::SystemView;

use crate::SystemClock;

fn engine(storage: &MemoryStorage) -> Backend {
    let setup = SetupContext {
        config: Default::default(),
        backend_uuid: "uuid".into(),
        storage: Arc::new(storage.clone()),
        system: SystemView::unavailable(),
    };
    crate::backend(setup, Arc::new(SystemClock))
}

fn request(storage: &MemoryStorage, operation: Operation, path: &str, data: Value) -> Request {
    Request {
        id: "1".into(),
        operation,
        path: path.into(),
        data_len: data.to_string().len(),
        data: data.as_object().cloned().unwrap_or_default(),
        display_name: "token-alice".into(),
        entity_id: String::new(),
        accessor: String::new(),
        mount_point: "lockstep/".into(),
        storage: Arc::new(storage.clone()),
    }
}

async fn call(storage: &MemoryStorage, op: Operation, path: &str, data: Value) -> Result<Option<Value>, LogicalError> {
    let out = engine(storage).handle_request(request(storage, op, path, data)).await?;
    Ok(out.map(|r| Value::Object(r.data)))
}

#[tokio::test]
async fn create_read_update_list_delete() {
    let storage = MemoryStorage::default();
    let created =
        call(&storage, Operation::Create, "pools/web", json!({"keyrings": "jwt,session, jwt", "mode": "sign"})).await;
    assert_eq!(created, Ok(Some(json!({"name": "web", "keyrings": ["jwt", "session"], "mode": "sign"}))));
    // An update that names only the mode keeps the keyrings.
    call(&storage, Operation::Update, "pools/web", json!({"mode": "verify"})).await.expect("update");
    let read = call(&storage, Operation::Read, "pools/web", json!(null)).await.expect("read");
    assert_eq!(read, Some(json!({"name": "web", "keyrings": ["jwt", "session"], "mode": "verify"})));
    call(&storage, Operation::Create, "pools/api", json!({})).await.expect("create");
    let listed = call(&storage, Operation::List, "pools/", json!(null)).await.expect("list");
    assert_eq!(listed, Some(json!({"keys": ["api", "web"]})));
    call(&storage, Operation::Delete, "pools/web", json!(null)).await.expect("delete");
    assert_eq!(call(&storage, Operation::Read, "pools/web", json!(null)).await, Ok(None));
}

#[tokio::test]
async fn a_pool_created_without_a_mode_only_verifies_and_the_answer_says_so() {
    let storage = MemoryStorage::default();
    let answer = engine(&storage)
        .handle_request(request(&storage, Operation::Create, "pools/web", json!({"keyrings": "jwt"})))
        .await
        .expect("create")
        .expect("an answer");
    assert_eq!(answer.data.get("mode"), Some(&json!("verify")));
    assert!(
        answer.warnings.iter().any(|w| w.contains("no mode given") && w.contains("mode=sign")),
        "{:?}",
        answer.warnings
    );
    // An update without a mode keeps the one the pool has, and says nothing.
    call(&storage, Operation::Update, "pools/web", json!({"mode": "sign"})).await.expect("update");
    let answer = engine(&storage)
        .handle_request(request(&storage, Operation::Update, "pools/web", json!({"keyrings": "jwt,other"})))
        .await
        .expect("update")
        .expect("an answer");
    assert_eq!(answer.data.get("mode"), Some(&json!("sign")));
    assert!(answer.warnings.iter().all(|w| !w.contains("no mode given")), "{:?}", answer.warnings);
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let storage = MemoryStorage::default();
    let out = call(&storage, Operation::Create, "pools/web", json!({"mode": "admin"})).await;
    assert_eq!(
        out,
        Err(LogicalError::InvalidRequest("field \"mode\": \"admin\" is not a mode; use \"sign\" or \"verify\"".into()))
    );
    let out = call(&storage, Operation::Create, "pools/web", json!({"keyrings": ["ok", "no/slash"]})).await;
    assert!(matches!(out, Err(LogicalError::InvalidRequest(m)) if m.starts_with("field \"keyrings\": \"no/slash\"")));
    let long = "p".repeat(65);
    let out = call(&storage, Operation::Create, &format!("pools/{long}"), json!({})).await;
    assert!(matches!(out, Err(LogicalError::InvalidRequest(m)) if m.starts_with("field \"name\"")));
    assert!(storage.list("pools/").await.expect("list").is_empty());
}

#[tokio::test]
async fn unreadable_records_are_internal_errors_not_empty_answers() {
    let storage = MemoryStorage::default();
    storage.put("pools/web", b"{not json".to_vec()).await.expect("put");
    let out = call(&storage, Operation::Read, "pools/web", json!(null)).await;
    assert!(matches!(out, Err(LogicalError::Internal(m)) if m.contains("unreadable")));
    storage.put("pools/web", br#"{"format":9,"record":{"keyrings":[],"mode":"sign"}}"#.to_vec()).await.expect("put");
    let out = call(&storage, Operation::Read, "pools/web", json!(null)).await;
    assert!(matches!(out, Err(LogicalError::Internal(m)) if m.contains("layout 9")));
}

#[tokio::test]
async fn periodic_calls_show_in_info() {
    let storage = MemoryStorage::default();
    let engine = engine(&storage);
    let info = engine.handle_request(request(&storage, Operation::Read, "info", json!(null))).await;
    let data = info.expect("ok").expect("response").data;
    assert_eq!(data["last_periodic"], Value::Null);
    assert_eq!(data["plugin_version"], crate::VERSION);
    engine.handle_request(request(&storage, Operation::Rollback, "", json!(null))).await.expect("periodic");
    let info = engine.handle_request(request(&storage, Operation::Read, "info", json!(null))).await;
    let data = info.expect("ok").expect("response").data;
    assert_eq!(data["periodic_calls"], 1);
    assert!(data["last_periodic"].is_string());
}
