//! Live data: the tenant's change feed (`/api/v1/events`) and task logs, read as Server-Sent Events.
//!
//! One feed per signed-in tenant user. Pages do not poll: they ask for a version number that moves
//! whenever events they care about arrive ([`changes`]; a burst within 100 ms counts once), and reload
//! what depends on it. The feed reconnects on its own, resuming after the last event it saw, so
//! nothing is missed; a tab hidden for a few seconds closes its connection and resumes when seen.

use std::cell::RefCell;
use std::time::Duration;

use berth_types::Event;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, ApiError};
use crate::sse;

struct Subscriber {
    id: u64,
    wants: Box<dyn Fn(&Event) -> bool>,
    version: RwSignal<u64>,
}

/// A handler given each event itself (see [`each`]).
struct Handler {
    id: u64,
    handle: Box<dyn Fn(&Event)>,
}

thread_local! {
    static SUBSCRIBERS: RefCell<Vec<Subscriber>> = const { RefCell::new(Vec::new()) };
    static HANDLERS: RefCell<Vec<Handler>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: RefCell<u64> = const { RefCell::new(0) };
    /// Subscribers an event matched, waiting for the next flush.
    static PENDING: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static FEED: RefCell<Option<web_sys::AbortController>> = const { RefCell::new(None) };
    /// Whether the tab has been seen lately (false once hidden for [`HIDDEN_GRACE`]).
    static SEEN: ArcRwSignal<bool> = ArcRwSignal::new(true);
    /// The feed's current connection, ended on its own when the tab stays hidden.
    static CONNECTION: RefCell<Option<web_sys::AbortController>> = const { RefCell::new(None) };
    /// Other open streams (task logs), ended with the page.
    static STREAMS: RefCell<Vec<web_sys::AbortController>> = const { RefCell::new(Vec::new()) };
    /// The latest events of this session, newest last (the dashboard's "recent events").
    static RECENT: RefCell<std::collections::VecDeque<Event>> = const { RefCell::new(std::collections::VecDeque::new()) };
}

/// How many recent events are kept for the dashboard.
const RECENT_KEPT: usize = 50;

/// The latest events seen by this session's feed, newest first.
pub fn recent() -> Vec<Event> {
    RECENT.with(|r| r.borrow().iter().rev().cloned().collect())
}

/// A version that moves when an event matching `wants` arrives; read it in a resource to reload then.
/// The subscription ends with the calling component.
pub fn changes(wants: impl Fn(&Event) -> bool + 'static) -> RwSignal<u64> {
    let version = RwSignal::new(0u64);
    let id = NEXT_ID.with(|n| {
        *n.borrow_mut() += 1;
        *n.borrow()
    });
    SUBSCRIBERS.with(|s| s.borrow_mut().push(Subscriber { id, wants: Box::new(wants), version }));
    on_cleanup(move || SUBSCRIBERS.with(|s| s.borrow_mut().retain(|x| x.id != id)));
    version
}

/// Events arriving within this long of each other move a page's version once: a burst (a deploy, ten
/// services scaled at once) reloads the page once, not once per event.
const COALESCE: Duration = Duration::from_millis(100);

/// Calls `handle` with every event as it arrives, for pages that update one row in place rather than
/// reload everything. The handler ends with the calling component.
pub fn each(handle: impl Fn(&Event) + 'static) {
    let id = NEXT_ID.with(|n| {
        *n.borrow_mut() += 1;
        *n.borrow()
    });
    HANDLERS.with(|h| h.borrow_mut().push(Handler { id, handle: Box::new(handle) }));
    on_cleanup(move || HANDLERS.with(|h| h.borrow_mut().retain(|x| x.id != id)));
}

fn dispatch(event: &Event) {
    HANDLERS.with(|h| h.borrow().iter().for_each(|x| (x.handle)(event)));
    RECENT.with(|r| {
        let mut r = r.borrow_mut();
        r.push_back(event.clone());
        while r.len() > RECENT_KEPT {
            r.pop_front();
        }
    });
    let mut schedule = false;
    SUBSCRIBERS.with(|s| {
        for sub in s.borrow().iter() {
            if (sub.wants)(event) {
                PENDING.with(|p| {
                    let mut p = p.borrow_mut();
                    schedule |= p.is_empty();
                    if !p.contains(&sub.id) {
                        p.push(sub.id);
                    }
                });
            }
        }
    });
    if schedule {
        set_timeout(flush, COALESCE);
    }
}

/// Moves the version of every subscriber an event matched since the last flush.
fn flush() {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    SUBSCRIBERS.with(|s| {
        for sub in s.borrow().iter().filter(|s| pending.contains(&s.id)) {
            let _ = sub.version.try_update(|v| *v += 1);
        }
    });
}

/// How long a hidden tab keeps its feed. A browser opens at most six connections to one HTTP/1.1
/// server and each feed holds one: with a feed in every open tab, the seventh tab's requests would wait
/// forever. Hidden tabs give theirs back and resume after the last event they saw once seen again.
const HIDDEN_GRACE: Duration = Duration::from_secs(3);

fn hidden() -> bool {
    web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden())
}

/// Starts the tenant's feed (once per session); `connected` tells the page header whether it is live.
pub fn start_feed(connected: RwSignal<bool>) {
    stop_feed();
    close_when_leaving();
    let controller = web_sys::AbortController::new().expect("AbortController");
    let signal = controller.signal();
    FEED.with(|f| *f.borrow_mut() = Some(controller));
    wasm_bindgen_futures::spawn_local(async move {
        let mut after: Option<i64> = None;
        while !signal.aborted() {
            // A hidden tab waits to be seen (its timers are slowed meanwhile; that costs nothing here).
            if hidden() {
                sleep(Duration::from_millis(250)).await;
                continue;
            }
            let path = match after {
                Some(id) => format!("/events?after={id}"),
                None => "/events".to_owned(),
            };
            let connection = web_sys::AbortController::new().expect("AbortController");
            let connection_signal = connection.signal();
            CONNECTION.with(|c| *c.borrow_mut() = Some(connection));
            let result = read(
                &path,
                &connection_signal,
                || connected.set(true),
                |m| {
                    if let Ok(e) = serde_json::from_str::<Event>(&m.data) {
                        after = Some(e.id);
                        dispatch(&e);
                    }
                },
            )
            .await;
            let _ = connected.try_set(false);
            if let Ok(Some(position)) = &result {
                after = position.parse().ok().or(after);
            }
            if matches!(result, Err(ApiError { status: 401 | 403, .. })) {
                return; // the session is over; the login page takes it from here
            }
            if !connection_signal.aborted() {
                sleep(Duration::from_secs(1)).await; // the server or the network ended it: retry soon
            }
        }
    });
}

/// Ends every stream when the page goes away (reload, another site, a closed tab). A browser may keep
/// a streaming response's connection open after the page that read it is gone, and it opens at most
/// six connections to one HTTP/1.1 server: a few reloads would otherwise leave the next page's
/// requests waiting for a free connection.
fn close_when_leaving() {
    thread_local!(static HOOKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if HOOKED.with(|h| h.replace(true)) {
        return;
    }
    let Some(window) = web_sys::window() else { return };
    let on_hide = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(|| {
        stop_feed();
        STREAMS.with(|s| s.borrow_mut().drain(..).for_each(|c| c.abort()));
    });
    let _ = window.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
    on_hide.forget();
    let Some(document) = window.document() else { return };
    let on_visibility = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(|| {
        if hidden() {
            set_timeout(
                || {
                    if hidden() {
                        end_connection();
                        SEEN.with(|s| s.set(false));
                    }
                },
                HIDDEN_GRACE,
            );
        } else {
            SEEN.with(|s| s.set(true));
        }
    });
    let _ = document.add_event_listener_with_callback("visibilitychange", on_visibility.as_ref().unchecked_ref());
    on_visibility.forget();
}

/// Whether the tab has been seen lately: false once it has been hidden for a few seconds, true again
/// when it is shown. Other streams (task logs) follow it to give their connection back too.
pub fn seen() -> ArcRwSignal<bool> {
    close_when_leaving();
    SEEN.with(Clone::clone)
}

/// Ends the feed's current connection; the feed itself reconnects when the tab is seen.
fn end_connection() {
    CONNECTION.with(|c| {
        if let Some(c) = c.borrow_mut().take() {
            c.abort();
        }
    });
}

pub fn stop_feed() {
    FEED.with(|f| {
        if let Some(c) = f.borrow_mut().take() {
            c.abort();
        }
    });
    end_connection();
}

/// A controller for a stream that must also end when the page goes away.
pub fn stream_controller() -> web_sys::AbortController {
    let c = web_sys::AbortController::new().expect("AbortController");
    STREAMS.with(|s| {
        let mut s = s.borrow_mut();
        s.retain(|c| !c.signal().aborted());
        s.push(c.clone());
    });
    close_when_leaving();
    c
}

/// Reads one Server-Sent Events stream to its end, handing each message to `on_message`; gives the
/// last `id:` the stream sent (its position, even when no event came).
pub async fn read(
    path: &str,
    signal: &web_sys::AbortSignal,
    on_open: impl FnOnce(),
    mut on_message: impl FnMut(sse::Message),
) -> Result<Option<String>, ApiError> {
    let resp = api::open_stream(path, signal).await?;
    on_open();
    let mut parser = sse::Parser::default();
    let Some(body) = resp.body() else { return Ok(None) };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    loop {
        let chunk = match JsFuture::from(reader.read()).await {
            Ok(c) => c,
            Err(_) => return Ok(parser.last_id().map(str::to_owned)), // aborted or the connection dropped
        };
        let done = js_sys::Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true);
        if done {
            return Ok(parser.last_id().map(str::to_owned));
        }
        if let Ok(value) = js_sys::Reflect::get(&chunk, &"value".into()) {
            let bytes = js_sys::Uint8Array::new(&value).to_vec();
            for m in parser.push(&bytes) {
                on_message(m);
            }
        }
    }
}

pub async fn sleep(d: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        set_timeout(
            move || {
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            },
            d,
        );
    });
    let _ = JsFuture::from(promise).await;
}
