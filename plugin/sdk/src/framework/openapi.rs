//! The mount's OpenAPI 3 document, built from the paths' declarations, in
//! the shape the server merges into `sys/internal/specs/openapi` (it asks
//! each mount for help on its root and reads `openapi` from the answer).

use serde_json::{Map, Value, json};

use super::{FieldType, Path};
use crate::logical::Operation;

/// `(?P<name>[^/]+)` becomes `{name}`; a trailing `/?` (a list) becomes `/`.
fn openapi_path(pattern: &str) -> (String, Vec<String>) {
    let mut out = String::from("/");
    let mut params = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find("(?P<") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 4..];
        let name_end = after.find('>').unwrap_or(after.len());
        let name = &after[..name_end];
        // The segment regex has no nested group: it ends at the next ')'.
        let close = after.find(')').map_or(after.len(), |c| c + 1);
        out.push('{');
        out.push_str(name);
        out.push('}');
        params.push(name.to_string());
        rest = &after[close..];
    }
    out.push_str(rest.strip_suffix("/?").map_or(rest, |r| r).trim_end_matches('?'));
    if rest.ends_with("/?") {
        out.push('/');
    }
    (out, params)
}

fn schema(kind: FieldType) -> Value {
    match kind {
        FieldType::String => json!({"type": "string"}),
        FieldType::Int => json!({"type": "integer"}),
        FieldType::Bool => json!({"type": "boolean"}),
        FieldType::DurationSeconds => json!({"type": "string", "format": "duration"}),
        FieldType::CommaStringSlice => json!({"type": "array", "items": {"type": "string"}}),
        FieldType::Map => json!({"type": "object"}),
    }
}

fn operation_id(verb: &str, path: &str) -> String {
    let words: Vec<&str> = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    format!("lockstep-{verb}-{}", words.join("-"))
}

fn path_item(path: &Path) -> (String, Value) {
    let (name, url_params) = openapi_path(&path.pattern);
    let mut item = Map::new();
    item.insert("description".into(), json!(path.synopsis));
    let parameters: Vec<Value> = path
        .fields
        .iter()
        .filter(|f| url_params.iter().any(|p| p == f.name))
        .map(|f| {
            json!({"name": f.name, "description": f.description, "in": "path", "required": true,
                        "schema": schema(f.kind)})
        })
        .collect();
    item.insert("parameters".into(), Value::Array(parameters));
    let body_fields: Vec<_> = path.fields.iter().filter(|f| !url_params.iter().any(|p| p == f.name)).collect();
    let properties: Map<String, Value> = body_fields
        .iter()
        .map(|f| {
            let mut s = schema(f.kind);
            s["description"] = json!(f.description);
            if let Some(default) = &f.default {
                s["default"] = default.clone();
            }
            (f.name.to_string(), s)
        })
        .collect();
    let ok = json!({"200": {"description": "OK"}, "204": {"description": "empty body"}});
    for op in &path.operations {
        let (verb, extra) = match op.operation {
            Operation::Read => ("get", None),
            Operation::List => (
                "get",
                Some(json!([{"name": "list", "description": "Must be set to true",
                "in": "query", "required": true, "schema": {"type": "string", "enum": ["true"]}}])),
            ),
            Operation::Create | Operation::Update => ("post", None),
            Operation::Delete => ("delete", None),
            _ => continue,
        };
        // Create and update share the one POST.
        if item.contains_key(verb) {
            continue;
        }
        let mut operation = json!({"summary": op.summary, "operationId": operation_id(verb, &name),
                                   "tags": ["secrets"], "responses": ok});
        if let Some(extra) = extra {
            operation["parameters"] = extra;
        }
        if verb == "get" && op.operation == Operation::Read && !properties.is_empty() {
            let query: Vec<Value> = body_fields
                .iter()
                .map(|f| json!({"name": f.name, "description": f.description, "in": "query", "schema": schema(f.kind)}))
                .collect();
            operation["parameters"] = Value::Array(query);
        }
        if verb == "post" && !properties.is_empty() {
            let mut schema = json!({"type": "object", "properties": properties});
            // As the server's own framework lists them: fields a write must
            // carry (on create, for a path that creates and updates).
            let required: Vec<&str> = body_fields.iter().filter(|f| f.required).map(|f| f.name).collect();
            if !required.is_empty() {
                schema["required"] = json!(required);
            }
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        item.insert(verb.into(), operation);
    }
    (name, Value::Object(item))
}

/// The document for `paths`, described by `help`.
pub(super) fn document(help: &str, paths: &[Path]) -> Value {
    let items: Map<String, Value> = paths.iter().map(path_item).collect();
    json!({
        "openapi": "3.0.2",
        "info": {"title": "Lockstep", "description": help.lines().next().unwrap_or_default(), "version": "",
                 "license": {"name": "MIT"}},
        "paths": items,
        "components": {"schemas": {}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_become_openapi_paths() {
        assert_eq!(openapi_path(r"keys/(?P<name>[^/]+)/rotate"), ("/keys/{name}/rotate".into(), vec!["name".into()]));
        assert_eq!(openapi_path("keys/?"), ("/keys/".into(), vec![]));
        assert_eq!(openapi_path("config"), ("/config".into(), vec![]));
    }
}
