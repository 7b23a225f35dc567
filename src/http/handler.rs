//! What a REST handler gets and gives: the [`RestContext`] it sees of the
//! world, and the [`Action`] it returns (a response, an upgrade, or a
//! change to carry out). Shared by the router and every handler, so that
//! none of them imports another.

use super::gate::Gate;
use super::response::Response;
use crate::auth::Access;
use crate::backplane::{Backend, Local};
use crate::broker::change::Change;
use crate::broker::Broker;
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
