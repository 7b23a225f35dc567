//! Routing: the gate in front of every path (authentication, 404 and 405,
//! the drain, cluster mode's backplane), the decision to upgrade to
//! WebSocket, and the answer to a change once carried out. The handlers are
//! in [`super::topics`] and [`super::operations`]. Takes a parsed request
//! and the shared broker; returns a response, an upgrade or a change to
//! carry out. No sockets.

use super::gate::{forbidden, Gate};
use super::operations::{disconnect, health, metrics, ready, stats};
use super::topics::{
    create_topic, delete_topic, history, list_topics, publish_message, published, topic_detail,
    topic_not_found, TopicStatus,
};
use super::{Request, Response};
use crate::auth::Access;
use crate::backplane::{Backend, Local};
use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;
use crate::console::{self, Asset};
use crate::metrics::WorkerMetrics;
use crate::ws::SessionKind;
use std::sync::Arc;
use std::time::Duration;

/// What a handler needs of the world.
pub struct RestContext<'a> {
    pub broker: &'a Broker,
    /// Who may do what: the API key, tokens, allowed origins.
    pub gate: Gate<'a>,
    /// True once shutdown has begun.
    pub draining: bool,
    pub uptime: Duration,
    pub connections: usize,
    /// Every worker's counters.
    pub metrics: &'a [Arc<WorkerMetrics>],
    /// Where changes go; in cluster mode, what the cluster says.
    pub backplane: &'a dyn Backend,
}

/// The backplane of a context built without a server.
static LOCAL: Local = Local;

impl<'a> RestContext<'a> {
    /// A context over `broker` alone: no key, not draining, no uptime, no
    /// connections, no counters. The server fills in the rest; tests and
    /// benchmarks override what they need.
    pub fn new(broker: &'a Broker) -> RestContext<'a> {
        RestContext {
            broker,
            gate: Gate::default(),
            draining: false,
            uptime: Duration::ZERO,
            connections: 0,
            metrics: &[],
            backplane: &LOCAL,
        }
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Action {
    Respond(Response),
    /// Switch to WebSocket: write this `101` response, then frames; the
    /// session starts with this access.
    Upgrade(Vec<u8>, SessionKind, Access),
    /// Carry out this change (a publish through the same path as a
    /// WebSocket publish), then answer with [`answer`].
    Change(Change),
}

/// The response to a change, once carried out.
pub fn answer(change: &Change, outcome: Outcome) -> Response {
    match (change, outcome) {
        (Change::Create { name }, Outcome::Created) => {
            log::info!(topic = name.as_str(); "topic created");
            Response::json(
                201,
                &TopicStatus {
                    status: "created",
                    topic: name,
                },
            )
        }
        (Change::Create { name }, Outcome::Exists) => {
            Response::error(409, "CONFLICT", &format!("topic '{name}' already exists"))
        }
        (_, Outcome::InvalidName(why)) => {
            Response::error(400, "BAD_REQUEST", &format!("invalid field 'name': {why}"))
        }
        (Change::Delete { name }, Outcome::Deleted) => {
            log::info!(topic = name.as_str(); "topic deleted");
            Response::json(
                200,
                &TopicStatus {
                    status: "deleted",
                    topic: name,
                },
            )
        }
        (Change::Publish { topic, .. }, Outcome::Published(seq)) => published(topic, seq),
        (Change::Delete { name } | Change::Publish { topic: name, .. }, Outcome::NoTopic) => {
            topic_not_found(name)
        }
        (Change::Disconnect { sub }, Outcome::Disconnected) => {
            log::info!(sub = sub.as_str(); "user disconnected");
            #[derive(serde::Serialize)]
            struct Disconnected<'a> {
                status: &'static str,
                sub: &'a str,
            }
            Response::json(
                200,
                &Disconnected {
                    status: "disconnected",
                    sub,
                },
            )
        }
        (_, Outcome::Unavailable(why)) => Response::error(503, "UNAVAILABLE", why),
        (change, outcome) => {
            log::error!(change:? = change, outcome:? = outcome; "a change had an outcome it cannot have");
            Response::error(500, "INTERNAL", "unexpected outcome")
        }
    }
}

/// Carries out a change on `broker` alone and answers it; other actions
/// are returned as they are. For what runs routes without a server (tests,
/// fuzzing, benchmarks).
pub fn settle(action: Action, broker: &Broker) -> Action {
    match action {
        Action::Change(change) => {
            let outcome = broker.carry_out(&change);
            Action::Respond(answer(&change, outcome))
        }
        other => other,
    }
}

/// Routes one request: the gate (credentials, and the origin of an
/// upgrade), 404 and 405, the drain, the rights the route needs, the
/// backplane, then its handler.
pub fn handle(req: &Request<'_>, ctx: &RestContext<'_>) -> Action {
    let route = Route::of(req.path);
    let access = if route.needs_credentials() {
        let upgrade = route == Route::WebSocket;
        let admitted = match upgrade {
            true => ctx
                .gate
                .check_origin(req)
                .and_then(|()| ctx.gate.admit(req, true)),
            false => ctx.gate.admit(req, false),
        };
        match admitted {
            Ok(access) => access,
            Err(response) => return Action::Respond(response),
        }
    } else {
        Access::Full
    };
    if let Some(response) = misrouted(req.method, req.path) {
        return Action::Respond(response);
    }
    if ctx.draining && route.needs_credentials() {
        return Action::Respond(
            Response::error(503, "SHUTTING_DOWN", "the server is shutting down").closing(),
        );
    }
    if route.needs_admin(req.method) && !access.is_admin() {
        return Action::Respond(forbidden());
    }
    if !ctx.backplane.is_up() && route.needs_backplane() {
        return Action::Respond(Response::error(
            503,
            "UNAVAILABLE",
            "the backplane cannot be reached",
        ));
    }
    let response = match route {
        Route::WebSocket => match crate::ws::accept_upgrade(req) {
            Ok(switching) => return Action::Upgrade(switching, SessionKind::PubSub, access),
            Err(response) => response,
        },
        Route::Topics if req.method == "POST" => return create_topic(req.body),
        Route::Topics => list_topics(ctx, &access),
        Route::Topic(encoded) if req.method == "GET" => topic_detail(encoded, ctx, &access),
        Route::Topic(encoded) => return delete_topic(encoded),
        Route::Messages(encoded) if req.method == "POST" => {
            return publish_message(encoded, req.body, &access)
        }
        Route::Messages(encoded) => history(encoded, req, ctx, &access),
        Route::Disconnect => return disconnect(req.body),
        Route::Health => health(ctx),
        Route::Ready => ready(ctx),
        Route::Stats => stats(ctx),
        Route::Metrics => metrics(ctx),
        Route::Console(asset) => asset.response(),
        #[cfg(feature = "autobahn")]
        Route::Echo => match crate::ws::accept_upgrade(req) {
            Ok(switching) => return Action::Upgrade(switching, SessionKind::Echo, access),
            Err(response) => response,
        },
        Route::Unknown => unreachable!("unknown routes allow no method"),
    };
    Action::Respond(response)
}

/// 404 for a path no route takes, 405 with `Allow` for a method its route
/// does not allow; `None` for a request a route serves. The parser asks too,
/// before it refuses a body (a bodiless `POST /health` gets 405, not 411).
pub fn misrouted(method: &str, path: &str) -> Option<Response> {
    let allowed = Route::of(path).allowed_methods();
    if allowed.is_empty() {
        return Some(Response::error(
            404,
            "NOT_FOUND",
            &format!("no such path: {path}"),
        ));
    }
    if !allowed.contains(&method) {
        return Some(
            Response::error(
                405,
                "METHOD_NOT_ALLOWED",
                &format!("{method} is not allowed on {path}"),
            )
            .with_header("Allow", allowed.join(", ")),
        );
    }
    None
}

/// A REST publish, whose body may be as large as `MAX_MESSAGE_BYTES`.
pub fn is_publish(method: &str, path: &str) -> bool {
    method == "POST" && matches!(Route::of(path), Route::Messages(_))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    WebSocket,
    Topics,
    /// `/topics/{name}`, the name still percent-encoded.
    Topic(&'a str),
    /// `/topics/{name}/messages`, the name still percent-encoded.
    Messages(&'a str),
    Health,
    Ready,
    Stats,
    Metrics,
    Disconnect,
    /// A file of the browser console (`/` is the page, except with the
    /// `autobahn` feature, where it is the echo endpoint).
    Console(&'static Asset),
    #[cfg(feature = "autobahn")]
    Echo,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "/ws" => Route::WebSocket,
            "/topics" => Route::Topics,
            "/health" => Route::Health,
            "/readyz" => Route::Ready,
            "/stats" => Route::Stats,
            "/metrics" => Route::Metrics,
            "/disconnect" => Route::Disconnect,
            #[cfg(feature = "autobahn")]
            "/" => Route::Echo,
            _ => {
                let Some(rest) = path.strip_prefix("/topics/") else {
                    return console::asset(path).map_or(Route::Unknown, Route::Console);
                };
                let (name, messages) = match rest.strip_suffix("/messages") {
                    Some(name) => (name, true),
                    None => (rest, false),
                };
                match (name.is_empty() || name.contains('/'), messages) {
                    (true, _) => Route::Unknown,
                    (false, false) => Route::Topic(name),
                    (false, true) => Route::Messages(name),
                }
            }
        }
    }

    fn allowed_methods(self) -> &'static [&'static str] {
        match self {
            Route::WebSocket
            | Route::Health
            | Route::Ready
            | Route::Stats
            | Route::Metrics
            | Route::Console(_) => &["GET"],
            Route::Topics => &["GET", "POST"],
            Route::Topic(_) => &["GET", "DELETE"],
            Route::Messages(_) => &["GET", "POST"],
            Route::Disconnect => &["POST"],
            #[cfg(feature = "autobahn")]
            Route::Echo => &["GET"],
            Route::Unknown => &[],
        }
    }

    /// Cluster mode: what answers for the whole cluster, and so needs the
    /// backplane.
    fn needs_backplane(self) -> bool {
        matches!(self, Route::Topics | Route::Topic(_) | Route::Messages(_))
    }

    /// Probes answer without credentials, so that liveness and readiness
    /// checks work; and they keep answering while the server drains. So
    /// do the console's files, which hold no data: the page asks for the
    /// key or a token, and everything it fetches needs it.
    fn needs_credentials(self) -> bool {
        !matches!(self, Route::Health | Route::Ready | Route::Console(_))
    }

    /// What only the API key or a token with `admin` may do: create and
    /// delete topics, read the whole broker's figures, disconnect users.
    fn needs_admin(self, method: &str) -> bool {
        match self {
            Route::Topics | Route::Disconnect => method == "POST",
            Route::Topic(_) => method == "DELETE",
            Route::Stats | Route::Metrics => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
