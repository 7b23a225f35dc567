//! The paths the broker serves: which route a path is, which methods it
//! allows (404 and 405 follow), and what each route needs (credentials,
//! `admin`, the backplane). The parser asks it too, so that a request to
//! no route is refused for that before its body is.
//!
//! Pure: a method and a path in, an answer out.

use super::response::Response;
use crate::console::{self, Asset};

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
pub enum Route<'a> {
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
    pub fn of(path: &'a str) -> Route<'a> {
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

    pub fn allowed_methods(self) -> &'static [&'static str] {
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
    pub fn needs_backplane(self) -> bool {
        matches!(self, Route::Topics | Route::Topic(_) | Route::Messages(_))
    }

    /// Probes answer without credentials, so that liveness and readiness
    /// checks work; and they keep answering while the server drains. So
    /// do the console's files, which hold no data: the page asks for the
    /// key or a token, and everything it fetches needs it.
    pub fn needs_credentials(self) -> bool {
        !matches!(self, Route::Health | Route::Ready | Route::Console(_))
    }

    /// What only the API key or a token with `admin` may do: create and
    /// delete topics, read the whole broker's figures, disconnect users.
    pub fn needs_admin(self, method: &str) -> bool {
        match self {
            Route::Topics | Route::Disconnect => method == "POST",
            Route::Topic(_) => method == "DELETE",
            Route::Stats | Route::Metrics => true,
            _ => false,
        }
    }
}
