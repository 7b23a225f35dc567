//! What a nemesis run records, as plain data: each publish attempt and its
//! outcome, and each subscriber's history of one topic (subscribe and
//! resume acks, events, `topic_reset`s), in the order the subscriber saw
//! them. Pure: no sockets, no clock; the clients fill it in and the
//! checker reads it. It must not judge anything (that is `check`).

/// What a publisher knows of one publish it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acked with this `seq`: the backplane holds it.
    Acked(u64),
    /// An error reply, a timeout or a lost connection: it may or may not
    /// have been published.
    Unknown,
}

/// One publish attempt; every attempt has its own `id`, never sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub id: String,
    pub outcome: Outcome,
}

/// A resume request and the answer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The `since_seq` sent: the last `seq` the subscriber had seen.
    pub since_seq: u64,
    /// The `epoch` sent.
    pub epoch: String,
    /// The ack's `recovered`.
    pub recovered: bool,
}

/// One thing a subscriber saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A subscribe ack: the first one (`resume: None`, no `last_n`) or
    /// the ack of a resume on a new connection.
    Subscribed {
        epoch: String,
        last_seq: u64,
        resume: Option<Resume>,
    },
    /// An event of the topic, on the current connection.
    Event { seq: u64, id: String },
    /// `info topic_reset`: a new epoch, events continue after `last_seq`.
    Reset { epoch: String, last_seq: u64 },
}

/// One subscriber's life on one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriber {
    pub name: String,
    pub topic: String,
    pub entries: Vec<Entry>,
}
