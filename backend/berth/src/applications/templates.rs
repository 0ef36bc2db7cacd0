//! Compose templates, versioned: every edit of the Compose text or its files adds a version; versions
//! never change. A version records what its text declares (services, variables) and the warnings it
//! drew, so lists and the console need not parse YAML. Also: diffs between versions, and templates
//! imported from Distributed Application Bundles.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use berth_types::{
    CheckCompose, ComposeCheck, ComposeWarning, CreateTemplate, ImportDab, Page, Problem, Role, Template, TemplateDiff,
    TemplateVariable, TemplateVersion, UpdateTemplate,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
use sqlx::types::Json as Jsonb;
use utoipa::IntoParams;
use uuid::Uuid;

use super::compose;
use super::store;
use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};

/// The most files a template may carry, and their summed size.
const MAX_FILES: usize = 64;
const MAX_FILES_BYTES: usize = 512 * 1024;

#[derive(sqlx::FromRow)]
struct TemplateRow {
    id: Uuid,
    name: String,
    description: String,
    latest_version: i32,
    compose: String,
    files: Jsonb<BTreeMap<String, String>>,
    variables: Jsonb<BTreeMap<String, TemplateVariable>>,
    services: Vec<String>,
    warnings: Jsonb<Vec<ComposeWarning>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for Template {
    fn from(r: TemplateRow) -> Self {
        Template {
            id: r.id,
            name: r.name,
            description: r.description,
            version: r.latest_version,
            compose: r.compose,
            files: r.files.0,
            variables: r.variables.0,
            services: r.services,
            warnings: r.warnings.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A template with its latest version's text.
const SELECT_TEMPLATE: &str = "SELECT t.id, t.name, t.description, t.latest_version, v.compose, v.files, v.variables, v.services,
        v.warnings, t.created_at, t.updated_at
   FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.latest_version";

pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<Template> {
    let row: Option<TemplateRow> = sqlx::query_as(&format!("{SELECT_TEMPLATE} WHERE t.tenant_id = $1 AND t.id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("template"))
}

fn check_files(files: &BTreeMap<String, String>) -> ApiResult<()> {
    if files.len() > MAX_FILES {
        return Err(ApiError::invalid_field("files", format!("at most {MAX_FILES} files")));
    }
    if files.values().map(String::len).sum::<usize>() > MAX_FILES_BYTES {
        return Err(ApiError::invalid_field("files", format!("at most {MAX_FILES_BYTES} bytes in all")));
    }
    for name in files.keys() {
        let ok = !name.is_empty()
            && !name.starts_with('/')
            && name.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !ok {
            return Err(ApiError::invalid_field(
                &format!("files.{name}"),
                "a file name is a relative path of letters, digits, `.`, `_`, `-` and `/`",
            ));
        }
    }
    Ok(())
}

/// What a template version asks of whoever deploys it, from its text: the one conversion used by the
/// API and the gallery. Berth's own variables (`BERTH_REGISTRY`, `BERTH_TENANT`) are left out: Berth
/// always sets them, so they are never the caller's to give.
pub fn variables_of(refs: BTreeMap<String, compose::interpolate::Reference>) -> BTreeMap<String, TemplateVariable> {
    refs.into_iter()
        .filter(|(k, _)| !crate::applications::store::BUILTIN_VARIABLES.contains(&k.as_str()))
        .map(|(k, r)| (k, TemplateVariable { default: r.default, required: r.required }))
        .collect()
}

/// Checks a template's Compose text and files: every error, each with its path and position, as one 422.
fn check(text: &str, files: &BTreeMap<String, String>) -> ApiResult<compose::TemplateInfo> {
    check_files(files)?;
    compose::check_template(text, files).map_err(|errors| compose::invalid("compose", &errors))
}

/// Stores a version of already-validated text, with the variables and services it declares.
async fn insert_version(
    tx: &mut PgConnection,
    tenant: Uuid,
    template: Uuid,
    version: i32,
    text: &str,
    files: &BTreeMap<String, String>,
    by: Uuid,
) -> ApiResult<()> {
    let info = check(text, files)?;
    sqlx::query(
        "INSERT INTO template_versions (tenant_id, template_id, version, compose, files, variables, services, warnings, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(tenant)
    .bind(template)
    .bind(version)
    .bind(text)
    .bind(Jsonb(files))
    .bind(Jsonb(variables_of(info.variables)))
    .bind(info.services)
    .bind(Jsonb(store::warnings(&info.warnings)))
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

async fn create_template(
    db: &mut TenantDb,
    me: &Principal,
    name: &str,
    description: &str,
    compose: &str,
    files: &BTreeMap<String, String>,
) -> ApiResult<Template> {
    let tenant = me.tenant_with(Role::Developer)?;
    validate::dns_name("name", name)?;
    if description.chars().count() > 1000 {
        return Err(ApiError::invalid_field("description", "must be at most 1000 characters"));
    }
    check(compose, files)?;
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO templates (id, tenant_id, name, description) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(|e| ApiError::or_name_taken(e, "template"))?;
    insert_version(&mut tx, tenant, id, 1, compose, files, me.user_id()).await?;
    let t = load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    Ok(t)
}

/// Creates a template (version 1). The Compose text is checked: every error comes back at once, each
/// with its path, line and column.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    let t = create_template(&mut db, &me, &req.name, &req.description, &req.compose, &req.files).await?;
    audit.record("template.create", "template", t.id);
    Ok((StatusCode::CREATED, Json(t)))
}

/// Checks Compose text as creating a template would, and stores nothing: every error at once (422, each
/// with its path, line and column), or what the text declares and its warnings. For editors and CI.
#[utoipa::path(post, path = "/api/v1/templates/check", tag = "templates", request_body = CheckCompose,
    responses((status = 200, body = ComposeCheck), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn check_compose(me: Principal, ApiJson(req): ApiJson<CheckCompose>) -> ApiResult<Json<ComposeCheck>> {
    me.tenant()?;
    let info = check(&req.compose, &req.files)?;
    Ok(Json(ComposeCheck {
        services: info.services,
        variables: variables_of(info.variables),
        warnings: store::warnings(&info.warnings),
    }))
}

#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", params(PageParams),
    responses((status = 200, body = Page<Template>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<Template>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let rows: Vec<TemplateRow> = sqlx::query_as(&format!(
        "{SELECT_TEMPLATE} WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)),
    responses((status = 200, body = Template), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(mut db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Template>> {
    let tenant = me.tenant()?;
    Ok(Json(load(&mut db, tenant, id).await?))
}

/// Edits a template. New Compose text or files become a new version (the other is carried over); a
/// description-only edit adds none.
#[utoipa::path(patch, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)), request_body = UpdateTemplate,
    responses((status = 200, body = Template), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn update(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateTemplate>,
) -> ApiResult<Json<Template>> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("template.update", "template", id);
    if let Some(d) = &req.description
        && d.chars().count() > 1000
    {
        return Err(ApiError::invalid_field("description", "must be at most 1000 characters"));
    }
    let mut tx = db.begin().await?;
    let current: Option<i32> =
        sqlx::query_scalar("SELECT latest_version FROM templates WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or_else(|| ApiError::not_found("template"))?;
    let mut version = current;
    if req.compose.is_some() || req.files.is_some() {
        let latest = load(&mut tx, tenant, id).await?;
        let text = req.compose.unwrap_or(latest.compose);
        let files = req.files.unwrap_or(latest.files);
        version += 1;
        insert_version(&mut tx, tenant, id, version, &text, &files, me.user_id()).await?;
    }
    sqlx::query(
        "UPDATE templates SET latest_version = $2, description = coalesce($3, description), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(version)
    .bind(&req.description)
    .execute(&mut *tx)
    .await?;
    let t = load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    Ok(Json(t))
}

/// Deletes a template with all its versions; refused (409) while an application uses it.
#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "templates", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Developer)?;
    audit.record("template.delete", "template", id);
    let mut tx = db.begin().await?;
    let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM templates WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    exists.ok_or_else(|| ApiError::not_found("template"))?;
    let used: i64 =
        sqlx::query_scalar("SELECT count(*) FROM applications WHERE template_id = $1").bind(id).fetch_one(&mut *tx).await?;
    if used > 0 {
        return Err(ApiError::conflict("template-in-use", format!("{used} application(s) use this template; delete them first")));
    }
    sqlx::query("DELETE FROM templates WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    template_id: Uuid,
    version: i32,
    compose: String,
    files: Jsonb<BTreeMap<String, String>>,
    variables: Jsonb<BTreeMap<String, TemplateVariable>>,
    services: Vec<String>,
    warnings: Jsonb<Vec<ComposeWarning>>,
    created_at: DateTime<Utc>,
}

impl From<VersionRow> for TemplateVersion {
    fn from(r: VersionRow) -> Self {
        TemplateVersion {
            template_id: r.template_id,
            version: r.version,
            compose: r.compose,
            files: r.files.0,
            variables: r.variables.0,
            services: r.services,
            warnings: r.warnings.0,
            created_at: r.created_at,
        }
    }
}

const VERSION_COLUMNS: &str = "template_id, version, compose, files, variables, services, warnings, created_at";

#[utoipa::path(get, path = "/api/v1/templates/{id}/versions", tag = "templates", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<TemplateVersion>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn versions(
    mut db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TemplateVersion>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    load(&mut db, tenant, id).await?;
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM template_versions
          WHERE tenant_id = $1 AND template_id = $2 AND ($3::int IS NULL OR version > $3) ORDER BY version LIMIT $4"
    ))
    .bind(tenant)
    .bind(id)
    .bind(q.after::<i32>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.version, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/templates/{id}/versions/{version}", tag = "templates", params(("id" = Uuid, Path), ("version" = i32, Path)),
    responses((status = 200, body = TemplateVersion), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn version(
    mut db: TenantDb,
    me: Principal,
    ApiPath((id, version)): ApiPath<(Uuid, i32)>,
) -> ApiResult<Json<TemplateVersion>> {
    let tenant = me.tenant()?;
    load_version(&mut db, tenant, id, version).await.map(Json)
}

pub async fn load_version(conn: &mut PgConnection, tenant: Uuid, id: Uuid, version: i32) -> ApiResult<TemplateVersion> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM template_versions WHERE tenant_id = $1 AND template_id = $2 AND version = $3"
    ))
    .bind(tenant)
    .bind(id)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("template version"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// The version to compare with (default: the one before).
    pub against: Option<i32>,
}

/// A unified diff of two texts, `a/<name>` against `b/<name>`; empty when they are equal.
pub fn unified(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

/// What changed from one version to another: a unified diff of the Compose text and of every file.
#[utoipa::path(get, path = "/api/v1/templates/{id}/versions/{version}/diff", tag = "templates",
    params(("id" = Uuid, Path), ("version" = i32, Path), DiffParams),
    responses((status = 200, body = TemplateDiff), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn diff(
    mut db: TenantDb,
    me: Principal,
    ApiPath((id, version)): ApiPath<(Uuid, i32)>,
    ApiQuery(q): ApiQuery<DiffParams>,
) -> ApiResult<Json<TemplateDiff>> {
    let tenant = me.tenant()?;
    let to = load_version(&mut db, tenant, id, version).await?;
    let against = q.against.unwrap_or(version - 1);
    let from = load_version(&mut db, tenant, id, against).await?;
    let mut text = unified("compose.yml", &from.compose, &to.compose);
    let names: std::collections::BTreeSet<&String> = from.files.keys().chain(to.files.keys()).collect();
    for name in names {
        let before = from.files.get(name).map_or("", String::as_str);
        let after = to.files.get(name).map_or("", String::as_str);
        text.push_str(&unified(name, before, after));
    }
    Ok(Json(TemplateDiff { from: against, to: version, diff: text }))
}

/// Imports a Distributed Application Bundle (`.dab`, the JSON `docker-compose bundle` wrote and
/// `docker deploy` read) as a new template: each service's image, command, args, environment, labels,
/// ports, working directory, user and networks become Compose.
#[utoipa::path(post, path = "/api/v1/templates/import-dab", tag = "templates", request_body = ImportDab,
    responses((status = 201, body = Template), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn import_dab(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<ImportDab>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    me.tenant_with(Role::Developer)?;
    let compose = super::dab::to_compose(&req.bundle)
        .map_err(|(path, message)| ApiError::invalid_field(&format!("bundle.{path}"), message))?;
    let t = create_template(&mut db, &me, &req.name, &req.description, &compose, &BTreeMap::new()).await?;
    audit.record("template.import", "template", t.id);
    Ok((StatusCode::CREATED, Json(t)))
}
