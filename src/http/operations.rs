//! The REST handlers of operations: `/health`, `/readyz`, `/stats`,
//! `/metrics` and `POST /disconnect`. They read the broker, the workers'
//! counters and, in cluster mode, what the backplane says of itself (its
//! node, health and figures, through `Backend`); a disconnection is a
//! change, carried out through the backplane. No sockets.

use super::handler::{Action, RestContext};
use super::response::Response;
use crate::broker::change::Change;
use crate::metrics::{render_prometheus, BrokerGauges, MetricsSnapshot};
use crate::protocol::decode_object;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Serialize)]
struct Health<'a> {
    uptime_sec: u64,
    topics: usize,
    subscribers: usize,
    connections: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterHealth<'a>>,
}

/// Cluster mode: this node and whether it reaches the backplane.
#[derive(Serialize)]
struct ClusterHealth<'a> {
    node: &'a str,
    backplane: &'static str,
}

pub(super) fn health(ctx: &RestContext<'_>) -> Response {
    let summaries = ctx.broker.summaries();
    Response::json(
        200,
        &Health {
            uptime_sec: ctx.uptime.as_secs(),
            topics: summaries.len(),
            subscribers: summaries.iter().map(|s| s.subscribers).sum(),
            connections: ctx.connections,
            status: if ctx.draining { "draining" } else { "ok" },
            cluster: ctx.backplane.node().map(|node| ClusterHealth {
                node,
                backplane: if ctx.backplane.is_up() { "up" } else { "down" },
            }),
        },
    )
}

#[derive(Serialize)]
struct TopicStats {
    messages: u64,
    subscribers: usize,
    delivered: u64,
    slow_consumer_disconnects: u64,
    ring: usize,
    last_seq: u64,
}

#[derive(Serialize)]
struct Totals {
    connections: usize,
    websocket_connections: i64,
    messages_published: u64,
    messages_delivered: u64,
    slow_consumer_disconnects: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

#[derive(Serialize)]
struct Stats {
    topics: BTreeMap<String, TopicStats>,
    totals: Totals,
    uptime_sec: u64,
    connections: usize,
}

pub(super) fn stats(ctx: &RestContext<'_>) -> Response {
    let topics = ctx
        .broker
        .summaries()
        .into_iter()
        .map(|s| {
            let figures = TopicStats {
                messages: s.messages,
                subscribers: s.subscribers,
                delivered: s.delivered,
                slow_consumer_disconnects: s.slow_consumer_disconnects,
                ring: s.ring,
                last_seq: s.messages,
            };
            (s.name, figures)
        })
        .collect();
    let m = MetricsSnapshot::sum(ctx.metrics.iter().map(Arc::as_ref));
    let totals = Totals {
        connections: ctx.connections,
        websocket_connections: m.open_websocket,
        messages_published: m.published,
        messages_delivered: m.delivered,
        slow_consumer_disconnects: m.slow_consumer_disconnects(),
        bytes_received: m.bytes_received,
        bytes_sent: m.bytes_sent,
    };
    let stats = Stats {
        topics,
        totals,
        uptime_sec: ctx.uptime.as_secs(),
        connections: ctx.connections,
    };
    Response::json(200, &stats)
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
}

/// 200 while serving; 503 from the moment shutdown begins.
pub(super) fn ready(ctx: &RestContext<'_>) -> Response {
    if ctx.draining {
        Response::json(503, &Readiness { status: "draining" })
    } else if !ctx.backplane.is_ready() {
        Response::json(
            503,
            &Readiness {
                status: "backplane_down",
            },
        )
    } else {
        Response::json(200, &Readiness { status: "ready" })
    }
}

pub(super) fn metrics(ctx: &RestContext<'_>) -> Response {
    let summaries = ctx.broker.summaries();
    let gauges = BrokerGauges {
        topics: summaries.len(),
        subscriptions: summaries.iter().map(|s| s.subscribers).sum(),
        uptime_seconds: ctx.uptime.as_secs_f64(),
        backplane: ctx.backplane.figures(),
    };
    let snapshot = MetricsSnapshot::sum(ctx.metrics.iter().map(Arc::as_ref));
    Response::text(
        200,
        PROMETHEUS_CONTENT_TYPE,
        render_prometheus(&snapshot, &gauges),
    )
}

const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

#[derive(serde::Deserialize)]
struct DisconnectBody<'a> {
    #[serde(borrow)]
    sub: Option<&'a serde_json::value::RawValue>,
}

/// `POST /disconnect` body `{"sub":"user-42"}`: every connection of that
/// user is closed (on every node of a cluster, through the backplane).
pub(super) fn disconnect(body: &[u8]) -> Action {
    let bad = |message: &str| Action::Respond(Response::error(400, "BAD_REQUEST", message));
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("invalid JSON: the body is not UTF-8");
    };
    let parsed: DisconnectBody<'_> = match decode_object(text, "the body") {
        Ok(parsed) => parsed,
        Err(message) => return bad(&message),
    };
    let Some(raw) = parsed.sub.filter(|raw| raw.get() != "null") else {
        return bad("missing field 'sub'");
    };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(sub) if !sub.is_empty() && sub.len() <= 255 => {
            Action::Change(Change::Disconnect { sub })
        }
        Ok(_) => bad("field 'sub' must be 1 to 255 bytes"),
        Err(_) => bad("field 'sub' must be a string"),
    }
}
