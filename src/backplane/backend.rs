//! What a backend must do ([`Backend`]), and who asks it ([`ReplyTo`]):
//! the one side of the backplane's seam that the workers and the REST side
//! call. Implemented by `Local` and the Redis backend; nothing here knows
//! either.

use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use crate::broker::Broker;
use crate::metrics::BackplaneFigures;
use std::sync::Arc;

/// What a backend must do. Its methods are called from the workers and
/// the REST side, and never block.
pub trait Backend: Send + Sync {
    /// Carries out `change` now if this backend can, and returns what
    /// became of it; `None` when the outcome will be answered later to
    /// `reply_to` (its worker's mailbox).
    fn carry_out(&self, broker: &Broker, change: &Change, reply_to: ReplyTo<'_>)
        -> Option<Outcome>;

    /// True if `carry_out` always carries a change out at once on
    /// `broker` alone, as [`Broker::carry_out`] does: then a worker
    /// carries a publish out itself, on its own cached topic, without a
    /// `Change` built or a call through this trait (see
    /// `Backplane::publish`). Asked once, at start.
    fn carries_out_at_once(&self) -> bool {
        false
    }

    /// This node's name in its cluster; `None` for a backend that is no
    /// cluster (then `/health` has no `cluster` part).
    fn node(&self) -> Option<&str>;

    /// Changes can be carried out now; false while the backend cannot be
    /// reached (changes are then answered `Unavailable`).
    fn is_up(&self) -> bool;

    /// Up, and following the backend's events (this node knows every
    /// topic): what `/readyz` reports.
    fn is_ready(&self) -> bool;

    /// Subscribers of `topic` on the other nodes of the cluster.
    fn others_subscribers(&self, topic: &str) -> u64;

    /// The backend's figures for `/metrics`; `None` for a backend that
    /// has none.
    fn figures(&self) -> Option<BackplaneFigures>;

    /// After the last connection closed: takes this node out of the
    /// cluster at once, rather than letting the others notice it is gone.
    fn leave(&self);
}

/// Who asks for a change: the connection `key` of the worker whose
/// mailbox is `mailbox`.
pub struct ReplyTo<'a> {
    pub mailbox: &'a Arc<WorkerMailbox>,
    pub key: ConnectionKey,
}
