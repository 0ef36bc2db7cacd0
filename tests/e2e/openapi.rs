//! The committed OpenAPI document is what the code generates.

#[test]
fn committed_openapi_json_is_current() {
    let generated = serde_json::to_string_pretty(&berth::api::openapi()).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[test]
fn every_operation_documents_its_errors_and_lists_have_the_page_shape() {
    let spec: serde_json::Value = berth::api::openapi();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/api/v1/")
                && path != "/api/v1/auth/login"
                && path != "/api/v1/auth/refresh"
                && path != "/api/v1/auth/logout"
                // Logging a browser out without a session is not an error: it answers 204.
                && !(path == "/api/v1/auth/session" && method == "delete")
            {
                assert!(responses.contains_key("401"), "{method} {path} does not document 401");
            }
        }
    }
}
