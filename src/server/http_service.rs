//! HTTP serving for one connection: whole requests taken out of its input
//! buffer (pipelined ones in order), routed by [`crate::http::routes`],
//! and their responses put in its output. It decides when a response
//! closes the connection and when a request upgrades it to WebSocket; the
//! connection does the rest.

use super::context::WorkerCtx;
use super::output::Output;
use crate::http::routes::{self, Action};
use crate::http::{parse_request_within, Parsed, Response};
use crate::ws::SessionKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What serving the buffered requests came to.
pub enum Served {
    /// Every whole request was answered (or the output is over its
    /// high-water mark); more input is welcome.
    Waiting,
    /// The last response closes the connection.
    Close,
    /// The last request upgraded the connection; `early_frames` are the
    /// bytes that followed it, the WebSocket stream's first.
    Upgrade {
        kind: SessionKind,
        early_frames: Vec<u8>,
    },
}

/// What a request gets, once a publish it asked for is carried out.
enum Answer {
    Respond(Response),
    Upgrade(Vec<u8>, SessionKind),
}

/// One connection's HTTP state: the bytes not yet a whole request, and when
/// the request now awaited began (for the handshake timeout).
pub struct HttpInput {
    pub buffer: Vec<u8>,
    pub request_started: Instant,
}

impl HttpInput {
    /// Serves every whole request in the buffer. `requests` counts them.
    pub fn serve(
        &mut self,
        ctx: &mut WorkerCtx,
        out: &mut Output,
        peer: SocketAddr,
        requests: &mut u64,
    ) -> Served {
        loop {
            if out.over_high_water() {
                return Served::Waiting;
            }
            let started = Instant::now();
            // Read once: the route and the `Connection: close` decision must
            // agree (a signal between two reads gave a 200 that closed).
            let draining = ctx.shared.draining.load(Ordering::Acquire);
            let (answer, keep_alive, used, request_line) =
                match parse_request_within(&self.buffer, ctx.shared.config.max_message_bytes) {
                    Parsed::Partial => return Served::Waiting,
                    Parsed::Invalid(response) => {
                        response.write_to(out.buffer());
                        ctx.metrics.record_http_response(response.status);
                        *requests += 1;
                        out.messages += 1;
                        match response.consumed {
                            Some(used) if !response.close => {
                                self.buffer.drain(..used);
                                self.request_started = ctx.now;
                                continue;
                            }
                            _ => {
                                self.buffer.clear();
                                return Served::Close;
                            }
                        }
                    }
                    Parsed::Complete(request, used) => {
                        let request_line = log::log_enabled!(log::Level::Debug)
                            .then(|| (request.method.to_string(), request.path.to_string()));
                        let answer = match routes::handle(&request, &ctx.rest_context(draining)) {
                            Action::Respond(response) => Answer::Respond(response),
                            Action::Upgrade(switching, kind) => Answer::Upgrade(switching, kind),
                            Action::Publish { topic, message } => {
                                Answer::Respond(match ctx.publish(&topic, &message) {
                                    Some(seq) => routes::published(&topic, seq),
                                    None => routes::topic_not_found(&topic),
                                })
                            }
                        };
                        (answer, request.keep_alive, used, request_line)
                    }
                };
            let status = match &answer {
                Answer::Respond(response) => response.status,
                Answer::Upgrade(..) => 101,
            };
            ctx.metrics.record_http_response(status);
            *requests += 1;
            out.messages += 1;
            if let Some((method, path)) = request_line {
                log::debug!(
                    method = method.as_str(), path = path.as_str(), status,
                    micros = started.elapsed().as_micros() as u64, peer:% = peer;
                    "request"
                );
            }
            match answer {
                Answer::Respond(mut response) => {
                    response.close |= !keep_alive || draining;
                    response.write_to(out.buffer());
                    self.buffer.drain(..used);
                    self.request_started = ctx.now;
                    if response.close {
                        return Served::Close;
                    }
                }
                Answer::Upgrade(switching, kind) => {
                    out.buffer().extend_from_slice(&switching);
                    let early_frames = self.buffer.split_off(used);
                    return Served::Upgrade { kind, early_frames };
                }
            }
        }
    }
}
