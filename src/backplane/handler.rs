//! The node's side of the seam: what this node does with what a backend
//! reports (as centrifuge's `BrokerEventHandler`). A backend's events reach
//! it through the [`Follower`](super::follower::Follower), which puts each
//! topic's messages in order first; the [`Broker`] is the one handler.
//!
//! Nothing here talks to a backend: a handler only changes this node's
//! topics and connections.

use crate::broker::{Applied, Broker, Topic, TopicGone};
use serde_json::value::RawValue;
use std::sync::Arc;

/// What a node does with a backend's events.
pub trait EventHandler {
    type Topic: FollowedTopic;

    /// The topic `name` as this node has it (of any epoch).
    fn topic(&self, name: &str) -> Option<Self::Topic>;

    /// The topic `name` in `epoch`, created if missing (one of another
    /// epoch is deleted and replaced); `next_seq` numbers the first
    /// message a new one delivers.
    fn mirror(&self, name: &str, epoch: &str, next_seq: u64) -> Self::Topic;

    /// Deletes `name` if it is still in `epoch`.
    fn delete(&self, name: &str, epoch: &str);

    /// Closes every connection of the user `sub` on this node.
    fn disconnect(&self, sub: &str);

    /// Every topic this node has: its name and epoch.
    fn topics(&self) -> Vec<(String, String)>;
}

/// One topic as the follower drives it.
pub trait FollowedTopic {
    fn name(&self) -> &str;

    fn is_in_epoch(&self, epoch: &str) -> bool;

    /// The `seq` the next message will have.
    fn next_seq(&self) -> u64;

    /// Delivers the message numbered `seq` if it is the next one.
    fn apply(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone>;

    /// As `apply`, for a message filled in from the ring to close a gap:
    /// it does not count against subscriber queues.
    fn fill(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone>;

    /// The messages before `next_seq` not delivered cannot be had: the
    /// subscribers get `topic_reset` (in `epoch`, if it changed).
    fn reset(&self, next_seq: u64, epoch: Option<String>);

    /// Whether the message delivered as `seq` is `message` stamped `ts`;
    /// `None` if this node no longer knows.
    fn delivered_as(&self, seq: u64, message: &RawValue, ts: &str) -> Option<bool>;
}

impl EventHandler for Broker {
    type Topic = Arc<Topic>;

    fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        Broker::topic(self, name)
    }

    fn mirror(&self, name: &str, epoch: &str, next_seq: u64) -> Arc<Topic> {
        Broker::mirror(self, name, epoch, next_seq)
    }

    fn delete(&self, name: &str, epoch: &str) {
        self.delete_mirror(name, epoch);
    }

    fn disconnect(&self, sub: &str) {
        self.users.disconnect(sub);
    }

    fn topics(&self) -> Vec<(String, String)> {
        self.summaries()
            .into_iter()
            .map(|summary| (summary.name, summary.epoch))
            .collect()
    }
}

impl FollowedTopic for Arc<Topic> {
    fn name(&self) -> &str {
        Topic::name(self)
    }

    fn is_in_epoch(&self, epoch: &str) -> bool {
        Topic::is_in_epoch(self, epoch)
    }

    fn next_seq(&self) -> u64 {
        Topic::next_seq(self)
    }

    fn apply(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone> {
        Topic::apply(self, seq, message, ts)
    }

    fn fill(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone> {
        Topic::fill(self, seq, message, ts)
    }

    fn reset(&self, next_seq: u64, epoch: Option<String>) {
        Topic::reset(self, next_seq, epoch)
    }

    fn delivered_as(&self, seq: u64, message: &RawValue, ts: &str) -> Option<bool> {
        Topic::delivered_as(self, seq, message, ts)
    }
}
