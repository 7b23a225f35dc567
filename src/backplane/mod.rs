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

mod backend;
mod follower;
mod handler;
mod local;
mod queue;
mod reconnect;
mod redis;
mod state;

pub use backend::{Backend, ReplyTo};
pub use local::Local;

use crate::broker::carry_out::publish_to;
use crate::broker::change::{Change, Outcome};
use crate::broker::{Broker, Topic};
use crate::config::Config;
use crate::protocol::RawJson;
use std::sync::Arc;

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
        message: RawJson<'_>,
        local_topic: impl FnOnce() -> Option<&'t Topic>,
        reply_to: ReplyTo<'_>,
    ) -> Option<Outcome> {
        if self.at_once {
            return Some(publish_to(local_topic(), message));
        }
        let change = Change::Publish {
            topic: topic.to_owned(),
            message: message.to_raw_value(),
        };
        self.backend.carry_out(broker, &change, reply_to)
    }
}

/// Whether `url` (`REDIS_URL`) names a backend this broker can reach, and
/// if not, why.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::check_url(url)
}
