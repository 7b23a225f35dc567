//! Routing: the gate in front of every path (authentication, 404 and 405,
//! the drain, cluster mode's backplane), the decision to upgrade to
//! WebSocket, and the answer to a change once carried out. The handlers are
//! in [`super::topics`] and [`super::operations`]. Takes a parsed request
//! and the shared broker; returns a response, an upgrade or a change to
//! carry out. No sockets.

use super::gate::forbidden;
use super::handler::{Action, RestContext};
use super::operations::{disconnect, health, metrics, ready, stats};
use super::paths::{misrouted, Route};
use super::request::Request;
use super::response::Response;
use super::topics::{
    create_topic, delete_topic, history, list_topics, publish_message, published, topic_detail,
    topic_not_found, TopicStatus,
};
use super::upgrade::accept_upgrade;
use crate::auth::Access;
use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;
use crate::ws::SessionKind;

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
        Route::WebSocket => match accept_upgrade(req) {
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
        Route::Console(asset) => Response::asset(asset),
        #[cfg(feature = "autobahn")]
        Route::Echo => match accept_upgrade(req) {
            Ok(switching) => return Action::Upgrade(switching, SessionKind::Echo, access),
            Err(response) => response,
        },
        Route::Unknown => unreachable!("unknown routes allow no method"),
    };
    Action::Respond(response)
}

#[cfg(test)]
mod tests;
