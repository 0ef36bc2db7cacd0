//! Compose templates, versioned: every edit of the Compose text adds a version; versions never change.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::StatusCode;
use berth_types::{CreateTemplate, Page, Problem, Role, Template, TemplateVersion, UpdateTemplate};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::clusters::name_taken;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::applications::compose;
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
struct TemplateRow {
    id: Uuid,
    name: String,
    description: String,
    latest_version: i32,
    compose: String,
    variables: sqlx::types::Json<BTreeMap<String, Option<String>>>,
    services: Vec<String>,
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
            variables: r.variables.0,
            services: r.services,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A template with its latest version's text.
const SELECT_TEMPLATE: &str =
    "SELECT t.id, t.name, t.description, t.latest_version, v.compose, v.variables, v.services, t.created_at, t.updated_at
       FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.latest_version";

pub async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> ApiResult<Template> {
    let row: Option<TemplateRow> = sqlx::query_as(&format!("{SELECT_TEMPLATE} WHERE t.tenant_id = $1 AND t.id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("template"))
}

/// Checks a template's Compose text: every error, each with its path and position, as one 422.
fn check(text: &str) -> ApiResult<compose::TemplateInfo> {
    compose::check_template(text, &BTreeMap::new()).map_err(|errors| compose::invalid("compose", &errors))
}

/// Stores a version of already-validated text, with the variables and services it declares.
async fn insert_version(
    tx: &mut PgConnection,
    tenant: Uuid,
    template: Uuid,
    version: i32,
    text: &str,
    by: Uuid,
) -> ApiResult<()> {
    let info = check(text)?;
    let variables: BTreeMap<String, Option<String>> = info.variables.into_iter().map(|(k, r)| (k, r.default)).collect();
    sqlx::query(
        "INSERT INTO template_versions (tenant_id, template_id, version, compose, variables, services, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(template)
    .bind(version)
    .bind(text)
    .bind(sqlx::types::Json(variables))
    .bind(info.services)
    .bind(by)
    .execute(tx)
    .await?;
    Ok(())
}

/// Creates a template (version 1). The Compose text is checked: a YAML error is a 422 with line and column.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    let tenant = me.tenant_with(Role::Developer)?;
    validate::dns_name("name", &req.name)?;
    if req.description.chars().count() > 1000 {
        return Err(ApiError::invalid_field("description", "must be at most 1000 characters"));
    }
    check(&req.compose)?;
    let id = Uuid::now_v7();
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO templates (id, tenant_id, name, description) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(&req.name)
        .bind(&req.description)
        .execute(&mut *tx)
        .await
        .map_err(|e| name_taken(e, "template"))?;
    insert_version(&mut tx, tenant, id, 1, &req.compose, me.user_id()).await?;
    let t = load(&mut tx, tenant, id).await?;
    tx.commit().await?;
    audit.record("template.create", "template", id);
    Ok((StatusCode::CREATED, Json(t)))
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
pub async fn get(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<Template>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    Ok(Json(load(&mut conn, tenant, id).await?))
}

/// Edits a template. New Compose text becomes a new version; a description-only edit adds none.
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
    if let Some(text) = &req.compose {
        check(text)?;
    }
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
    if let Some(text) = &req.compose {
        version += 1;
        insert_version(&mut tx, tenant, id, version, text, me.user_id()).await?;
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
    variables: sqlx::types::Json<BTreeMap<String, Option<String>>>,
    created_at: DateTime<Utc>,
}

impl From<VersionRow> for TemplateVersion {
    fn from(r: VersionRow) -> Self {
        TemplateVersion {
            template_id: r.template_id,
            version: r.version,
            compose: r.compose,
            variables: r.variables.0,
            created_at: r.created_at,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/templates/{id}/versions", tag = "templates", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<TemplateVersion>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn versions(
    db: TenantDb,
    me: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<Json<Page<TemplateVersion>>> {
    let tenant = me.tenant()?;
    let limit = q.limit()?;
    let mut conn = db;
    load(&mut conn, tenant, id).await?;
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT template_id, version, compose, variables, created_at FROM template_versions
          WHERE tenant_id = $1 AND template_id = $2 AND ($3::int IS NULL OR version > $3) ORDER BY version LIMIT $4",
    )
    .bind(tenant)
    .bind(id)
    .bind(q.after::<i32>()?)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(page(rows, limit, |r| r.version, Into::into)))
}

#[utoipa::path(get, path = "/api/v1/templates/{id}/versions/{version}", tag = "templates", params(("id" = Uuid, Path), ("version" = i32, Path)),
    responses((status = 200, body = TemplateVersion), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn version(
    db: TenantDb,
    me: Principal,
    ApiPath((id, version)): ApiPath<(Uuid, i32)>,
) -> ApiResult<Json<TemplateVersion>> {
    let tenant = me.tenant()?;
    let mut conn = db;
    load_version(&mut conn, tenant, id, version).await.map(Json)
}

pub async fn load_version(conn: &mut PgConnection, tenant: Uuid, id: Uuid, version: i32) -> ApiResult<TemplateVersion> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT template_id, version, compose, variables, created_at FROM template_versions WHERE tenant_id = $1 AND template_id = $2 AND version = $3",
    )
    .bind(tenant)
    .bind(id)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("template version"))
}
