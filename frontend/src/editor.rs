//! The Compose editor: a plain `<textarea>` (so typing, selection, undo and screen readers work as
//! everywhere) over a highlighted copy of its text, with each error and warning marked at its line and
//! listed below it (a click on one puts the cursor on that line). The text is checked by the server
//! (`POST /api/v1/templates/check`) a moment after typing stops.

use std::collections::BTreeMap;

use berth_types::{CheckCompose, ComposeCheck};
use leptos::html;
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::highlight;

/// One finding at a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub line: Option<u64>,
    pub path: String,
    pub message: String,
    pub error: bool,
}

/// The last check's findings, and what the text declares when it is valid.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub findings: Vec<Finding>,
    pub declares: Option<ComposeCheck>,
}

fn findings_of(result: Result<ComposeCheck, ApiError>) -> Checked {
    match result {
        Ok(c) => Checked {
            findings: c
                .warnings
                .iter()
                .map(|w| Finding { line: Some(w.line), path: w.path.clone(), message: w.message.clone(), error: false })
                .collect(),
            declares: Some(c),
        },
        Err(e) if e.errors.is_empty() => Checked {
            findings: vec![Finding { line: None, path: String::new(), message: e.detail, error: true }],
            declares: None,
        },
        Err(e) => Checked {
            findings: e
                .errors
                .into_iter()
                .map(|f| Finding { line: f.line, path: f.field, message: f.message, error: true })
                .collect(),
            declares: None,
        },
    }
}

/// Checks `text` with the server (the files it names included).
pub async fn check(text: String, files: BTreeMap<String, String>) -> Checked {
    findings_of(api::post::<ComposeCheck>("/templates/check", &CheckCompose { compose: text, files }).await)
}

#[component]
pub fn ComposeEditor(
    text: RwSignal<String>,
    #[prop(into)] files: Signal<BTreeMap<String, String>>,
    checked: RwSignal<Checked>,
    #[prop(optional)] readonly: bool,
    #[prop(default = "compose")] id: &'static str,
) -> impl IntoView {
    let area = NodeRef::<html::Textarea>::new();
    let shadow = NodeRef::<html::Pre>::new();
    let timer = StoredValue::new_local(None::<TimeoutHandle>);
    // Check a moment after typing stops (and once at the start).
    let schedule = move || {
        if let Some(h) = timer.get_value() {
            h.clear();
        }
        let handle = set_timeout_with_handle(
            move || {
                // The page may have moved on meanwhile (its signals are gone then).
                let (Some(t), Some(f)) = (text.try_get_untracked(), files.try_get_untracked()) else { return };
                leptos::task::spawn_local(async move {
                    let result = check(t, f).await;
                    let _ = checked.try_set(result);
                });
            },
            std::time::Duration::from_millis(350),
        )
        .ok();
        timer.set_value(handle);
    };
    if !readonly {
        schedule();
    }
    on_cleanup(move || {
        if let Some(Some(h)) = timer.try_get_value() {
            h.clear();
        }
    });
    let sync_scroll = move || {
        if let (Some(a), Some(p)) = (area.get(), shadow.get()) {
            p.set_scroll_top(a.scroll_top());
            p.set_scroll_left(a.scroll_left());
        }
    };
    let lines = move || {
        let marks: BTreeMap<u64, bool> = checked.with(|c| {
            let mut m = BTreeMap::new();
            for f in &c.findings {
                if let Some(l) = f.line {
                    let e = m.entry(l).or_insert(false);
                    *e |= f.error;
                }
            }
            m
        });
        text.with(|t| {
            let mut rows: Vec<&str> = t.split('\n').collect();
            if rows.is_empty() {
                rows.push("");
            }
            rows.into_iter()
                .enumerate()
                .map(|(i, l)| {
                    let n = i as u64 + 1;
                    let class = match marks.get(&n) {
                        Some(true) => "line err",
                        Some(false) => "line warn",
                        None => "line",
                    };
                    view! {
                        <span class=class><span class="num">{n}</span>
                            {highlight::line(l).into_iter().map(|(k, s)| view! { <span class=k.class()>{s}</span> }).collect_view()}
                        </span>
                    }
                })
                .collect_view()
        })
    };
    let goto_line = move |line: u64| {
        let Some(a) = area.get() else { return };
        let (start, end) = text.with_untracked(|t| {
            let mut offset = 0usize;
            for (i, l) in t.split('\n').enumerate() {
                if i as u64 + 1 == line {
                    // Offsets in UTF-16 code units, as the browser counts them.
                    let s = t[..offset].encode_utf16().count();
                    return (s, s + l.encode_utf16().count());
                }
                offset += l.len() + 1;
            }
            (0, 0)
        });
        let _ = a.focus();
        let _ = a.set_selection_range(start as u32, end as u32);
    };
    view! {
        <div class="editor" class:readonly=readonly>
            <pre class="shadow" aria-hidden="true" node_ref=shadow>{lines}</pre>
            <textarea id=id node_ref=area spellcheck="false" autocomplete="off" wrap="off" readonly=readonly
                aria-label="Compose file" aria-describedby=format!("{id}-findings")
                prop:value=move || text.get()
                on:input=move |ev| { text.set(event_target_value(&ev)); schedule(); }
                on:scroll=move |_| sync_scroll()></textarea>
        </div>
        <div id=format!("{id}-findings") class="findings" aria-live="polite">
            {move || checked.with(|c| {
                if c.findings.is_empty() {
                    return c.declares.as_ref().map(|d| view! {
                        <p class="hint">{format!("Valid: services {}.", d.services.join(", "))}</p>
                    }.into_any()).unwrap_or_else(|| ().into_any());
                }
                view! {
                    <ul>
                        {c.findings.iter().cloned().map(|f| {
                            let at = f.line.map(|l| format!("line {l}")).unwrap_or_else(|| "file".into());
                            let class = if f.error { "finding error-finding" } else { "finding warning-finding" };
                            let label = if f.error { "Error" } else { "Warning" };
                            view! {
                                <li class=class>
                                    <button class="link" on:click=move |_| if let Some(l) = f.line { goto_line(l) }>{at}</button>
                                    {format!(" {label}: ")}{(!f.path.is_empty()).then(|| view! { <code>{f.path.clone()}</code>": " })}{f.message.clone()}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any()
            })}
        </div>
    }
}
