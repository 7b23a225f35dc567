//! The changes a client can ask of the topics — create one, delete one,
//! publish to one — and what became of them (and one question that
//! travels the same way: a topic's last `seq`). A single broker carries them
//! out at once ([`Broker::carry_out`]); in cluster mode the backplane does,
//! and the answer comes later. Either way the same [`Outcome`] goes back to
//! the protocol side, which words the reply.

use super::{Broker, CreateError, Topic};
use serde_json::value::RawValue;

/// A change to the topics, validated and ready to carry out.
#[derive(Debug, Clone)]
pub enum Change {
    Create {
        name: String,
    },
    Delete {
        name: String,
    },
    Publish {
        topic: String,
        message: Box<RawValue>,
    },
    /// Not a change but a question carried the same way, answered
    /// `LastSeq`: the topic's last `seq` as the backplane has it (cluster
    /// mode: a resume after a `seq` this node has not applied yet).
    ReadLastSeq {
        topic: String,
    },
    /// Close every connection of the user `sub` (on every node).
    Disconnect {
        sub: String,
    },
}

/// What became of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Deleted,
    /// Published, with this `seq`.
    Published(u64),
    /// The topic's last `seq` (0 before its first message).
    LastSeq(u64),
    /// The user's connections were told to close.
    Disconnected,
    /// Create: the topic exists already.
    Exists,
    /// Create: the name is not a valid topic name (why).
    InvalidName(String),
    /// Delete or publish: there is no such topic.
    NoTopic,
    /// Cluster mode: the backplane could not be reached or did not answer
    /// in time (a publish may or may not have happened).
    Unavailable(&'static str),
}

impl Broker {
    /// Carries out `change` on this broker alone.
    pub fn carry_out(&self, change: &Change) -> Outcome {
        match change {
            Change::Create { name } => match self.create_topic(name) {
                Ok(_) => Outcome::Created,
                Err(CreateError::Exists) => Outcome::Exists,
                Err(CreateError::InvalidName(why)) => Outcome::InvalidName(why),
            },
            Change::Delete { name } => match self.delete_topic(name) {
                true => Outcome::Deleted,
                false => Outcome::NoTopic,
            },
            Change::Publish { topic, message } => publish_to(self.topic(topic).as_deref(), message),
            Change::ReadLastSeq { topic } => self
                .topic(topic)
                .map_or(Outcome::NoTopic, |t| Outcome::LastSeq(t.next_seq() - 1)),
            Change::Disconnect { sub } => {
                self.users.disconnect(sub);
                Outcome::Disconnected
            }
        }
    }
}

/// Publishes `message` to `topic`, if there is one, as an outcome.
pub fn publish_to(topic: Option<&Topic>, message: &RawValue) -> Outcome {
    match topic {
        Some(topic) => topic
            .publish(message)
            .map_or(Outcome::NoTopic, Outcome::Published),
        None => Outcome::NoTopic,
    }
}
