//! A real headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`), confined to a test's network namespace.
//!
//! chromedriver and the browser it launches run inside the namespace (`ip netns exec`), so
//! the browser can reach only what the test put there and nothing else. The harness talks
//! to chromedriver through TCP connections opened *inside* that namespace ([`crate::http`]).
//! The protocol is plain HTTP/1.1 with JSON bodies, one request per connection.

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::http;
use crate::netns::Netns;
use crate::util::{self, TempDir};

/// chromedriver's port inside the namespace (the namespace is the test's own).
const DRIVER_PORT: u16 = 9515;
/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one WebDriver command may take (page loads included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The flags the browser runs with: headless, no sandbox (root in a container), and every
/// background service that would try to reach the internet switched off.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--metrics-recording-only",
    "--window-size=1400,1000",
];

/// A WebDriver session in a namespace. Dropping it ends the session and stops chromedriver
/// (the namespace's own drop kills anything left).
#[derive(Debug)]
pub struct Browser {
    ns: Arc<Netns>,
    driver: Option<Child>,
    session: String,
    _profile: TempDir,
    log: std::path::PathBuf,
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver in `ns` and opens a session with a fresh profile directory.
    pub fn start(ns: &Arc<Netns>) -> anyhow::Result<Browser> {
        let chromedriver = which("chromedriver")?;
        let chromium = which("chromium")?;
        let profile = TempDir::new("chromium")?;
        let log = profile.path().join("chromedriver.log");
        let port = format!("--port={DRIVER_PORT}");
        let driver = ns.spawn_logged(&[&chromedriver, &port], &[], &log)?;
        let mut browser = Browser {
            ns: ns.clone(),
            driver: Some(driver),
            session: String::new(),
            _profile: profile,
            log,
        };
        // chromedriver answers /status once it listens.
        util::wait_until(Duration::from_secs(20), "chromedriver answers", || {
            browser.request("GET", "/status", None).is_ok()
        })
        .with_context(|| format!("chromedriver log:\n{}", util::tail(&browser.log, 20)))?;
        let user_data = format!(
            "--user-data-dir={}",
            browser._profile.path().join("profile").display()
        );
        let mut args: Vec<&str> = CHROMIUM_ARGS.to_vec();
        args.push(&user_data);
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args },
                }
            }
        });
        let created = browser
            .request("POST", "/session", Some(caps))
            .with_context(|| format!("chromedriver log:\n{}", util::tail(&browser.log, 20)))?;
        browser.session = created["sessionId"]
            .as_str()
            .context("new session without a sessionId")?
            .to_owned();
        Ok(browser)
    }

    /// Opens `url`; returns once the page has loaded.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "url", json!({ "url": url }))?;
        Ok(())
    }

    /// The address of the current page.
    pub fn url(&self) -> anyhow::Result<String> {
        let v = self.command("GET", "url", Value::Null)?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS `selector`, if there is one now.
    pub fn find(&self, selector: &str) -> anyhow::Result<Option<Element>> {
        Ok(self.find_all(selector)?.into_iter().next())
    }

    /// Every element matching the CSS `selector` now.
    pub fn find_all(&self, selector: &str) -> anyhow::Result<Vec<Element>> {
        let v = self.command(
            "POST",
            "elements",
            json!({ "using": "css selector", "value": selector }),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until an element matches `selector` (polling the page, never reloading it).
    pub fn wait_for(&self, selector: &str, timeout: Duration) -> anyhow::Result<Element> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(selector)? {
                return Ok(e);
            }
            if start.elapsed() > timeout {
                bail!(
                    "no element matches {selector:?} after {timeout:?} (page {})",
                    self.url().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no element matches `selector`.
    pub fn wait_gone(&self, selector: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        while self.find(selector)?.is_some() {
            if start.elapsed() > timeout {
                bail!("{selector:?} still matches after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Clicks `e`.
    pub fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("element/{}/click", e.0), json!({}))?;
        Ok(())
    }

    /// Scrolls the page (and any scrolled box holding `e`) to show `e` in the middle of the
    /// viewport: a click only scrolls when `e` is outside it, so one under a sticky header
    /// would be clicked through the header.
    pub fn scroll_into_view(&self, e: &Element) -> anyhow::Result<()> {
        self.exec(
            "arguments[0].scrollIntoView({block: 'center', inline: 'nearest'})",
            vec![json!({ ELEMENT_KEY: e.0 })],
        )?;
        Ok(())
    }

    /// Clears a text field.
    pub fn clear(&self, e: &Element) -> anyhow::Result<()> {
        self.command("POST", &format!("element/{}/clear", e.0), json!({}))?;
        Ok(())
    }

    /// Types `text` into `e`.
    pub fn type_text(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.command(
            "POST",
            &format!("element/{}/value", e.0),
            json!({ "text": text }),
        )?;
        Ok(())
    }

    /// Clears `e` and types `text` into it.
    pub fn fill(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        self.clear(e)?;
        self.type_text(e, text)
    }

    /// The rendered text of `e`.
    pub fn text(&self, e: &Element) -> anyhow::Result<String> {
        let v = self.command("GET", &format!("element/{}/text", e.0), Value::Null)?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute of `e` (None when absent).
    pub fn attr(&self, e: &Element, name: &str) -> anyhow::Result<Option<String>> {
        let v = self.command(
            "GET",
            &format!("element/{}/attribute/{name}", e.0),
            Value::Null,
        )?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// A DOM property of `e` as JSON (`value` of an input, `checked` of a checkbox).
    pub fn property(&self, e: &Element, name: &str) -> anyhow::Result<Value> {
        self.command(
            "GET",
            &format!("element/{}/property/{name}", e.0),
            Value::Null,
        )
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page, returns its
    /// result.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// Waits for a `prompt()`/`confirm()`/`alert()` dialog; returns its message.
    pub fn wait_dialog(&self, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            match self.command("GET", "alert/text", Value::Null) {
                Ok(v) => return Ok(v.as_str().unwrap_or_default().to_owned()),
                Err(e) if start.elapsed() > timeout => {
                    return Err(e.context(format!("no dialog within {timeout:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Answers the open `prompt()` with `text` and accepts it.
    pub fn answer_prompt(&self, text: &str) -> anyhow::Result<()> {
        self.command("POST", "alert/text", json!({ "text": text }))?;
        self.accept_dialog()
    }

    /// Accepts the open dialog (OK).
    pub fn accept_dialog(&self) -> anyhow::Result<()> {
        self.command("POST", "alert/accept", json!({}))?;
        Ok(())
    }

    /// The cookies the browser holds for the current page, as WebDriver reports them
    /// (including `httpOnly` and `sameSite`).
    pub fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.command("GET", "cookie", Value::Null)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let v = self.command("GET", "screenshot", Value::Null)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().context("screenshot is not a string")?)
            .context("screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The tail of chromedriver's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        util::tail(&self.log, lines)
    }

    /// A command of this session; returns its `value`.
    fn command(&self, method: &str, what: &str, body: Value) -> anyhow::Result<Value> {
        let path = format!("/session/{}/{what}", self.session);
        let body = (!body.is_null()).then_some(body);
        self.request(method, &path, body)
            .with_context(|| format!("WebDriver {method} {what}"))
    }

    /// One WebDriver request; returns the answer's `value`, or its error as an error.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, body) = http::request_in(
            &self.ns,
            DRIVER_PORT,
            method,
            path,
            &[("Content-Type", "application/json; charset=utf-8")],
            body.as_bytes(),
            COMMAND_TIMEOUT,
        )
        .context("talking to chromedriver")?;
        let v: Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "chromedriver answered {status} with a non-JSON body: {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if status != 200 {
            bail!(
                "chromedriver: {status} {}: {}",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            );
        }
        Ok(v["value"].clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = self.request("DELETE", &path, None);
        }
        if let Some(mut child) = self.driver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Browser {
    /// The namespace the browser runs in.
    pub fn ns(&self) -> &Arc<Netns> {
        &self.ns
    }
}

/// The full path of `program` on `PATH`, or an error that says which package provides it.
fn which(program: &str) -> anyhow::Result<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    bail!(
        "{program} not found on PATH: the browser test needs Debian's chromium and \
         chromium-driver packages (`apt-get install chromium chromium-driver`; .ci/run \
         installs them)"
    )
}
