//! The REST handlers of topics: create, delete, list, one topic's detail,
//! publish and history. Each that names a topic checks the request's
//! rights first, so that a forbidden topic is `FORBIDDEN` whether or not
//! it exists. Changes (create, delete, publish) are validated
//! here and returned as an [`Action::Change`] for the server to carry out
//! through the backplane; reads answer from the broker. No sockets.

use super::gate::forbidden;
use super::handler::{Action, RestContext};
use super::request::Request;
use super::response::Response;
use crate::auth::Access;
use crate::broker::change::Change;
use crate::protocol::{decode_object, validate_message, validate_topic_name};
use crate::ws::frame::text_payload;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct CreateTopicBody<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(super) struct TopicStatus<'a> {
    pub(super) status: &'static str,
    pub(super) topic: &'a str,
}

pub(super) fn create_topic(body: &[u8]) -> Action {
    let bad = |message: &str| Action::Respond(Response::error(400, "BAD_REQUEST", message));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("invalid JSON: the body is not UTF-8");
    };
    let parsed: CreateTopicBody<'_> = match decode_object(text, "the body") {
        Ok(parsed) => parsed,
        Err(message) => return bad(&message),
    };
    let Some(raw_name) = parsed.name.filter(|raw| raw.get() != "null") else {
        return bad("missing field 'name'");
    };
    let Ok(name) = serde_json::from_str::<String>(raw_name.get()) else {
        return bad("field 'name' must be a string");
    };
    if let Err(why) = validate_topic_name(&name) {
        return bad(&format!("invalid field 'name': {why}"));
    }
    Action::Change(Change::Create { name })
}

/// The topic name of a path, percent-decoded.
pub(super) fn topic_name(encoded: &str) -> Result<Cow<'_, str>, Response> {
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| {
            Response::error(
                400,
                "BAD_REQUEST",
                "the topic name in the path is not valid UTF-8",
            )
        })
}

/// 404 `TOPIC_NOT_FOUND`.
pub(super) fn topic_not_found(name: &str) -> Response {
    Response::error(
        404,
        "TOPIC_NOT_FOUND",
        &format!("topic '{name}' does not exist"),
    )
}

pub(super) fn delete_topic(encoded: &str) -> Action {
    match topic_name(encoded) {
        Ok(name) => Action::Change(Change::Delete {
            name: name.into_owned(),
        }),
        Err(response) => Action::Respond(response),
    }
}

#[derive(Serialize)]
struct TopicDetail<'a> {
    name: &'a str,
    subscribers: usize,
    messages: u64,
    last_seq: u64,
    epoch: &'a str,
}

pub(super) fn topic_detail(encoded: &str, ctx: &RestContext<'_>, access: &Access) -> Response {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return response,
    };
    if !access.may_subscribe(&name) {
        return forbidden();
    }
    let Some(topic) = ctx.broker.topic(&name) else {
        return topic_not_found(&name);
    };
    let summary = topic.summary();
    Response::json(
        200,
        &TopicDetail {
            name: &summary.name,
            subscribers: summary.subscribers
                + ctx.backplane.others_subscribers(&summary.name) as usize,
            messages: summary.messages,
            last_seq: summary.messages,
            epoch: &summary.epoch,
        },
    )
}

/// `POST /topics/{name}/messages`: the body is the `message` of a WebSocket
/// publish, checked the same way.
pub(super) fn publish_message(encoded: &str, body: &[u8], access: &Access) -> Action {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return Action::Respond(response),
    };
    if !access.may_publish(&name) {
        return Action::Respond(forbidden());
    }
    let bad = |message: String| Action::Respond(Response::error(400, "BAD_REQUEST", &message));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("invalid JSON: the body is not UTF-8".into());
    };
    let message: Box<RawValue> = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => return bad(format!("invalid JSON: {e}")),
    };
    if let Err(e) = validate_message(&message, "the body", "") {
        return bad(e);
    }
    Action::Change(Change::Publish {
        topic: name.into_owned(),
        message,
    })
}

/// The answer to a REST publish that was given `seq`.
pub(super) fn published(topic: &str, seq: u64) -> Response {
    #[derive(Serialize)]
    struct Published<'a> {
        status: &'static str,
        topic: &'a str,
        seq: u64,
    }
    Response::json(
        200,
        &Published {
            status: "published",
            topic,
            seq,
        },
    )
}

#[derive(Serialize)]
struct HistoryPage<'a> {
    topic: &'a str,
    epoch: &'a str,
    last_seq: u64,
    messages: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    seq: u64,
    message: &'a RawValue,
    ts: &'a str,
}

/// What a kept event frame says, for the history.
#[derive(Deserialize)]
struct KeptEvent<'a> {
    #[serde(borrow)]
    message: &'a RawValue,
    ts: &'a str,
}

/// `GET /topics/{name}/messages?since_seq=N&limit=M`: the held messages
/// after N (default 0), oldest first, at most M (default and maximum: the
/// ring size; a larger M is taken as the maximum).
pub(super) fn history(
    encoded: &str,
    req: &Request<'_>,
    ctx: &RestContext<'_>,
    access: &Access,
) -> Response {
    let name = match topic_name(encoded) {
        Ok(name) => name,
        Err(response) => return response,
    };
    if !access.may_subscribe(&name) {
        return forbidden();
    }
    let ring = ctx.broker.ring_capacity();
    let since = match query_integer(req, "since_seq", 0) {
        Ok(since) => since,
        Err(response) => return response,
    };
    let limit = match query_integer(req, "limit", ring as u64) {
        Ok(0) => return Response::error(400, "BAD_REQUEST", "query 'limit' must be at least 1"),
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX).min(ring),
        Err(response) => return response,
    };
    let Some(topic) = ctx.broker.topic(&name) else {
        return topic_not_found(&name);
    };
    let history = topic.history(since, limit);
    let mut messages = Vec::with_capacity(history.events.len());
    for (seq, frame) in &history.events {
        let kept: KeptEvent<'_> = serde_json::from_slice(text_payload(frame))
            .expect("the broker's own event frames are JSON events");
        messages.push(HistoryEntry {
            seq: *seq,
            message: kept.message,
            ts: kept.ts,
        });
    }
    Response::json(
        200,
        &HistoryPage {
            topic: &name,
            epoch: &history.epoch,
            last_seq: history.last_seq,
            messages,
        },
    )
}

/// A query parameter that must be an integer >= 0 (decimal digits only),
/// or `default` if absent. Integers too large for `u64` saturate, as
/// `since_seq` does over WebSocket: "beyond the last message", and a
/// `limit` above the ring size.
pub(super) fn query_integer(req: &Request<'_>, name: &str, default: u64) -> Result<u64, Response> {
    match req.query_param(name) {
        None => Ok(default),
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(text.parse::<u64>().unwrap_or(u64::MAX))
        }
        Some(text) => Err(Response::error(
            400,
            "BAD_REQUEST",
            &format!("query '{name}' must be a non-negative integer, not '{text}'"),
        )),
    }
}

#[derive(Serialize)]
struct TopicListEntry {
    name: String,
    subscribers: usize,
}

#[derive(Serialize)]
struct TopicList {
    topics: Vec<TopicListEntry>,
}

/// `GET /topics`: for a token without `admin`, only the topics one of its
/// patterns matches.
pub(super) fn list_topics(ctx: &RestContext<'_>, access: &Access) -> Response {
    let topics = ctx
        .broker
        .summaries()
        .into_iter()
        .filter(|s| access.may_see(&s.name))
        .map(|s| TopicListEntry {
            subscribers: s.subscribers + ctx.backplane.others_subscribers(&s.name) as usize,
            name: s.name,
        })
        .collect();
    Response::json(200, &TopicList { topics })
}
