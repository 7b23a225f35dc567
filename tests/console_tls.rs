//! The browser console (`GET /`) and its JavaScript client (`/pubsub.js`)
//! over TLS, in a real headless Chromium (`tests/browser`): a broker that
//! serves `https://` and `wss://` only (`TLS_CERT_FILE`, `TLS_KEY_FILE`)
//! with a certificate for 127.0.0.1 signed by the test's own CA, and a
//! browser made to trust that one certificate. The page must come over
//! `https:`, and both the console's socket and the client's over `wss:`:
//! neither is given a URL, each derives it from the page's `location`.
//! The end-to-end tests of TLS itself are in `tests/tls.rs`. Without
//! Chromium these tests fail: `scripts/test` installs it.

mod browser;
mod common;

use browser::page::*;
use browser::Browser;
use common::tls::{all_versions, https, TestCa};
use common::*;
use rustls::ClientConfig;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A broker serving TLS only, with a certificate of the test's own CA.
struct TlsBroker {
    broker: TestBroker,
    /// Trusts the test's CA alone, for the test's own requests.
    client: Arc<ClientConfig>,
    /// The browser's flag that trusts the broker's certificate (its key).
    trust_flag: String,
    dir: PathBuf,
}

impl TlsBroker {
    /// A certificate for 127.0.0.1 from the test's own CA, in a directory
    /// of the test's own; a broker started with its files.
    fn start() -> TlsBroker {
        static DIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pubsub-console-tls-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new("pubsub console test");
        let identity = ca.issue(&["127.0.0.1"], "pubsub console test server");
        let (cert_file, key_file) = identity.write(&dir, "server");
        let broker = TestBroker::with(&[
            ("TLS_CERT_FILE", cert_file.to_str().unwrap()),
            ("TLS_KEY_FILE", key_file.to_str().unwrap()),
        ]);
        // Chromium trusts the certificate whose public key has this SHA-256
        // (base64 of its SubjectPublicKeyInfo), and no other: every other
        // check stays, and any other certificate is refused as usual. Not
        // `--ignore-certificate-errors`, which accepts every certificate
        // from anyone, so that the page would load whatever the broker
        // served (a wrong certificate, or none of ours at all). The flag
        // needs a `--user-data-dir`, which `Browser` always gives.
        let sha256 = ring_sha256(&identity.spki);
        let trust_flag = format!(
            "--ignore-certificate-errors-spki-list={}",
            data_encoding::BASE64.encode(&sha256)
        );
        TlsBroker {
            broker,
            client: ca.client(&all_versions(), None),
            trust_flag,
            dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.broker.addr
    }

    /// A browser that trusts this broker's certificate, recording the
    /// page's network events (the WebSockets it opens).
    fn browser(&self) -> Browser {
        let mut page = Browser::start_with(std::slice::from_ref(&self.trust_flag));
        page.call("Network.enable", json!({}));
        page
    }

    /// One request over TLS, on a connection of its own, trusting the
    /// test's CA alone; the status and the JSON body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let response = https(self.addr(), &self.client, method, path, body);
        (response.status, response.json())
    }

    fn create_topic(&self, name: &str) {
        let body = json!({ "name": name }).to_string();
        let (status, body) = self.request("POST", "/topics", Some(&body));
        assert_eq!(status, 201, "{body}");
    }

    /// Publishes over REST (HTTPS); returns the message's seq.
    fn publish(&self, topic: &str, id: &str, payload: Value) -> u64 {
        let body = json!({ "id": id, "payload": payload }).to_string();
        let path = format!("/topics/{topic}/messages");
        let (status, body) = self.request("POST", &path, Some(&body));
        assert_eq!(status, 200, "{body}");
        body["seq"].as_u64().unwrap()
    }

    /// Waits until the broker counts `n` subscribers of `topic`.
    fn wait_subscribers(&self, topic: &str, n: u64) {
        eventually(&format!("{n} subscriber(s) of {topic}"), || {
            let (_, list) = self.request("GET", "/topics", None);
            list["topics"]
                .as_array()
                .is_some_and(|topics| topics.contains(&json!({"name": topic, "subscribers": n})))
        });
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The URLs of the WebSockets the page opened so far.
fn websockets(page: &mut Browser) -> Vec<String> {
    page.events("Network.webSocketCreated")
        .iter()
        .map(|created| created["url"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_console_over_https_connects_over_wss_and_shows_what_is_published() {
    let tls = TlsBroker::start();
    tls.create_topic("orders");
    let mut page = tls.browser();
    page.open(&format!("https://{}/", tls.addr()));
    assert_eq!(page.eval("location.protocol"), json!("https:"));
    wait_connected(&mut page);
    let sockets = websockets(&mut page);
    assert_eq!(sockets.len(), 1, "the console's one socket: {sockets:?}");
    assert!(
        sockets[0].starts_with(&format!("wss://{}/ws", tls.addr())),
        "the console's socket is wss:// on the page's host: {sockets:?}"
    );

    wait_for_row(&mut page, "orders");
    click(&mut page, "orders", "watch");
    tls.wait_subscribers("orders", 1);
    let seq = tls.publish("orders", "o1", json!({"order_id": "A-17"}));
    page.wait_for(
        "the published message in the log",
        &logged("orders", seq, "\"order_id\": \"A-17\""),
    );

    // The page's own publish goes out over its wss:// socket too, and
    // comes back to it.
    page.wait_for(
        "the topic to publish to",
        "document.getElementById('publish-topic').value === 'orders'",
    );
    type_into(&mut page, "publish-payload", r#"{"from": "the page"}"#);
    submit(&mut page, "publish-form");
    page.wait_for(
        "the page's own message in the log",
        &logged("orders", seq + 1, "the page"),
    );
    page.screenshot("tls");
    assert_eq!(websockets(&mut page).len(), 1, "no other socket was opened");
    assert_clean(&mut page);
}

#[test]
fn pubsub_js_from_an_https_page_subscribes_and_receives_over_wss() {
    let tls = TlsBroker::start();
    tls.create_topic("orders");
    let mut page = tls.browser();
    page.open(&format!("https://{}/health", tls.addr()));
    assert_eq!(page.eval("location.protocol"), json!("https:"));
    let url = page.eval(
        r#"(async () => {
            const { connect } = await import("/pubsub.js");
            const ps = connect({ minDelayMs: 50 });
            window.events = [];
            await ps.subscribe("orders", (event) => window.events.push(event));
            window.ps = ps;
            return ps.url;
        })()"#,
    );
    let expected = format!("wss://{}/ws", tls.addr());
    assert_eq!(url, json!(expected), "the client's default URL");
    assert_eq!(websockets(&mut page), vec![expected]);
    tls.wait_subscribers("orders", 1);

    let seq = tls.publish("orders", "m1", json!({"n": 1}));
    page.wait_for("the event", "window.events.length === 1");
    assert_eq!(
        page.eval("[window.events[0].topic, window.events[0].seq, window.events[0].message]"),
        json!(["orders", seq, {"id": "m1", "payload": {"n": 1}}])
    );
    let published = page.eval(r#"window.ps.publish("orders", { n: 2 })"#);
    assert_eq!(published, json!(seq + 1), "the seq the broker acked");
    page.wait_for("the page's own event", "window.events.length === 2");
    assert_eq!(
        page.eval("window.events[1].message.payload"),
        json!({"n": 2})
    );
    assert_no_exceptions(&mut page);
}

/// SHA-256, from the crypto the broker uses.
fn ring_sha256(bytes: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().unwrap().common.hash_provider.hash(bytes);
    hash.as_ref().to_vec()
}
