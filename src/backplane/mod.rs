//! The backplane: where the changes clients ask for (create, delete,
//! publish, disconnect a user) are carried out, and what the node knows of
//! its cluster. It is one seam with two sides, after centrifuge's `Broker`
//! and `BrokerEventHandler`:
//!
//! - [`Backend`]: what a backend must do: carry out a change (or answer a
//!   question), say whether it is up and followed, name this node, count
//!   the other nodes' subscribers, give its figures to `/health` and
//!   `/metrics`, and leave on shutdown. Two backends implement it:
//!   [`Local`] (a single broker: a change is carried out at once on the
//!   in-memory [`Broker`]) and the Redis backend (`redis`, cluster mode,
//!   `REDIS_URL`: a change goes to Redis and its outcome comes back later
//!   to the worker that asked, through its mailbox).
//! - `handler::EventHandler`: what the node does with what a backend
//!   reports (apply, fill, reset, mirror, delete, disconnect a user),
//!   implemented by the [`Broker`]. Between a backend's stream of events
//!   and the handler sits the `follower`, which keeps each topic's
//!   messages in order, once each, whatever the backend.
//!
//! Shared by the backends that reach a cluster: `state` (their threads'
//! shared state), `queue` (the workers' queue of requests) and
//! `reconnect` (the one reconnect loop).
//!
//! Outside this module nothing knows which backend runs, nor names one:
//! the workers and the REST side see a [`Backplane`] and its `&dyn
//! Backend`. Workers never block here: a change for a remote backend is
//! queued, not sent. Nothing here touches a client's socket.

mod follower;
mod handler;
mod local;
mod queue;
mod reconnect;
mod redis;
mod state;

pub use local::Local;

use crate::broker::change::{publish_to, Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use crate::broker::{Broker, Topic};
use crate::config::Config;
use crate::metrics::BackplaneFigures;
use serde_json::value::RawValue;
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
    /// [`Backplane::publish`]). Asked once, at start.
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

/// The backend this node runs with, chosen once at start.
pub struct Backplane {
    backend: Box<dyn Backend>,
    /// `backend.carries_out_at_once()`, asked once.
    at_once: bool,
}

impl Backplane {
    /// The backend `config` asks for, started: Redis when `REDIS_URL` is
    /// set (its threads started, and their first attempt to reach Redis
    /// made, so that a healthy Redis is never reported down; a Redis that
    /// cannot be reached yet is not an error, the threads keep trying),
    /// else [`Local`].
    pub fn start(config: &Config, broker: &Arc<Broker>) -> std::io::Result<Backplane> {
        let backend: Box<dyn Backend> = match redis::RedisBackend::start(config, broker)? {
            Some(redis) => Box::new(redis),
            None => Box::new(Local),
        };
        let at_once = backend.carries_out_at_once();
        Ok(Backplane { backend, at_once })
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// A worker's publish of `message` to `topic`. Where the backend
    /// carries out changes at once, the worker does it here, on
    /// `local_topic` (the topic as its own cache finds it): no allocation
    /// and no dynamic call more than a publish on the broker itself.
    /// Otherwise it is a change like any other; `None` as for
    /// [`Backend::carry_out`].
    pub fn publish<'t>(
        &self,
        broker: &Broker,
        topic: &str,
        message: &RawValue,
        local_topic: impl FnOnce() -> Option<&'t Topic>,
        reply_to: ReplyTo<'_>,
    ) -> Option<Outcome> {
        if self.at_once {
            return Some(publish_to(local_topic(), message));
        }
        let change = Change::Publish {
            topic: topic.to_owned(),
            message: message.to_owned(),
        };
        self.backend.carry_out(broker, &change, reply_to)
    }
}

/// Whether `url` (`REDIS_URL`) names a backend this broker can reach, and
/// if not, why.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::check_url(url)
}
