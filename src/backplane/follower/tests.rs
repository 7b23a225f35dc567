//! The follower's rules over an in-memory backend (`Fake`) and a real
//! [`Broker`]: no sockets, no threads.

use super::*;
use crate::broker::delivery::{ConnectionKey, SubscriberQueue, WorkerMailbox};
use crate::broker::{Broker, Replay, Topic};
use serde_json::Value;
use std::convert::Infallible;

/// A backend's topics, each with its epoch, last `seq` and ring.
struct Fake {
    incarnation: String,
    ring_size: usize,
    topics: HashMap<String, FakeTopic>,
    /// A renewed epoch → the epoch it replaced and the `seq` then.
    renewals: HashMap<String, (String, u64)>,
}

#[derive(Default)]
struct FakeTopic {
    epoch: String,
    last: Option<u64>,
    ring: Vec<Held>,
}

impl Fake {
    fn new(ring_size: usize) -> Fake {
        Fake {
            incarnation: "I1".into(),
            ring_size,
            topics: HashMap::new(),
            renewals: HashMap::new(),
        }
    }

    fn create(&mut self, name: &str, epoch: &str) {
        self.topics.insert(
            name.into(),
            FakeTopic {
                epoch: epoch.into(),
                ..FakeTopic::default()
            },
        );
    }

    /// Publishes `count` messages to `name`, keeping the last `ring_size`;
    /// returns their `seq`s.
    fn publish(&mut self, name: &str, count: u64) -> Vec<u64> {
        let ring_size = self.ring_size;
        let topic = self.topics.get_mut(name).expect("a topic of the fake");
        (0..count)
            .map(|_| {
                let seq = topic.last.unwrap_or(0) + 1;
                topic.last = Some(seq);
                topic.ring.push(Held {
                    seq,
                    message: format!(r#"{{"n":{seq}}}"#),
                    ts: "ts".into(),
                });
                let excess = topic.ring.len().saturating_sub(ring_size);
                topic.ring.drain(..excess);
                seq
            })
            .collect()
    }

    fn held(&self, name: &str, from: u64, until: u64) -> Vec<Held> {
        self.topics.get(name).map_or(Vec::new(), |topic| {
            topic
                .ring
                .iter()
                .filter(|h| (from..=until).contains(&h.seq))
                .cloned()
                .collect()
        })
    }
}

impl RingSource for Fake {
    type Error = Infallible;

    fn range(&mut self, topic: &str, from: u64, until: u64) -> Result<Vec<Held>, Infallible> {
        Ok(self.held(topic, from, until))
    }

    fn newest_from(
        &mut self,
        topic: &str,
        from: u64,
    ) -> Result<(Vec<Held>, Option<u64>), Infallible> {
        let last = self.topics.get(topic).and_then(|t| t.last);
        Ok((self.held(topic, from, u64::MAX), last))
    }
}

impl Catalog for Fake {
    fn incarnation(&mut self) -> Result<String, Infallible> {
        Ok(self.incarnation.clone())
    }

    fn topics(&mut self) -> Result<HashMap<String, String>, Infallible> {
        Ok(self
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.epoch.clone()))
            .collect())
    }

    fn renew(&mut self, name: &str, old: &str, new: &str) -> Result<Option<String>, Infallible> {
        let Some(topic) = self.topics.get_mut(name) else {
            return Ok(None);
        };
        if topic.epoch == old {
            topic.epoch = new.into();
            let seq = topic.last.unwrap_or(0);
            self.renewals.insert(new.into(), (old.into(), seq));
        }
        Ok(Some(topic.epoch.clone()))
    }

    fn renewal_of(&mut self, epoch: &str) -> Result<Option<(String, u64)>, Infallible> {
        Ok(self.renewals.get(epoch).cloned())
    }

    fn recreate(&mut self, name: &str, epoch: &str) -> Result<String, Infallible> {
        if !self.topics.contains_key(name) {
            self.create(name, epoch);
        }
        Ok(self.topics[name].epoch.clone())
    }
}

fn follower() -> (Follower<Broker>, Arc<Broker>, Arc<ClusterState>) {
    let broker = Arc::new(Broker::new(10));
    let state = Arc::new(ClusterState::new("a".into()));
    let follower = Follower::new(Arc::clone(&broker), Arc::clone(&state));
    (follower, broker, state)
}

/// The event the backend sent for message `seq` of `name` (`{"n":seq}`).
fn published(name: &str, seq: u64) -> (String, String, u64) {
    (name.to_string(), format!(r#"{{"n":{seq}}}"#), seq)
}

fn apply_published(
    follower: &Follower<Broker>,
    fake: &mut Fake,
    (name, message, seq): (String, String, u64),
) {
    let epoch = fake.topics[&name].epoch.clone();
    let event = Event::Published {
        name: &name,
        epoch: &epoch,
        seq,
        ts: "ts",
        message: &message,
    };
    let Ok(()) = follower.apply(fake, event);
}

fn subscribed(topic: &Topic) -> Arc<SubscriberQueue> {
    let queue = Arc::new(SubscriberQueue::new(
        100,
        ConnectionKey::new(1, 0),
        WorkerMailbox::unpolled(),
    ));
    topic.subscribe(&queue, Replay::LastN(0), false).unwrap();
    queue
}

/// What the subscriber got: the `seq` of each event, 0 for a
/// `topic_reset` (short frames: a two-byte header).
fn got(queue: &SubscriberQueue) -> Vec<u64> {
    std::iter::from_fn(|| queue.pop())
        .map(|frame| {
            let event: Value = serde_json::from_slice(&frame[2..]).unwrap();
            match event["msg"].as_str() {
                Some("topic_reset") => 0,
                _ => event["seq"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// A node following `fake`'s topic `t` from its creation, with a
/// subscriber.
fn following_t(
    fake: &mut Fake,
) -> (
    Follower<Broker>,
    Arc<Broker>,
    Arc<ClusterState>,
    Arc<SubscriberQueue>,
) {
    let (follower, broker, state) = follower();
    fake.create("t", "E1");
    let Ok(()) = follower.apply(
        fake,
        Event::Created {
            name: "t",
            epoch: "E1",
        },
    );
    let queue = subscribed(&broker.topic("t").unwrap());
    (follower, broker, state, queue)
}

#[test]
fn events_in_order_are_delivered_in_order() {
    let mut fake = Fake::new(10);
    let (follower, _, state, queue) = following_t(&mut fake);
    for seq in fake.publish("t", 3) {
        apply_published(&follower, &mut fake, published("t", seq));
    }
    assert_eq!(got(&queue), [1, 2, 3]);
    let figures = state.figures();
    assert_eq!((figures.gaps_repaired, figures.topic_resets), (0, 0));
}

#[test]
fn an_event_seen_twice_is_delivered_once() {
    let mut fake = Fake::new(10);
    let (follower, _, _, queue) = following_t(&mut fake);
    fake.publish("t", 2);
    for seq in [1, 1, 2, 1, 2] {
        apply_published(&follower, &mut fake, published("t", seq));
    }
    assert_eq!(got(&queue), [1, 2]);
}

#[test]
fn a_gap_is_filled_from_the_ring_first() {
    let mut fake = Fake::new(10);
    let (follower, _, state, queue) = following_t(&mut fake);
    fake.publish("t", 5);
    apply_published(&follower, &mut fake, published("t", 1));
    apply_published(&follower, &mut fake, published("t", 5));
    // 2 to 4 came from the ring; 4 and 5 again are duplicates.
    apply_published(&follower, &mut fake, published("t", 4));
    apply_published(&follower, &mut fake, published("t", 5));
    assert_eq!(got(&queue), [1, 2, 3, 4, 5]);
    let figures = state.figures();
    assert_eq!((figures.gaps_repaired, figures.topic_resets), (1, 0));
}

#[test]
fn a_gap_beyond_the_ring_is_a_reset() {
    let mut fake = Fake::new(3);
    let (follower, broker, state, queue) = following_t(&mut fake);
    fake.publish("t", 9);
    apply_published(&follower, &mut fake, published("t", 1));
    // The ring holds 7 to 9: 2 to 6 are lost.
    apply_published(&follower, &mut fake, published("t", 9));
    assert_eq!(got(&queue), [1, 0, 7, 8, 9]);
    let figures = state.figures();
    assert_eq!((figures.gaps_repaired, figures.topic_resets), (1, 1));
    assert_eq!(broker.topic("t").unwrap().next_seq(), 10);
}

#[test]
fn a_topic_new_here_starts_at_the_oldest_message_held() {
    let mut fake = Fake::new(3);
    fake.create("t", "E1");
    fake.publish("t", 6);
    let (mut follower, broker, state) = follower();
    let Ok(()) = follower.catch_up(&mut fake);
    let topic = broker.topic("t").unwrap();
    let held: Vec<u64> = topic
        .history(0, 10)
        .events
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(held, [4, 5, 6]);
    assert_eq!(topic.next_seq(), 7);
    let figures = state.figures();
    assert_eq!(
        (figures.gaps_repaired, figures.topic_resets),
        (0, 0),
        "nothing was missed: the topic is new here"
    );
    // A message of a topic whose creation was missed brings it in too.
    fake.create("u", "E2");
    fake.publish("u", 2);
    apply_published(&follower, &mut fake, published("u", 2));
    assert_eq!(broker.topic("u").unwrap().next_seq(), 3);
}

#[test]
fn catching_up_fills_what_was_missed_and_drops_what_was_deleted() {
    let mut fake = Fake::new(10);
    let (mut follower, broker, state, queue) = following_t(&mut fake);
    fake.create("gone", "E9");
    let Ok(()) = follower.catch_up(&mut fake);
    fake.topics.remove("gone");
    fake.publish("t", 2);
    let Ok(()) = follower.catch_up(&mut fake);
    assert!(broker.topic("gone").is_none());
    assert_eq!(got(&queue), [1, 2]);
    assert_eq!(state.figures().gaps_repaired, 1);
}

#[test]
fn a_backend_that_lost_its_data_resets_every_known_topic() {
    let mut fake = Fake::new(10);
    let (mut follower, broker, state, queue) = following_t(&mut fake);
    let Ok(()) = follower.catch_up(&mut fake);
    fake.publish("t", 2);
    apply_published(&follower, &mut fake, published("t", 1));
    apply_published(&follower, &mut fake, published("t", 2));
    // Restarted empty: another incarnation, no topics.
    fake.incarnation = "I2".into();
    fake.topics.clear();
    let Ok(()) = follower.catch_up(&mut fake);
    let epoch = fake.topics["t"].epoch.clone();
    assert_ne!(epoch, "E1", "created again, with a new epoch");
    let topic = broker.topic("t").unwrap();
    assert!(topic.is_in_epoch(&epoch));
    assert_eq!(topic.next_seq(), 1);
    assert_eq!(got(&queue), [1, 2, 0]);
    assert_eq!(state.figures().topic_resets, 1);
    // The same incarnation again is no loss.
    let Ok(()) = follower.catch_up(&mut fake);
    assert_eq!(state.figures().topic_resets, 1);
}

/// Another node following `fake`'s topic `t` (created already), with a
/// subscriber.
fn another_node(fake: &mut Fake) -> (Follower<Broker>, Arc<Broker>, Arc<SubscriberQueue>) {
    let (mut follower, broker, _) = follower();
    let Ok(()) = follower.catch_up(fake);
    let queue = subscribed(&broker.topic("t").unwrap());
    (follower, broker, queue)
}

#[test]
fn a_failover_that_lost_delivered_messages_is_a_new_epoch_and_a_reset() {
    let mut fake = Fake::new(10);
    let (mut ahead, broker, state, queue) = following_t(&mut fake);
    let Ok(()) = ahead.catch_up(&mut fake);
    // Nodes behind, which deliver 1 and 2 only.
    let (mut behind, behind_broker, behind_queue) = another_node(&mut fake);
    let (live, live_broker, live_queue) = another_node(&mut fake);
    fake.publish("t", 5);
    for seq in 1..=2 {
        apply_published(&behind, &mut fake, published("t", seq));
        apply_published(&live, &mut fake, published("t", seq));
    }
    for seq in 1..=5 {
        apply_published(&ahead, &mut fake, published("t", seq));
    }
    let topic = broker.topic("t").unwrap();
    // The new master had 1 to 3 only.
    let t = fake.topics.get_mut("t").unwrap();
    t.last = Some(3);
    t.ring.retain(|h| h.seq <= 3);

    let Ok(()) = ahead.catch_up(&mut fake);
    let epoch = fake.topics["t"].epoch.clone();
    assert_ne!(epoch, "E1", "the backend has the topic in a new epoch");
    assert!(topic.is_in_epoch(&epoch), "and so has this node");
    assert_eq!(got(&queue), [1, 2, 3, 4, 5, 0], "the loss is announced");
    assert_eq!(topic.next_seq(), 4);
    assert_eq!(state.figures().topic_resets, 1);
    fake.publish("t", 1);
    apply_published(&ahead, &mut fake, published("t", 4));
    assert_eq!(got(&queue), [4]);
    // Once is enough: the same state is no new loss.
    let Ok(()) = ahead.catch_up(&mut fake);
    assert_eq!((state.figures().topic_resets, got(&queue)), (1, vec![]));

    // A node that catches up follows the renewal: the same topic (no
    // `topic_deleted`), in the new epoch, filled from the renewal on.
    let Ok(()) = behind.catch_up(&mut fake);
    let behind_topic = behind_broker.topic("t").unwrap();
    assert!(behind_topic.is_in_epoch(&epoch));
    assert_eq!(got(&behind_queue), [1, 2, 0, 3, 4]);
    // A node that meets the new epoch in an event follows it too.
    fake.publish("t", 1);
    apply_published(&live, &mut fake, published("t", 5));
    assert!(live_broker.topic("t").unwrap().is_in_epoch(&epoch));
    assert_eq!(got(&live_queue), [1, 2, 0, 3, 4, 5]);
}

#[test]
fn a_failover_whose_lost_numbers_were_published_again_is_a_new_epoch_and_a_reset() {
    let mut fake = Fake::new(10);
    let (mut node, broker, state, queue) = following_t(&mut fake);
    fake.publish("t", 5);
    for seq in 1..=5 {
        apply_published(&node, &mut fake, published("t", seq));
    }
    assert_eq!(got(&queue), [1, 2, 3, 4, 5]);
    // The new master had 1 to 3; another node published three messages
    // since, numbered 4 to 6: the seq alone is past what this node saw.
    let t = fake.topics.get_mut("t").unwrap();
    t.last = Some(3);
    t.ring.retain(|h| h.seq <= 3);
    fake.publish("t", 3);
    for held in &mut fake.topics.get_mut("t").unwrap().ring {
        if held.seq > 3 {
            held.ts = "after the failover".into();
        }
    }

    let Ok(()) = node.catch_up(&mut fake);
    let topic = broker.topic("t").unwrap();
    let epoch = fake.topics["t"].epoch.clone();
    assert_ne!(epoch, "E1", "the backend has the topic in a new epoch");
    assert!(topic.is_in_epoch(&epoch), "and so has this node");
    assert_eq!(state.figures().topic_resets, 1);
    assert_eq!(got(&queue), [0, 6], "the loss is announced, then 6 follows");
    // Nothing is renewed again while the backend holds what was delivered.
    let Ok(()) = node.catch_up(&mut fake);
    assert_eq!((state.figures().topic_resets, got(&queue)), (1, vec![]));
}
