//! The browser console (`GET /`) and its JavaScript client (`/pubsub.js`),
//! in a real headless Chromium (`tests/browser`) against the real broker
//! on 127.0.0.1 (and, for the client's failover, two nodes of a cluster on
//! a real `redis-server`). Tokens in the page: `tests/console_tokens.rs`.
//! Each scenario of the page saves a screenshot under
//! `target/console-screenshots/` for a person to look at. Without Chromium
//! these tests fail: `scripts/test` installs it.
//!
//! Long on purpose: one browser scenario per promise of the console.

mod browser;
mod common;

use browser::page::*;
use browser::{js, Browser};
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
