//! `/openapi.json`: an OpenAPI 3.1 document of every route in API.md. A test checks it
//! against [`crate::routes::ROUTES`] both ways, so it cannot drift from what is served.

use serde_json::{Value, json};

/// `If-Match` / `If-None-Match` as `conditional::parse` takes them: `*`, or entity
/// tags (`"42"`, `W/"42"`) separated by commas, blanks and empty elements allowed.
const CONDITION_PATTERN: &str =
    r#"^([ \t]*\*[ \t]*|[ \t,]*(W/)?"[!#-~]*"([ \t]*,[ \t,]*(W/)?"[!#-~]*")*[ \t,]*)$"#;
/// A key, API.md's rule.
const KEY_PATTERN: &str = "^[A-Za-z0-9_-]{1,256}$";
/// A media type `type/subtype[; params]`, as `media::parse` takes it.
const MEDIA_TYPE_PATTERN: &str =
    r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+([ \t]*;.*)?$";

/// The whole document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "caskade store API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A durable key-value store over HTTP. Every error is the envelope \
                `{\"ok\": false, \"errors\": [...]}`; see components.schemas.ErrorEnvelope.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "Needed on /v1 routes when the server runs with --auth-tokens. \
                    Scopes: read (GET, HEAD), write (PUT, DELETE, POST /v1/bulk), admin (/v1/admin/*)."}},
            "parameters": parameters(),
            "schemas": schemas(),
            "responses": responses()
        },
        "security": [{"bearer": []}]
    })
}

fn paths() -> Value {
    json!({
        "/healthz": get_and_head(service_op("Liveness: 200 whenever the process serves HTTP",
            ok_response("alive", json!({"type": "object", "properties": {"status": {"const": "alive"}}})))),
        "/readyz": get_and_head(service_op("Readiness: 200 once recovery finished, 503 before and while shutting down",
            with_error(ok_response("ready", json!({"type": "object", "properties": {"ready": {"const": true}}})), "503"))),
        "/metrics": get_and_head(service_op("Prometheus metrics, text format 0.0.4", json!({
            "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}))),
        "/openapi.json": get_and_head(service_op("This document", json!({
            "200": {"description": "OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}}))),
        "/v1/kv/{entity}/{key}": {
            "parameters": [param_ref("entity"), param_ref("key")],
            "put": put_op(),
            "get": get_entry_op(),
            "head": head_op("Headers of GET /v1/kv/{entity}/{key}/value, no body (404 too)"),
            "delete": delete_op()
        },
        "/v1/kv/{entity}/{key}/value": {
            "parameters": [param_ref("entity"), param_ref("key")],
            "get": get_value_op(),
            "head": head_op("Headers of GET …/value, no body")
        },
        "/v1/kv/{entity}": {
            "parameters": [param_ref("entity")],
            "get": list_op(),
            "head": head_op("Headers of the list, no body")
        },
        "/v1/bulk": {"post": bulk_op()},
        "/v1/admin/stats": get_and_head(op("Store statistics (scope admin)",
            with_errors(ok_response("stats", schema_ref("Stats")), &["401", "403", "503"]))),
        "/v1/admin/compact": {"post": compact_op()},
        "/v1/admin/backup": {"post": op("Write a consistent copy of the store into a new folder under --backup-dir (scope admin); 200 once it is complete and synced. \
            409 backup-in-progress while another runs, 501 backup-not-configured without --backup-dir, 500 backup-failed when the folder cannot be written.",
            with_errors(ok_response("backup written", schema_ref("BackupResult")), &["401", "403", "409", "422", "501", "503", "507"]))}
    })
}

/// A GET operation and its HEAD twin (same responses, no body).
fn get_and_head(get: Value) -> Value {
    let mut head = get.clone();
    head["summary"] = json!(format!(
        "{} (headers only)",
        get["summary"].as_str().unwrap_or("")
    ));
    json!({"get": get, "head": head})
}

fn op(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "responses": responses})
}

/// Service routes are outside /v1 and never need a token.
fn service_op(summary: &str, responses: Value) -> Value {
    json!({"summary": summary, "security": [], "responses": responses})
}

fn head_op(summary: &str) -> Value {
    op(
        summary,
        with_errors(
            json!({"200": {"description": "headers only", "headers": value_headers()},
        "304": {"description": "not modified"}}),
            &["401", "403", "404", "422", "503"],
        ),
    )
}

fn put_op() -> Value {
    json!({
        "summary": "Store or update a value: a JSON envelope, or raw bytes with their Content-Type",
        "parameters": [
            {"name": "ttl", "in": "query", "required": false, "description": "Raw PUT only: seconds to live, 60..31536000. 422 on an envelope PUT.",
             "schema": {"type": "string", "pattern": "^-?[0-9]+$"}},
            {"name": "X-Kv-Metadata", "in": "header", "required": false, "description": "Raw PUT only: metadata as a JSON object",
             "schema": {"type": "string"}},
            param_ref("ifMatch"), param_ref("ifNoneMatch")
        ],
        "requestBody": {"required": true, "content": {
            "application/json": {"schema": schema_ref("PutEnvelope")},
            "*/*": {"schema": {"type": "string", "format": "binary",
                    "description": "Raw: the body is the value, the Content-Type its content type"}}
        }},
        "responses": with_errors(json!({
            "200": {"description": "updated", "headers": {"ETag": etag_header()},
                    "content": json_content(ok_envelope(schema_ref("PutResult")))},
            "201": {"description": "created", "headers": {"ETag": etag_header(),
                    "Location": {"schema": {"type": "string"}, "description": "/v1/kv/{entity}/{key}"}},
                    "content": json_content(ok_envelope(schema_ref("PutResult")))}
        }), &["400", "401", "403", "412", "413", "415", "422", "503", "507"])
    })
}

fn get_entry_op() -> Value {
    json!({
        "summary": "Read a value with its envelope",
        "parameters": [param_ref("ifNoneMatch")],
        "responses": with_errors(json!({
            "200": {"description": "the entry", "headers": {"ETag": etag_header()},
                    "content": json_content(ok_envelope(schema_ref("Entry")))},
            "304": {"description": "not modified", "headers": {"ETag": etag_header()}}
        }), &["401", "403", "404", "422", "503"])
    })
}

fn get_value_op() -> Value {
    json!({
        "summary": "Read the raw stored bytes with their Content-Type",
        "parameters": [param_ref("ifNoneMatch")],
        "responses": with_errors(json!({
            "200": {"description": "the stored bytes", "headers": value_headers(),
                    "content": {"*/*": {"schema": stored_bytes()}}},
            "304": {"description": "not modified", "headers": {"ETag": etag_header()}}
        }), &["401", "403", "404", "422", "503"])
    })
}

fn delete_op() -> Value {
    json!({
        "summary": "Delete a key",
        "parameters": [param_ref("ifMatch")],
        "responses": with_errors(json!({
            "200": {"description": "deleted", "content": json_content(ok_envelope(schema_ref("DeleteResult")))}
        }), &["401", "403", "404", "412", "422", "503", "507"])
    })
}

fn list_op() -> Value {
    json!({
        "summary": "List keys in ascending byte order, a page at a time",
        "parameters": [
            {"name": "prefix", "in": "query", "required": false, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{0,256}$"}},
            {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
            {"name": "cursor", "in": "query", "required": false, "description": "Opaque, URL-safe; from the previous page (any other value is 422)", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"}}
        ],
        "responses": with_errors(json!({
            "200": {"description": "a page of keys", "content": json_content(ok_envelope(schema_ref("ListResult")))}
        }), &["401", "403", "422", "503"])
    })
}

fn bulk_op() -> Value {
    json!({
        "summary": "Apply many puts and deletes as one atomic, durable batch",
        "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("BulkRequest")}}},
        "responses": with_errors(json!({
            "200": {"description": "all applied", "content": json_content(ok_envelope(schema_ref("BulkResult")))}
        }), &["400", "401", "403", "413", "415", "422", "503", "507"])
    })
}

fn compact_op() -> Value {
    json!({
        "summary": "Compact the store now (scope admin): 202 at once, or with wait=true 200 when finished",
        "parameters": [{"name": "wait", "in": "query", "required": false, "schema": {"type": "boolean"}}],
        "responses": with_errors(json!({
            "200": {"description": "finished (wait=true)", "content": json_content(ok_envelope(schema_ref("CompactResult")))},
            "202": {"description": "started", "content": json_content(ok_envelope(schema_ref("CompactResult")))}
        }), &["401", "403", "422", "503", "507"])
    })
}

/// The raw stored bytes, served with their own content type: any JSON for a JSON-kind
/// value (so no `type` here), text or bytes otherwise.
fn stored_bytes() -> Value {
    json!({"description": "the stored bytes, exactly; their Content-Type is the stored content type"})
}

fn ok_response(description: &str, data: Value) -> Value {
    json!({"200": {"description": description, "content": json_content(ok_envelope(data))}})
}

fn with_error(responses: Value, status: &str) -> Value {
    with_errors(responses, &[status])
}

/// Adds the error envelope for each status, plus the 404/405/500 every route can give.
fn with_errors(mut responses: Value, statuses: &[&str]) -> Value {
    for status in statuses.iter().chain(&["405", "500"]) {
        responses[*status] = json!({"$ref": "#/components/responses/Error"});
    }
    responses
}

fn ok_envelope(data: Value) -> Value {
    json!({"type": "object", "required": ["ok", "data"],
           "properties": {"ok": {"const": true}, "data": data}})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn param_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn etag_header() -> Value {
    json!({"description": "\"<version>\"", "schema": {"type": "string"}})
}

fn value_headers() -> Value {
    json!({"ETag": etag_header(),
           "Content-Type": {"schema": {"type": "string"}, "description": "the stored content type"},
           "X-Kv-Expires-At": {"schema": {"type": "string", "format": "date-time"}, "description": "when it expires, if it does"}})
}

fn parameters() -> Value {
    json!({
        "entity": {"name": "entity", "in": "path", "required": true, "schema": {"type": "string", "enum": ["user", "event"]}},
        "key": {"name": "key", "in": "path", "required": true, "description": "After percent-decoding",
                "schema": {"type": "string", "pattern": KEY_PATTERN}},
        "ifMatch": {"name": "If-Match", "in": "header", "required": false, "description": "* or a list of entity tags; \"<version>\" of the live value",
                    "schema": {"type": "string", "pattern": CONDITION_PATTERN}},
        "ifNoneMatch": {"name": "If-None-Match", "in": "header", "required": false, "description": "* (store only if absent) or entity tags (304 on reads)",
                        "schema": {"type": "string", "pattern": CONDITION_PATTERN}}
    })
}

fn responses() -> Value {
    json!({"Error": {"description": "an error: the envelope of API.md",
        "headers": {"WWW-Authenticate": {"description": "on 401: Bearer", "schema": {"type": "string"}},
                    "Allow": {"description": "on 405: the methods of the route", "schema": {"type": "string"}},
                    "Retry-After": {"description": "on 503", "schema": {"type": "integer"}}},
        "content": json_content(schema_ref("ErrorEnvelope"))}})
}

fn schemas() -> Value {
    let timestamp = json!({"type": ["string", "null"], "format": "date-time", "description": "RFC 3339 UTC, whole seconds, Z"});
    let metadata = json!({"type": ["object", "null"]});
    let value = json!({"not": {"type": "null"},
        "description": "any JSON but null; a string for text kind, base64 for binary kind"});
    let ttl = json!({"type": ["integer", "null"], "minimum": 60, "maximum": 31_536_000});
    let content_type =
        json!({"type": ["string", "null"], "maxLength": 255, "pattern": MEDIA_TYPE_PATTERN});
    let key = json!({"type": "string", "pattern": KEY_PATTERN});
    json!({
        "ErrorEnvelope": {"type": "object", "required": ["ok", "errors"], "properties": {
            "ok": {"const": false},
            "errors": {"type": "array", "minItems": 1, "items": schema_ref("Problem")}}},
        "Problem": {"type": "object", "required": ["type", "status", "title", "detail", "instance", "error_code"], "properties": {
            "type": {"type": "string", "format": "uri-reference", "minLength": 1, "maxLength": 2083},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "title": {"type": "string", "minLength": 5},
            "detail": {"type": "string", "minLength": 5},
            "instance": {"type": "string", "description": "request path, plus #/pointer into the body written as a URI fragment (RFC 6901 section 6)"},
            "error_code": {"type": "integer"}}},
        "PutEnvelope": {"type": "object", "required": ["value"], "additionalProperties": false, "properties": {
            "value": value, "ttl": ttl, "metadata": metadata, "content_type": content_type}},
        "PutResult": {"type": "object", "properties": {
            "entity": {"type": "string"}, "key": {"type": "string"}, "created": {"type": "boolean"},
            "expires_at": timestamp, "content_type": {"type": "string"},
            "size_bytes": {"type": "integer"}, "version": {"type": "integer"}}},
        "Entry": {"type": "object", "properties": {
            "entity": {"type": "string"}, "key": {"type": "string"}, "value": {},
            "encoding": {"enum": ["json", "text", "base64"]}, "content_type": {"type": "string"},
            "metadata": metadata, "created_at": timestamp, "updated_at": timestamp, "expires_at": timestamp,
            "size_bytes": {"type": "integer"}, "version": {"type": "integer"}}},
        "DeleteResult": {"type": "object", "properties": {
            "entity": {"type": "string"}, "key": {"type": "string"}, "deleted": {"type": "boolean"}}},
        "ListResult": {"type": "object", "properties": {
            "entity": {"type": "string"},
            "keys": {"type": "array", "items": {"type": "object", "properties": {
                "key": {"type": "string"}, "content_type": {"type": "string"}, "size_bytes": {"type": "integer"},
                "expires_at": timestamp, "metadata": metadata, "version": {"type": "integer"}}}},
            "cursor": {"type": ["string", "null"]}, "list_complete": {"type": "boolean"}}},
        "BulkRequest": {"type": "object", "required": ["operations"], "properties": {
            "operations": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": {"oneOf": [
                {"type": "object", "required": ["op", "entity", "key", "value"], "properties": {
                    "op": {"const": "put"}, "entity": {"enum": ["user", "event"]}, "key": key,
                    "value": value, "ttl": ttl, "metadata": metadata, "content_type": content_type}},
                {"type": "object", "required": ["op", "entity", "key"], "properties": {
                    "op": {"const": "delete"}, "entity": {"enum": ["user", "event"]}, "key": key}}]}}}},
        "BulkResult": {"type": "object", "properties": {"results": {"type": "array", "items": {"type": "object"}}}},
        "Stats": {"type": "object", "properties": {
            "keys": {"type": "object", "properties": {"user": {"type": "integer"}, "event": {"type": "integer"}}},
            "disk_bytes": {"type": "integer"}, "live_bytes": {"type": "integer"}, "dead_bytes": {"type": "integer"},
            "segments": {"type": "integer"}, "index_bytes": {"type": "integer"}, "compactions": {"type": "integer"},
            "expired_swept": {"type": "integer"}, "uptime_s": {"type": "integer"}, "version": {"type": "string"}}},
        "CompactResult": {"type": "object", "required": ["started"], "properties": {
            "started": {"type": "boolean"}, "finished": {"type": "boolean", "description": "wait=true only; the fields below too"},
            "segments_in": {"type": "integer"}, "segments_out": {"type": "integer"},
            "bytes_in": {"type": "integer"}, "bytes_out": {"type": "integer"}, "bytes_reclaimed": {"type": "integer"},
            "records_kept": {"type": "integer"}, "records_dropped": {"type": "integer"}, "duration_ms": {"type": "integer"}}},
        "BackupResult": {"type": "object", "required": ["name", "size_bytes"], "properties": {
            "name": {"type": "string", "description": "the new folder's name under --backup-dir, e.g. 20261126T091443Z-3f9c0d6e"},
            "size_bytes": {"type": "integer", "description": "bytes of all files in the folder, hard-linked ones included"},
            "created_at": {"type": "string", "format": "date-time"},
            "last_version": {"type": "integer", "description": "every write with a version up to this one is in the backup"},
            "segments": {"type": "integer"}, "hints": {"type": "integer"},
            "files_linked": {"type": "integer"}, "files_copied": {"type": "integer"}, "duration_ms": {"type": "integer"}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "head", "put", "post", "delete", "patch", "options", "trace",
    ];

    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if item.get(method).is_some() {
                    found.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn every_served_route_is_documented_and_nothing_else() {
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.template.to_owned()))
            .collect();
        let documented = documented();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in /openapi.json: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in /openapi.json but not served: {extra:?}"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/").skip(1) {
            let pointer = piece.split('"').next().unwrap_or_default();
            assert!(
                doc.pointer(&format!("/{pointer}")).is_some(),
                "dangling $ref {pointer}"
            );
        }
    }

    #[test]
    fn it_is_openapi_3_1_with_bearer_auth() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
