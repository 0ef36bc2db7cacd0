//! A real Chromium for the console's tests, driven over WebDriver (ChromeDriver from Debian).
//!
//! Each [`Browser`] has its own ChromeDriver in a process group of its own and its own profile
//! directory; dropping it kills the whole group (Chromium outlives a killed ChromeDriver otherwise) and
//! removes the profile, whether or not the test passed.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Desktop and phone widths of the screenshots.
pub const DESKTOP: (u32, u32) = (1280, 860);
pub const PHONE: (u32, u32) = (390, 844);

pub struct Browser {
    pub client: Client,
    /// The Berth this browser talks to, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// ChromeDriver's port (for its log endpoint).
    port: u16,
    _driver: Driver,
}

/// ChromeDriver's process group and Chromium's profile, gone when this is dropped.
struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    pub async fn start(base: &str) -> Browser {
        Browser::start_on(base, None).await
    }

    /// A browser confined to `cpus` (a `taskset` list such as `"0"`) when given: ChromeDriver and the
    /// Chromium it starts run there and nowhere else, as on a user's own machine (the console
    /// benchmark gives the browser one core and the platform the other).
    pub async fn start_on(base: &str, cpus: Option<&str>) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut driver = match cpus {
            // `taskset` (util-linux) executes ChromeDriver in its own process: same pid, same group.
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, "chromedriver"]);
                c
            }
            None => Command::new("chromedriver"),
        };
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver (Debian package chromium-driver)");
        let driver = Driver { child: driver, profile: crate::temp_data_dir("berth-chromium") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-quic", "--no-first-run", "--disable-crash-reporter", "--hide-scrollbars",
                         format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                         format!("--user-data-dir={}", driver.profile.display())],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        if std::env::var_os("BERTH_BROWSER_TRACE").is_some() {
            // Chromium's timeline (style, layout, paint, scripts) for `trace_events`.
            caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL", "performance": "ALL" }));
            caps.get_mut("goog:chromeOptions").unwrap()["perfLoggingPrefs"] =
                json!({"enableNetwork": false, "enablePage": false, "traceCategories": "devtools.timeline"});
        }
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser { client, base: base.to_owned(), port, _driver: driver }
    }

    pub async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The element matching `css`, once it is there (10 s at most).
    pub async fn find(&self, css: &str) -> Element {
        self.wait_until(&format!("`{css}` on the page"), Duration::from_secs(15), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Waits until the first element matching `css` contains `text`; returns its text.
    pub async fn wait_text(&self, css: &str, text: &str) -> String {
        self.wait_until(&format!("`{css}` to contain {text:?}"), Duration::from_secs(20), || async {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.ok().filter(|t| t.contains(text)),
                Err(_) => None,
            }
        })
        .await
    }

    /// Polls `check` every 100 ms until it gives a value or `limit` passes (then fails, naming `what`).
    pub async fn wait_until<T, F, Fut>(&self, what: &str, limit: Duration, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() >= deadline {
                // What the page showed instead, for whoever reads the failure.
                self.screenshot("failure").await;
                let text = self.client.find(Locator::Css("body")).await.ok();
                let text = match text {
                    Some(e) => e.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                let requests = self
                    .client
                    .execute(
                        "return performance.getEntriesByType('resource').map(e => `${e.name} ${Math.round(e.duration)} ms (${e.responseStatus})`)",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                let log: Vec<String> = self.console_log().await.into_iter().filter(|l| l.starts_with("SEVERE")).collect();
                panic!(
                    "waited {limit:?} for {what}; the page (target/screenshots/failure-*.png) says:\n{text}\n\
                     its requests: {requests}\nits console's errors:\n{}",
                    log.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether anything matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    /// Clicks the element matching `css`; live pages re-render, so an element that went stale between
    /// finding and clicking is found again.
    pub async fn click(&self, css: &str) {
        for attempt in 0.. {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(e) if attempt < 20 && is_stale(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("clicking `{css}`: {e}"),
            }
        }
    }

    /// Clicks a button or link by its visible text (found again if it went stale).
    pub async fn click_text(&self, text: &str) {
        for attempt in 0.. {
            match self.button(text).await.click().await {
                Ok(()) => return,
                Err(e) if attempt < 20 && is_stale(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("clicking {text:?}: {e}"),
            }
        }
    }

    /// Types into a field (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// A button (or link) by its visible text.
    pub async fn button(&self, text: &str) -> Element {
        let xpath = format!("//*[self::button or self::a][normalize-space(.)='{text}']");
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {text:?}: {e}"))
    }

    pub async fn log_in(&self, email: &str, password: &str) {
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#sign-in").await;
        self.find("#who").await;
    }

    pub async fn resize(&self, (w, h): (u32, u32)) {
        self.client.set_window_size(w, h).await.unwrap();
    }

    /// Saves a PNG of the page under `target/screenshots/<name>-<width>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let width = self.client.get_window_size().await.map(|(w, _)| w).unwrap_or(0);
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }

    /// Screenshots at desktop and phone widths and in the dark theme, and the accessibility check in
    /// both themes, for one main page.
    pub async fn survey(&self, name: &str) {
        self.assert_accessible(name).await;
        self.screenshot(name).await;
        self.resize(PHONE).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.screenshot(name).await;
        self.resize(DESKTOP).await;
        self.color_scheme("dark").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.assert_accessible(&format!("{name} (dark)")).await;
        self.screenshot(&format!("{name}-dark")).await;
        self.color_scheme("light").await;
    }

    /// Emulates the system's light or dark preference (`prefers-color-scheme`) through ChromeDriver's
    /// DevTools passthrough.
    pub async fn color_scheme(&self, scheme: &str) {
        let session = self.client.session_id().await.unwrap().unwrap_or_default();
        let url = format!("http://127.0.0.1:{}/session/{session}/goog/cdp/execute", self.port);
        let body = json!({"cmd": "Emulation.setEmulatedMedia",
                          "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]}});
        let resp = reqwest::Client::new().post(url).json(&body).send().await.expect("ChromeDriver's DevTools passthrough");
        assert!(resp.status().is_success(), "emulating {scheme}: {}", resp.text().await.unwrap_or_default());
    }

    /// Runs axe-core (npm, installed by scripts/install-deps.sh) on the page; fails on any critical or
    /// serious violation, naming each with the elements it concerns.
    pub async fn assert_accessible(&self, page: &str) {
        let axe = std::fs::read_to_string(axe_path()).expect("axe-core (scripts/install-deps.sh installs it)");
        // The page's CSP forbids inline scripts, but WebDriver's script execution is not page content.
        self.client.execute(&axe, vec![]).await.expect("injecting axe-core");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { resultTypes: ['violations'] })
                    .then(r => done(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5) }))))
                    .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));",
                vec![],
            )
            .await
            .expect("running axe-core");
        let bad: Vec<&Value> =
            result.as_array().unwrap().iter().filter(|v| matches!(v["impact"].as_str(), Some("critical" | "serious"))).collect();
        assert!(bad.is_empty(), "accessibility violations on {page}: {}", serde_json::to_string_pretty(&bad).unwrap());
    }

    /// What the page wrote to its console (errors, a panic of the console's wasm among them) since the
    /// last call, from ChromeDriver's log endpoint.
    pub async fn console_log(&self) -> Vec<String> {
        let Ok(session) = self.client.session_id().await else { return vec![] };
        let url = format!("http://127.0.0.1:{}/session/{}/se/log", self.port, session.unwrap_or_default());
        let Ok(resp) = reqwest::Client::new().post(url).json(&json!({"type": "browser"})).send().await else { return vec![] };
        let body: Value = resp.json().await.unwrap_or_default();
        body["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{} {}", e["level"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The timeline events Chromium recorded (style, layout, paint, tasks), when the browser was started
    /// with `BERTH_BROWSER_TRACE` set; each is a trace event object. ChromeDriver hands them over once.
    pub async fn trace_events(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().unwrap_or_default();
        let url = format!("http://127.0.0.1:{}/session/{session}/se/log", self.port);
        let resp = reqwest::Client::new().post(url).json(&json!({"type": "performance"})).send().await.unwrap();
        let body: Value = resp.json().await.unwrap();
        body["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Tracing.dataCollected")
            .map(|m| m["message"]["params"].clone())
            .collect()
    }

    /// Sends a Chrome DevTools Protocol command through ChromeDriver (e.g. `Profiler.start`) and returns
    /// its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        let session = self.client.session_id().await.unwrap().unwrap_or_default();
        let url = format!("http://127.0.0.1:{}/session/{session}/goog/cdp/execute", self.port);
        let resp = reqwest::Client::new().post(url).json(&json!({"cmd": cmd, "params": params})).send().await.unwrap();
        let body: Value = resp.json().await.unwrap();
        assert!(body["value"].get("error").is_none(), "{cmd}: {body}");
        body["value"].clone()
    }

    /// How many nodes of the accessibility tree with `role` the element matching `css` holds (itself
    /// included), as Chromium gives them to screen readers.
    pub async fn accessible(&self, css: &str, role: &str) -> usize {
        self.cdp("Accessibility.enable", json!({})).await;
        let doc = self.cdp("DOM.getDocument", json!({"depth": 0})).await;
        let root = doc["root"]["nodeId"].as_i64().unwrap();
        let node = self.cdp("DOM.querySelector", json!({"nodeId": root, "selector": css})).await;
        let found = self.cdp("Accessibility.queryAXTree", json!({"nodeId": node["nodeId"], "role": role})).await;
        found["nodes"].as_array().into_iter().flatten().filter(|n| n["ignored"] != true).count()
    }

    /// Runs a script in the page and returns its result.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }
}

fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    e.to_string().contains("stale element")
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium and its helpers are in ChromeDriver's process group: end them all.
        let pgid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

pub fn screenshots_dir() -> PathBuf {
    workspace_root().join("target/screenshots")
}

fn axe_path() -> PathBuf {
    workspace_root().join("target/tools/axe-core/node_modules/axe-core/axe.min.js")
}

/// The built console (`make test` builds it first).
pub fn console_dir() -> PathBuf {
    let dir = workspace_root().join("target/console");
    assert!(dir.join("index.html").is_file(), "no console at {} — run scripts/build-console.sh", dir.display());
    dir
}
