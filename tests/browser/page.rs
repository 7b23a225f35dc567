//! The console page as its tests drive it: open it, wait for its
//! connection, find a topic's row, click, type, submit, read the log, and
//! check that no script threw. Shared by `tests/console.rs`,
//! `tests/console_tokens.rs` and `tests/console_tls.rs`, each of which uses
//! a part.
#![allow(dead_code)]

use super::{js, Browser};
use crate::common::*;
use serde_json::json;

pub fn open_console(broker: &TestBroker) -> Browser {
    let mut page = Browser::start();
    page.open(&format!("http://{}/", broker.addr));
    page
}

pub fn wait_connected(page: &mut Browser) {
    page.wait_for(
        "the WebSocket to open",
        "document.getElementById('conn').dataset.state === 'open'",
    );
}

/// The expression for the topic table's row of `topic`.
pub fn row(topic: &str) -> String {
    format!(
        "[...document.querySelectorAll('#topic-rows tr')].find(r => r.dataset.topic === {})",
        js(topic)
    )
}

pub fn wait_for_row(page: &mut Browser, topic: &str) {
    page.wait_for(
        &format!("the row of {topic}"),
        &format!("{} !== undefined", row(topic)),
    );
}

pub fn click(page: &mut Browser, topic: &str, action: &str) {
    page.eval(&format!(
        "{}.querySelector('[data-action={action}]').click()",
        row(topic)
    ));
}

/// Watches `topic` from the page and waits until the broker counts the
/// subscription.
pub fn watch(page: &mut Browser, broker: &TestBroker, topic: &str) {
    watch_with_key(page, broker, topic, &[]);
}

/// `watch`, on a broker that wants these headers (the key) on REST calls.
pub fn watch_with_key(page: &mut Browser, broker: &TestBroker, topic: &str, key: &[(&str, &str)]) {
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
pub fn logged(topic: &str, seq: u64, needle: &str) -> String {
    format!(
        "[...document.querySelectorAll('#log-rows tr')].some(r => r.cells[1].textContent === {} \
         && r.cells[2].textContent === '{seq}' && r.cells[3].textContent.includes({}))",
        js(topic),
        js(needle)
    )
}

/// Types `text` into the input or textarea `id`, as its input event sees it.
pub fn type_into(page: &mut Browser, id: &str, text: &str) {
    page.eval(&format!(
        "(() => {{ const e = document.getElementById({}); e.value = {}; \
         e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()",
        js(id),
        js(text)
    ));
}

pub fn submit(page: &mut Browser, form: &str) {
    page.eval(&format!(
        "document.getElementById({}).requestSubmit()",
        js(form)
    ));
}

pub fn text_of(page: &mut Browser, id: &str) -> String {
    page.eval(&format!("document.getElementById({}).textContent", js(id)))
        .as_str()
        .unwrap()
        .to_string()
}

pub fn assert_clean(page: &mut Browser) {
    assert_eq!(page.problems(), Vec::<String>::new(), "console problems");
    assert_eq!(page.dialogs(), Vec::<String>::new(), "dialogs");
}

/// No script threw (a page without the console may log other problems,
/// such as its missing icon).
pub fn assert_no_exceptions(page: &mut Browser) {
    let exceptions: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| p.starts_with("exception"))
        .collect();
    assert_eq!(exceptions, Vec::<String>::new());
}

pub fn create_topic_with_key(broker: &TestBroker, name: &str) {
    let (status, body) = http_json(
        broker.addr,
        "POST",
        "/topics",
        Some(&json!({ "name": name }).to_string()),
        &[("X-API-Key", "s3cret")],
    );
    assert_eq!(status, 201, "{body}");
}
