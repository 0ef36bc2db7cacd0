//! Request and response bodies of Berth's REST API (`/api/v1`).
//!
//! This crate is shared by the server and the console, so it must stay wasm-safe: serde, uuid, chrono
//! and utoipa only. Request bodies reject unknown fields so that a typo in a field name is a 422 naming
//! it, not a silently ignored setting.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

mod enums;
pub use enums::*;
pub mod timestamp;

/// A page of a list. Pass `next_cursor` back as `?cursor=` to get the next page; it is `null` on the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem. `type` is stable per kind of error; `errors` names the offending fields of a 422.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For Compose parse errors: where in the document the error is (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

/// One invalid field of a request body: its JSON path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// For errors inside a Compose file: where (1-based) the offending value is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into(), line: None, column: None }
    }
}

// ---------------------------------------------------------------- auth

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// A short-lived JWT; send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// An opaque token for `POST /api/v1/auth/refresh`. Single use: each refresh returns a new one.
    pub refresh_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A browser session (`POST /api/v1/auth/session`): the access token in the body, the refresh token in
/// an HttpOnly cookie that scripts cannot read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// A short-lived JWT; send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime of the access token in seconds.
    pub expires_in: u64,
    /// Who is signed in.
    pub me: Me,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub tenant: Option<Tenant>,
    /// How the caller authenticated: `user` (a login session) or `token` (an API token).
    pub via: String,
}

// ---------------------------------------------------------------- tenants and quotas

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub owner_email: String,
    #[schema(min_length = 8, max_length = 256)]
    pub owner_password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// Unique, DNS-safe, derived from the name.
    pub slug: String,
    pub status: TenantStatus,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub owner: User,
}

/// Per-tenant limits. A missing (or `null`) field means unlimited; 0 forbids the resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub max_clusters: Option<i32>,
    pub max_nodes: Option<i32>,
    pub max_applications: Option<i32>,
    pub max_services: Option<i32>,
    /// Total CPU reservations, in CPUs (e.g. 2.5), summed over services × replicas.
    pub max_cpus: Option<f64>,
    /// Total memory reservations in MiB, summed over services × replicas.
    pub max_memory_mb: Option<i64>,
    /// Image storage in the built-in registry, in MiB. Once reached, pushes are refused.
    pub max_image_storage_mb: Option<i64>,
}

/// What a tenant currently uses of each quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub clusters: i64,
    pub nodes: i64,
    pub applications: i64,
    pub services: i64,
    pub cpus: f64,
    pub memory_mb: i64,
    /// Bytes of images stored in the built-in registry.
    pub image_storage_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaReport {
    pub quotas: Quotas,
    pub usage: Usage,
}

// ---------------------------------------------------------------- users and tokens

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<Role>,
    #[schema(min_length = 8, max_length = 256)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub tenant_id: Option<Uuid>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At most the creator's own role.
    pub role: Role,
    /// When the token stops working; omit for a token that lasts until revoked.
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_by: Uuid,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A newly created token. `token` is the secret, shown this once and never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiToken {
    #[serde(flatten)]
    pub meta: ApiToken,
    pub token: String,
}

// ---------------------------------------------------------------- clusters and nodes

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// DNS-safe: lowercase letters, digits and dashes, at most 63 characters.
    #[schema(min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub provider: Provider,
    /// Number of Swarm managers (1–7). Required for `local`; an `existing` cluster's nodes are adopted.
    pub managers: Option<i32>,
    /// Number of Swarm workers (0–100). Required for `local`.
    pub workers: Option<i32>,
    /// For `provider: existing`: a manager's Engine API endpoint, `tcp://host:port` (TLS) or
    /// `unix:///path` (only under socket directories the operator allows).
    pub endpoint: Option<String>,
    /// For a `tcp://` endpoint: the CA that signed the engine's certificate (PEM).
    pub ca_pem: Option<String>,
    /// For a `tcp://` endpoint: the client certificate Berth connects with (PEM).
    pub cert_pem: Option<String>,
    /// For a `tcp://` endpoint: the client certificate's key (PEM); stored encrypted, never returned.
    pub key_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCluster {
    pub managers: Option<i32>,
    pub workers: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cluster {
    pub id: Uuid,
    pub name: String,
    pub provider: Provider,
    pub status: ClusterStatus,
    pub managers: i32,
    pub workers: i32,
    pub endpoint: Option<String>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// The job carrying out the last change, when one was queued by this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub name: String,
    pub role: NodeRole,
    pub availability: Availability,
    pub labels: std::collections::BTreeMap<String, String>,
    pub state: NodeState,
    pub leader: bool,
    pub engine_version: Option<String>,
    pub address: Option<String>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<i64>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// What the Docker CLI needs to talk to a cluster: `docker --tlsverify --tlscacert ca.pem --tlscert
/// cert.pem --tlskey key.pem -H <endpoint> node ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterCredentials {
    /// A manager's Engine API, e.g. `tcp://10.213.0.10:2376`.
    pub endpoint: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    pub availability: Option<Availability>,
    /// Replaces the node's labels.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

// ---------------------------------------------------------------- templates

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    #[schema(min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    pub name: String,
    /// A Compose file (format 3.x), as YAML text.
    pub compose: String,
    /// Files the Compose text names (`env_file`, secret and config `file:`), by relative path.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
}

/// Edits a template: new Compose text or files make a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    pub compose: Option<String>,
    pub files: Option<std::collections::BTreeMap<String, String>>,
    pub description: Option<String>,
}

/// A variable a Compose text uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateVariable {
    /// The default it gives (`${NAME:-default}`), if any.
    pub default: Option<String>,
    /// True when the text demands a value (`${NAME:?message}`).
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// The latest version number.
    pub version: i32,
    /// The latest version's Compose YAML.
    pub compose: String,
    pub files: std::collections::BTreeMap<String, String>,
    /// Variables the Compose file uses (`${NAME}`, `${NAME:-default}`, `${NAME:?message}`).
    pub variables: std::collections::BTreeMap<String, TemplateVariable>,
    /// Services the Compose file declares.
    pub services: Vec<String>,
    /// What the latest version's Compose file drew: keys Swarm ignores and the like.
    pub warnings: Vec<ComposeWarning>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersion {
    pub template_id: Uuid,
    pub version: i32,
    pub compose: String,
    pub files: std::collections::BTreeMap<String, String>,
    pub variables: std::collections::BTreeMap<String, TemplateVariable>,
    pub services: Vec<String>,
    pub warnings: Vec<ComposeWarning>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// What changed between two versions of a template, as a unified diff of the Compose text and of
/// each file.
/// Compose text (and the files it names) to check without storing anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckCompose {
    pub compose: String,
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

/// What valid Compose text declares, and what Swarm would ignore in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeCheck {
    pub services: Vec<String>,
    pub variables: std::collections::BTreeMap<String, TemplateVariable>,
    pub warnings: Vec<ComposeWarning>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TemplateDiff {
    pub from: i32,
    pub to: i32,
    pub diff: String,
}

/// A Distributed Application Bundle (`docker-compose bundle`'s `.dab` JSON), imported as a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportDab {
    #[schema(min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The bundle: `{"Version": "0.1", "Services": {...}}`.
    #[schema(value_type = Object)]
    pub bundle: serde_json::Value,
}

/// A template of Berth's built-in gallery: every tenant sees it and may deploy it (`gallery` in
/// `POST /applications`); nobody edits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GalleryTemplate {
    pub name: String,
    pub description: String,
    pub compose: String,
    pub files: std::collections::BTreeMap<String, String>,
    pub variables: std::collections::BTreeMap<String, TemplateVariable>,
    pub services: Vec<String>,
}

// ---------------------------------------------------------------- registries and images

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistry {
    #[schema(min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    pub name: String,
    /// Host and optional port, e.g. `registry.example.com` or `127.0.0.1:5000`.
    pub address: String,
    pub username: Option<String>,
    /// Stored encrypted; never returned.
    pub password: Option<String>,
    /// The CA (PEM) the registry's TLS certificate comes from, when it is not a public one.
    pub ca_pem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Registry {
    /// The built-in registry's id is the nil UUID.
    pub id: Uuid,
    pub name: String,
    pub address: String,
    /// Whether this is the built-in registry (named `builtin`), which every tenant has.
    pub builtin: bool,
    /// The private CA the registry's certificate is checked against (the platform CA for the built-in one).
    pub ca_pem: Option<String>,
    pub username: Option<String>,
    pub has_password: bool,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A repository in the tenant's namespace of the built-in registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageRepository {
    /// The name inside the tenant's namespace, e.g. `web`.
    pub name: String,
    /// The full repository as `docker pull` and Compose files name it, e.g. `10.213.0.1:5000/acme/web`.
    pub reference: String,
    /// Bytes of the distinct images its tags point at (config plus layers, as the manifests state).
    pub size_bytes: i64,
    /// The latest push.
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub pushed_at: DateTime<Utc>,
    /// Newest push first.
    pub tags: Vec<ImageTag>,
    /// The repository's retention policy, if it has one.
    pub retention: Option<RetentionPolicy>,
}

/// Which tags of a repository the retention pass keeps: the newest `keep_last`, and/or those pushed in
/// the last `keep_days` days (a tag either rule keeps stays). At least one must be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[schema(minimum = 1)]
    pub keep_last: Option<i32>,
    #[schema(minimum = 1)]
    pub keep_days: Option<i32>,
}

/// What a registry maintenance run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistryMaintenance {
    /// Tags the retention policies removed.
    pub tags_removed: i64,
    /// The registry's storage before and after garbage collection, in bytes.
    pub bytes_before: i64,
    pub bytes_after: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageTag {
    pub tag: String,
    /// The manifest digest (`sha256:…`) the tag points at.
    pub digest: String,
    pub size_bytes: i64,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub pushed_at: DateTime<Utc>,
}

/// Credentials for pulling from a registry (a cluster's robot for the built-in one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegistryCredential {
    pub username: String,
    pub password: String,
    /// The registry's address, as `docker login` takes it.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveImage {
    /// An image reference, e.g. `10.213.0.1:5000/acme/web:1`.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedImage {
    /// The reference pinned to its digest: `…/web:1@sha256:…`.
    pub image: String,
    pub digest: String,
}

/// Repositories of a registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RepositoryList {
    pub repositories: Vec<String>,
}

/// Tags of a repository in a registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TagList {
    pub tags: Vec<String>,
}

/// One image stored by an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportedImage {
    /// `<address>/<tenant-slug>/<name>`: with `:<tag>`, an image reference a Compose file can use.
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    pub images: Vec<ImportedImage>,
}

// ---------------------------------------------------------------- applications, services, containers

/// A warning about a Compose file: a key Swarm ignores, a port the routing mesh cannot serve, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComposeWarning {
    /// Dotted path of the key, e.g. `services.web.ports[0]`.
    pub path: String,
    pub message: String,
    pub line: u64,
    pub column: u64,
}

/// Deploys a Compose stack: from a template (and version) or from inline Compose text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplication {
    /// Also the stack's namespace on the engine: `docker stack services <name>` lists its services.
    #[schema(min_length = 1, max_length = 40, pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    pub name: String,
    pub cluster_id: Uuid,
    /// Deploy this template (exactly one of `template_id`, `gallery` and `compose`).
    pub template_id: Option<Uuid>,
    /// Deploy this template of the built-in gallery (`GET /gallery`).
    pub gallery: Option<String>,
    /// Defaults to the template's latest version.
    pub template_version: Option<i32>,
    /// Inline Compose text (format 3.x, as `docker stack deploy` reads it).
    pub compose: Option<String>,
    /// Files the inline Compose text names (`env_file`, secret and config `file:`), by relative path.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
    /// Values for `${VAR}` in the Compose text.
    #[serde(default)]
    pub variables: std::collections::BTreeMap<String, String>,
}

/// What deploying would do (`POST /applications/preview`): the services the Compose file makes, what
/// they reserve, the routes they get, and each counted quota before and after. Nothing is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplicationPreview {
    pub services: Vec<ServicePreview>,
    /// The domains the application's services would answer at (`domain` or `domain/path`).
    pub routes: Vec<String>,
    pub warnings: Vec<ComposeWarning>,
    /// Applications, services, CPUs and memory: in use, added by this deploy, and the limit.
    pub quota: Vec<QuotaImpact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServicePreview {
    pub name: String,
    pub image: String,
    /// `replicated` or `global` (one task per node of the cluster).
    pub mode: String,
    pub replicas: i32,
    /// CPU reservation of each task.
    pub cpus: f64,
    /// Memory reservation of each task, in MiB.
    pub memory_mb: i64,
}

/// One counted resource before and after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuotaImpact {
    /// The quota's name: `max_applications`, `max_services`, `max_cpus` or `max_memory_mb`.
    pub quota: String,
    pub in_use: f64,
    pub adds: f64,
    /// `null`: no limit.
    pub limit: Option<f64>,
    /// The change would be refused for this quota.
    pub over: bool,
}

/// Deploys a new revision. Omitted fields keep the current revision's values; giving `compose` switches
/// the application to inline text, giving `template_version` to that version of its template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApplication {
    pub template_version: Option<i32>,
    pub compose: Option<String>,
    pub files: Option<std::collections::BTreeMap<String, String>>,
    pub variables: Option<std::collections::BTreeMap<String, String>>,
}

/// Returns to an earlier revision (by default the one before the current), as a new revision.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackApplication {
    pub revision: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Application {
    pub id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    pub template_id: Option<Uuid>,
    /// What the engine reports: `deploying` until the first revision is applied and its tasks run,
    /// `updating` while a later one rolls out, `degraded` when tasks are missing or failing, `failed`
    /// when a deploy could not be applied.
    pub status: ApplicationStatus,
    /// The current (latest requested) revision.
    pub revision: i32,
    /// The revision last applied to the engine.
    pub deployed_revision: Option<i32>,
    /// Why the application is failed or degraded.
    pub message: String,
    /// The current revision's Compose warnings.
    pub warnings: Vec<ComposeWarning>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplicationRevision {
    pub revision: i32,
    pub template_id: Option<Uuid>,
    pub template_version: Option<i32>,
    pub compose: String,
    pub files: std::collections::BTreeMap<String, String>,
    pub variables: std::collections::BTreeMap<String, String>,
    /// Service → the image pinned to a digest when this revision was deployed.
    pub images: std::collections::BTreeMap<String, String>,
    pub warnings: Vec<ComposeWarning>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A published port as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PublishedPort {
    pub target: i64,
    pub published: i64,
    pub protocol: String,
    /// `ingress` or `host`.
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Service {
    pub id: Uuid,
    pub application_id: Uuid,
    /// The Compose service name; on the engine it is `<application>_<name>`.
    pub name: String,
    /// The image as the Compose file (or the last `PATCH`) names it.
    pub image: String,
    /// The image the engine runs, pinned to a digest.
    pub image_digest: Option<String>,
    /// `replicated` or `global`.
    pub mode: String,
    pub replicas_desired: i32,
    pub replicas_running: i32,
    /// CPUs reserved per task.
    pub cpu_reservation: f64,
    /// MiB reserved per task.
    pub memory_reservation_mb: i64,
    pub status: ServiceStatus,
    pub ports: Vec<PublishedPort>,
    /// The engine's `UpdateStatus.State` (`updating`, `completed`, `paused`, `rollback_started`, …).
    pub update_state: Option<String>,
    /// How the engine replaces tasks in an update, once observed: `start-first` (the new task starts
    /// before the old one stops) or `stop-first` (Swarm's default). A routed service that declares no
    /// order and keeps no data in mounts gets `start-first` from Berth.
    pub update_order: Option<String>,
    /// The engine's last task error for this service, if its tasks are failing.
    pub message: String,
    pub swarm_service_id: Option<String>,
    /// Set on a release's copy of a service (it runs beside the service of the same name until the
    /// release is promoted or aborted; on the engine it is `<application>_r<revision>_<name>`).
    pub release_id: Option<Uuid>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// Scales a service or changes its image (a rolling update following its `update_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    /// Desired number of tasks (replicated services).
    pub replicas: Option<i32>,
    /// A new image reference (pinned to a digest at deploy).
    pub image: Option<String>,
}

/// One task of a service, and its container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Container {
    pub id: Uuid,
    pub service_id: Uuid,
    pub node_id: Option<Uuid>,
    pub swarm_task_id: String,
    pub container_id: Option<String>,
    pub slot: Option<i32>,
    /// The task's state as the engine reports it: `running`, `starting`, `failed`, `shutdown`, …
    pub state: String,
    pub desired_state: String,
    pub message: String,
    /// The engine's error for a failed task.
    pub error: String,
    pub exit_code: Option<i32>,
    pub addresses: Vec<String>,
    pub host_ports: Vec<PublishedPort>,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// One line of a task's log (`GET /services/{id}/logs`, `GET /containers/{id}/logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub task_id: String,
    pub container_id: Option<String>,
    /// The Berth node the task runs on.
    pub node_id: Option<Uuid>,
    pub slot: Option<i32>,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When the engine received the line (RFC 3339), with `timestamps=true`.
    pub timestamp: Option<String>,
    pub line: String,
}

/// What a tenant's Compose files may ask of the nodes they run on, set by platform admins. The
/// defaults are safe for tenants that do not trust each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionPolicy {
    /// Bind mounts of host paths (the Docker socket needs `allow_docker_socket` as well).
    pub allow_bind_mounts: bool,
    pub allow_docker_socket: bool,
    /// Host network, pid or ipc namespaces, `privileged`, devices and unconfined security options.
    pub allow_host_access: bool,
    /// Capabilities beyond Docker's defaults that `cap_add` may ask for (e.g. `CAP_NET_ADMIN`).
    pub allowed_capabilities: Vec<String>,
    /// Placement constraints that pin tasks to managers.
    pub allow_manager_placement: bool,
    /// The memory limit of a service that sets neither a limit nor a reservation, in MiB.
    pub default_memory_limit_mb: i64,
}

impl Default for AdmissionPolicy {
    fn default() -> Self {
        AdmissionPolicy {
            allow_bind_mounts: false,
            allow_docker_socket: false,
            allow_host_access: false,
            allowed_capabilities: Vec::new(),
            allow_manager_placement: false,
            default_memory_limit_mb: 512,
        }
    }
}

// ---------------------------------------------------------------- jobs and audit

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub target_type: String,
    pub target_id: Uuid,
    pub state: JobState,
    pub step: String,
    pub percent: i32,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's log, oldest first (only in `GET /jobs/{id}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<JobLogLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobLogLine {
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub at: DateTime<Utc>,
    pub line: String,
}

/// Returned by requests that queued work: the object as it now stands and the job doing the work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub job_id: Uuid,
    pub status: String,
}

/// One change in the tenant's change feed (`GET /api/v1/events`, Server-Sent Events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing; pass the last one seen as `Last-Event-ID` (or `?after=`) to resume.
    pub id: i64,
    /// What happened, e.g. `job.succeeded`, `node.state`, `cluster.status`.
    pub kind: String,
    pub target_type: String,
    pub target_id: Option<Uuid>,
    /// Depends on `kind`. `service.updated` and `service.observed` carry the whole `Service` as
    /// `GET /api/v1/services/{id}` shows it; job events carry `job_id` and the job's `kind`.
    pub data: serde_json::Value,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub tenant_id: Option<Uuid>,
    pub actor_type: String,
    pub actor_id: Option<Uuid>,
    pub actor_label: String,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub outcome: String,
    pub status_code: i32,
    pub request_id: String,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub at: DateTime<Utc>,
}

/// A route: requests for `domain` (under `path_prefix`) reach one target port of a service, balanced
/// over its running tasks by the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Route {
    pub id: Uuid,
    pub domain: String,
    /// `/` for the whole domain; otherwise requests whose path is this prefix or under it.
    pub path_prefix: String,
    pub service_id: Uuid,
    pub application_id: Uuid,
    /// The service's target (container) port.
    pub port: i32,
    /// Where the route answers, through the router `berth serve` runs.
    pub url: String,
    /// `default` (the domain Berth gives every service with a port), `compose` (declared in the
    /// Compose file) or `api`.
    pub source: String,
    /// Routed only once true: default domains are; a custom domain once proved or granted.
    pub verified: bool,
    /// `roundrobin`, `leastconn`, `source` (consistent hashing of the client address) or `random`.
    pub balance: String,
    /// Whether a client keeps its task, through a cookie the router sets.
    pub sticky: bool,
    /// How long the router waits for the service's answer.
    pub timeout_secs: i32,
    /// Largest request body passed on; `null` for no limit.
    pub max_body_bytes: Option<i64>,
    /// Plain-HTTP requests are redirected to HTTPS (once the routers have a certificate for the domain).
    pub https_redirect: bool,
    /// The path tasks are checked at over HTTP; `null`: a TCP connect.
    pub probe_path: Option<String>,
    /// Running tasks the router balances over right now.
    pub endpoints: i64,
    /// What the routers have seen on this route.
    pub traffic: RouteTraffic,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A route's traffic through every router, from HAProxy's statistics (a few seconds behind).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RouteTraffic {
    pub requests_total: i64,
    /// Answers with a 5xx status (from the tasks, or the router's own when no task could answer).
    pub responses_5xx_total: i64,
    /// Connections to tasks that failed (retried on another task where possible).
    pub failed_connections_total: i64,
    /// Over the routers' last interval (zero when none reported in the last 30 s).
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    /// Average response time over the route's last 1024 requests, in milliseconds.
    pub response_ms: i32,
}

/// A route to a custom domain (`POST /routes`). It is routed once a platform admin has granted the
/// tenant the domain (or a domain above it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    pub service_id: Uuid,
    /// One of the ports the service exposes (its Compose `ports` targets and labelled ports).
    pub port: i32,
    pub domain: String,
    /// `/` (the default) for the whole domain.
    pub path_prefix: Option<String>,
    /// `roundrobin` (default), `leastconn`, `source` or `random`.
    pub balance: Option<String>,
    /// Keep each client on one task through a cookie.
    pub sticky: Option<bool>,
    /// 1–3600 seconds (default 60).
    pub timeout_secs: Option<i32>,
    /// Largest request body passed on; `0` or absent: no limit.
    pub max_body_bytes: Option<i64>,
    /// Redirect plain-HTTP requests to HTTPS once the routers have a certificate for the domain.
    pub https_redirect: Option<bool>,
    /// Check tasks with an HTTP GET of this path (2xx or 3xx: healthy) instead of a TCP connect.
    pub probe_path: Option<String>,
}

impl CreateRoute {
    pub fn options(&self) -> RouteOptions {
        RouteOptions {
            balance: self.balance.clone(),
            sticky: self.sticky,
            timeout_secs: self.timeout_secs,
            max_body_bytes: self.max_body_bytes,
            https_redirect: self.https_redirect,
            probe_path: self.probe_path.clone(),
        }
    }
}

/// How a route balances and limits requests. Absent fields keep their value (on create: the defaults).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    /// `roundrobin` (default), `leastconn`, `source` or `random`.
    pub balance: Option<String>,
    /// Keep each client on one task through a cookie.
    pub sticky: Option<bool>,
    /// 1–3600 seconds (default 60).
    pub timeout_secs: Option<i32>,
    /// Largest request body passed on; `0` removes the limit.
    pub max_body_bytes: Option<i64>,
    /// Redirect plain-HTTP requests to HTTPS (308) once the routers have a certificate for the domain.
    pub https_redirect: Option<bool>,
    /// Check tasks with an HTTP GET of this path (2xx or 3xx: healthy); `""` goes back to a TCP check.
    pub probe_path: Option<String>,
}

/// A custom domain granted to a tenant by a platform admin: routes of that tenant to the domain or any
/// name under it are routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainGrant {
    pub domain: String,
    pub tenant_id: Uuid,
    /// `admin` for a grant; `dns` when the tenant proved the domain itself.
    pub proved_by: DomainProof,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A custom domain of the caller's tenant: verified (its routes to the domain and every name under
/// it are routed) or pending until the TXT record in `verification` is found in the domain's DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Domain {
    pub domain: String,
    pub status: DomainStatus,
    /// How it was verified; absent while pending.
    pub proved_by: Option<DomainProof>,
    /// The record to publish (while pending).
    pub verification: Option<DomainVerification>,
    /// What the last check found, when it did not prove the domain.
    pub last_error: Option<String>,
    /// When the record was last looked up.
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// The DNS record that proves a domain: a TXT record named `name` holding `value` (other TXT
/// records beside it do no harm).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DomainVerification {
    /// Always `TXT`.
    pub record_type: String,
    pub name: String,
    pub value: String,
}

/// Claims a custom domain for the caller's tenant; it is routed once verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomainGrant {
    pub domain: String,
}

/// Starts a canary or blue/green release of a new revision. The revision is an existing one
/// (`revision`) or a new one made from the fields `PATCH /applications/{id}` takes (omitted fields keep
/// the current revision's values). The services whose definition the revision changes run beside the
/// current ones, and each of their routes sends them `weight` percent of its requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    /// `canary` (default) or `blue_green`.
    pub strategy: Option<ReleaseStrategy>,
    /// Percent of requests for the new revision: 10 by default for a canary, 0 for blue/green (whose
    /// weight is 0 or 100).
    pub weight: Option<i32>,
    /// An existing revision of the application to release (instead of a new one).
    pub revision: Option<i32>,
    pub template_version: Option<i32>,
    pub compose: Option<String>,
    pub files: Option<std::collections::BTreeMap<String, String>>,
    pub variables: Option<std::collections::BTreeMap<String, String>>,
    /// Abort on its own when the new revision fails.
    pub auto_abort: Option<AutoAbort>,
}

/// When a release aborts on its own: the new revision's share of 5xx answers over the last
/// `window_secs` (counted once it has had `min_requests`) exceeds `max_error_rate`, or one of its
/// services has had no running task for `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoAbort {
    /// A fraction: 0.05 aborts above 5% of answers being 5xx.
    pub max_error_rate: f64,
    #[serde(default = "AutoAbort::default_window")]
    pub window_secs: i32,
    #[serde(default = "AutoAbort::default_min_requests")]
    pub min_requests: i64,
}

impl AutoAbort {
    fn default_window() -> i32 {
        60
    }
    fn default_min_requests() -> i64 {
        20
    }
}

/// Changes a running release's share of traffic (and its automatic abort; `null` turns it off).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRelease {
    pub weight: Option<i32>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AutoAbort>)]
    pub auto_abort: Option<Option<AutoAbort>>,
}

/// A field that may be given as `null` (`Some(None)`) or left out (`None`, through `default`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A canary or blue/green release of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Release {
    pub id: Uuid,
    pub application_id: Uuid,
    /// The revision serving when the release began.
    pub from_revision: i32,
    /// The revision released.
    pub to_revision: i32,
    pub strategy: ReleaseStrategy,
    /// Percent of requests the new revision gets.
    pub weight: i32,
    pub state: ReleaseState,
    pub auto_abort: Option<AutoAbort>,
    /// Why the release failed or aborted on its own.
    pub message: String,
    /// The new revision's copies of the services it changes.
    pub services: Vec<ReleaseService>,
    /// What the routers saw the new revision answer.
    pub traffic: ReleaseTraffic,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// One service the release runs a copy of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseService {
    /// The copy's service id (its tasks are at `/services/{id}/containers`).
    pub id: Uuid,
    pub name: String,
    pub image: String,
    pub replicas_desired: i32,
    pub replicas_running: i32,
}

/// The new revision's answers through every router, in total and over the last minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseTraffic {
    pub requests_total: i64,
    pub responses_5xx_total: i64,
    pub requests_last_minute: i64,
    pub responses_5xx_last_minute: i64,
}

/// Whether a certificate for `name` serves `host`: the same name, or a wildcard `*.example.com` for a
/// name one level below it (a wildcard `host` needs the same wildcard).
pub fn certificate_covers(name: &str, host: &str) -> bool {
    name == host
        || (!host.starts_with("*.")
            && name.strip_prefix("*.").is_some_and(|parent| host.split_once('.').is_some_and(|(_, rest)| rest == parent)))
}

/// A router at work or seen in the last day (`GET /api/v1/admin/routers`): an HAProxy that Berth
/// keeps in step with the route table (`berth router`, or the one `berth serve` runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Router {
    /// The machine it runs on and the address it listens on (`host@address:port`).
    pub name: String,
    pub state: RouterState,
    /// The database's time when the router began reading the newest route table it serves.
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub applied_at: DateTime<Utc>,
    /// When it last reported (every two seconds while it runs).
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub seen_at: DateTime<Utc>,
    /// Why it keeps serving an older table, while it does (HAProxy refused the new configuration, …).
    pub error: Option<String>,
}

/// A TLS certificate the routers serve for `domain` (chosen by SNI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    pub id: Uuid,
    pub domain: String,
    /// `uploaded`, or `acme` (obtained and renewed by Berth).
    pub source: String,
    /// `pending` (being obtained), `issued` (served) or `failed` (see `message`; a renewal that failed
    /// leaves the issued certificate served until it expires).
    pub state: String,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub not_after: Option<DateTime<Utc>>,
    /// The served certificate's serial number, hex.
    pub serial: String,
    pub message: String,
    /// When Berth last obtained it from the authority.
    #[serde(serialize_with = "timestamp::rfc3339_opt")]
    pub renewed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
}

/// A certificate for a domain the tenant routes (a default domain of one of its routes, or a name a
/// platform admin granted it). With `certificate_pem` (the chain, leaf first) and `private_key_pem`
/// (PKCS#8) it is uploaded; without them Berth obtains one over ACME and renews it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCertificate {
    pub domain: String,
    pub certificate_pem: Option<String>,
    pub private_key_pem: Option<String>,
}

/// A load balancer: listeners on its address, each forwarding to one target port of a service,
/// balanced over the service's running tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadBalancer {
    pub id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    /// `local`: served by Berth's routers (each listener an HAProxy frontend on the router's address).
    pub driver: String,
    /// Where clients reach its listeners.
    pub address: String,
    pub listeners: Vec<Listener>,
    /// Each listener's traffic through every router, by port (a few seconds behind).
    pub traffic: Vec<ListenerTraffic>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// What went through one listener. For a `tcp` listener a request is a connection (and it has no
/// 5xx answers nor response time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListenerTraffic {
    pub port: i32,
    pub traffic: RouteTraffic,
}

/// A port of a load balancer and the service target port it forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A port in the range the operator reserved for load balancers.
    pub port: i32,
    /// `http` (requests balanced one by one, retried on another task when safe) or `tcp`
    /// (connections balanced).
    pub protocol: String,
    pub service_id: Uuid,
    /// One of the ports the service exposes.
    pub target_port: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLoadBalancer {
    pub name: String,
    pub cluster_id: Uuid,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// The balancer's listeners, all of them: what is not here is removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetListeners {
    pub listeners: Vec<Listener>,
}
