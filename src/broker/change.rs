//! The changes a client can ask of the topics — create one, delete one,
//! publish to one, disconnect a user — and what became of them (and one
//! question that travels the same way: a topic's last `seq`). A single
//! broker carries them out at once (`carry_out`); in cluster mode the
//! backplane does, and the answer comes later. Either way the same
//! [`Outcome`] goes back to the protocol side, which words the reply.
//! Values only: nothing here acts.

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
