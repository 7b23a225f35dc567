//! Topics and fan-out: the shared state every worker publishes into.
//!
//! A [`Topic`] holds its next `seq`, its replay ring and its subscribers
//! behind one lock. Publishing takes it just long enough to assign `seq`,
//! keep the frame in the ring and push it into each subscriber's queue;
//! subscribing takes it to join the list and copy the ring for replay. That
//! one lock is what makes "replay, then live, no gap, no duplicate" true.
//!
//! The [`Broker`] maps names to topics. It never touches a socket and never
//! waits for a subscriber: a full queue is a slow consumer, not a reason to
//! block.

pub mod carry_out;
pub mod change;
pub mod delivery;
mod epoch;

pub use epoch::new_epoch;
pub mod ring;
pub mod users;

use crate::protocol::{
    encode_info, encode_reset, event_head, stamp, validate_topic_name, Event, RawJson,
};
use crate::ws::frame::{shared_text_frame, shared_text_frame_of, text_payload, SharedFrame};
use delivery::{Delivery, SubscriberQueue};
use ring::ReplayRing;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

/// The topic was deleted (or never existed).
#[derive(Debug, PartialEq, Eq)]
pub struct TopicGone;

pub struct Topic {
    name: String,
    /// What each of its events begins with, up to the message.
    event_head: Box<str>,
    deleted: AtomicBool,
    state: Mutex<TopicState>,
}

struct TopicState {
    /// This incarnation of the topic (see `epoch`); changed only by a
    /// cluster's reset after the backplane lost its data.
    epoch: String,
    next_seq: u64,
    ring: ReplayRing,
    subscribers: Vec<Arc<SubscriberQueue>>,
    /// Cluster mode: subscribers that resumed after a `seq` this node has
    /// not applied yet (it is behind the backplane), each with the first
    /// `seq` it is to get; they join the fan-out when the topic reaches it,
    /// so that no message reaches them twice.
    waiting: Vec<(Arc<SubscriberQueue>, u64)>,
    /// Cluster mode: the topic follows the backplane, and may be behind it.
    mirrored: bool,
    /// Events placed in subscriber queues.
    queued: u64,
    /// Subscribers cut because an event of this topic overflowed their queue.
    slow_consumers: u64,
}

/// A topic's figures for `/topics`, `/health` and `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub subscribers: usize,
    /// Messages ever published; also the last `seq` assigned.
    pub messages: u64,
    /// Events placed in subscriber queues.
    pub delivered: u64,
    pub slow_consumer_disconnects: u64,
    /// Messages held for replay.
    pub ring: usize,
    pub epoch: String,
}

/// What a subscribe replays before live events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay<'a> {
    /// The `n` most recent messages (none for 0).
    LastN(usize),
    /// Every message after `seq` of `epoch`, if the topic can still give
    /// them all (resume after reconnect); else nothing.
    Since { seq: u64, epoch: &'a str },
    /// Cluster mode: as `Since`, for a `seq` the backplane holds (the
    /// caller asked it) but this node may not have applied yet: what
    /// follows `seq` is delivered once it arrives, and nothing twice.
    SinceAhead { seq: u64, epoch: &'a str },
}

/// What a subscribe got.
#[derive(Debug)]
pub struct Subscribed {
    /// For a connection that was subscribed already: the events still
    /// queued to it (of any topic), to write before the ack.
    pub earlier: Vec<SharedFrame>,
    /// The events to write before any live one, oldest first.
    pub replay: Vec<SharedFrame>,
    /// The `seq` of the last message published before the subscription
    /// took effect (0 if none).
    pub last_seq: u64,
    /// For a resume: whether every message after its `seq` is replayed.
    pub recovered: Option<bool>,
    /// The topic's epoch as the subscription took effect.
    pub epoch: String,
}

/// What became of a message the backplane numbered (cluster mode).
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was the next message: delivered and kept.
    Delivered,
    /// Already delivered (the same event seen twice, or a gap repair that
    /// overtook it).
    Duplicate,
    /// Messages before it are missing: the next expected is `expected`.
    Gap { expected: u64 },
}

/// How a message reaches a topic's subscribers: published or carried
/// live, or filled in from the backplane's ring after a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    Live,
    FromRing,
}

/// A page of a topic's held messages, for `GET /topics/{name}/messages`.
pub struct History {
    pub epoch: String,
    pub last_seq: u64,
    /// Event frames with their `seq`, oldest first.
    pub events: Vec<(u64, SharedFrame)>,
}

impl Topic {
    fn new(name: String, ring_capacity: usize, epoch: String) -> Self {
        Topic {
            event_head: event_head(&name),
            name,
            deleted: AtomicBool::new(false),
            state: Mutex::new(TopicState {
                epoch,
                next_seq: 1,
                ring: ReplayRing::new(ring_capacity),
                subscribers: Vec::new(),
                waiting: Vec::new(),
                mirrored: false,
                queued: 0,
                slow_consumers: 0,
            }),
        }
    }

    /// This incarnation of the topic: a topic created again after a
    /// deletion, or after a restart, has another.
    pub fn epoch(&self) -> String {
        self.lock().epoch.clone()
    }

    /// True if the topic is in `epoch` (compared under the lock, without
    /// a copy: the cluster's event thread asks for every event).
    pub fn is_in_epoch(&self, epoch: &str) -> bool {
        self.lock().epoch == epoch
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Cluster mode: whether the message this node delivered as `seq` is
    /// `message` stamped `ts` (`None`: the ring no longer holds `seq`). A
    /// backend that numbers another message `seq` lost the one delivered.
    pub fn delivered_as(&self, seq: u64, message: &RawValue, ts: &str) -> Option<bool> {
        let state = self.lock();
        let (held, frame) = state.ring.after(seq.checked_sub(1)?, 1).next()?;
        let event = Event::new(&self.event_head, message.into(), seq, ts);
        (held == seq).then(|| text_payload(frame) == event.parts().concat())
    }

    /// True once the topic was deleted; a connection that still lists it
    /// can forget it.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The lock is never held across anything that can panic on client
    /// input, but a poisoned lock must not take the broker down with it.
    fn lock(&self) -> MutexGuard<'_, TopicState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Assigns the next `seq`, keeps the event for replay and queues it to
    /// every subscriber. Returns the `seq`. Subscribers whose queue
    /// overflows are marked slow and leave the topic.
    pub fn publish(&self, message: RawJson<'_>) -> Result<u64, TopicGone> {
        let mut state = self.lock();
        if self.is_deleted() {
            return Err(TopicGone);
        }
        let state = &mut *state;
        let seq = state.next_seq;
        state.deliver(
            &self.event_head,
            seq,
            message,
            stamp(SystemTime::now()).as_str(),
            Arrival::Live,
        );
        Ok(seq)
    }

    /// Cluster mode: delivers the message the backplane numbered `seq`
    /// (stamped `ts`) if it is the next one, as [`publish`](Self::publish)
    /// does.
    pub fn apply(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone> {
        self.apply_as(seq, message, ts, Arrival::Live)
    }

    /// Cluster mode: as [`apply`](Self::apply), for a message filled in
    /// from the backplane's ring to close a gap; like a replay, it does not
    /// count against subscriber queues.
    pub fn fill(&self, seq: u64, message: &RawValue, ts: &str) -> Result<Applied, TopicGone> {
        self.apply_as(seq, message, ts, Arrival::FromRing)
    }

    fn apply_as(
        &self,
        seq: u64,
        message: &RawValue,
        ts: &str,
        arrival: Arrival,
    ) -> Result<Applied, TopicGone> {
        let mut state = self.lock();
        if self.is_deleted() {
            return Err(TopicGone);
        }
        if seq < state.next_seq {
            return Ok(Applied::Duplicate);
        }
        if seq > state.next_seq {
            return Ok(Applied::Gap {
                expected: state.next_seq,
            });
        }
        state.deliver(&self.event_head, seq, message.into(), ts, arrival);
        Ok(Applied::Delivered)
    }

    /// Cluster mode: the messages before `next_seq` that the topic has not
    /// delivered cannot be had (the backplane's ring no longer holds them,
    /// or it lost its data, and then `epoch` is the topic's new one). Every
    /// subscriber gets `info topic_reset`, behind the events already queued
    /// to it; numbering goes on at `next_seq`, and the ring starts empty.
    pub fn reset(&self, next_seq: u64, epoch: Option<String>) {
        let mut state = self.lock();
        if let Some(epoch) = epoch {
            state.epoch = epoch;
        }
        state.next_seq = next_seq;
        state.ring = ReplayRing::new(state.ring.capacity());
        let waiting: Vec<_> = state.waiting.drain(..).map(|(s, _)| s).collect();
        state.subscribers.extend(waiting);
        let notice = shared_text_frame(&encode_reset(
            &self.name,
            &state.epoch,
            next_seq - 1,
            SystemTime::now(),
        ));
        state.subscribers.retain(|s| s.deliver(&notice));
    }

    /// Cluster mode: a resume after `seq` of `epoch` names a message this
    /// node has not applied (yet?): only the backplane can tell whether it
    /// exists, before the subscribe can be answered.
    pub fn is_behind(&self, seq: u64, epoch: &str) -> bool {
        let state = self.lock();
        state.mirrored && state.epoch == epoch && seq >= state.next_seq
    }

    /// The `seq` the next message will have.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }
}

impl TopicState {
    /// Numbers, encodes once (into its frame, from the topic's `event_head`),
    /// keeps and fans out one message. Subscribers whose queue overflows are
    /// marked slow and leave the topic.
    fn deliver(
        &mut self,
        event_head: &str,
        seq: u64,
        message: RawJson<'_>,
        ts: &str,
        arrival: Arrival,
    ) {
        self.next_seq = seq + 1;
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].1 <= seq {
                let (subscriber, _) = self.waiting.swap_remove(i);
                self.subscribers.push(subscriber);
            } else {
                i += 1;
            }
        }
        let frame = shared_text_frame_of(&Event::new(event_head, message, seq, ts).parts());
        let state = self;
        let (mut queued, mut overflowed) = (0, 0);
        let offer = match arrival {
            Arrival::Live => SubscriberQueue::offer,
            Arrival::FromRing => SubscriberQueue::offer_filled,
        };
        state
            .subscribers
            .retain(|subscriber| match offer(subscriber, &frame) {
                Delivery::Queued => {
                    queued += 1;
                    true
                }
                Delivery::Overflowed => {
                    overflowed += 1;
                    false
                }
                Delivery::Refused => false,
            });
        state.queued += queued;
        state.slow_consumers += overflowed;
        state.ring.push(seq, frame);
    }
}

impl Topic {
    /// Adds `subscriber` and returns what to replay before live events.
    /// Every event published after this call goes to the subscriber's
    /// queue, every earlier one it is given is in the replay: no gap, no
    /// duplicate. `already_subscribed` comes from the caller, which tracks
    /// its own subscriptions: a repeated subscribe replays but does not
    /// join twice, and the topic need not search its list; it takes what
    /// is still queued to the subscriber (`Subscribed::earlier`), so the
    /// caller must be the queue's owner.
    pub fn subscribe(
        &self,
        subscriber: &Arc<SubscriberQueue>,
        replay: Replay<'_>,
        already_subscribed: bool,
    ) -> Result<Subscribed, TopicGone> {
        let mut state = self.lock();
        if self.is_deleted() {
            return Err(TopicGone);
        }
        let last_seq = state.next_seq - 1;
        let topic_epoch = state.epoch.clone();
        if let Replay::SinceAhead { seq, epoch } = replay {
            if !already_subscribed && epoch == topic_epoch && seq > last_seq {
                // This node has not applied `seq` yet: the subscriber saw it
                // on another node. It gets what follows it, once it comes.
                state.waiting.push((Arc::clone(subscriber), seq + 1));
                return Ok(Subscribed {
                    earlier: Vec::new(),
                    replay: Vec::new(),
                    last_seq: seq,
                    recovered: Some(true),
                    epoch: topic_epoch,
                });
            }
        }
        if !already_subscribed {
            state.subscribers.push(Arc::clone(subscriber));
        }
        // Subscribed already, the connection may have events of this topic
        // queued up to `last_seq`: they are taken now, under the lock, so
        // that only the replay and what follows `last_seq` come after the
        // ack. (The caller is the queue's owner, the one thread that pops.)
        let earlier = if already_subscribed && !subscriber.is_slow() {
            std::iter::from_fn(|| subscriber.pop()).collect()
        } else {
            Vec::new()
        };
        let (replay, recovered) = match replay {
            Replay::LastN(n) => (state.ring.last(n), None),
            Replay::Since { seq, epoch } | Replay::SinceAhead { seq, epoch } => {
                let recovered =
                    epoch == topic_epoch && seq <= last_seq && state.ring.holds_after(seq);
                let replay = if recovered {
                    state
                        .ring
                        .after(seq, usize::MAX)
                        .map(|(_, frame)| Arc::clone(frame))
                        .collect()
                } else {
                    Vec::new()
                };
                (replay, Some(recovered))
            }
        };
        Ok(Subscribed {
            earlier,
            replay,
            last_seq,
            recovered,
            epoch: topic_epoch,
        })
    }

    /// The held messages after `seq`, oldest first, at most `limit`.
    pub fn history(&self, seq: u64, limit: usize) -> History {
        let state = self.lock();
        History {
            epoch: state.epoch.clone(),
            last_seq: state.next_seq - 1,
            events: state
                .ring
                .after(seq, limit)
                .map(|(seq, frame)| (seq, Arc::clone(frame)))
                .collect(),
        }
    }

    /// Removes `subscriber`; a no-op when it is not subscribed.
    pub fn unsubscribe(&self, subscriber: &Arc<SubscriberQueue>) {
        let mut state = self.lock();
        state.waiting.retain(|(s, _)| !Arc::ptr_eq(s, subscriber));
        if let Some(at) = state
            .subscribers
            .iter()
            .position(|s| Arc::ptr_eq(s, subscriber))
        {
            state.subscribers.swap_remove(at);
        }
    }

    /// Marks the topic deleted and queues `info topic_deleted` to every
    /// subscriber, behind the events already queued to it.
    fn delete(&self) {
        let mut state = self.lock();
        self.deleted.store(true, Ordering::Release);
        let notice = shared_text_frame(&encode_info(
            "topic_deleted",
            Some(&self.name),
            SystemTime::now(),
        ));
        let waiting = state.waiting.drain(..).map(|(s, _)| s).collect::<Vec<_>>();
        for subscriber in state.subscribers.drain(..).chain(waiting) {
            subscriber.deliver(&notice);
        }
        state.ring.clear();
    }

    pub fn summary(&self) -> TopicSummary {
        let state = self.lock();
        TopicSummary {
            name: self.name.clone(),
            subscribers: state.subscribers.len() + state.waiting.len(),
            messages: state.next_seq - 1,
            delivered: state.queued,
            slow_consumer_disconnects: state.slow_consumers,
            ring: state.ring.len(),
            epoch: state.epoch.clone(),
        }
    }
}

/// Why a topic could not be created.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    InvalidName(String),
    Exists,
}

/// All topics, by name.
pub struct Broker {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    ring_capacity: usize,
    /// The connections of each user a token authenticated.
    pub users: users::Users,
}

impl Broker {
    pub fn new(ring_capacity: usize) -> Self {
        Broker {
            topics: RwLock::new(HashMap::new()),
            ring_capacity,
            users: users::Users::default(),
        }
    }

    pub fn create_topic(&self, name: &str) -> Result<Arc<Topic>, CreateError> {
        validate_topic_name(name).map_err(CreateError::InvalidName)?;
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if topics.contains_key(name) {
            return Err(CreateError::Exists);
        }
        let topic = Arc::new(Topic::new(
            name.to_string(),
            self.ring_capacity,
            epoch::new_epoch(),
        ));
        topics.insert(name.to_string(), Arc::clone(&topic));
        Ok(topic)
    }

    /// Cluster mode: the topic `name` as the backplane has it, in `epoch`.
    /// Created if missing; one of another epoch was deleted and created
    /// again meanwhile, so its subscribers get `topic_deleted` and it is
    /// replaced. `next_seq` numbers the first message a new one delivers.
    pub fn mirror(&self, name: &str, epoch: &str, next_seq: u64) -> Arc<Topic> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = topics.get(name) {
            if existing.is_in_epoch(epoch) {
                return Arc::clone(existing);
            }
            existing.delete();
        }
        let topic = Topic::new(name.to_string(), self.ring_capacity, epoch.to_string());
        {
            let mut state = topic.lock();
            state.next_seq = next_seq;
            state.mirrored = true;
        }
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), Arc::clone(&topic));
        topic
    }

    /// Cluster mode: deletes `name` if it is still in `epoch` (a later
    /// incarnation stays). True if deleted.
    pub fn delete_mirror(&self, name: &str, epoch: &str) -> bool {
        self.remove_if(name, |topic| topic.is_in_epoch(epoch))
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Deletes the topic and notifies its subscribers. False if there was
    /// no such topic.
    pub fn delete_topic(&self, name: &str) -> bool {
        self.remove_if(name, |_| true)
    }

    /// Deletes the topic `name` if `condition` holds for it, deciding under
    /// the map's lock so that no other thread replaces it meanwhile.
    fn remove_if(&self, name: &str, condition: impl FnOnce(&Topic) -> bool) -> bool {
        let removed = {
            let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
            if !topics.get(name).is_some_and(|topic| condition(topic)) {
                return false;
            }
            let removed = topics.remove(name);
            // A map emptied by mass deletion gives its table back.
            if topics.capacity() > 64 && topics.len() < topics.capacity() / 4 {
                let keep = topics.len() * 2;
                topics.shrink_to(keep);
            }
            removed
        };
        match removed {
            Some(topic) => {
                topic.delete();
                true
            }
            None => false,
        }
    }

    /// How many messages each topic's ring keeps.
    pub fn ring_capacity(&self) -> usize {
        self.ring_capacity
    }

    /// Every topic's figures, sorted by name.
    pub fn summaries(&self) -> Vec<TopicSummary> {
        let topics: Vec<Arc<Topic>> = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut summaries: Vec<TopicSummary> = topics.iter().map(|t| t.summary()).collect();
        summaries.sort_by(|a, b| a.name.cmp(&b.name));
        summaries
    }
}

#[cfg(test)]
mod tests;
