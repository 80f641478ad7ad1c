//! A small Chrome DevTools Protocol client for the browser tests: launches Debian's headless
//! `chromium` on a temporary profile, opens a page over `PUT /json/new` and drives it with JSON
//! messages over its WebSocket (Page.navigate, Runtime.evaluate, Page.captureScreenshot).
//! Chromium and its child processes are killed when the [`Browser`] is dropped, panics included.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Debian's chromium package (`apt-get install -y chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long chromium may take to start and write its DevTools port.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long one DevTools command may take to be answered.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition in the page.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A headless chromium on a temporary profile, killed on drop.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromium with a window of `width` × `height` and waits for its DevTools port.
    pub async fn launch(width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "the browser test needs {CHROMIUM}: install it with `apt-get install -y chromium`"
        );
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(CHROMIUM)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--window-size={width},{height}"))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        let mut browser = Browser {
            child,
            port: 0,
            _profile: profile,
        };
        let port_file = browser._profile.path().join("DevToolsActivePort");
        browser.port = super::eventually("chromium's DevToolsActivePort", START_LIMIT, || {
            let port = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok());
            async move { port }
        })
        .await;
        browser
    }

    /// Opens a new blank tab and connects to it.
    pub async fn new_page(&self) -> Page {
        let target: Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = target["webSocketDebuggerUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no webSocketDebuggerUrl in {target}"));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut page = Page { socket, next_id: 0 };
        page.call("Page.enable", json!({})).await;
        page.call("Runtime.enable", json!({})).await;
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium runs in its own process group (its renderers too): end all of it.
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        if !killed.is_ok_and(|status| status.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One tab, driven over its DevTools WebSocket.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Sends one command and returns its `result`; panics on a protocol error. Events that
    /// arrive meanwhile are skipped.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(request.to_string()))
            .await
            .unwrap();
        let answered = tokio::time::timeout(CALL_LIMIT, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("the DevTools socket stays open")
                    .unwrap();
                let Message::Text(text) = message else {
                    continue;
                };
                let reply: Value = serde_json::from_str(&text).unwrap();
                if reply["id"] == id {
                    return reply;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} was not answered within {CALL_LIMIT:?}"));
        assert!(
            answered.get("error").is_none(),
            "{method} failed: {}",
            answered["error"]
        );
        answered["result"].clone()
    }

    /// Loads `url` and waits until its document has finished loading.
    pub async fn navigate(&mut self, url: &str) {
        let navigated = self.call("Page.navigate", json!({"url": url})).await;
        assert!(
            navigated.get("errorText").is_none(),
            "cannot load {url}: {}",
            navigated["errorText"]
        );
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// The value of the JavaScript `expression` (promises awaited); panics on an exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it gives something other than null, undefined, false, 0 or
    /// an empty string, and returns that; fails the test after the common limit.
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + super::LIMIT;
        loop {
            let value = self.eval(expression).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {:?} waiting for {what} (`{expression}` is {value})",
                super::LIMIT
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Clicks the middle of the first element matching the CSS `selector` with the mouse, once
    /// it is scrolled into view and has a size.
    pub async fn click(&mut self, selector: &str) {
        let centre = self
            .wait_for(
                &format!("`{selector}` to be visible"),
                &format!(
                    "(() => {{ const e = document.querySelector({selector}); if (!e) return null; \
                     e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                     return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()",
                    selector = json!(selector)
                ),
            )
            .await;
        for event in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": event, "x": centre[0], "y": centre[1], "button": "left",
                       "clickCount": 1}),
            )
            .await;
        }
    }

    /// Replaces the text of the input or textarea matching `selector` as if typed.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        self.eval(&format!(
            "document.querySelector({}).select()",
            json!(selector)
        ))
        .await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Saves a PNG of the viewport to `dir/name.png` and returns its path.
    pub async fn screenshot(&mut self, dir: &Path, name: &str) -> PathBuf {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = decode_base64(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Standard base64 (with `=` padding), as DevTools sends binary data.
fn decode_base64(text: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("`{}` is not a base64 character", c as char),
        }
    };
    let data = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (sextet(c) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
