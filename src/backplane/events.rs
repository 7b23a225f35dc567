//! Cluster mode's event thread: every change any node made, read from
//! Redis's channels and applied to this node's topics, which fan out to
//! this node's subscribers exactly as a local publish does.
//!
//! Each topic delivers its messages in `seq` order, each once: an event
//! already delivered is dropped; an event after a gap first has the gap
//! filled from the topic's ring in Redis (`XRANGE`); what the ring no
//! longer holds is announced with `topic_reset`. On every (re)connection
//! the thread subscribes first, then brings every topic up to date from
//! Redis, then reads the events that arrived meanwhile through the same
//! rules: nothing the ring still holds is lost.
//!
//! A connection that fails, or is silent for `SILENCE_LIMIT` (the request
//! thread's heartbeat publishes once a second), is dropped and made again.

use super::cluster::ClusterState;
use super::keys::{self, Event};
use crate::broker::{new_epoch, Applied, Broker, Topic};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longer than this without any message (the heartbeat included) and the
/// subscription is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub fn start_events(state: Arc<ClusterState>, broker: Arc<Broker>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("backplane-events".into())
        .spawn(move || EventThread::new(state, broker).run())?;
    Ok(())
}

struct EventThread {
    state: Arc<ClusterState>,
    broker: Arc<Broker>,
    /// The Redis data set last seen (`pubsub:incarnation`).
    incarnation: Option<String>,
    /// This thread's first attempt to follow Redis has succeeded (it is
    /// caught up) or failed, and `ClusterState` was told.
    first_attempt_made: bool,
}

/// Why the thread reconnects.
type Broken = String;

impl EventThread {
    fn new(state: Arc<ClusterState>, broker: Arc<Broker>) -> Self {
        EventThread {
            state,
            broker,
            incarnation: None,
            first_attempt_made: false,
        }
    }

    fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let followed = self.follow(&mut backoff);
            self.state.set_following(false);
            self.report_first_attempt();
            match followed {
                Ok(()) => return,
                Err(why) => {
                    self.state.subscription_lost();
                    log::warn!(node = self.state.node_id.as_str(), why = why.as_str(); "backplane events: reconnecting");
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Tells `ClusterState` once that this thread's first attempt to
    /// follow Redis is over (caught up, or failed).
    fn report_first_attempt(&mut self) {
        if !std::mem::replace(&mut self.first_attempt_made, true) {
            self.state.first_attempt_made();
        }
    }

    /// Subscribes, catches up (and then starts `backoff` over: the next
    /// failure is a new one), then applies events until the connection
    /// fails.
    fn follow(&mut self, backoff: &mut Duration) -> Result<(), Broken> {
        let client = &self.state.client;
        let text = |e: redis::RedisError| e.to_string();
        let mut listener = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(text)?;
        let mut commands = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(text)?;
        commands
            .set_read_timeout(Some(super::cluster::REQUEST_TIMEOUT))
            .map_err(text)?;
        let mut subscription = listener.as_pubsub();
        let channels: Vec<String> = (0..keys::CHANNELS).map(keys::channel).collect();
        subscription.subscribe(&channels).map_err(text)?;
        subscription.subscribe(keys::HEARTBEAT).map_err(text)?;
        subscription.subscribe(keys::USERS).map_err(text)?;
        subscription
            .set_read_timeout(Some(SILENCE_LIMIT))
            .map_err(text)?;
        self.catch_up(&mut commands).map_err(text)?;
        self.state.set_following(true);
        self.report_first_attempt();
        *backoff = FIRST_BACKOFF;
        loop {
            let message = subscription
                .get_message()
                .map_err(|e| format!("subscription lost: {e}"))?;
            if message.get_channel_name() == keys::HEARTBEAT {
                continue;
            }
            let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
                continue;
            };
            match Event::parse(text) {
                Some(event) => self
                    .apply(&mut commands, event)
                    .map_err(|e| e.to_string())?,
                None => log::warn!(event = text; "backplane: an event no node writes"),
            }
        }
    }

    fn apply(&self, commands: &mut redis::Connection, event: Event<'_>) -> redis::RedisResult<()> {
        match event {
            Event::Created { name, epoch } => {
                self.broker.mirror(name, epoch, 1);
            }
            Event::Deleted { name, epoch } => {
                self.broker.delete_mirror(name, epoch);
            }
            Event::Disconnected { sub } => {
                self.broker.users.disconnect(sub);
            }
            Event::Published {
                name,
                epoch,
                seq,
                ts,
                message,
            } => {
                let topic = match self.broker.topic(name) {
                    Some(topic) if topic.is_in_epoch(epoch) => topic,
                    // Its creation was missed: take the topic as Redis has
                    // it, this message included.
                    _ => return self.catch_up_topic(commands, name, epoch),
                };
                let Ok(message) = serde_json::from_str::<&RawValue>(message) else {
                    log::warn!(topic = name, seq; "backplane: a message that is not JSON");
                    return Ok(());
                };
                if let Ok(Applied::Gap { expected }) = topic.apply(seq, message, ts) {
                    let filled = self.repair(commands, &topic, expected, Some(seq))?;
                    self.count_repair(&topic, expected, filled);
                    let _ = topic.apply(seq, message, ts);
                }
            }
        }
        Ok(())
    }

    /// Brings every topic up to date with Redis: after a (re)connection.
    fn catch_up(&mut self, commands: &mut redis::Connection) -> redis::RedisResult<()> {
        let incarnation: Option<String> =
            redis::cmd("GET").arg(keys::INCARNATION).query(commands)?;
        let incarnation = match incarnation {
            Some(current) => current,
            None => {
                let fresh = new_epoch();
                let _: () = redis::cmd("SET")
                    .arg(keys::INCARNATION)
                    .arg(&fresh)
                    .arg("NX")
                    .query(commands)?;
                redis::cmd("GET").arg(keys::INCARNATION).query(commands)?
            }
        };
        let lost = self
            .incarnation
            .replace(incarnation.clone())
            .is_some_and(|known| known != incarnation);
        if lost {
            self.recreate_known_topics(commands)?;
        }
        let topics: HashMap<String, String> =
            redis::cmd("HGETALL").arg(keys::TOPICS).query(commands)?;
        for summary in self.broker.summaries() {
            if topics.get(&summary.name) != Some(&summary.epoch) {
                // Deleted while this node was away (or replaced).
                self.broker.delete_mirror(&summary.name, &summary.epoch);
            }
        }
        for (name, epoch) in &topics {
            self.catch_up_topic(commands, name, epoch)?;
        }
        Ok(())
    }

    /// Redis lost its data: the topics this node knows are created again,
    /// with new epochs (one node's wins), and their subscribers told.
    fn recreate_known_topics(&self, commands: &mut redis::Connection) -> redis::RedisResult<()> {
        for summary in self.broker.summaries() {
            let name = summary.name;
            let _: i64 = redis::cmd("HSETNX")
                .arg(keys::TOPICS)
                .arg(&name)
                .arg(new_epoch())
                .query(commands)?;
            let epoch: String = redis::cmd("HGET")
                .arg(keys::TOPICS)
                .arg(&name)
                .query(commands)?;
            if let Some(topic) = self.broker.topic(&name) {
                log::warn!(topic = name.as_str(), epoch = epoch.as_str(); "backplane lost its data: topic reset");
                topic.reset(1, Some(epoch));
                self.state
                    .topic_resets
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Brings one topic up to date: a topic new to this node starts at the
    /// oldest message its ring holds; a known one is repaired from where it
    /// is.
    fn catch_up_topic(
        &self,
        commands: &mut redis::Connection,
        name: &str,
        epoch: &str,
    ) -> redis::RedisResult<()> {
        let known = self.broker.topic(name).filter(|t| t.is_in_epoch(epoch));
        let was_known = known.is_some();
        let topic = match known {
            Some(topic) => topic,
            None => {
                let last: Option<u64> =
                    redis::cmd("GET").arg(keys::seq_key(name)).query(commands)?;
                let held = self.ring_after(commands, name, 0, None)?;
                let first = held.first().map_or(last.unwrap_or(0) + 1, |(seq, ..)| *seq);
                self.broker.mirror(name, epoch, first)
            }
        };
        let from = topic.next_seq();
        // What a known topic missed while this node was not listening is
        // a gap too; a topic new here just starts with what the ring has.
        let filled = self.repair(commands, &topic, from, None)?;
        if was_known {
            self.count_repair(&topic, from, filled);
        }
        Ok(())
    }

    /// A gap from `from` in `topic`'s stream, of which the ring gave
    /// `filled` messages (none: nothing to repair, or a reset).
    fn count_repair(&self, topic: &Topic, from: u64, filled: usize) {
        if filled > 0 {
            log::info!(topic = topic.name(), from, filled; "backplane: gap filled from the ring");
            self.state
                .gaps_repaired
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Fills `topic` from `from` (its next expected `seq`) up to `until`
    /// (excluded: the message in hand; `None`: everything) from its ring in
    /// Redis. A `seq` the ring no longer holds resets the topic past it.
    /// Returns how many messages the ring gave.
    fn repair(
        &self,
        commands: &mut redis::Connection,
        topic: &Topic,
        from: u64,
        until: Option<u64>,
    ) -> redis::RedisResult<usize> {
        let before = until.map(|seq| seq - 1);
        let (held, newest) = match before {
            Some(_) => (self.ring_after(commands, topic.name(), from, before)?, None),
            None => self.ring_and_newest(commands, topic.name(), from)?,
        };
        let last: Option<u64> = match (held.last(), before) {
            (_, Some(before)) => Some(before),
            (Some((seq, ..)), None) => Some(*seq),
            (None, None) => newest,
        };
        let Some(last) = last.filter(|&last| last >= from) else {
            return Ok(0);
        };
        let first_held = held.first().map_or(last + 1, |(seq, ..)| *seq);
        if first_held > from {
            log::warn!(
                topic = topic.name(), missing_from = from, missing_to = first_held - 1;
                "backplane: messages no longer in the ring; topic reset"
            );
            topic.reset(first_held, None);
            self.state
                .topic_resets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut filled = 0;
        for (seq, message, ts) in &held {
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

    /// The ring's messages from `from` to `until` (both included; `None`:
    /// to the newest): `(seq, message, ts)`, oldest first.
    fn ring_after(
        &self,
        commands: &mut redis::Connection,
        name: &str,
        from: u64,
        until: Option<u64>,
    ) -> redis::RedisResult<Vec<Held>> {
        let end = until.map_or("+".to_string(), |seq| format!("{seq}-0"));
        let entries: Vec<RingEntry> = redis::cmd("XRANGE")
            .arg(keys::ring_key(name))
            .arg(format!("{from}-0"))
            .arg(end)
            .query(commands)?;
        Ok(held(entries))
    }

    /// The ring's messages from `from` to the newest, and the topic's last
    /// `seq`, read at one instant (`MULTI`): read one after the other, a
    /// message published in between would look lost from the ring.
    fn ring_and_newest(
        &self,
        commands: &mut redis::Connection,
        name: &str,
        from: u64,
    ) -> redis::RedisResult<(Vec<Held>, Option<u64>)> {
        let (entries, newest): (Vec<RingEntry>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("XRANGE")
            .arg(keys::ring_key(name))
            .arg(format!("{from}-0"))
            .arg("+")
            .cmd("GET")
            .arg(keys::seq_key(name))
            .query(commands)?;
        Ok((held(entries), newest))
    }
}

/// A message the ring holds: `(seq, message, ts)`.
type Held = (u64, String, String);

/// A ring entry as `XRANGE` gives it: its id and its fields.
type RingEntry = (String, HashMap<String, String>);

/// `(seq, message, ts)` of each well-formed entry, in order.
fn held(entries: Vec<RingEntry>) -> Vec<Held> {
    entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let seq = id.split_once('-')?.0.parse().ok()?;
            Some((seq, fields.remove("m")?, fields.remove("ts")?))
        })
        .collect()
}
