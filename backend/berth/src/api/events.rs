//! The tenant's change feed as Server-Sent Events: jobs queued, running and finished, node and cluster
//! state changes. Each event carries its id, so a client that reconnects with `Last-Event-ID` misses
//! nothing; events are read from Postgres, so every Berth process serves the same feed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use berth_types::{Event, Problem};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::extract::ApiQuery;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often an open stream looks for new events.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Start after this event id (like `Last-Event-ID`). Without either, the stream starts with new events.
    pub after: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    kind: String,
    target_type: String,
    target_id: Option<Uuid>,
    data: serde_json::Value,
    at: DateTime<Utc>,
}

/// Streams the caller's tenant's events as `text/event-stream`; each SSE `data` is an [`Event`].
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, description = "A stream of Server-Sent Events whose data are `Event` objects", content_type = "text/event-stream", body = Event),
              (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    me: Principal,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tenant = me.tenant()?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.parse::<i64>());
    let after = match (resume, q.after) {
        (Some(Ok(id)), _) => id,
        (Some(Err(_)), _) => return Err(ApiError::bad_request("invalid-last-event-id", "Last-Event-ID must be an event id")),
        (None, Some(id)) => id,
        (None, None) => {
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&state.db)
                .await?
        }
    };
    let db = state.db.clone();
    let events = futures_util::stream::unfold(
        (db, after, Vec::<EventRow>::new()),
        move |(db, mut after, mut pending)| async move {
            loop {
                if !pending.is_empty() {
                    let row = pending.remove(0);
                    after = row.id;
                    let event = Event {
                        id: row.id,
                        kind: row.kind,
                        target_type: row.target_type,
                        target_id: row.target_id,
                        data: row.data,
                        at: row.at,
                    };
                    let sse = SseEvent::default()
                        .id(event.id.to_string())
                        .event(event.kind.clone())
                        .json_data(&event)
                        .unwrap_or_default();
                    return Some((Ok(sse), (db, after, pending)));
                }
                let rows: Result<Vec<EventRow>, _> = sqlx::query_as(
                "SELECT id, kind, target_type, target_id, data, at FROM events WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT 100",
            )
            .bind(tenant)
            .bind(after)
            .fetch_all(&db)
            .await;
                match rows {
                    Ok(rows) if !rows.is_empty() => pending = rows,
                    Ok(_) => tokio::time::sleep(POLL).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream query failed");
                        tokio::time::sleep(POLL * 4).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
