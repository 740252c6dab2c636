//! `GET /v1/openapi.json`: the socket API described as OpenAPI 3, from one
//! table of its routes, so clients and fuzzers can be driven by it.

use serde_json::{Map, Value, json};

/// One route: method, path, summary, and the JSON body fields it takes
/// (a trailing `?` marks one it can do without); the query parameters of
/// its path are in [`query`].
struct Route {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: &'static [&'static str],
}

/// The query parameters a path takes, with their schemas.
fn query(path: &str) -> Vec<Value> {
    let parameter = |name: &str, schema: Value, what: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": what});
    let format = parameter(
        "format",
        json!({"type": "string", "enum": ["base64", "jwk", "pem"]}),
        "How material is shown (the configured format when absent).",
    );
    let private = parameter(
        "private",
        json!({"type": "string", "enum": ["true", "false"]}),
        "Include private keys of asymmetric keyrings (sign pools only).",
    );
    match path {
        "/v1/keys/{keyring}" | "/v1/keys/{keyring}/versions/{version}" | "/v1/keys/{keyring}/kids/{kid}" => {
            vec![format, private]
        }
        "/v1/keys/{keyring}/watch" => vec![
            parameter("after", json!({"type": "string"}), "The state token held; the answer waits until it changes."),
            parameter(
                "timeout",
                json!({"type": "integer", "minimum": 0}),
                "Seconds to wait at most (up to the configured socket.max_watch_secs).",
            ),
            format,
            private,
        ],
        _ => Vec::new(),
    }
}

const ROUTES: &[Route] = &[
    Route { method: "get", path: "/healthz", summary: "Liveness.", body: &[] },
    Route {
        method: "get",
        path: "/readyz",
        summary: "Readiness: a valid bundle, fresh enough, signing allowed.",
        body: &[],
    },
    Route { method: "get", path: "/metrics", summary: "Prometheus metrics.", body: &[] },
    Route { method: "get", path: "/v1/keyrings", summary: "The keyrings of the pool's bundle.", body: &[] },
    Route {
        method: "get",
        path: "/v1/keys/{keyring}",
        summary: "The signing version and the verification set.",
        body: &[],
    },
    Route {
        method: "get",
        path: "/v1/keys/{keyring}/versions/{version}",
        summary: "One version by number.",
        body: &[],
    },
    Route { method: "get", path: "/v1/keys/{keyring}/kids/{kid}", summary: "One version by kid.", body: &[] },
    Route {
        method: "get",
        path: "/v1/keys/{keyring}/watch",
        summary: "The keys answer once the keyring's state changes.",
        body: &[],
    },
    Route { method: "post", path: "/v1/jwt/{keyring}/sign", summary: "Sign a JWT.", body: &["claims", "ttl?"] },
    Route {
        method: "post",
        path: "/v1/jwt/{keyring}/verify",
        summary: "Verify a JWT.",
        body: &["token", "audience?", "issuer?", "leeway?", "ignore_audience?"],
    },
    Route { method: "get", path: "/v1/jwks/{keyring}", summary: "The verification set as a JWK Set.", body: &[] },
    Route {
        method: "post",
        path: "/v1/encrypt/{keyring}",
        summary: "Encrypt (AES-256-GCM), one item or a batch.",
        body: &["plaintext?", "associated_data?", "batch?"],
    },
    Route {
        method: "post",
        path: "/v1/decrypt/{keyring}",
        summary: "Decrypt with the version the ciphertext names.",
        body: &["ciphertext?", "associated_data?", "batch?"],
    },
    Route {
        method: "post",
        path: "/v1/rewrap/{keyring}",
        summary: "Encrypt again with the signing version.",
        body: &["ciphertext?", "associated_data?", "batch?"],
    },
    Route { method: "post", path: "/v1/mac/{keyring}", summary: "MAC (HMAC-SHA-256) bytes.", body: &["data"] },
    Route { method: "post", path: "/v1/mac/{keyring}/verify", summary: "Check a MAC.", body: &["data", "mac"] },
    Route { method: "post", path: "/v1/sign/{keyring}", summary: "Sign bytes (asymmetric keyrings).", body: &["data"] },
    Route {
        method: "post",
        path: "/v1/sign/{keyring}/verify",
        summary: "Check a signature over bytes.",
        body: &["data", "signature", "kid?"],
    },
    Route {
        method: "post",
        path: "/v1/webhook/{keyring}/sign",
        summary: "Sign a webhook (Standard Webhooks).",
        body: &["payload", "id?", "timestamp?"],
    },
    Route {
        method: "post",
        path: "/v1/webhook/{keyring}/verify",
        summary: "Verify a webhook (Standard Webhooks).",
        body: &["payload", "headers", "tolerance?"],
    },
    Route { method: "get", path: "/v1/openapi.json", summary: "This document.", body: &[] },
];

/// The fields' types, by name: bytes travel as base64, version-tagged
/// values as `lockstep:v<n>:<base64>`.
fn schema(field: &str) -> Value {
    let tagged = json!({"type": "string", "pattern": "^lockstep:v[0-9]+:[A-Za-z0-9+/]*={0,2}$"});
    match field {
        "ttl" | "leeway" | "timestamp" | "tolerance" => json!({"type": "integer", "minimum": 0}),
        "claims" | "headers" => json!({"type": "object"}),
        "ignore_audience" => json!({"type": "boolean"}),
        "plaintext" | "associated_data" | "data" | "signature" | "payload" => {
            json!({"type": "string", "format": "byte"})
        }
        "ciphertext" | "mac" => tagged,
        "batch" => json!({"type": "array", "minItems": 1, "maxItems": super::ops::MAX_BATCH,
                          "items": {"type": "object", "additionalProperties": false, "properties": {
                              "plaintext": schema("plaintext"), "ciphertext": tagged,
                              "associated_data": schema("associated_data")}}}),
        _ => json!({"type": "string"}),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.path).or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let kind = if name == "version" {
                    json!({"type": "integer", "minimum": 1})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": kind})
            })
            .collect();
        let mut header = vec![json!({"name": "X-Lockstep-Request", "in": "header", "required": true,
                                     "schema": {"type": "string", "enum": ["1"]}})];
        if !route.path.starts_with("/v1/") {
            header.clear();
        }
        let error = json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}});
        let answer = if route.path == "/metrics" {
            json!({"text/plain": {"schema": {"type": "string"}}})
        } else {
            json!({"application/json": {"schema": {"type": "object"}}})
        };
        let parameters: Vec<Value> = params.into_iter().chain(query(route.path)).chain(header).collect();
        let mut operation = json!({"summary": route.summary,
                                   "parameters": parameters,
                                   "responses": {"200": {"description": "OK", "content": answer}, "default": {
                                       "description": "A JSON error {\"error\": {\"code\", \"message\"}}",
                                       "content": {"application/json": {"schema": error}}}}});
        if !route.body.is_empty() {
            let name = |f: &&str| f.trim_end_matches('?').to_string();
            let properties: Map<String, Value> = route.body.iter().map(|f| (name(f), schema(&name(f)))).collect();
            let required: Vec<String> = route.body.iter().filter(|f| !f.ends_with('?')).map(name).collect();
            let mut body = json!({"type": "object", "properties": properties, "additionalProperties": false});
            // OpenAPI 3.0 wants at least one name in a `required` list.
            if !required.is_empty() {
                body["required"] = json!(required);
            }
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        item[route.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Lockstep sidecar socket API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_its_parameters() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), ROUTES.len());
        let decrypt = &paths["/v1/decrypt/{keyring}"]["post"];
        assert_eq!(decrypt["parameters"][0]["name"], "keyring");
        let body = &decrypt["requestBody"]["content"]["application/json"]["schema"];
        assert!(body["properties"]["ciphertext"]["pattern"].is_string(), "{decrypt}");
        assert!(body.get("required").is_none(), "no empty list: {decrypt}");
        let verify = &paths["/v1/sign/{keyring}/verify"]["post"]["requestBody"]["content"]["application/json"];
        assert_eq!(verify["schema"]["required"], json!(["data", "signature"]), "{verify}");
        assert_eq!(verify["schema"]["properties"]["data"]["format"], "byte", "{verify}");
        assert!(paths["/healthz"]["get"]["parameters"].as_array().is_some_and(Vec::is_empty));
        let watch: Vec<&str> = paths["/v1/keys/{keyring}/watch"]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(watch, ["after", "timeout", "format", "private"]);
        let error = &decrypt["responses"]["default"]["content"]["application/json"]["schema"];
        assert_eq!(error["properties"]["error"]["required"], json!(["code", "message"]));
    }

    /// The routes the router serves, read from its match arms: literal
    /// segments kept, bound ones as `{}`.
    fn served() -> Vec<(String, String)> {
        let source = include_str!("router.rs");
        let mut routes = Vec::new();
        for line in source.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix('[') else { continue };
            let Some((pattern, guard)) = rest.split_once("] if ") else { continue };
            let method = guard.split_whitespace().next().unwrap_or_default();
            let segments: Vec<String> = pattern
                .split(", ")
                .map(|segment| match segment.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(literal) => literal.to_string(),
                    None => "{}".to_string(),
                })
                .collect();
            routes.push((method.to_string(), format!("/{}", segments.join("/"))));
        }
        routes.sort();
        routes
    }

    #[test]
    fn the_document_describes_exactly_the_routes_the_router_serves() {
        let bound = |path: &str| {
            path.split('/').map(|s| if s.starts_with('{') { "{}" } else { s }).collect::<Vec<_>>().join("/")
        };
        let mut described: Vec<(String, String)> =
            ROUTES.iter().map(|r| (r.method.to_string(), bound(r.path))).collect();
        described.sort();
        let served = served();
        assert!(served.len() >= 20, "the router's arms were not found: {served:?}");
        assert_eq!(described, served);
    }
}
