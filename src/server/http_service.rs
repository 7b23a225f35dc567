//! HTTP serving for one connection: whole requests taken out of its input
//! buffer (pipelined ones in order), routed by [`crate::http::routes`],
//! changes carried out through the worker ([`WorkerCtx::change`]), and the
//! responses put in its output. It decides when a response closes the
//! connection and when a request upgrades it to WebSocket; the connection
//! does the rest.
//!
//! A change the backplane carries out (cluster mode) is answered later:
//! until then the connection serves no further request, so responses keep
//! the order of their requests.

use super::context::WorkerCtx;
use super::output::Output;
use crate::auth::Access;
use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::ConnectionKey;
use crate::http::handler::Action;
use crate::http::routes;
use crate::http::{parse_request_within, Parsed, Response};
use crate::ws::SessionKind;
use std::net::SocketAddr;
use std::time::Instant;

/// What serving the buffered requests came to.
pub enum Served {
    /// Every whole request was answered, or the output is over its
    /// high-water mark, or a change awaits its outcome; more input is
    /// welcome.
    Waiting,
    /// The last response closes the connection.
    Close,
    /// The last request upgraded the connection; `early_frames` are the
    /// bytes that followed it, the WebSocket stream's first.
    Upgrade {
        kind: SessionKind,
        early_frames: Vec<u8>,
        access: Access,
    },
}

/// One connection's HTTP state.
pub struct HttpInput {
    /// The bytes not yet a whole request.
    pub buffer: Vec<u8>,
    /// When the request now awaited began (for the handshake timeout).
    pub request_started: Instant,
    /// A change handed to the backplane, whose answer is the next response
    /// (boxed: every connection has this field, few ever fill it).
    awaiting: Option<Box<Awaiting>>,
}

struct Awaiting {
    change: Change,
    /// The response closes the connection.
    close: bool,
    request: RequestLine,
}

/// What the debug log says of a request.
struct RequestLine {
    /// Method, path and the token's user, when debug logging is on.
    text: Option<(String, String, Option<String>)>,
    started: Instant,
}

impl HttpInput {
    pub fn new(now: Instant) -> HttpInput {
        HttpInput {
            buffer: Vec::new(),
            request_started: now,
            awaiting: None,
        }
    }

    /// Serves every whole request in the buffer. `requests` counts them.
    pub fn serve(
        &mut self,
        ctx: &mut WorkerCtx,
        out: &mut Output,
        key: ConnectionKey,
        peer: SocketAddr,
        requests: &mut u64,
    ) -> Served {
        loop {
            if out.over_high_water() || self.awaiting.is_some() {
                return Served::Waiting;
            }
            let draining = ctx.is_draining();
            let limit = ctx.shared.config.max_message_bytes;
            let (request, used) = match parse_request_within(&self.buffer, limit) {
                Parsed::Partial => return Served::Waiting,
                Parsed::Invalid(response) => {
                    *requests += 1;
                    let consumed = response.consumed.filter(|_| !response.close);
                    respond(ctx, out, response, peer, None);
                    match consumed {
                        Some(used) => {
                            self.buffer.drain(..used);
                            self.request_started = ctx.now;
                            continue;
                        }
                        None => {
                            self.buffer.clear();
                            return Served::Close;
                        }
                    }
                }
                Parsed::Complete(request, used) => (request, used),
            };
            *requests += 1;
            let line = RequestLine {
                text: log::log_enabled!(log::Level::Debug).then(|| {
                    // The gate checks the token again for the log line
                    // alone (at debug only): its `sub`, once verified.
                    let sub = ctx.rest_context().gate.admit(&request, false).ok();
                    let sub = sub.and_then(|access| access.sub().map(str::to_owned));
                    (request.method.to_string(), request.path.to_string(), sub)
                }),
                started: Instant::now(),
            };
            let close = !request.keep_alive || draining;
            let action = routes::handle(&request, &ctx.rest_context());
            let response = match action {
                Action::Respond(response) => response,
                Action::Upgrade(switching, kind, access) => {
                    ctx.metrics.record_http_response(101);
                    out.messages += 1;
                    log_request(&line, 101, peer);
                    out.buffer().extend_from_slice(&switching);
                    let early_frames = self.buffer.split_off(used);
                    return Served::Upgrade {
                        kind,
                        early_frames,
                        access,
                    };
                }
                Action::Change(change) => match ctx.change(&change, key) {
                    Some(outcome) => routes::answer(&change, outcome),
                    None => {
                        self.buffer.drain(..used);
                        self.awaiting = Some(Box::new(Awaiting {
                            change,
                            close,
                            request: line,
                        }));
                        return Served::Waiting;
                    }
                },
            };
            self.buffer.drain(..used);
            self.request_started = ctx.now;
            if respond(ctx, out, response.closing_if(close), peer, Some(&line)) {
                return Served::Close;
            }
        }
    }

    /// A change waits for the backplane: serve nothing more until it is
    /// answered.
    pub fn is_awaiting(&self) -> bool {
        self.awaiting.is_some()
    }

    /// The backplane answered the change this connection waits for: its
    /// response goes in the output. True if it closes the connection.
    pub fn on_outcome(
        &mut self,
        ctx: &mut WorkerCtx,
        out: &mut Output,
        outcome: Outcome,
        peer: SocketAddr,
    ) -> bool {
        let Some(awaiting) = self.awaiting.take() else {
            return false;
        };
        self.request_started = ctx.now;
        let response = routes::answer(&awaiting.change, outcome).closing_if(awaiting.close);
        respond(ctx, out, response, peer, Some(&awaiting.request))
    }
}

/// Puts `response` in the output, counts and logs it. True if it closes
/// the connection.
fn respond(
    ctx: &mut WorkerCtx,
    out: &mut Output,
    response: Response,
    peer: SocketAddr,
    line: Option<&RequestLine>,
) -> bool {
    ctx.metrics.record_http_response(response.status);
    if let Some(reason) = response.auth_failure {
        ctx.metrics.record_auth_failure(reason);
    }
    out.messages += 1;
    if let Some(line) = line {
        log_request(line, response.status, peer);
    }
    response.write_to(out.buffer());
    response.close
}

fn log_request(line: &RequestLine, status: u16, peer: SocketAddr) {
    if let Some((method, path, sub)) = &line.text {
        log::debug!(
            method = method.as_str(), path = path.as_str(), status,
            micros = line.started.elapsed().as_micros() as u64, peer:% = peer,
            sub = sub.as_deref().unwrap_or("-");
            "request"
        );
    }
}
