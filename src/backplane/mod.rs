//! The backplane: where the changes clients ask for (create, delete,
//! publish) are carried out, chosen once at start. Everything that changes
//! topics goes through [`Backplane`]; nothing else in the broker knows
//! whether it runs alone or in a cluster.
//!
//! - [`Backplane::Local`]: this process is the whole broker; a change is
//!   carried out at once on the in-memory [`Broker`].
//! - [`Backplane::Redis`] (cluster mode, `REDIS_URL`): a change goes to
//!   Redis ([`cluster`]), and its outcome comes back later to the worker
//!   that asked, through its mailbox; every node's topics follow Redis's
//!   events ([`events`]) and fan out to that node's subscribers.
//!
//! Workers never block here: a change for Redis is queued, not sent.

pub mod cluster;
mod events;
pub mod keys;

use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use crate::broker::Broker;
use crate::config::Config;
use cluster::{ClusterState, Request, Requests};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a node in cluster mode waits at start for its first answer
/// from Redis (or its failure) before it listens: a Redis that hangs must
/// not keep it from starting.
const FIRST_ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

pub enum Backplane {
    Local,
    Redis {
        state: Arc<ClusterState>,
        requests: Requests,
    },
}

/// Who asks for a change: the connection `key` of the worker whose
/// mailbox is `mailbox`.
pub struct ReplyTo<'a> {
    pub mailbox: &'a Arc<WorkerMailbox>,
    pub key: ConnectionKey,
}

impl Backplane {
    /// The backplane `config` asks for: local, or Redis (its threads
    /// started, and their first attempt to reach Redis made, so that a
    /// healthy Redis is never reported down; a Redis that cannot be
    /// reached yet is not an error, the threads keep trying).
    pub fn start(config: &Config, broker: &Arc<Broker>) -> std::io::Result<Backplane> {
        let Some(client) = config.redis_client() else {
            return Ok(Backplane::Local);
        };
        let client = client.map_err(std::io::Error::other)?;
        let state = Arc::new(ClusterState::new(
            config.node_id.clone(),
            client,
            config.ring_buffer_size,
        ));
        let requests = cluster::start_requests(Arc::clone(&state), Arc::clone(broker))?;
        events::start_events(Arc::clone(&state), Arc::clone(broker))?;
        log::info!(node = config.node_id.as_str(), redis = config.redis_url_shown().as_str(); "cluster mode");
        if !state.wait_first_attempts(FIRST_ATTEMPT_LIMIT) {
            log::warn!(node = config.node_id.as_str(); "the backplane has not answered yet; listening anyway");
        }
        Ok(Backplane::Redis { state, requests })
    }

    /// Carries out `change` now if this backplane can; `None` when the
    /// outcome will be answered later to `reply_to`.
    pub fn carry_out(
        &self,
        broker: &Broker,
        change: &Change,
        reply_to: ReplyTo<'_>,
    ) -> Option<Outcome> {
        match self {
            Backplane::Local => Some(broker.carry_out(change)),
            Backplane::Redis { state, requests } => {
                if !state.is_up() {
                    return Some(Outcome::Unavailable("the backplane is down"));
                }
                requests.send(Request {
                    change: change.clone(),
                    mailbox: Arc::clone(reply_to.mailbox),
                    key: reply_to.key,
                    queued: Instant::now(),
                });
                None
            }
        }
    }

    /// True for the local backplane: publishes go straight to the topic.
    pub fn is_local(&self) -> bool {
        matches!(self, Backplane::Local)
    }

    /// Cluster mode's state; `None` for a single broker.
    pub fn cluster(&self) -> Option<&ClusterState> {
        match self {
            Backplane::Local => None,
            Backplane::Redis { state, .. } => Some(state),
        }
    }

    /// After the last connection closed: cluster mode takes this node's
    /// counts out of Redis (see `ClusterState::leave`).
    pub fn leave(&self) {
        if let Some(cluster) = self.cluster() {
            cluster.leave();
        }
    }

    /// False in cluster mode while Redis cannot be reached.
    pub fn is_up(&self) -> bool {
        self.cluster().is_none_or(ClusterState::is_up)
    }

    /// False in cluster mode until the node reaches Redis and has caught
    /// up with its events (it knows every topic), and while it has not.
    pub fn is_ready(&self) -> bool {
        self.cluster().is_none_or(ClusterState::is_ready)
    }

    /// Subscribers of `topic` on the other nodes of the cluster.
    pub fn others_subscribers(&self, topic: &str) -> u64 {
        self.cluster().map_or(0, |c| c.others_subscribers(topic))
    }
}
