//! The published OpenAPI document against the live server, checked by schemathesis (property-based
//! testing from the document): every status, content type and body the server sends must be the one the
//! document describes, bad input must be refused, secured operations must refuse missing credentials,
//! created objects must be readable and deleted ones gone (the stateful phase follows the document's
//! links from each create operation).
//!
//! `POST /api/v1/clusters` is left out: it provisions real nodes (covered by the cluster tests); so is
//! `POST /api/v1/images/import`, whose tar body schemathesis cannot generate (covered by the registry
//! tests).
//! `GET /api/v1/events` is an endless Server-Sent Events stream, so it gets a run of its own with a
//! one-second request timeout (status, content type and refusals are checked; the stream's body is
//! covered by the events tests).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_tests::TestApp;
use serde_json::Value;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
negative_data_rejection,ignored_auth,use_after_free,ensure_resource_availability";

const EXCLUDED: [&str; 3] = ["POST /api/v1/clusters", EVENTS, IMPORT];
/// Its body is a `docker save` tar archive, which schemathesis cannot generate; the registry tests send
/// it real and broken archives.
const IMPORT: &str = "POST /api/v1/images/import";
const EVENTS: &str = "GET /api/v1/events";

/// Examples per operation and phase. The run is seeded, so it is the same run every time; set
/// `BERTH_SCHEMATHESIS_SEED` to explore others.
const EXAMPLES: &str = "25";
const SEED: &str = "20261125";

fn seed() -> String {
    std::env::var("BERTH_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned())
}

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("BERTH_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/schemathesis/bin/st"));
    assert!(path.exists(), "schemathesis is missing at {}: run scripts/install-deps.sh", path.display());
    path
}

struct Run {
    passed: bool,
    output: String,
}

/// Runs schemathesis with `token` against `schema` (a URL, or a file plus the server's base URL), on
/// every operation but [`EXCLUDED`], or on `only` one.
async fn run(app: &TestApp, token: &str, schema: &str, only: Option<&str>, checks: &str) -> Run {
    let streaming = only == Some(EVENTS);
    let (phases, timeout) = if streaming { ("coverage,fuzzing", "1") } else { ("coverage,fuzzing,stateful", "10") };
    let work = berth_tests::temp_data_dir("berth-schemathesis");
    // A config file of our own, so that nothing found in a parent directory changes the run, and no
    // cache is written outside the work directory.
    std::fs::write(work.join("schemathesis.toml"), "[cache]\nenabled = false\n").unwrap();
    let mut cmd = tokio::process::Command::new(schemathesis());
    cmd.current_dir(&work)
        .env("HYPOTHESIS_STORAGE_DIRECTORY", work.join("hypothesis"))
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(work.join("schemathesis.toml"))
        .args(["run", schema, "--url", &app.base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", checks])
        .args(["--phases", phases])
        .args(["--max-examples", EXAMPLES, "--seed", &seed(), "--generation-database", "none"])
        .args(["--request-timeout", timeout, "--no-color"]);
    match only {
        Some(name) => {
            cmd.args(["--include-name", name]);
        }
        None => {
            for name in EXCLUDED {
                cmd.args(["--exclude-name", name]);
            }
        }
    }
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.kill_on_drop(true).output())
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("running schemathesis");
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis ({:?}) took {:.0?}:\n{}", only.unwrap_or("all operations"), started.elapsed(), summary(&output));
    let _ = std::fs::remove_dir_all(&work);
    Run { passed: out.status.success(), output }
}

fn summary(output: &str) -> String {
    output.lines().skip_while(|l| !l.contains("FAILURES") && !l.contains("SUMMARY")).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_conforms_to_its_openapi_document() {
    // With the built-in registry, so that the image operations answer as they do in production.
    let app = TestApp::spawn_with_registry(64 * 1024 * 1024).await;
    let tenant = app.tenant("Conformance").await;
    let schema = app.url("/api/openapi.json");

    let as_owner = run(&app, &tenant.owner, &schema, None, CHECKS).await;
    assert!(as_owner.passed, "as a tenant owner:\n{}", summary(&as_owner.output));
    assert!(as_owner.output.contains("Stateful"), "the stateful phase ran:\n{}", as_owner.output);

    let as_admin = run(&app, &app.admin, &schema, None, CHECKS).await;
    assert!(as_admin.passed, "as a platform admin:\n{}", summary(&as_admin.output));

    let events = run(&app, &tenant.owner, &schema, Some(EVENTS), STREAM_CHECKS).await;
    assert!(events.passed, "the event stream:\n{}", summary(&events.output));
}

/// The stream's body never ends: no stateful checks on it.
const STREAM_CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,negative_data_rejection,ignored_auth";

/// The conformance run can fail: a document that misspells one enum (as this project's once did, with
/// `"Owner"` for `"owner"`) is caught on the one operation that returns it.
#[tokio::test]
async fn a_wrong_document_fails_the_conformance_run() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("Wrong").await;
    let mut doc: Value = reqwest::get(app.url("/api/openapi.json")).await.unwrap().json().await.unwrap();
    let role = &mut doc["components"]["schemas"]["Role"]["enum"];
    assert!(role.as_array().unwrap().contains(&Value::from("owner")));
    *role = serde_json::json!(["PlatformAdmin", "Owner", "Admin", "Developer", "Viewer"]);
    let dir = berth_tests::temp_data_dir("berth-wrong-schema");
    let file = dir.join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();

    let wrong = run(&app, &tenant.owner, file.to_str().unwrap(), Some("GET /api/v1/me"), "response_schema_conformance").await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!wrong.passed, "a wrong document must fail the run:\n{}", wrong.output);
    assert!(wrong.output.contains("Response violates schema"), "{}", wrong.output);
}
