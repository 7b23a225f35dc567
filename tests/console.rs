//! The browser console (`GET /`) and its JavaScript client (`/pubsub.js`),
//! in a real headless Chromium (`tests/browser`) against the real broker
//! on 127.0.0.1 (and, for the client's failover, two nodes of a cluster on
//! a real `redis-server`; for tokens, a stand-in for the application's
//! backend that hands the page tokens signed with `tests/common/tokens.rs`).
//! Each scenario of the page saves a screenshot under
//! `target/console-screenshots/` for a person to look at. Without Chromium
//! these tests fail: `scripts/test` installs it.
//!
//! Long on purpose: one browser scenario per promise of the console.

mod browser;
mod common;

use browser::{js, Browser};
use common::tokens::{claims, epoch_secs, hs256, hs256_with, SECRET};
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn open_console(broker: &TestBroker) -> Browser {
    let mut page = Browser::start();
    page.open(&format!("http://{}/", broker.addr));
    page
}

fn wait_connected(page: &mut Browser) {
    page.wait_for(
        "the WebSocket to open",
        "document.getElementById('conn').dataset.state === 'open'",
    );
}

/// The expression for the topic table's row of `topic`.
fn row(topic: &str) -> String {
    format!(
        "[...document.querySelectorAll('#topic-rows tr')].find(r => r.dataset.topic === {})",
        js(topic)
    )
}

fn wait_for_row(page: &mut Browser, topic: &str) {
    page.wait_for(
        &format!("the row of {topic}"),
        &format!("{} !== undefined", row(topic)),
    );
}

fn click(page: &mut Browser, topic: &str, action: &str) {
    page.eval(&format!(
        "{}.querySelector('[data-action={action}]').click()",
        row(topic)
    ));
}

/// Watches `topic` from the page and waits until the broker counts the
/// subscription.
fn watch(page: &mut Browser, broker: &TestBroker, topic: &str) {
    watch_with_key(page, broker, topic, &[]);
}

/// `watch`, on a broker that wants these headers (the key) on REST calls.
fn watch_with_key(page: &mut Browser, broker: &TestBroker, topic: &str, key: &[(&str, &str)]) {
    wait_for_row(page, topic);
    click(page, topic, "watch");
    eventually(&format!("the page's subscription to {topic}"), || {
        let (_, list) = http_json(broker.addr, "GET", "/topics", None, key);
        list["topics"]
            .as_array()
            .is_some_and(|topics| topics.contains(&json!({"name": topic, "subscribers": 1})))
    });
}

/// The expression: the event log shows an event of `topic` with `seq`
/// whose payload text contains `needle`.
fn logged(topic: &str, seq: u64, needle: &str) -> String {
    format!(
        "[...document.querySelectorAll('#log-rows tr')].some(r => r.cells[1].textContent === {} \
         && r.cells[2].textContent === '{seq}' && r.cells[3].textContent.includes({}))",
        js(topic),
        js(needle)
    )
}

/// Types `text` into the input or textarea `id`, as its input event sees it.
fn type_into(page: &mut Browser, id: &str, text: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.getElementById({}); e.value = {}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()",
        js(id),
        js(text)
    ));
}

fn submit(page: &mut Browser, form: &str) {
    page.eval(&format!(
        "document.getElementById({}).requestSubmit()",
        js(form)
    ));
}

fn text_of(page: &mut Browser, id: &str) -> String {
    page.eval(&format!("document.getElementById({}).textContent", js(id)))
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_clean(page: &mut Browser) {
    assert_eq!(page.problems(), Vec::<String>::new(), "console problems");
    assert_eq!(page.dialogs(), Vec::<String>::new(), "dialogs");
}

/// No script threw (a page without the console may log other problems,
/// such as its missing icon).
fn assert_no_exceptions(page: &mut Browser) {
    let exceptions: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| p.starts_with("exception"))
        .collect();
    assert_eq!(exceptions, Vec::<String>::new());
}

#[test]
fn the_files_are_served_with_their_types_and_the_page_with_its_policy() {
    let broker = TestBroker::with(&[("API_KEY", "s3cret")]);
    let page = http(broker.addr, "GET", "/", None, &[]);
    assert_eq!(page.status, 200, "the page needs no key");
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        page.header("Content-Security-Policy"),
        Some(pubsub::console::CONTENT_SECURITY_POLICY)
    );
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains(r#"<script type="module" src="/console.js">"#));
    for path in ["/console.js", "/pubsub.js"] {
        let script = http(broker.addr, "GET", path, None, &[]);
        assert_eq!(
            (script.status, script.header("Content-Type")),
            (200, Some("text/javascript; charset=utf-8")),
            "{path}"
        );
    }
    assert_eq!(
        http(broker.addr, "GET", "/console.css", None, &[]).status,
        200
    );
    assert_eq!(
        http(broker.addr, "GET", "/topics", None, &[]).status,
        401,
        "what the page fetches needs the key"
    );
}

#[test]
fn the_page_loads_and_shows_the_topics_without_errors() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    broker.client().publish("orders", "m1", json!({"n": 1}));
    let mut page = open_console(&broker);
    wait_connected(&mut page);
    wait_for_row(&mut page, "orders");
    page.wait_for(
        "the message count",
        &format!("{}.cells[2].textContent === '1'", row("orders")),
    );
    page.wait_for(
        "the broker's health",
        "document.getElementById('health').textContent.startsWith('broker ok')",
    );
    assert_eq!(page.eval("document.title"), json!("pubsub console"));
    page.screenshot("loaded");
    assert_clean(&mut page);
}

#[test]
fn create_a_topic_watch_it_and_see_events_from_another_client() {
    let broker = TestBroker::start();
    broker.create_topic("audit");
    let mut publisher = broker.client();
    for n in 1..=3 {
        publisher.publish("audit", &format!("a{n}"), json!({"audit": n}));
    }
    let mut page = open_console(&broker);
    wait_connected(&mut page);

    type_into(&mut page, "create-name", "orders");
    submit(&mut page, "create-form");
    wait_for_row(&mut page, "orders");
    assert!(topic_list(broker.addr).contains(&("orders".to_string(), 0)));
    assert_eq!(text_of(&mut page, "create-status"), "created 'orders'");

    watch(&mut page, &broker, "orders");
    let payload = json!({"items": [1, 2], "order_id": "A-17"});
    publisher.publish("orders", "o1", payload.clone());
    page.wait_for(
        "the event in the log",
        &logged("orders", 1, "\"order_id\": \"A-17\""),
    );
    let shown = page.eval("document.querySelector('#log-rows tr').cells[3].textContent");
    assert_eq!(
        shown,
        json!(serde_json::to_string_pretty(&payload).unwrap()),
        "the payload, pretty-printed"
    );

    // A second topic, with the last 2 of its 3 messages replayed first.
    type_into(&mut page, "replay-n", "2");
    watch(&mut page, &broker, "audit");
    page.wait_for("the replay", &logged("audit", 3, "\"audit\": 3"));
    assert_eq!(page.eval(&logged("audit", 2, "\"audit\": 2")), json!(true));
    assert_eq!(page.eval(&logged("audit", 1, "")), json!(false));
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('#watching .chip')].map(c => c.firstChild.textContent)"
        ),
        json!(["audit", "orders"])
    );

    // Paused, the log holds still; resumed, it catches up.
    page.eval("document.getElementById('pause').click()");
    publisher.publish("orders", "o2", json!({"order_id": "B-2"}));
    page.wait_for(
        "the count of events while paused",
        "document.getElementById('event-count').textContent.includes('paused, 1 since')",
    );
    assert_eq!(page.eval(&logged("orders", 2, "B-2")), json!(false));
    page.screenshot("paused");
    page.eval("document.getElementById('pause').click()");
    page.wait_for("the event after resuming", &logged("orders", 2, "B-2"));
    page.screenshot("events");
    assert_clean(&mut page);
}

#[test]
fn a_burst_of_events_is_drawn_in_batches_into_a_bounded_log() {
    // A queue large enough that the burst tests the page, not backpressure.
    let broker = TestBroker::with(&[("SUBSCRIBER_QUEUE_SIZE", "20000")]);
    broker.create_topic("firehose");
    let mut page = open_console(&broker);
    wait_connected(&mut page);
    watch(&mut page, &broker, "firehose");
    let mut publisher = broker.client();
    const EVENTS: u64 = 10_000;
    const WINDOW: u64 = 500;
    let started = Instant::now();
    for window in 0..EVENTS / WINDOW {
        for n in window * WINDOW..(window + 1) * WINDOW {
            publisher.send(json!({"type": "publish", "topic": "firehose",
                "message": {"id": format!("f{n}"), "payload": {"n": n + 1}}}));
        }
        for _ in 0..WINDOW {
            publisher.expect("ack");
        }
    }
    let published = started.elapsed();
    page.wait_for(
        "every event to be counted",
        &format!(
            "document.getElementById('event-count').textContent === '{EVENTS} received · last 500 shown'"
        ),
    );
    eprintln!(
        "{EVENTS} events published in {published:?}, all counted by the page {:?} after the first",
        started.elapsed()
    );
    assert_eq!(
        page.eval(
            "[document.querySelectorAll('#log-rows tr').length, \
             document.querySelector('#log-rows tr').cells[2].textContent, \
             document.querySelector('#log-rows tr:last-child').cells[2].textContent]"
        ),
        json!([500, EVENTS.to_string(), (EVENTS - 499).to_string()]),
        "the newest 500, newest first"
    );
    page.screenshot("burst");
    assert_clean(&mut page);
}

#[test]
fn publish_from_the_page_and_another_client_receives_it() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    let mut subscriber = broker.client();
    subscriber.subscribe("orders", 0);
    let mut page = open_console(&broker);
    wait_connected(&mut page);
    page.wait_for(
        "the topic to publish to",
        "document.getElementById('publish-topic').value === 'orders'",
    );

    type_into(&mut page, "publish-payload", r#"{"total": 12.5,"#);
    assert_eq!(
        page.eval("document.getElementById('publish-button').disabled"),
        json!(true)
    );
    assert!(text_of(&mut page, "publish-validation").starts_with("not valid JSON"));
    page.screenshot("publish-invalid");

    let payload = json!({"note": "from the browser", "total": 12.5, "tags": ["<b>", "ü"]});
    type_into(&mut page, "publish-payload", &payload.to_string());
    assert_eq!(text_of(&mut page, "publish-validation"), "valid JSON");
    page.eval("document.getElementById('publish-button').click()");
    let event = subscriber.expect("event");
    assert_eq!(
        (&event["topic"], &event["message"]["payload"]),
        (&json!("orders"), &payload)
    );
    page.wait_for(
        "the publish to be acknowledged",
        "document.getElementById('publish-status').textContent.startsWith(\"published to 'orders'\")",
    );
    page.screenshot("published");
    assert_clean(&mut page);
}

#[test]
fn hostile_topic_names_and_payloads_show_as_text_and_run_nothing() {
    let broker = TestBroker::start();
    let name = "<img src=x onerror=alert(1)>";
    broker.create_topic(name);
    let mut page = open_console(&broker);
    wait_connected(&mut page);
    watch(&mut page, &broker, name);
    let html = "<script>alert(2)</script><img src=y onerror=alert(3)><b>bold?</b>";
    broker.client().publish(name, "h1", json!({ "html": html }));
    page.wait_for("the hostile event", &logged(name, 1, html));

    assert_eq!(
        page.eval(&format!("{}.cells[0].textContent", row(name))),
        json!(name)
    );
    assert_eq!(
        page.eval("document.getElementById('publish-topic').options[0].textContent"),
        json!(name)
    );
    assert_eq!(
        page.eval("document.querySelector('#watching .chip').firstChild.textContent"),
        json!(name)
    );
    assert_eq!(
        page.eval(
            "document.querySelectorAll('img, b').length + \
             document.querySelectorAll('script:not([src])').length"
        ),
        json!(0),
        "nothing was parsed as HTML"
    );
    page.screenshot("hostile");
    assert_clean(&mut page);

    // Deleted from the page (two clicks), its name percent-encoded in the path.
    click(&mut page, name, "delete");
    click(&mut page, name, "delete");
    eventually("the topic's deletion", || {
        topic_list(broker.addr).is_empty()
    });
    page.wait_for(
        "the notice of the deletion",
        &format!(
            "document.getElementById('notice').textContent === {}",
            js(&format!("topic '{name}' was deleted"))
        ),
    );
    page.wait_for("the row to go", &format!("{} === undefined", row(name)));
    assert_clean(&mut page);
}

#[test]
fn with_an_api_key_the_page_asks_for_it_and_works_with_it() {
    let broker = TestBroker::with(&[("API_KEY", "s3cret")]);
    create_topic_with_key(&broker, "orders");
    let mut page = open_console(&broker);
    page.wait_for(
        "the key to be asked for",
        "!document.getElementById('key-panel').hidden",
    );
    assert_eq!(
        page.eval("document.getElementById('main').hidden"),
        json!(true)
    );

    type_into(&mut page, "key-input", "wrong");
    submit(&mut page, "key-form");
    page.wait_for(
        "the wrong key to be refused",
        "document.getElementById('key-status').textContent === 'The broker refused this key.'",
    );
    page.screenshot("key-asked");

    type_into(&mut page, "key-input", "s3cret");
    submit(&mut page, "key-form");
    wait_connected(&mut page);
    assert_eq!(
        page.eval("[sessionStorage.getItem('pubsub.apiKey'), localStorage.length, document.getElementById('key-panel').hidden]"),
        json!(["s3cret", 0, true])
    );
    watch_with_key(&mut page, &broker, "orders", &[("X-API-Key", "s3cret")]);
    let mut publisher = Client::connect(&format!("{}?api_key=s3cret", broker.ws_url()));
    publisher.publish("orders", "k1", json!({"with": "the key"}));
    page.wait_for("the event", &logged("orders", 1, "the key"));
    page.screenshot("key-accepted");

    // The tab keeps the key across a reload, and asks no more.
    page.open(&format!("http://{}/", broker.addr));
    wait_connected(&mut page);
    wait_for_row(&mut page, "orders");

    // The only complaints are the broker's 401s to the key-less and wrong
    // requests; no script failed.
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !p.contains("status of 401"))
        .collect();
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(page.dialogs(), Vec::<String>::new());
}

fn create_topic_with_key(broker: &TestBroker, name: &str) {
    let (status, body) = http_json(
        broker.addr,
        "POST",
        "/topics",
        Some(&json!({ "name": name }).to_string()),
        &[("X-API-Key", "s3cret")],
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn the_client_reconnects_by_itself_when_the_broker_restarts() {
    let broker = TestBroker::start();
    let addr = broker.addr;
    broker.create_topic("orders");
    let mut page = open_console(&broker);
    wait_connected(&mut page);
    watch(&mut page, &broker, "orders");

    broker.shutdown();
    page.wait_for(
        "the client to notice",
        "document.getElementById('conn').dataset.state !== 'open'",
    );
    let broker = TestBroker::on(addr, &[]);
    broker.create_topic("orders");
    wait_connected(&mut page);
    eventually("the subscription to be made again", || {
        subscribers(addr, "orders") == Some(1)
    });
    broker
        .client()
        .publish("orders", "r1", json!({"after": "the restart"}));
    page.wait_for(
        "the event after the restart",
        &logged("orders", 1, "the restart"),
    );
    page.wait_for(
        "the health to come back",
        "document.getElementById('health').textContent.startsWith('broker ok')",
    );
    page.screenshot("reconnected");
    assert_eq!(page.dialogs(), Vec::<String>::new());
}

#[test]
fn the_readme_example_works_from_a_page_of_another_origin() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    broker
        .client()
        .publish("orders", "m1", json!({"before": 1}));
    let mut page = Browser::start();
    // `localhost` is another origin than `127.0.0.1`: the module is
    // imported across origins, as a web app would.
    page.open(&format!("http://localhost:{}/health", broker.addr.port()));
    let result = page.eval(&format!(
        r#"(async () => {{
            const {{ connect }} = await import("http://{addr}/pubsub.js");
            const ps = connect({{ url: "ws://{addr}/ws" }});
            const got = [];
            await ps.subscribe("orders", (event) => got.push([event.seq, event.message.payload]), {{ lastN: 1 }});
            const seq = await ps.publish("orders", {{ order_id: "123" }});
            while (got.length < 2) await new Promise((resolve) => setTimeout(resolve, 20));
            const missing = await ps.subscribe("nope", () => {{}}).catch((error) => [error.name, error.code]);
            await ps.unsubscribe("orders");
            ps.close();
            return {{ got, seq: seq ?? null, missing, state: ps.state }};
        }})()"#,
        addr = broker.addr
    ));
    assert_eq!(
        result["got"],
        json!([[1, {"before": 1}], [2, {"order_id": "123"}]])
    );
    assert_eq!(result["missing"], json!(["PubSubError", "TOPIC_NOT_FOUND"]));
    assert_eq!(result["state"], json!("closed"));
    assert!(
        result["seq"] == json!(null) || result["seq"] == json!(2),
        "publish resolves with the ack's seq, if any: {result}"
    );
    // A JSON document has no icon: the browser's 404 for /favicon.ico is
    // the only complaint.
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !p.contains("/favicon.ico"))
        .collect();
    assert_eq!(problems, Vec::<String>::new());
}

/// A scripted broker on 127.0.0.1 for the client's resume: it acks the
/// first subscribe with an epoch and sends two events, then drops the
/// connection; the client must subscribe again from the last `seq` it saw,
/// in that epoch. Returns the subscribe frames it got.
fn scripted_resume_broker() -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<Vec<serde_json::Value>>,
) {
    use tungstenite::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut frames = Vec::new();
        for connection in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut ws = tungstenite::accept(stream).unwrap();
            let subscribe: serde_json::Value = loop {
                if let Message::Text(text) = ws.read().unwrap() {
                    break serde_json::from_str(text.as_str()).unwrap();
                }
            };
            let rid = subscribe["request_id"].clone();
            frames.push(subscribe);
            let ts = "2026-01-01T00:00:00.000Z";
            let event = |seq: u64| json!({"type":"event","topic":"orders","message":{"id":format!("m{seq}"),"payload":{"n":seq}},"seq":seq,"ts":ts});
            let replies = if connection == 0 {
                vec![
                    json!({"type":"ack","request_id":rid,"topic":"orders","status":"ok","epoch":"e1","last_seq":5,"ts":ts}),
                    event(6),
                    event(7),
                ]
            } else {
                vec![
                    json!({"type":"ack","request_id":rid,"topic":"orders","status":"ok","epoch":"e1","last_seq":7,"recovered":true,"ts":ts}),
                    event(8),
                ]
            };
            for reply in replies {
                ws.send(Message::text(reply.to_string())).unwrap();
            }
            if connection == 0 {
                let _ = ws.close(None);
                while ws.read().is_ok() {}
            } else {
                // Held open until the client closes.
                while ws.read().is_ok() {}
            }
        }
        frames
    });
    (addr, server)
}

#[test]
fn the_client_resumes_from_the_last_seq_it_saw_in_the_epoch_it_saw() {
    let broker = TestBroker::start();
    let (scripted, server) = scripted_resume_broker();
    let mut page = Browser::start();
    page.open(&format!("http://{}/health", broker.addr));
    let seen = page.eval(&format!(
        r#"(async () => {{
            const {{ connect }} = await import("/pubsub.js");
            const ps = connect({{ url: "ws://{scripted}/", minDelayMs: 50 }});
            const seqs = [];
            await ps.subscribe("orders", (event) => seqs.push(event.seq), {{ lastN: 2 }});
            while (seqs.length < 3) await new Promise((resolve) => setTimeout(resolve, 20));
            ps.close();
            return seqs;
        }})()"#
    ));
    assert_eq!(seen, json!([6, 7, 8]));
    let frames = server.join().unwrap();
    assert_eq!(
        (&frames[0]["last_n"], frames[0].get("since_seq")),
        (&json!(2), None),
        "at first, as the caller asked: {frames:?}"
    );
    assert_eq!(
        (
            &frames[1]["since_seq"],
            &frames[1]["epoch"],
            frames[1].get("last_n")
        ),
        (&json!(7), &json!("e1"), None),
        "after the reconnect, from the last seq seen: {frames:?}"
    );
}

#[test]
fn the_client_resumes_on_the_broker_and_misses_nothing_published_while_it_was_away() {
    let broker = TestBroker::with(&[("API_KEY", "s3cret")]);
    create_topic_with_key(&broker, "orders");
    let mut publisher = Client::connect(&format!("{}?api_key=s3cret", broker.ws_url()));
    publisher.publish("orders", "m1", json!(1));
    let mut page = Browser::start();
    page.open(&format!("http://{}/health", broker.addr));
    page.eval(
        r#"(async () => {
            const { connect } = await import("/pubsub.js");
            const ps = connect({ key: "s3cret", minDelayMs: 50, maxDelayMs: 200 });
            window.seqs = [];
            window.gaps = 0;
            ps.addEventListener("gap", () => { window.gaps += 1; });
            await ps.subscribe("orders", (event) => window.seqs.push(event.seq), { lastN: 1 });
            window.ps = ps;
        })()"#,
    );
    publisher.publish("orders", "m2", json!(2));
    page.wait_for(
        "the replayed and the live event",
        "window.seqs.length === 2",
    );

    // A wrong key keeps the client away (its reconnects get 401) while
    // three messages are published; with the right key it comes back.
    page.eval("window.ps.setKey('wrong')");
    page.wait_for("the client to be away", "window.ps.state !== 'open'");
    for n in 3..=5 {
        publisher.publish("orders", &format!("m{n}"), json!(n));
    }
    page.eval("window.ps.setKey('s3cret')");
    page.wait_for("the missed events", "window.seqs.length >= 5");
    assert_eq!(
        page.eval("[window.seqs, window.gaps]"),
        json!([[1, 2, 3, 4, 5], 0]),
        "each event once, in order, nothing lost"
    );
    assert_no_exceptions(&mut page);
}

/// A client given the `urls` of two nodes of a cluster (a real
/// `redis-server`), connected to the first: when that node is killed it
/// connects to the second and resumes there, every event once.
#[test]
fn given_the_nodes_of_a_cluster_the_client_goes_on_with_another_when_its_node_dies() {
    let mut cluster = common::cluster::Cluster::start(2, &[]);
    let (a, b) = (cluster.nodes[0].addr(), cluster.nodes[1].addr());
    create_topic(a, "orders");
    cluster.wait_listed("orders");
    let mut publisher = cluster.nodes[1].client();
    publisher.publish("orders", "m1", json!(1));
    let mut page = Browser::start();
    // The page and the module come from node b, which stays up.
    page.open(&format!("http://{b}/health"));
    page.eval(&format!(
        r#"(async () => {{
            const {{ connect }} = await import("/pubsub.js");
            const ps = connect({{ urls: ["ws://{a}/ws", "ws://{b}/ws"], minDelayMs: 50, maxDelayMs: 200 }});
            window.seqs = [];
            window.gaps = 0;
            window.opened = [];
            ps.addEventListener("gap", () => {{ window.gaps += 1; }});
            ps.addEventListener("state", () => {{ if (ps.state === "open") window.opened.push(ps.url); }});
            await ps.subscribe("orders", (event) => window.seqs.push(event.seq), {{ lastN: 1 }});
            window.ps = ps;
        }})()"#
    ));
    publisher.publish("orders", "m2", json!(2));
    page.wait_for(
        "the replayed and the live event",
        "window.seqs.length === 2",
    );

    cluster.nodes[0].process.child.kill().unwrap();
    // Published while the client is away or just back: resumed or live,
    // each must come once.
    for n in 3..=5 {
        publisher.publish("orders", &format!("m{n}"), json!(n));
    }
    page.wait_for("the client on node b", "window.opened.length === 2");
    page.wait_for("the events published meanwhile", "window.seqs.length >= 5");
    publisher.publish("orders", "m6", json!(6));
    page.wait_for("a live event on node b", "window.seqs.length >= 6");
    assert_eq!(
        page.eval("[window.seqs, window.gaps, window.opened]"),
        json!([
            [1, 2, 3, 4, 5, 6],
            0,
            [format!("ws://{a}/ws"), format!("ws://{b}/ws")]
        ]),
        "each event once, in order, first from node a, then from node b"
    );
    assert_no_exceptions(&mut page);
    cluster.nodes[1].assert_sound();
}

/// Subscribing again to a topic on the same connection (a new handler,
/// with `lastN`) while events stream: each handler gets every `seq` once,
/// consecutively, though the broker may send an event live before the
/// ack and again in the replay after it, or replay what is still queued.
#[test]
fn subscribing_again_while_events_stream_gives_each_handler_every_event_once() {
    let broker = TestBroker::start();
    broker.create_topic("orders");
    let mut page = Browser::start();
    page.open(&format!("http://{}/health", broker.addr));
    page.eval(
        r#"(async () => {
            const { connect } = await import("/pubsub.js");
            window.ps = connect({});
            window.handlers = [];
            await window.ps.subscribe("orders", () => {});
        })()"#,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (mut client, stop) = (broker.client(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                client.publish("orders", &format!("m{n}"), json!(n));
            }
            n
        })
    };
    // Twenty handlers, one after the other, each subscribed while the
    // stream runs and kept until 30 events reached it.
    let result = page.eval(
        r#"(async () => {
            for (let i = 0; i < 20; i++) {
                const seqs = [];
                window.handlers.push(seqs);
                await window.ps.subscribe("orders", (event) => seqs.push(event.seq), { lastN: 5 });
                while (seqs.length < 30) await new Promise((resolve) => setTimeout(resolve, 2));
            }
            return window.handlers;
        })()"#,
    );
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published > 100, "the stream ran: {published} publishes");
    let handlers = result.as_array().expect("the handlers' seqs");
    assert_eq!(handlers.len(), 20);
    for (i, seqs) in handlers.iter().enumerate() {
        let seqs: Vec<u64> = seqs
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert!(seqs.len() >= 30, "handler {i}: {seqs:?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "handler {i} got a seq twice or skipped one: {seqs:?}"
        );
    }
    assert_no_exceptions(&mut page);
}

// ---- tokens -------------------------------------------------------------------

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
