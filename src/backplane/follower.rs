//! Following a backend's stream of events, whatever the backend: each
//! topic delivers its messages in `seq` order, each once. An event already
//! delivered is dropped; an event after a gap first has the gap filled from
//! the topic's ring; what the ring no longer holds is announced with
//! `topic_reset`. After every (re)connection, [`Follower::catch_up`] brings
//! every topic up to date, and notices a backend that lost its data (its
//! incarnation changed): the topics this node knows are created again and
//! reset. A topic whose last `seq` in the backend is below what this node
//! delivered (a failover lost messages it had seen) is given a new epoch in
//! the backend and reset: a loss is announced, never silent; every node
//! follows that renewal into the new epoch rather than taking the topic for
//! another one.
//!
//! The follower owns those rules and nothing else. It reads the backend
//! only through [`RingSource`] and [`Catalog`] (a backend implements them
//! over its own connection), changes this node only through an
//! [`EventHandler`], and never connects, subscribes or waits.

use super::handler::{EventHandler, FollowedTopic};
use super::state::ClusterState;
use crate::broker::{new_epoch, Applied};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// One event a backend reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Created {
        name: &'a str,
        epoch: &'a str,
    },
    Deleted {
        name: &'a str,
        epoch: &'a str,
    },
    Published {
        name: &'a str,
        epoch: &'a str,
        seq: u64,
        ts: &'a str,
        message: &'a str,
    },
    /// Close every connection of this user.
    Disconnected {
        sub: &'a str,
    },
}

/// A message a topic's ring holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub seq: u64,
    /// The message, as published (JSON text).
    pub message: String,
    pub ts: String,
}

/// Where the follower reads a topic's ring.
pub trait RingSource {
    type Error;

    /// The messages `topic`'s ring holds from `from` to `until` (both
    /// included), oldest first.
    fn range(&mut self, topic: &str, from: u64, until: u64) -> Result<Vec<Held>, Self::Error>;

    /// The messages `topic`'s ring holds from `from` to the newest, and
    /// the topic's last `seq` (`None` before its first message), read at
    /// one instant: read one after the other, a message published in
    /// between would look lost from the ring.
    fn newest_from(
        &mut self,
        topic: &str,
        from: u64,
    ) -> Result<(Vec<Held>, Option<u64>), Self::Error>;
}

/// Where the follower reads what the backend holds besides rings.
pub trait Catalog: RingSource {
    /// The backend's data set: set once (if it has none yet) and then the
    /// same, unless the backend lost its data.
    fn incarnation(&mut self) -> Result<String, Self::Error>;

    /// Every topic the backend has, with its epoch.
    fn topics(&mut self) -> Result<HashMap<String, String>, Self::Error>;

    /// Creates `name` in `epoch` unless the backend has it; returns the
    /// epoch it has then (`epoch`, or another node's).
    fn recreate(&mut self, name: &str, epoch: &str) -> Result<String, Self::Error>;

    /// Gives `name` the epoch `new` if it is still in `old` (the backend
    /// lost messages of it), recording the renewal; returns the epoch it
    /// has then (`new`, or another node's renewal), `None` if it has no
    /// such topic.
    fn renew(&mut self, name: &str, old: &str, new: &str) -> Result<Option<String>, Self::Error>;

    /// The epoch that `epoch` renewed, and the topic's last `seq` then;
    /// `None` if `epoch` renewed none.
    fn renewal_of(&mut self, epoch: &str) -> Result<Option<(String, u64)>, Self::Error>;
}

/// Renewals followed back at most from a backend's epoch to the one a
/// node knows.
const MAX_RENEWALS: usize = 8;

/// The rules of following, over the node `H`.
pub struct Follower<H> {
    node: Arc<H>,
    state: Arc<ClusterState>,
    /// The backend's data set last seen.
    incarnation: Option<String>,
}

impl<H: EventHandler> Follower<H> {
    pub fn new(node: Arc<H>, state: Arc<ClusterState>) -> Follower<H> {
        Follower {
            node,
            state,
            incarnation: None,
        }
    }

    /// Applies one event: to its topic in order (filling a gap from
    /// `source` first), or to the node.
    pub fn apply<S: Catalog>(&self, source: &mut S, event: Event<'_>) -> Result<(), S::Error> {
        match event {
            Event::Created { name, epoch } => {
                self.node.mirror(name, epoch, 1);
            }
            Event::Deleted { name, epoch } => self.node.delete(name, epoch),
            Event::Disconnected { sub } => self.node.disconnect(sub),
            Event::Published {
                name,
                epoch,
                seq,
                ts,
                message,
            } => {
                let topic = match self.node.topic(name) {
                    Some(topic) if topic.is_in_epoch(epoch) => topic,
                    Some(topic) if self.follow_renewal(source, &topic, epoch)? => topic,
                    // Its creation was missed: take the topic as the
                    // backend has it, this message included.
                    _ => return self.catch_up_topic(source, name, epoch),
                };
                let Ok(message) = serde_json::from_str::<&RawValue>(message) else {
                    log::warn!(topic = name, seq; "backplane: a message that is not JSON");
                    return Ok(());
                };
                if let Ok(Applied::Gap { expected }) = topic.apply(seq, message, ts) {
                    let filled = self.repair(source, &topic, expected, Some(seq))?;
                    self.count_repair(&topic, expected, filled);
                    let _ = topic.apply(seq, message, ts);
                }
            }
        }
        Ok(())
    }

    /// Brings every topic up to date with the backend: after a
    /// (re)connection.
    pub fn catch_up<S: Catalog>(&mut self, source: &mut S) -> Result<(), S::Error> {
        let incarnation = source.incarnation()?;
        let lost = self
            .incarnation
            .replace(incarnation.clone())
            .is_some_and(|known| known != incarnation);
        if lost {
            self.recreate_known_topics(source)?;
        }
        let topics = source.topics()?;
        for (name, epoch) in self.node.topics() {
            let Some(now) = topics.get(&name).filter(|now| **now != epoch) else {
                if !topics.contains_key(&name) {
                    // Deleted while this node was away.
                    self.node.delete(&name, &epoch);
                }
                continue;
            };
            let renewed = match self.node.topic(&name) {
                Some(topic) => self.follow_renewal(source, &topic, now)?,
                None => false,
            };
            if !renewed {
                // Deleted and created again while this node was away.
                self.node.delete(&name, &epoch);
            }
        }
        for (name, epoch) in &topics {
            self.catch_up_topic(source, name, epoch)?;
        }
        Ok(())
    }

    /// The backend lost its data: the topics this node knows are created
    /// again, with new epochs (one node's wins), and their subscribers
    /// told.
    fn recreate_known_topics<S: Catalog>(&self, source: &mut S) -> Result<(), S::Error> {
        for (name, _) in self.node.topics() {
            let epoch = source.recreate(&name, &new_epoch())?;
            if let Some(topic) = self.node.topic(&name) {
                log::warn!(topic = name.as_str(), epoch = epoch.as_str(); "backplane lost its data: topic reset");
                topic.reset(1, Some(epoch));
                self.state.count_topic_reset();
            }
        }
        Ok(())
    }

    /// Brings one topic up to date: a topic new to this node starts at the
    /// oldest message its ring holds; a known one is repaired from where it
    /// is.
    fn catch_up_topic<S: Catalog>(
        &self,
        source: &mut S,
        name: &str,
        epoch: &str,
    ) -> Result<(), S::Error> {
        let known = self.node.topic(name).filter(|t| t.is_in_epoch(epoch));
        let was_known = known.is_some();
        let topic = match known {
            Some(topic) => topic,
            None => {
                let (held, newest) = source.newest_from(name, 0)?;
                let first = held.first().map_or(newest.unwrap_or(0) + 1, |h| h.seq);
                self.node.mirror(name, epoch, first)
            }
        };
        let mut from = topic.next_seq();
        if was_known {
            let (_, newest) = source.newest_from(name, u64::MAX)?;
            let newest = newest.unwrap_or(0);
            if newest + 1 < from || self.renumbered(source, &topic, from - 1)? {
                self.renew_after_loss(source, &topic, epoch, newest)?;
                from = topic.next_seq();
            }
        }
        // What a known topic missed while this node was not listening is
        // a gap too; a topic new here just starts with what the ring has.
        let filled = self.repair(source, &topic, from, None)?;
        if was_known {
            self.count_repair(&topic, from, filled);
        }
        Ok(())
    }

    /// The backend holds another message as `delivered`, the last `seq`
    /// this node delivered: a failover lost messages, and publishes since
    /// numbered new ones over them (their `seq` alone would not tell).
    fn renumbered<S: RingSource>(
        &self,
        source: &mut S,
        topic: &H::Topic,
        delivered: u64,
    ) -> Result<bool, S::Error> {
        if delivered == 0 {
            return Ok(false);
        }
        let held = source.range(topic.name(), delivered, delivered)?;
        let Some(held) = held.iter().find(|h| h.seq == delivered) else {
            return Ok(false);
        };
        let Ok(message) = serde_json::from_str::<&RawValue>(&held.message) else {
            return Ok(false);
        };
        Ok(topic.delivered_as(delivered, message, &held.ts) == Some(false))
    }

    /// The backend's last `seq` of `topic`, `newest`, is below what this
    /// node delivered, or it numbered other messages over those this node
    /// delivered: a failover lost messages. The topic gets a new
    /// epoch in the backend (unless another node gave it one first, which
    /// this node then follows) and its subscribers `topic_reset`.
    fn renew_after_loss<S: Catalog>(
        &self,
        source: &mut S,
        topic: &H::Topic,
        epoch: &str,
        newest: u64,
    ) -> Result<(), S::Error> {
        log::warn!(
            topic = topic.name(), delivered = topic.next_seq() - 1, backend = newest;
            "backplane: the backend lost messages this node delivered; new epoch"
        );
        if let Some(renewed) = source.renew(topic.name(), epoch, &new_epoch())? {
            self.follow_renewal(source, topic, &renewed)?;
        }
        Ok(())
    }

    /// `topic`, in another epoch here, is in `epoch` in the backend: if
    /// `epoch` renewed this node's (after a loss, perhaps through several
    /// renewals), the topic moves into it, numbered on from the oldest
    /// renewal's `seq`, and its subscribers get `topic_reset`. False if
    /// `epoch` is another topic of the same name.
    fn follow_renewal<S: Catalog>(
        &self,
        source: &mut S,
        topic: &H::Topic,
        epoch: &str,
    ) -> Result<bool, S::Error> {
        let mut current = epoch.to_string();
        let mut kept_until = u64::MAX;
        for _ in 0..MAX_RENEWALS {
            let Some((renewed, seq)) = source.renewal_of(&current)? else {
                return Ok(false);
            };
            kept_until = kept_until.min(seq);
            if topic.is_in_epoch(&renewed) {
                let next_seq = topic.next_seq().min(kept_until + 1);
                log::warn!(topic = topic.name(), epoch, next_seq; "backplane: topic renewed after a loss; topic reset");
                topic.reset(next_seq, Some(epoch.to_string()));
                self.state.count_topic_reset();
                return Ok(true);
            }
            current = renewed;
        }
        Ok(false)
    }

    /// A gap from `from` in `topic`'s stream, of which the ring gave
    /// `filled` messages (none: nothing to repair, or a reset).
    fn count_repair(&self, topic: &H::Topic, from: u64, filled: usize) {
        if filled > 0 {
            log::info!(topic = topic.name(), from, filled; "backplane: gap filled from the ring");
            self.state.count_gap_repaired();
        }
    }

    /// Fills `topic` from `from` (its next expected `seq`) up to `until`
    /// (excluded: the message in hand; `None`: everything) from its ring.
    /// A `seq` the ring no longer holds resets the topic past it. Returns
    /// how many messages the ring gave.
    fn repair<S: RingSource>(
        &self,
        source: &mut S,
        topic: &H::Topic,
        from: u64,
        until: Option<u64>,
    ) -> Result<usize, S::Error> {
        let before = until.map(|seq| seq - 1);
        let (held, newest) = match before {
            Some(before) => (source.range(topic.name(), from, before)?, None),
            None => source.newest_from(topic.name(), from)?,
        };
        let last: Option<u64> = match (held.last(), before) {
            (_, Some(before)) => Some(before),
            (Some(newest_held), None) => Some(newest_held.seq),
            (None, None) => newest,
        };
        let Some(last) = last.filter(|&last| last >= from) else {
            return Ok(0);
        };
        let first_held = held.first().map_or(last + 1, |h| h.seq);
        if first_held > from {
            log::warn!(
                topic = topic.name(), missing_from = from, missing_to = first_held - 1;
                "backplane: messages no longer in the ring; topic reset"
            );
            topic.reset(first_held, None);
            self.state.count_topic_reset();
        }
        let mut filled = 0;
        for Held { seq, message, ts } in &held {
            match serde_json::from_str::<&RawValue>(message) {
                Ok(message) => {
                    if let Ok(Applied::Delivered) = topic.fill(*seq, message, ts) {
                        filled += 1;
                    }
                }
                Err(_) => {
                    log::warn!(topic = topic.name(), seq; "backplane: a message that is not JSON")
                }
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests;
