//! The tenant's change feed as Server-Sent Events: jobs queued, running and finished, node and cluster
//! state changes. Each event carries its id, so a client that reconnects with `Last-Event-ID` misses
//! nothing; events are read from Postgres, so every Berth process serves the same feed. New events
//! arrive through the process's [`crate::events::EventHub`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use berth_types::{Event, Problem};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::api::extract::ApiQuery;
use crate::auth::Principal;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult};
use crate::events::{Delivery, Subscription};
use crate::state::AppState;

/// How often a stream polls the table with [`Delivery::Poll`].
const POLL: Duration = Duration::from_millis(500);
/// With [`Delivery::Listen`], how often a quiet stream reads the table anyway, in case an announcement
/// was lost without the listener noticing.
const SAFETY_NET: Duration = Duration::from_secs(30);
/// Rows read per catch-up query.
const PAGE: i64 = 100;
/// How long clients wait before reconnecting when the server closes their stream to shut down.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Start after this event id (like `Last-Event-ID`). Without either, the stream starts with new events.
    pub after: Option<i64>,
}

/// Streams the caller's tenant's events as `text/event-stream`; each SSE `data` is an [`Event`]. When the
/// server shuts down, the stream ends with a `retry` hint; reconnect with `Last-Event-ID` to miss nothing.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, description = "A stream of Server-Sent Events whose data are `Event` objects", content_type = "text/event-stream", body = Event),
              (status = 401, body = Problem), (status = 403, body = Problem)), security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    mut db: TenantDb,
    me: Principal,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let tenant = me.tenant()?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.parse::<i64>());
    // Subscribe before the first read of the table, so nothing committed in between is missed.
    let subscription = state.events.subscribe(tenant);
    let after = match (resume, q.after) {
        (Some(Ok(id)), _) => id,
        (Some(Err(_)), _) => return Err(ApiError::bad_request("invalid-last-event-id", "Last-Event-ID must be an event id")),
        (None, Some(id)) => id,
        (None, None) => {
            sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut *db)
                .await?
        }
    };
    // The stream outlives the request: give the connection back now.
    drop(db);
    let feed = Feed { state, tenant, after, pending: VecDeque::new(), more: true, subscription, closing: false, done: false };
    // The stream opens with its position (an `id` with no data, which clients do not see as an event
    // but remember): a client that loses the connection before any event arrives resumes from there,
    // with `Last-Event-ID` as an EventSource does, and misses nothing.
    let position = SseEvent::default().id(after.to_string()).comment("resume point");
    let events = futures_util::stream::once(std::future::ready(Ok(position)))
        .chain(futures_util::stream::unfold(feed, |mut feed| async move { feed.next().await.map(|e| (Ok(e), feed)) }));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How many recent events to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecentParams {
    /// 1–100 (default 20).
    pub limit: Option<i64>,
}

/// The tenant's latest events, newest first: what happened before a client opened the stream (the
/// console's dashboard shows them at once, then adds what the stream brings).
#[utoipa::path(get, path = "/api/v1/events/recent", tag = "events", params(RecentParams),
    responses((status = 200, body = Vec<Event>), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn recent(mut db: TenantDb, me: Principal, ApiQuery(q): ApiQuery<RecentParams>) -> ApiResult<axum::Json<Vec<Event>>> {
    let tenant = me.tenant()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 100"));
    }
    Ok(axum::Json(crate::events::latest(&mut db, tenant, limit).await?))
}

/// One open stream: the last event sent, what is ready to send, and where new events come from.
struct Feed {
    state: AppState,
    tenant: Uuid,
    after: i64,
    pending: VecDeque<Event>,
    /// The table may hold more events after `after` than the last catch-up read.
    more: bool,
    subscription: Subscription,
    /// The server is stopping: send what is committed, then the reconnect hint.
    closing: bool,
    done: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                // Broadcasts and catch-up reads overlap; each event goes out once, in id order.
                if event.id <= self.after {
                    continue;
                }
                self.after = event.id;
                return Some(to_sse(&event));
            }
            if self.closing {
                self.done = true;
                return Some(SseEvent::default().retry(RECONNECT_AFTER).comment("Berth is shutting down; reconnect"));
            }
            if self.more {
                self.catch_up().await;
                continue;
            }
            let poll = self.state.events.delivery == Delivery::Poll;
            let wait = if poll { POLL } else { SAFETY_NET };
            tokio::select! {
                () = self.state.shutting_down() => {
                    // Events committed before the stop may not have been broadcast yet: read them
                    // from the table, send them, then end.
                    self.catch_up().await;
                    self.closing = true;
                }
                received = self.subscription.events.recv(), if !poll => match received {
                    Ok(event) => self.pending.push_back((*event).clone()),
                    // Fell behind the buffer: read the table instead.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.more = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                changed = self.subscription.resync.changed(), if !poll => match changed {
                    Ok(()) => self.more = true,
                    Err(_) => return None,
                },
                () = tokio::time::sleep(wait) => self.more = true,
            }
        }
    }

    async fn catch_up(&mut self) {
        // The stream is polled after the handler returned, outside the request's tenant scope: scope
        // the read explicitly.
        let read = crate::db::scoped(Some(self.tenant), crate::events::after(&self.state.db, self.tenant, self.after, PAGE));
        match read.await {
            Ok(rows) => {
                self.more = rows.len() as i64 == PAGE;
                self.pending.extend(rows);
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream query failed");
                self.more = false;
            }
        }
    }
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default().id(event.id.to_string()).event(event.kind.clone()).json_data(event).unwrap_or_default()
}
