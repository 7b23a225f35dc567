//! Tokens in the browser: `/pubsub.js` given a token function (it
//! authenticates by message, refreshes before expiry, reconnects with a
//! fresh token, drops revoked subscriptions, stays closed once its user
//! is disconnected) and the console page with only a token, in a real
//! headless Chromium against the real broker, with a stand-in for the
//! application's backend that hands the page tokens signed with
//! `tests/common/tokens.rs`. Without Chromium these tests fail:
//! `scripts/test` installs it.
//!
//! Long on purpose: one browser scenario per promise of the client's
//! token handling, and the backend stand-in they share.

mod browser;
mod common;

use browser::page::*;
use browser::{js, Browser};
use common::tokens::{claims, epoch_secs, hs256, hs256_with, SECRET};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A broker that takes HS256 tokens signed with `SECRET`, and the API key
/// `s3cret` for the test's own requests, with these topics.
fn token_broker(topics: &[&str], extra: &[(&str, &str)]) -> TestBroker {
    let mut vars = vec![("TOKEN_HMAC_SECRET", SECRET), ("API_KEY", "s3cret")];
    vars.extend_from_slice(extra);
    let broker = TestBroker::with(&vars);
    for topic in topics {
        create_topic_with_key(&broker, topic);
    }
    broker
}

/// A client of a `token_broker` with the API key: every right.
fn key_client(broker: &TestBroker) -> Client {
    Client::connect(&format!("{}?api_key=s3cret", broker.ws_url()))
}

fn subscribers_with_key(broker: &TestBroker, topic: &str) -> Option<u64> {
    let (_, list) = http_json(
        broker.addr,
        "GET",
        "/topics",
        None,
        &[("X-API-Key", "s3cret")],
    );
    list["topics"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == topic)?["subscribers"]
        .as_u64()
}

/// `claims` that expire `secs` from now.
fn claims_for(sub: &str, secs: i64, subscribe: &[&str], publish: &[&str]) -> Value {
    let mut claims = claims(sub, subscribe, publish);
    claims["exp"] = json!(epoch_secs(secs));
    claims
}

/// The `exp` of a token, read from its payload.
fn exp_of(token: &str) -> i64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_i64().unwrap()
}

/// A stand-in for the application's backend: each request to `url` (a
/// page's `fetch`; any origin may) gets the token `mint(n)`, `n` the
/// number of tokens given before. Stops when dropped.
struct TokenServer {
    url: String,
    addr: SocketAddr,
    given: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    fn start(mint: impl Fn(usize) -> String + Send + Sync + 'static) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let given = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mint = Arc::new(mint);
        {
            let (given, stop) = (Arc::clone(&given), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (mint, given) = (Arc::clone(&mint), Arc::clone(&given));
                    // A thread per connection: a browser may open one and
                    // send nothing on it.
                    std::thread::spawn(move || give_token(stream, &*mint, &given));
                }
            });
        }
        TokenServer {
            url: format!("http://{addr}/token"),
            addr,
            given,
            stop,
        }
    }

    /// The tokens given so far, in order.
    fn given(&self) -> Vec<String> {
        self.given.lock().unwrap().clone()
    }

    /// A page's token function that fetches a token from here and counts
    /// its calls in `window.calls`.
    fn function(&self) -> String {
        format!(
            "async () => {{ window.calls += 1; return (await fetch({})).text(); }}",
            js(&self.url)
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request head from `stream` and answers it with a new token.
fn give_token(mut stream: TcpStream, mint: &dyn Fn(usize) -> String, given: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let token = {
        let mut given = given.lock().unwrap();
        let token = mint(given.len());
        given.push(token.clone());
        token
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nAccess-Control-Allow-Origin: *\r\n\
         Cache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{token}",
        token.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// A page of the broker (with the browser's Network domain on, for
/// `sockets`) whose `window.ps` is a client of `/pubsub.js` connected with
/// `options`, a JavaScript object, after `setup` ran. The page records the
/// client's states (`closed:disconnected` when closed with a reason) in
/// `window.states`, its notices (`msg` or `msg:topic`) in `notices`, its
/// errors' codes in `errors`; a token function counts its calls in
/// `window.calls`, and handlers may push to `window.got`.
fn client_page(broker: &TestBroker, setup: &str, options: &str) -> Browser {
    let mut page = Browser::start();
    page.call("Network.enable", json!({}));
    page.open(&format!("http://{}/health", broker.addr));
    page.eval(&format!(
        r#"(async () => {{
            const {{ connect }} = await import("/pubsub.js");
            Object.assign(window, {{ calls: 0, states: [], notices: [], errors: [], got: [] }});
            {setup}
            const ps = connect({options});
            ps.addEventListener("state", (e) => window.states.push([e.detail.state, e.detail.reason].filter(Boolean).join(":")));
            ps.addEventListener("info", (e) => window.notices.push([e.detail.msg, e.detail.topic].filter(Boolean).join(":")));
            ps.addEventListener("error", (e) => window.errors.push(e.detail.code));
            window.ps = ps;
        }})()"#
    ));
    page
}

/// Subscribes the page's client to `topic`, its payloads into `window.got`;
/// panics unless the broker acks.
fn subscribe_page(page: &mut Browser, topic: &str) {
    let acked = page.eval(&format!(
        "window.ps.subscribe({}, (e) => window.got.push(e.message.payload)).then(() => 'acked')",
        js(topic)
    ));
    assert_eq!(acked, json!("acked"), "subscribing to {topic}");
}

/// The WebSockets the page opened, in order: each one's URL and the
/// frames it sent, parsed.
fn sockets(page: &mut Browser) -> Vec<(String, Vec<Value>)> {
    let sent = page.events("Network.webSocketFrameSent");
    page.events("Network.webSocketCreated")
        .iter()
        .map(|socket| {
            let frames = sent
                .iter()
                .filter(|frame| frame["requestId"] == socket["requestId"])
                .map(|frame| {
                    serde_json::from_str(frame["response"]["payloadData"].as_str().unwrap())
                        .expect("JSON frames")
                })
                .collect();
            (socket["url"].as_str().unwrap().to_string(), frames)
        })
        .collect()
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|frame| frame["type"].as_str().unwrap_or_default())
        .collect()
}

#[test]
fn a_token_function_authenticates_by_message_and_gets_the_topics_it_grants_and_no_other() {
    let broker = token_broker(&["user.42.inbox", "user.43.inbox", "chat"], &[]);
    let backend = TokenServer::start(|_| hs256(&claims("user-42", &["user.42.*"], &["chat"])));
    let mut page = client_page(&broker, "", &format!("{{ token: {} }}", backend.function()));
    subscribe_page(&mut page, "user.42.inbox");
    key_client(&broker).publish("user.42.inbox", "m1", json!({"for": "user 42"}));
    page.wait_for("the event", "window.got.length === 1");
    let result = page.eval(
        r#"(async () => {
            const refusal = (promise) => promise.then(() => "accepted", (e) => [e.name, e.code, e.topic]);
            return {
                another_user: await refusal(window.ps.subscribe("user.43.inbox", () => {})),
                missing: await refusal(window.ps.subscribe("no-such-topic", () => {})),
                publish: await refusal(window.ps.publish("user.42.inbox", 1)),
                chat: await window.ps.publish("chat", { hello: 1 }),
                got: window.got, calls: window.calls, states: window.states, errors: window.errors,
            };
        })()"#,
    );
    for (what, topic) in [
        ("another_user", "user.43.inbox"),
        ("missing", "no-such-topic"),
        ("publish", "user.42.inbox"),
    ] {
        assert_eq!(
            result[what],
            json!(["PubSubError", "FORBIDDEN", topic]),
            "{what}: {result}"
        );
    }
    assert_eq!(result["chat"], json!(1), "published to chat: {result}");
    assert_eq!(
        (
            &result["got"],
            &result["calls"],
            &result["states"],
            &result["errors"]
        ),
        (
            &json!([{"for": "user 42"}]),
            &json!(1),
            &json!(["open"]),
            &json!([])
        ),
        "{result}"
    );
    let sockets = sockets(&mut page);
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let (url, frames) = &sockets[0];
    assert_eq!(url, &broker.ws_url(), "neither token nor key in the URL");
    assert_eq!(
        types(frames),
        [
            "auth",
            "subscribe",
            "subscribe",
            "subscribe",
            "publish",
            "publish"
        ]
    );
    assert_eq!(
        frames[0]["token"],
        json!(backend.given()[0]),
        "the token function's token"
    );
    assert_no_exceptions(&mut page);
}

/// The first attempt's token function throws, the second's token is
/// refused: each is an "error" event and a backoff, and nothing but the
/// `auth` goes out until one is acked.
#[test]
fn a_failing_token_function_or_a_refused_auth_is_an_error_and_the_client_tries_again() {
    let broker = token_broker(&["news"], &[]);
    let backend = TokenServer::start(|n| {
        let claims = claims("user-42", &["news"], &[]);
        if n == 0 {
            hs256_with(&claims, "not-the-secret")
        } else {
            hs256(&claims)
        }
    });
    let function = format!(
        "async () => {{ window.calls += 1; if (window.calls === 1) throw new Error('the backend is down'); \
         return (await fetch({})).text(); }}",
        js(&backend.url)
    );
    let mut page = client_page(
        &broker,
        "",
        &format!("{{ token: {function}, minDelayMs: 100, maxDelayMs: 400 }}"),
    );
    subscribe_page(&mut page, "news");
    key_client(&broker).publish("news", "n1", json!("live"));
    page.wait_for("the event", "window.got.length === 1");
    assert_eq!(
        page.eval("[window.errors, window.states, window.calls]"),
        json!([
            ["NO_TOKEN", "UNAUTHORIZED"],
            [
                "reconnecting",
                "connecting",
                "reconnecting",
                "connecting",
                "open"
            ],
            3
        ])
    );
    let sockets = sockets(&mut page);
    let sent: Vec<Vec<&str>> = sockets.iter().map(|(_, frames)| types(frames)).collect();
    assert_eq!(
        sent,
        [vec![], vec!["auth"], vec!["auth", "subscribe"]],
        "the subscribe waited for an acked auth"
    );
    assert_no_exceptions(&mut page);
}

/// Tokens that live 5 s, with no leeway: the client refreshes each on the
/// same connection before it expires, so the connection outlives the
/// first token and events still arrive.
#[test]
fn a_token_function_refreshes_the_token_before_it_expires_and_the_connection_lives_on() {
    let broker = token_broker(&["news"], &[("TOKEN_LEEWAY_SECS", "0")]);
    let backend = TokenServer::start(|_| hs256(&claims_for("user-42", 5, &["news"], &[])));
    let mut page = client_page(&broker, "", &format!("{{ token: {} }}", backend.function()));
    subscribe_page(&mut page, "news");
    let mut publisher = key_client(&broker);
    publisher.publish("news", "n1", json!("before"));
    page.wait_for("the first event", "window.got.length === 1");
    let first_exp = exp_of(&backend.given()[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while epoch_secs(0) <= first_exp {
        assert!(Instant::now() < deadline, "the clock passes the first exp");
        std::thread::sleep(Duration::from_millis(100));
    }
    publisher.publish("news", "n2", json!("after"));
    page.wait_for(
        "the event after the first token expired",
        "window.got.length === 2",
    );
    let result = page.eval("({ got, calls, states, notices, errors })");
    assert_eq!(
        (
            &result["got"],
            &result["states"],
            &result["notices"],
            &result["errors"]
        ),
        (
            &json!(["before", "after"]),
            &json!(["open"]),
            &json!([]),
            &json!([])
        ),
        "one connection throughout, no token_expired: {result}"
    );
    let calls = result["calls"].as_u64().unwrap();
    assert!(calls >= 2, "refreshed: {result}");
    let sockets = sockets(&mut page);
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let sent = types(&sockets[0].1);
    assert_eq!(sent[..2], ["auth", "subscribe"]);
    assert!(
        sent[2..].iter().all(|t| *t == "auth") && sent.len() >= 3,
        "then only refreshes: {sent:?}"
    );
    assert!(
        exp_of(&backend.given()[1]) > first_exp || backend.given().len() > 2,
        "a refresh brought a later exp"
    );
    assert_eq!(subscribers_with_key(&broker, "news"), Some(1));
    assert_no_exceptions(&mut page);
}

/// Tokens that live 3 s, with no leeway, and a token function that fails
/// after the first: the refreshes (the first after 1 to 1.5 s) fail ("error" events), the broker
/// closes with `token_expired`, and the client connects again with a
/// fresh token once the function gives one, and subscribes again.
#[test]
fn when_the_refreshes_fail_until_the_token_expires_the_client_reconnects_with_a_fresh_one() {
    let broker = token_broker(&["news"], &[("TOKEN_LEEWAY_SECS", "0")]);
    let backend = TokenServer::start(|_| hs256(&claims_for("user-42", 3, &["news"], &[])));
    let function = format!(
        "async () => {{ window.calls += 1; if (window.failing) throw new Error('the backend is down'); \
         return (await fetch({})).text(); }}",
        js(&backend.url)
    );
    let mut page = client_page(
        &broker,
        "window.failing = false;",
        &format!("{{ token: {function}, minDelayMs: 100, maxDelayMs: 400 }}"),
    );
    subscribe_page(&mut page, "news");
    page.eval("window.failing = true");
    page.wait_for(
        "the token to expire",
        "window.notices.includes('token_expired')",
    );
    page.eval("window.failing = false");
    page.wait_for("the client to be back", "window.ps.state === 'open'");
    key_client(&broker).publish("news", "n1", json!("back"));
    page.wait_for("the event", "window.got.length === 1");
    let result = page.eval("({ states, notices, errors })");
    let errors = result["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e == "NO_TOKEN"),
        "{result}"
    );
    assert_eq!(result["notices"], json!(["token_expired"]), "{result}");
    let states = result["states"].as_array().unwrap();
    assert_eq!(
        (&states[0], states.last().unwrap()),
        (&json!("open"), &json!("open")),
        "{result}"
    );
    assert!(states.contains(&json!("reconnecting")), "{result}");
    let sockets = sockets(&mut page);
    assert!(sockets.len() >= 2, "{sockets:?}");
    let (_, frames) = sockets.last().unwrap();
    assert_eq!(types(&frames[..2]), ["auth", "subscribe"]);
    assert_eq!(frames[1]["topic"], "news");
    assert_no_exceptions(&mut page);
}

/// A refreshed token that no longer grants a topic: the broker ends that
/// subscription (`subscription_revoked`) and the client forgets it, so on
/// its next connection it subscribes again to the other topic only.
#[test]
fn a_refreshed_token_that_no_longer_grants_a_topic_drops_its_subscription() {
    let broker = token_broker(&["news", "chat"], &[]);
    let backend = TokenServer::start(|n| {
        if n == 0 {
            hs256(&claims_for("user-42", 2, &["news", "chat"], &[]))
        } else {
            hs256(&claims("user-42", &["news"], &[]))
        }
    });
    let mut page = client_page(
        &broker,
        &format!("window.getToken = {};", backend.function()),
        "{ token: window.getToken }",
    );
    subscribe_page(&mut page, "news");
    subscribe_page(&mut page, "chat");
    page.wait_for(
        "the revocation",
        "window.notices.includes('subscription_revoked:chat')",
    );
    page.eval("window.ps.setToken(window.getToken)");
    page.wait_for(
        "the new connection",
        "window.states.filter((s) => s === 'open').length === 2",
    );
    key_client(&broker).publish("news", "n1", json!("news"));
    page.wait_for("the event of news", "window.got.length === 1");
    let sockets = sockets(&mut page);
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let (_, frames) = &sockets[1];
    assert_eq!(types(frames), ["auth", "subscribe"]);
    assert_eq!(frames[1]["topic"], "news", "chat was forgotten");
    assert_eq!(
        page.eval("[window.notices, window.errors]"),
        json!([["subscription_revoked:chat"], []])
    );
    assert_no_exceptions(&mut page);
}

/// `POST /disconnect` of the token's user: the client hears
/// `disconnected` and closes for good, though its (synchronous) token
/// function would give it a token again.
#[test]
fn a_disconnected_user_s_client_closes_for_good_and_does_not_reconnect() {
    let broker = token_broker(&["user.42.inbox"], &[]);
    let token = hs256(&claims("user-42", &["user.42.*"], &[]));
    let mut page = client_page(
        &broker,
        &format!("window.token = {};", js(&token)),
        "{ token: () => { window.calls += 1; return window.token; }, minDelayMs: 100, maxDelayMs: 200 }",
    );
    subscribe_page(&mut page, "user.42.inbox");
    let (status, body) = http_json(
        broker.addr,
        "POST",
        "/disconnect",
        Some(r#"{"sub":"user-42"}"#),
        &[("X-API-Key", "s3cret")],
    );
    assert_eq!(status, 200, "{body}");
    page.wait_for("the notice", "window.notices.includes('disconnected')");
    assert_eq!(page.eval("window.ps.state"), json!("closed"));
    // Many times the backoff: a client that reconnects would have.
    std::thread::sleep(Duration::from_secs(2));
    let result = page.eval(
        r#"(async () => ({
            states: window.states, calls: window.calls, notices: window.notices,
            publish: await window.ps.publish("user.42.inbox", 1).then(() => "published", (e) => e.code),
        }))()"#,
    );
    assert_eq!(
        result,
        json!({
            "states": ["open", "closed:disconnected"],
            "calls": 1,
            "notices": ["disconnected"],
            "publish": "NOT_CONNECTED",
        })
    );
    assert_eq!(sockets(&mut page).len(), 1, "no second connection");
    assert_eq!(subscribers_with_key(&broker, "user.42.inbox"), Some(0));
    assert_no_exceptions(&mut page);
}

/// The console given only a user's token: it lists only the topics the
/// token may see and watches one of them; the token goes in the REST
/// calls' `Authorization` and the `auth` message, never in a URL; /stats,
/// which needs admin, is refused once and not asked again.
#[test]
fn with_only_a_token_the_console_shows_and_watches_what_its_user_may_see() {
    let broker = token_broker(&["chat", "news", "user.42.inbox", "user.43.inbox"], &[]);
    let token = hs256(&claims("user-42", &["user.42.*", "news"], &["chat"]));
    let mut page = Browser::start();
    page.call("Network.enable", json!({}));
    page.open(&format!("http://{}/", broker.addr));
    page.wait_for(
        "the key or token to be asked for",
        "!document.getElementById('key-panel').hidden",
    );
    type_into(&mut page, "token-input", &token);
    submit(&mut page, "key-form");
    wait_connected(&mut page);
    wait_for_row(&mut page, "user.42.inbox");
    assert_eq!(
        page.eval("[...document.querySelectorAll('#topic-rows tr')].map((r) => r.dataset.topic)"),
        json!(["chat", "news", "user.42.inbox"]),
        "only the topics the token's patterns match"
    );
    assert_eq!(
        page.eval(
            "[sessionStorage.getItem('pubsub.token'), sessionStorage.getItem('pubsub.apiKey'), \
             localStorage.length, document.getElementById('key-forget').hidden]"
        ),
        json!([token, null, 0, false])
    );
    watch_with_key(
        &mut page,
        &broker,
        "user.42.inbox",
        &[("X-API-Key", "s3cret")],
    );
    key_client(&broker).publish("user.42.inbox", "m1", json!({"to": "user 42"}));
    page.wait_for("the event", &logged("user.42.inbox", 1, "user 42"));
    page.screenshot("token");
    // Three more polls.
    std::thread::sleep(Duration::from_millis(3 * 1000 + 500));

    let requests = page.events("Network.requestWillBeSent");
    let sockets = sockets(&mut page);
    let urls: Vec<&str> = requests
        .iter()
        .map(|r| r["request"]["url"].as_str().unwrap())
        .chain(sockets.iter().map(|(url, _)| url.as_str()))
        .collect();
    assert!(
        urls.iter().all(|url| !url.contains(&token)),
        "no token in a URL: {urls:?}"
    );
    let polls_with_token = requests
        .iter()
        .filter(|r| r["request"]["url"].as_str().unwrap().ends_with("/topics"))
        .filter(|r| r["request"]["headers"]["Authorization"] == json!(format!("Bearer {token}")))
        .count();
    assert!(
        polls_with_token >= 4,
        "{polls_with_token} polls of /topics with the token"
    );
    let stats = urls.iter().filter(|url| url.ends_with("/stats")).count();
    assert_eq!(stats, 1, "/stats asked once");
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let (url, frames) = &sockets[0];
    assert_eq!(url, &broker.ws_url());
    assert_eq!(
        (&frames[0]["type"], &frames[0]["token"]),
        (&json!("auth"), &json!(token)),
        "the token in the first message"
    );
    // The only complaints: the 401 before the token, the 403 of /stats.
    let problems = page.problems();
    let unexpected: Vec<&String> = problems
        .iter()
        .filter(|p| !p.contains("status of 401") && !p.contains("status of 403"))
        .collect();
    assert_eq!(unexpected, Vec::<&String>::new());
    assert_eq!(page.dialogs(), Vec::<String>::new());
}
