//! A minimal W3C WebDriver client over HTTP (ureq + serde_json), enough to drive a headless
//! Chromium through `chromedriver`: sessions, navigation, elements, clicks, keys, text,
//! attributes, scripts, alerts and screenshots. `chromedriver` runs in its own process group,
//! which is killed (by its id) when the guard drops, the session deleted first.

use base64::Engine;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key WebDriver names an element by in its answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Enter, as WebDriver keys spell it.
pub const ENTER: &str = "\u{E007}";

/// Binaries: `DFS_CHROMEDRIVER` and `DFS_CHROMIUM` override the Debian paths.
pub fn chromedriver_bin() -> PathBuf {
    std::env::var_os("DFS_CHROMEDRIVER").map_or("/usr/bin/chromedriver".into(), PathBuf::from)
}

pub fn chromium_bin() -> PathBuf {
    std::env::var_os("DFS_CHROMIUM").map_or("/usr/bin/chromium".into(), PathBuf::from)
}

/// Why a browser cannot be driven here, if it cannot.
pub fn no_browser() -> Option<String> {
    for (what, bin) in [
        ("chromedriver", chromedriver_bin()),
        ("chromium", chromium_bin()),
    ] {
        if !bin.exists() {
            return Some(format!(
                "{what} is missing ({}; apt-get install chromium chromium-driver)",
                bin.display()
            ));
        }
    }
    None
}

/// A WebDriver error answer: its `error` code and message.
#[derive(Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)
    }
}

/// A free port on loopback: bound to port 0, read, closed.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `chromedriver` with one browser session.
pub struct Driver {
    child: Child,
    base: String,
    pub log: PathBuf,
    agent: ureq::Agent,
    session: Option<String>,
}

/// An element of the page, by its WebDriver id.
#[derive(Debug, Clone)]
pub struct Element(pub String);

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

impl Driver {
    /// Starts `chromedriver --port=P` (log in `work/chromedriver.log`), waits until its
    /// `/status` says ready, and opens a headless Chromium session whose profile is
    /// `work/profile` and whose downloads go to `downloads`.
    pub fn start(work: &Path, downloads: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        fs::create_dir_all(downloads).unwrap();
        let profile = work.join("profile");
        fs::create_dir_all(&profile).unwrap();
        let log = work.join("chromedriver.log");
        let out = fs::File::create(&log).unwrap();
        let port = free_port();
        let child = Command::new(chromedriver_bin())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, so that the browser it starts is killed with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver_bin().display()));
        let mut d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            agent: agent(Duration::from_secs(30)),
            session: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(v) = d.call("GET", "/status", None) {
                if v["ready"] == true {
                    break;
                }
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("chromedriver exited with {status}:\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready after 30 s:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium_bin().display().to_string(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                        "prefs": {
                            "download.default_directory": downloads.display().to_string(),
                            "download.prompt_for_download": false,
                            "download.directory_upgrade": true,
                            "safebrowsing.enabled": false,
                        }
                    }
                }
            }
        });
        // A cold browser start on a loaded machine takes a while.
        let slow = agent(Duration::from_secs(90));
        let v = call_with(&slow, &d.base, "POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("cannot open a session: {e}\n{}", d.log_text()));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        d.session = Some(id);
        // Downloads allowed into `downloads` also where the prefs alone do not reach (some
        // headless builds); a failure here only means the prefs are what counts.
        let _ = d.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Browser.setDownloadBehavior",
                "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}
            })),
        );
        d
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `METHOD PATH` on chromedriver itself; the answer's `value`, or its error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        call_with(&self.agent, &self.base, method, path, body)
    }

    /// `METHOD /session/ID/PATH`.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let id = self.session.as_ref().expect("a session");
        self.call(method, &format!("/session/{id}{path}"), body)
    }

    /// [`Driver::cmd`], which must succeed.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.ok("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.ok("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn source(&self) -> String {
        self.ok("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Every element matching the CSS selector (none is no error).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.ok(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        elements(&v)
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        self.find_all(css).into_iter().next()
    }

    /// The element matching `css`, waited for up to `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} after {timeout:?} on {}:\n{}",
                self.current_url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The elements below `e` matching `css`.
    pub fn find_in(&self, e: &Element, css: &str) -> Vec<Element> {
        let v = self.ok(
            "POST",
            &format!("/element/{}/elements", e.0),
            Some(json!({"using": "css selector", "value": css})),
        );
        elements(&v)
    }

    pub fn click(&self, e: &Element) {
        self.ok("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// Empties an input.
    pub fn clear(&self, e: &Element) {
        self.ok("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
    }

    pub fn send_keys(&self, e: &Element, text: &str) {
        self.ok(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// The rendered text of `e`.
    pub fn text(&self, e: &Element) -> String {
        self.ok("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// An attribute of `e` (None when it has none).
    pub fn attribute(&self, e: &Element, name: &str) -> Option<String> {
        self.ok("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .as_str()
            .map(str::to_string)
    }

    /// Runs `script` in the page (`return ...` for a value).
    pub fn execute(&self, script: &str) -> Value {
        self.ok(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text of the open alert, or the error (`no such alert` when none is open).
    pub fn alert_text(&self) -> Result<String, WdError> {
        self.cmd("GET", "/alert/text", None)
            .map(|v| v.as_str().unwrap_or("").to_string())
    }

    /// A screenshot of the viewport as PNG bytes.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self.ok("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("a base64 screenshot"))
            .expect("valid base64")
    }

    /// Polls until `document.readyState` is `complete`.
    pub fn wait_loaded(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.execute("return document.readyState") != "complete" {
            assert!(
                Instant::now() < deadline,
                "page not loaded after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn elements(v: &Value) -> Vec<Element> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn call_with(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let url = format!("{base}{path}");
    let res = match (method, body) {
        ("GET", _) => agent.get(&url).call(),
        ("DELETE", _) => agent.delete(&url).call(),
        ("POST", b) => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(b.unwrap_or(json!({})).to_string()),
        (m, _) => panic!("no such WebDriver method here: {m}"),
    };
    let mut res = res.map_err(|e| WdError {
        status: 0,
        error: "transport".into(),
        message: format!("{method} {url}: {e}"),
    })?;
    let status = res.status().as_u16();
    let text = res
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(|e| WdError {
            status,
            error: "transport".into(),
            message: format!("{method} {url}: reading the answer: {e}"),
        })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| WdError {
        status,
        error: "bad json".into(),
        message: format!("{method} {url}: {e}: {text}"),
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 || value.get("error").is_some_and(|e| e.is_string()) {
        return Err(WdError {
            status,
            error: value["error"].as_str().unwrap_or("").to_string(),
            message: value["message"].as_str().unwrap_or("").to_string(),
        });
    }
    // `POST /session` answers `{value: {sessionId, capabilities}}`.
    Ok(value)
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let quick = agent(Duration::from_secs(10));
            if let Err(e) = call_with(
                &quick,
                &self.base,
                "DELETE",
                &format!("/session/{id}"),
                None,
            ) {
                eprintln!("cannot delete the WebDriver session: {e}");
            }
        }
        // The whole group chromedriver leads (it and the browser it started), by its id.
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "----- last lines of chromedriver.log -----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
