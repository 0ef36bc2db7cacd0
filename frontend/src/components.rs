//! What pages share: the three states of anything loaded (loading, error, empty), status badges,
//! progress bars, typed confirmations, copy and download buttons.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::api::{ApiError, ApiResult};

/// Renders a resource: a spinner while it first loads, the error if it failed, `view` once loaded.
/// Reloads keep the current view on screen (no flicker when live updates arrive), and a reload that
/// brings the same data changes nothing on screen: every DOM change costs the browser a new layout of
/// the whole page, which with a long table on it drops frames.
pub fn loaded<T, V>(res: LocalResource<ApiResult<T>>, view: impl Fn(T) -> V + Send + Sync + 'static) -> impl IntoView
where
    T: Clone + PartialEq + Send + Sync + 'static,
    V: IntoView + 'static,
{
    let current = Memo::new(move |_| res.get());
    move || match current.get() {
        None => view! { <Loading /> }.into_any(),
        Some(Ok(v)) => view(v).into_any(),
        Some(Err(e)) => view! { <ErrorBox error=e /> }.into_any(),
    }
}

/// Runs an API call in the background, as every button and form does: its answer goes to `done`;
/// a failure is shown in `error`, and a success clears the failure shown before it.
pub fn act<T: 'static>(
    error: RwSignal<Option<ApiError>>,
    call: impl std::future::Future<Output = ApiResult<T>> + 'static,
    done: impl FnOnce(T) + 'static,
) {
    leptos::task::spawn_local(async move {
        match call.await {
            Ok(answer) => {
                let _ = error.try_set(None);
                done(answer);
            }
            Err(e) => {
                let _ = error.try_set(Some(e));
            }
        }
    });
}

/// A count that moves every `period` while the calling component lives: a resource that reads it
/// reloads on that beat (for what changes without an event, such as traffic the routers report).
pub fn every(period: std::time::Duration) -> RwSignal<u64> {
    let beat = RwSignal::new(0u64);
    if let Ok(handle) = set_interval_with_handle(move || beat.update(|n| *n += 1), period) {
        on_cleanup(move || handle.clear());
    }
    beat
}

#[component]
pub fn Loading() -> impl IntoView {
    view! { <p class="loading" role="status">"Loading…"</p> }
}

#[component]
pub fn ErrorBox(error: ApiError) -> impl IntoView {
    let fields = error.errors.clone();
    view! {
        <div class="error" role="alert">
            <p>{error.detail.clone()}</p>
            {(!fields.is_empty()).then(|| view! {
                <ul>
                    {fields.into_iter().map(|f| {
                        let at = f.line.map(|l| format!(" (line {l})")).unwrap_or_default();
                        view! { <li><code>{f.field}</code>": "{f.message}{at}</li> }
                    }).collect_view()}
                </ul>
            })}
        </div>
    }
}

/// An error that may or may not be there (for forms).
#[component]
pub fn MaybeError(error: RwSignal<Option<ApiError>>) -> impl IntoView {
    move || error.get().map(|e| view! { <ErrorBox error=e /> })
}

#[component]
pub fn Empty(children: Children) -> impl IntoView {
    view! { <div class="empty">{children()}</div> }
}

/// A status word in a coloured badge (colour never carries meaning alone: the word is there).
#[component]
pub fn Badge(#[prop(into)] status: String) -> impl IntoView {
    let class = format!("badge badge-{}", status.replace(['_', ' '], "-"));
    view! { <span class=class>{status}</span> }
}

/// A labelled progress bar (`<progress>`: accessible, and styled without inline styles, which the
/// Content-Security-Policy forbids).
#[component]
pub fn Progress(#[prop(into)] label: Signal<String>, #[prop(into)] percent: Signal<i32>) -> impl IntoView {
    view! {
        <div class="progress">
            <label>
                <span>{move || label.get()}</span>
                <progress max="100" prop:value=move || percent.get()>{move || format!("{}%", percent.get())}</progress>
            </label>
        </div>
    }
}

/// A dangerous action that asks for the object's name to be typed first (as GitHub does).
#[component]
pub fn TypedConfirm(
    #[prop(into)] name: String,
    #[prop(into)] action: String,
    on_confirm: Callback<()>,
    #[prop(optional)] id: &'static str,
) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let open = RwSignal::new(false);
    let expected = StoredValue::new(name.clone());
    let label = format!("Type {name} to confirm");
    let action2 = action.clone();
    view! {
        <div class="danger-zone">
            <Show when=move || open.get() fallback=move || {
                let action = action.clone();
                view! { <button class="danger" id=id on:click=move |_| open.set(true)>{action}</button> }
            }>
                <label>
                    {label.clone()}
                    <input type="text" id=format!("{id}-confirm") autocomplete="off" prop:value=move || typed.get()
                        on:input=move |ev| typed.set(event_target_value(&ev)) />
                </label>
                <button class="danger" id=format!("{id}-go") disabled=move || typed.with(|t| *t != expected.get_value())
                    on:click=move |_| on_confirm.run(())>{action2.clone()}</button>
                <button on:click=move |_| { open.set(false); typed.set(String::new()); }>"Cancel"</button>
            </Show>
        </div>
    }
}

/// Copies `text` to the clipboard, and says so.
#[component]
pub fn CopyButton(#[prop(into)] text: Signal<String>, #[prop(optional)] id: &'static str) -> impl IntoView {
    let done = RwSignal::new(false);
    view! {
        <button id=id on:click=move |_| {
            if let Some(w) = web_sys::window() {
                let _ = w.navigator().clipboard().write_text(&text.get());
                done.set(true);
            }
        }>{move || if done.get() { "Copied" } else { "Copy" }}</button>
    }
}

/// Offers `content` as a file download named `name`.
pub fn download(name: &str, mime: &str, content: &str) {
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(content));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    let document = web_sys::window().and_then(|w| w.document());
    if let Some(a) =
        document.and_then(|d| d.create_element("a").ok()).and_then(|e| e.dyn_into::<web_sys::HtmlAnchorElement>().ok())
    {
        a.set_href(&url);
        a.set_download(name);
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

/// A page heading with optional actions beside it.
#[component]
pub fn PageHeader(#[prop(into)] title: Signal<String>, #[prop(optional)] children: Option<Children>) -> impl IntoView {
    view! {
        <div class="page-header">
            <h1>{move || title.get()}</h1>
            <div class="actions">{children.map(|c| c())}</div>
        </div>
    }
}
