//! A headless Chromium driven over the Chrome DevTools Protocol, for the
//! console's tests: synchronous (one WebSocket, tungstenite, no async
//! runtime), one page per browser, one browser per test.
//!
//! The browser is the system's `chromium` (Debian's package; `scripts/test`
//! installs it), or the program named by `CHROMIUM`. Without it the tests
//! fail, saying what to install: they never pass without a browser. Each
//! browser gets a fresh profile directory and is started with its
//! background networking off (nothing but the broker on 127.0.0.1 is
//! reached); it is killed by its pid when the `Browser` is dropped. A test
//! may add flags of its own (`Browser::start_with`: to trust its TLS
//! certificate, say).
//!
//! Shared by three test files (`console.rs`, `console_tokens.rs`,
//! `console_tls.rs`), each of which uses a part of it.
#![allow(dead_code)]

pub mod page;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long a page may take to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(15);

/// One browser at a time: the machine is small, and timings stay sane.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Every event the browser sent so far (console calls, exceptions,
    /// log entries, dialogs), in order.
    events: Vec<Value>,
    _turn: MutexGuard<'static, ()>,
}

impl Browser {
    /// Starts a headless Chromium with a 1366×860 window and opens a blank
    /// page, with the Page, Runtime and Log domains enabled.
    pub fn start() -> Browser {
        Browser::start_with(&[])
    }

    /// `start`, with these command-line flags besides the usual ones.
    pub fn start_with(flags: &[String]) -> Browser {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let program = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        static PROFILES: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "pubsub-console-test-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(&program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1366,860",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(flags)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the browser `{program}` ({e}). The console tests need Chromium: \
                     run scripts/test (it installs Debian's chromium), or install Chromium and set \
                     CHROMIUM=/path/to/chromium"
                )
            });
        let endpoint = devtools_endpoint(&mut child);
        let Some(endpoint) = endpoint else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{program}` printed no 'DevTools listening on' line");
        };
        let (ws, _) = tungstenite::connect(endpoint.as_str())
            .unwrap_or_else(|e| panic!("connect to the browser at {endpoint}: {e}"));
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        let mut browser = Browser {
            child,
            profile,
            ws,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _turn: turn,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({}));
        }
        browser
    }

    /// Sends one command (to the page, once attached) and returns its
    /// result; panics on an error reply or after `PAGE_WAIT`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(command.to_string()))
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no reply to {method} within {PAGE_WAIT:?}"
            );
            let Some(message) = self.read() else { continue };
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
        }
    }

    /// The next message from the browser, or None after a short wait. An
    /// event is kept in `events`; a JavaScript dialog (`alert`, ...) is
    /// recorded and dismissed at once, so that it cannot block the page.
    fn read(&mut self) -> Option<Value> {
        let text = match self.ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(_) => return None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("the browser connection failed: {e}"),
        };
        let message: Value = serde_json::from_str(text.as_str()).expect("the browser sends JSON");
        if message.get("method").is_some() {
            if message["method"] == "Page.javascriptDialogOpening" {
                self.next_id += 1;
                let dismiss = json!({"id": self.next_id, "method": "Page.handleJavaScriptDialog",
                    "params": {"accept": false}, "sessionId": self.session});
                let _ = self.ws.send(Message::text(dismiss.to_string()));
            }
            self.events.push(message.clone());
        }
        Some(message)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value; panics if it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`; panics after `PAGE_WAIT`,
    /// with a screenshot `NAME-failed.png` (`what` names the wait).
    pub fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        while Instant::now() < deadline {
            if self.eval(expression) == json!(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.screenshot(&format!("failed-{}", what.replace(' ', "-")));
        panic!(
            "timed out waiting for {what} (`{expression}`); problems: {:?}",
            self.problems()
        );
    }

    /// Opens `url` and waits until the document has loaded.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("the page to load", "document.readyState === 'complete'");
    }

    /// Saves the viewport as `target/console-screenshots/NAME.png`.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .expect("a base64 screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Whatever went wrong in the page so far: uncaught exceptions,
    /// `console.error` and `console.warn` calls, and the browser's own
    /// error and warning log entries (a blocked resource, a refused
    /// connection, a policy violation), one line each.
    pub fn problems(&mut self) -> Vec<String> {
        // A round trip, so that everything sent before it has been read.
        self.eval("1");
        self.events
            .iter()
            .filter_map(|event| {
                let params = &event["params"];
                match event["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(format!(
                        "exception: {}",
                        params["exceptionDetails"]["exception"]["description"]
                            .as_str()
                            .or(params["exceptionDetails"]["text"].as_str())
                            .unwrap_or_default()
                    )),
                    "Runtime.consoleAPICalled"
                        if matches!(
                            params["type"].as_str(),
                            Some("error" | "warning" | "assert")
                        ) =>
                    {
                        Some(format!("console.{}: {}", params["type"], params["args"]))
                    }
                    "Log.entryAdded"
                        if matches!(
                            params["entry"]["level"].as_str(),
                            Some("error" | "warning")
                        ) =>
                    {
                        Some(format!(
                            "log {}: {} ({})",
                            params["entry"]["source"],
                            params["entry"]["text"],
                            params["entry"]["url"]
                        ))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The `params` of every event named `method` the browser sent so far
    /// (`Network.webSocketFrameSent`, say, once `Network.enable` was
    /// called), in order.
    pub fn events(&mut self, method: &str) -> Vec<Value> {
        self.eval("1");
        self.events
            .iter()
            .filter(|e| e["method"] == method)
            .map(|e| e["params"].clone())
            .collect()
    }

    /// The JavaScript dialogs the page opened (each was dismissed).
    pub fn dialogs(&mut self) -> Vec<String> {
        self.eval("1");
        self.events
            .iter()
            .filter(|e| e["method"] == "Page.javascriptDialogOpening")
            .map(|e| e["params"]["message"].to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Reads the browser's stderr until it names its DevTools WebSocket, then
/// keeps draining it on a thread so that the browser never blocks on it.
fn devtools_endpoint(child: &mut Child) -> Option<String> {
    let stderr = child.stderr.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("ws://") {
                let _ = tx.send(line[at..].trim().to_string());
            }
        }
    });
    rx.recv_timeout(PAGE_WAIT).ok()
}

/// `value` as a JavaScript literal (JSON is one), to put a Rust string
/// into an expression safely.
pub fn js(value: &str) -> String {
    serde_json::to_string(value).unwrap()
}
