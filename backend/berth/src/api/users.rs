//! A tenant's users, managed by its owners and admins.
//!
//! Rules beyond the role check: only owners create, change or remove owners; nobody removes or demotes
//! the tenant's last owner; nobody grants a role above their own.

use axum::Json;
use axum::http::StatusCode;
use berth_types::{CreateUser, Page, Problem, Role, UpdateUser, User};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::audit::Audit;
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::api::pagination::{PageParams, page};
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::domain::validate;
use crate::error::{ApiError, ApiResult};

#[derive(sqlx::FromRow)]
pub struct UserRow {
    id: Uuid,
    email: String,
    #[sqlx(try_from = "String")]
    role: Role,
    tenant_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User { id: r.id, email: r.email, role: r.role, tenant_id: r.tenant_id, created_at: r.created_at }
    }
}

const USER_COLUMNS: &str = "id, email, role, tenant_id, created_at";

/// Inserts a user; an e-mail already in use anywhere on the platform is a 409.
pub async fn insert_user(tx: &mut PgConnection, tenant: Option<Uuid>, email: &str, hash: &str, role: Role) -> ApiResult<User> {
    let row: Result<UserRow, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(email.trim())
    .bind(hash)
    .bind(role.as_str())
    .fetch_one(tx)
    .await;
    match row {
        Ok(r) => Ok(r.into()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(ApiError::conflict("email-taken", "a user with this e-mail address already exists"))
        }
        Err(e) => Err(e.into()),
    }
}

fn check_grant(me: &Principal, role: Role) -> ApiResult<()> {
    if role == Role::PlatformAdmin {
        return Err(ApiError::invalid_field("role", "must be one of owner, admin, developer, viewer"));
    }
    if !me.role.at_least(role) {
        return Err(ApiError::forbidden(format!("you cannot grant `{role}`, which is above your own role")));
    }
    if role == Role::Owner && me.role != Role::Owner {
        return Err(ApiError::forbidden("only owners can make owners"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = User), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn create(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let tenant = me.tenant_with(Role::Admin)?;
    validate::email("email", &req.email)?;
    validate::password("password", &req.password)?;
    check_grant(&me, req.role)?;
    let hash = crate::auth::password::hash(req.password).await?;
    let mut tx = db.begin().await?;
    let user = insert_user(&mut tx, Some(tenant), &req.email, &hash, req.role).await?;
    tx.commit().await?;
    audit.record("user.create", "user", user.id);
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<User>), (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn list(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<PageParams>) -> ApiResult<Json<Page<User>>> {
    let tenant = me.tenant_with(Role::Admin)?;
    let limit = q.limit()?;
    let rows: Vec<UserRow> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(q.after::<Uuid>()?)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    Ok(Json(page(rows, limit, |r| r.id, Into::into)))
}

async fn load(conn: &mut PgConnection, tenant: Uuid, id: Uuid, lock: bool) -> ApiResult<User> {
    let sql =
        format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2{}", if lock { " FOR UPDATE" } else { "" });
    let row: Option<UserRow> = sqlx::query_as(&sql).bind(tenant).bind(id).fetch_optional(conn).await?;
    row.map(Into::into).ok_or_else(|| ApiError::not_found("user"))
}

/// Owners and admins see any user of their tenant; everyone sees themselves.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
pub async fn get(db: TenantDb, me: Principal, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<User>> {
    let tenant = me.tenant()?;
    if id != me.user_id() {
        me.require(Role::Admin)?;
    }
    let mut conn = db;
    Ok(Json(load(&mut conn, tenant, id, false).await?))
}

/// Locks the tenant's owners and fails if removing `leaving` would leave none.
async fn keep_an_owner(tx: &mut PgConnection, tenant: Uuid, leaving: Uuid) -> ApiResult<()> {
    let owners: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE")
        .bind(tenant)
        .fetch_all(tx)
        .await?;
    if owners.iter().all(|o| *o == leaving) {
        return Err(ApiError::conflict("last-owner", "a tenant must keep at least one owner"));
    }
    Ok(())
}

/// Changes a user's role or password. Users may change their own password; roles are changed by owners
/// and admins. A password change ends the user's login sessions.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
               (status = 409, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
pub async fn update(
    mut db: TenantDb,
    me: Principal,
    audit: Audit,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<UpdateUser>,
) -> ApiResult<Json<User>> {
    let tenant = me.tenant()?;
    audit.record("user.update", "user", id);
    let is_self = id == me.user_id();
    if req.role.is_some() || !is_self {
        me.require(Role::Admin)?;
    }
    if let Some(p) = &req.password {
        validate::password("password", p)?;
    }
    let hash = match req.password.clone() {
        Some(p) => Some(crate::auth::password::hash(p).await?),
        None => None,
    };
    let mut tx = db.begin().await?;
    let user = load(&mut tx, tenant, id, true).await?;
    if user.role == Role::Owner && me.role != Role::Owner {
        return Err(ApiError::forbidden("only owners can change owners"));
    }
    if let Some(role) = req.role {
        check_grant(&me, role)?;
        if user.role == Role::Owner && role != Role::Owner {
            keep_an_owner(&mut tx, tenant, id).await?;
        }
        sqlx::query("UPDATE users SET role = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let Some(hash) = hash {
        sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        crate::api::auth::revoke_sessions_of(&mut tx, &[id]).await?;
    }
    let user = load(&mut tx, tenant, id, false).await?;
    tx.commit().await?;
    Ok(Json(user))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete(mut db: TenantDb, me: Principal, audit: Audit, ApiPath(id): ApiPath<Uuid>) -> ApiResult<StatusCode> {
    let tenant = me.tenant_with(Role::Admin)?;
    audit.record("user.delete", "user", id);
    let mut tx = db.begin().await?;
    let user = load(&mut tx, tenant, id, true).await?;
    if user.role == Role::Owner {
        if me.role != Role::Owner {
            return Err(ApiError::forbidden("only owners can remove owners"));
        }
        keep_an_owner(&mut tx, tenant, id).await?;
    }
    sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
