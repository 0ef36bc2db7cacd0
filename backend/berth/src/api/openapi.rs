//! The API description, made once from the code and then completed by rules that hold for every
//! operation, so that it says exactly what the server sends.
//!
//! Handlers declare their success responses and the errors only they can produce (a 409 for a name
//! taken, say). Everything the shared plumbing can answer is added here from the operation's shape,
//! in one place: an operation with path parameters can be 400 `invalid-id` and 404; one with a body can
//! be 400 `malformed-json`, 413, 415 and 422; a secured one 401 and 403; a page 400 `invalid-cursor`
//! and 422 `limit`; any POST a 409 or 422 from its `Idempotency-Key`; every operation 500 and 503. All
//! errors are `application/problem+json` with the `Problem` schema. Request bodies are closed
//! (`additionalProperties: false`), as the server rejects unknown fields; every operation has a unique
//! id; and each create operation links to the operations on what it created, which is what lets
//! generated clients and stateful testers (schemathesis) follow an object from its creation on.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth API",
        description = "Multi-tenant Containers-as-a-Service on Docker Swarm. Errors are RFC 9457 problems \
            (`application/problem+json`) with a stable `type`; lists page with `limit`/`cursor`; POST accepts \
            `Idempotency-Key`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Logging in and tokens of a session"),
        (name = "admin", description = "Platform administration of tenants and quotas"),
        (name = "tenant", description = "The caller's tenant"),
        (name = "users", description = "A tenant's users and their roles"),
        (name = "tokens", description = "API tokens for integrators"),
        (name = "clusters", description = "Swarm clusters and their nodes"),
        (name = "templates", description = "Versioned Compose templates"),
        (name = "registries", description = "Image registries"),
        (name = "images", description = "Images known to the tenant"),
        (name = "applications", description = "Applications, their revisions, services and containers"),
        (name = "routes", description = "How requests reach services through the router"),
        (name = "domains", description = "Custom domains a tenant holds: proved by a DNS TXT record or granted by a platform admin"),
        (name = "certificates", description = "TLS certificates the routers serve: uploaded, or obtained and renewed over ACME"),
        (name = "load_balancers", description = "Load balancers: listeners on the routers' address forwarding to services"),
        (name = "releases", description = "Canary and blue/green releases: a new revision beside the current one, sharing its routes by weight"),
        (name = "jobs", description = "Queued work and its progress"),
        (name = "events", description = "The tenant's change feed (Server-Sent Events)"),
        (name = "audit", description = "Who did what"),
        (name = "ops", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token from /api/v1/auth/login, or an API token (`berth_...`)"))
                    .build(),
            ),
        );
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const PROBLEM: &str = "#/components/schemas/Problem";

/// What each shared error status means, as the document's descriptions say it.
fn error_description(status: &str) -> &'static str {
    match status {
        "400" => "The request is malformed: unreadable JSON, a malformed id, query, cursor or header.",
        "401" => "Missing, invalid, revoked or expired credentials.",
        "403" => {
            "The caller's role does not allow this, the tenant is suspended, or a quota would be exceeded (`type` tells which)."
        }
        "404" => "No such object for this caller (another tenant's objects look exactly the same).",
        "409" => "The request conflicts with the current state (`type` tells how).",
        "413" => "The request body is larger than the server accepts.",
        "415" => "The request body is not JSON.",
        "422" => "The request is well-formed but invalid; `errors` names the offending fields.",
        "429" => "Too many failed attempts; retry after the number of seconds in `Retry-After`.",
        "500" => "An internal error; the server's log has the cause.",
        "503" => "The database is unavailable or busy; retry.",
        _ => "An error.",
    }
}

/// Completes the generated document (see the module comment). The result is plain JSON: utoipa's own
/// types cannot read some of what is added (links) back in.
pub fn complete(doc: utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    complete_value(&mut value);
    value
}

fn complete_value(doc: &mut Value) {
    let paths: Vec<String> = doc["paths"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    let mut request_bodies = BTreeSet::new();
    for path in &paths {
        for method in METHODS {
            let Some(op) = doc["paths"][path].get_mut(method) else { continue };
            complete_operation(method, op);
            if let Some(r) = op.pointer("/requestBody/content/application~1json/schema/$ref").and_then(Value::as_str) {
                request_bodies.insert(r.rsplit('/').next().unwrap_or_default().to_owned());
            }
        }
    }
    // Request bodies reject unknown fields (`deny_unknown_fields` in berth-types).
    for name in request_bodies {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")).and_then(Value::as_object_mut) {
            schema.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    add_links(doc, &paths);
}

fn complete_operation(method: &str, op: &mut Value) {
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let has = |place: &str| params.iter().any(|p| p["in"] == place);
    let has_param = |name: &str| params.iter().any(|p| p["name"] == name);
    let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
    let has_body = op.get("requestBody").is_some();

    let mut errors: BTreeSet<&str> = ["500", "503"].into();
    if secured {
        errors.extend(["401", "403"]);
    }
    if has("path") {
        errors.extend(["400", "404"]);
    }
    if has("query") {
        errors.insert("400");
    }
    if has_param("limit") {
        errors.insert("422");
    }
    if has_body {
        errors.extend(["400", "413", "415", "422"]);
    }
    if method == "post" && secured {
        // `Idempotency-Key`: malformed (400), reused for another request (422), still running (409).
        errors.extend(["400", "409", "422"]);
        let params = op.as_object_mut().expect("an operation is an object").entry("parameters").or_insert_with(|| json!([]));
        if let Some(list) = params.as_array_mut() {
            list.push(json!({
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "Makes a retry safe: a repeated request with the same key (within 24 hours) gets the \
                    first response again instead of acting twice.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255}
            }));
        }
    }
    let responses = op["responses"].as_object_mut().expect("an operation has responses");
    for status in errors {
        responses.entry(status).or_insert_with(|| json!({}));
    }
    for (status, response) in responses.iter_mut() {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        let Some(r) = response.as_object_mut() else { continue };
        let described = r.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty());
        if !described {
            r.insert("description".into(), Value::String(error_description(status).into()));
        }
        r.insert("content".into(), json!({"application/problem+json": {"schema": {"$ref": PROBLEM}}}));
        if status == "429" || status == "503" {
            r.insert(
                "headers".into(),
                json!({"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}),
            );
        }
    }
    // Operation ids are unique across the document: `<tag>_<handler>`.
    let tag = op["tags"][0].as_str().unwrap_or("api").to_owned();
    if let Some(id) = op["operationId"].as_str().map(str::to_owned) {
        op["operationId"] = Value::String(format!("{tag}_{id}"));
    }
}

/// Links from each create operation (`POST /x`, answering 201/202 with an object that has an `id`) to
/// the operations on the created object (`/x/{id}` and below, e.g. `/x/{id}/versions`).
fn add_links(doc: &mut Value, paths: &[String]) {
    for path in paths {
        let Some(post) = doc["paths"][path].get("post") else { continue };
        let created = ["201", "202"].into_iter().find(|s| post["responses"].get(*s).is_some());
        let Some(created) = created else { continue };
        let prefix = format!("{path}/{{");
        let mut links = Map::new();
        for target in paths.iter().filter(|p| p.starts_with(&prefix)) {
            // The new object's id fills the first parameter after `path`; parameters of `path` itself come
            // from the create request.
            let Some(rest) = target.strip_prefix(&prefix) else { continue };
            let Some((new_param, _)) = rest.split_once('}') else { continue };
            let target_params: Vec<String> =
                target.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(p, _)| p.to_owned())).collect();
            let own_params: Vec<String> =
                path.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(p, _)| p.to_owned())).collect();
            // Only targets whose parameters are all known: the new id and the create request's own.
            if target_params.iter().any(|p| p != new_param && !own_params.contains(p)) {
                continue;
            }
            for method in METHODS {
                let Some(op) = doc["paths"][target].get(method) else { continue };
                let Some(op_id) = op["operationId"].as_str() else { continue };
                let mut parameters = Map::new();
                for p in &target_params {
                    let source = if p == new_param { "$response.body#/id".to_owned() } else { format!("$request.path.{p}") };
                    parameters.insert(p.clone(), Value::String(source));
                }
                links.insert(op_id.to_owned(), json!({"operationId": op_id, "parameters": parameters}));
            }
        }
        if !links.is_empty() {
            doc["paths"][path]["post"]["responses"][created]["links"] = Value::Object(links);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique_and_errors_are_problems() {
        let doc = crate::api::openapi();
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
                for (status, r) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let content = r["content"].as_object().unwrap();
                        assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{method} {path} {status}");
                    }
                }
                assert!(op["responses"].get("500").is_some(), "{method} {path}");
            }
        }
    }

    #[test]
    fn create_operations_link_to_what_they_created() {
        let doc = crate::api::openapi();
        let links = &doc["paths"]["/api/v1/clusters"]["post"]["responses"]["202"]["links"];
        assert_eq!(links["clusters_get"]["parameters"]["id"], "$response.body#/id");
        assert!(links.get("clusters_delete").is_some() && links.get("clusters_list_nodes").is_some(), "{links}");
        let schema = &doc["components"]["schemas"]["CreateCluster"];
        assert_eq!(schema["additionalProperties"], false);
    }
}
