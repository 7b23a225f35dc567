//! The Redis backend (cluster mode, `REDIS_URL`): several nodes become one
//! broker through one Redis server. Its parts:
//!
//! - `client`: how connections reach Redis (one server, or the master
//!   Sentinel names: `sentinel`), from the `REDIS_*` settings;
//! - `requests`: the request thread, which carries out the workers'
//!   changes as script calls and keeps this node's counts in Redis;
//! - `events`: the event thread, which reads every node's changes from
//!   Redis's channels and feeds them to the backend-neutral follower;
//! - `keys`: the layout of keys, the Lua scripts and the text of events.
//!
//! [`RedisBackend`] is what the rest of the node sees of it, through the
//! [`Backend`] trait. Nothing here decides how a topic's stream is kept in
//! order (the follower does) or touches a client's socket.

mod client;
mod events;
mod keys;
mod requests;
mod sentinel;

pub use client::check_url;

use client::{Connector, REQUEST_TIMEOUT};

use super::backend::{Backend, ReplyTo};
use super::queue::{self, Request, Requests};
use super::state::ClusterState;
use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::BackplaneFigures;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a node waits at start for its first answer from Redis (or its
/// failure) before it listens: a Redis that hangs must not keep it from
/// starting.
const FIRST_ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

pub struct RedisBackend {
    state: Arc<ClusterState>,
    requests: Requests,
    connector: Connector,
}

impl RedisBackend {
    /// The backend `config` asks for, started; `None` without
    /// `REDIS_URL`. Returns once both threads have made their first
    /// attempt to reach Redis (or after `FIRST_ATTEMPT_LIMIT`).
    pub fn start(config: &Config, broker: &Arc<Broker>) -> std::io::Result<Option<RedisBackend>> {
        let Some(connector) = config.redis_client() else {
            return Ok(None);
        };
        let connector = connector.map_err(std::io::Error::other)?;
        let state = Arc::new(ClusterState::new(config.node_id.clone()));
        let (requests, receiver) = queue::requests();
        requests::start(
            Arc::clone(&state),
            connector.clone(),
            config.ring_buffer_size,
            config.redis_replicas_ack,
            Arc::clone(broker),
            receiver,
        )?;
        events::start(Arc::clone(&state), connector.clone(), Arc::clone(broker))?;
        log::info!(node = config.node_id.as_str(), redis = config.redis_url_shown().as_str(); "cluster mode");
        if !state.wait_first_attempts(FIRST_ATTEMPT_LIMIT) {
            log::warn!(node = config.node_id.as_str(); "the backplane has not answered yet; listening anyway");
        }
        Ok(Some(RedisBackend {
            state,
            requests,
            connector,
        }))
    }
}

impl Backend for RedisBackend {
    /// Queues `change` for the request thread (`None`), or answers
    /// `Unavailable` at once while Redis cannot be reached.
    fn carry_out(&self, _: &Broker, change: &Change, reply_to: ReplyTo<'_>) -> Option<Outcome> {
        if !self.state.is_up() {
            return Some(Outcome::Unavailable("the backplane is down"));
        }
        self.requests.send(Request {
            change: change.clone(),
            mailbox: Arc::clone(reply_to.mailbox),
            key: reply_to.key,
            queued: Instant::now(),
        });
        None
    }

    fn node(&self) -> Option<&str> {
        Some(&self.state.node_id)
    }

    fn is_up(&self) -> bool {
        self.state.is_up()
    }

    fn is_ready(&self) -> bool {
        self.state.is_ready()
    }

    fn others_subscribers(&self, topic: &str) -> u64 {
        self.state.others_subscribers(topic)
    }

    fn figures(&self) -> Option<BackplaneFigures> {
        Some(self.state.figures())
    }

    /// Takes this node's subscriber counts out of Redis at once (a
    /// graceful stop, after its last connection closed), rather than
    /// letting them expire: the other nodes count right again at their
    /// next heartbeat. Best effort, within `REQUEST_TIMEOUT`.
    fn leave(&self) {
        let node = self.state.node_id.as_str();
        let left = self
            .connector
            .connect(REQUEST_TIMEOUT)
            .and_then(|(mut conn, _)| {
                conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                redis::pipe()
                    .del(keys::node_key(node))
                    .ignore()
                    .zrem(keys::NODES, node)
                    .ignore()
                    .query::<()>(&mut conn)
            });
        match left {
            Ok(()) => log::info!(node; "left the cluster"),
            Err(e) => {
                log::warn!(node, why = e.to_string().as_str(); "could not leave the cluster; its counts expire")
            }
        }
    }
}
