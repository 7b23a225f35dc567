//! HTTP/1.1 as the broker speaks it, in rooms that import one way:
//! [`request`] (parsing, with the contract's limits) and [`response`];
//! [`paths`] (which routes exist, and what each needs); [`gate`]
//! (credentials); [`upgrade`] (may this request become a WebSocket?);
//! [`handler`] (what a handler sees and returns); the handlers of topics
//! and of operations; and [`routes`], which puts them together.
//!
//! Pure: bytes in, a request or a response out. No sockets.

pub mod gate;
pub mod handler;
mod operations;
pub mod paths;
pub mod request;
pub mod response;
pub mod routes;
mod topics;
pub mod upgrade;

pub use request::{
    parse_request, parse_request_within, Parsed, Request, MAX_BODY_BYTES, MAX_HEAD_BYTES,
};
pub use response::Response;
