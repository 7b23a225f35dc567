//! The Redis backend's event thread: it subscribes to Redis's channels,
//! hands every event to the [`Follower`] (which applies it to this node's
//! topics, in order, once each), and gives the follower Redis's side of a
//! catch-up and a repair: the topic list, the incarnation, and the rings
//! (`XRANGE`), as a [`Catalog`] over a second connection.
//!
//! On every (re)connection the thread subscribes first, then has the
//! follower catch up, then reads the events that arrived meanwhile: nothing
//! the ring still holds is lost. A connection that fails, or is silent for
//! `SILENCE_LIMIT` (the request thread's heartbeat publishes once a
//! second), is dropped and made again ([`run_forever`]). The rules of
//! following are the follower's, not this thread's.

use super::client::{Connector, REQUEST_TIMEOUT};
use super::keys;
use crate::backplane::follower::{Catalog, Event, Follower, Held, RingSource};
use crate::backplane::reconnect::{run_forever, Ended, Reconnect};
use crate::backplane::state::ClusterState;
use crate::broker::{new_epoch, Broker};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Longer than this without any message (the heartbeat included) and the
/// subscription is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub fn start(
    state: Arc<ClusterState>,
    connector: Connector,
    broker: Arc<Broker>,
) -> std::io::Result<()> {
    let mut thread = EventThread {
        follower: Follower::new(broker, Arc::clone(&state)),
        state,
        connector,
        first_attempt_made: false,
    };
    std::thread::Builder::new()
        .name("backplane-events".into())
        .spawn(move || run_forever(&mut thread))?;
    Ok(())
}

struct EventThread {
    state: Arc<ClusterState>,
    connector: Connector,
    follower: Follower<Broker>,
    /// This thread's first attempt to follow Redis has succeeded (it is
    /// caught up) or failed, and `ClusterState` was told.
    first_attempt_made: bool,
}

impl Reconnect for EventThread {
    fn attempt(&mut self) -> Ended {
        let mut caught_up = false;
        let Err(why) = self.follow(&mut caught_up);
        self.state.set_following(false);
        self.report_first_attempt();
        self.state.subscription_lost();
        log::warn!(node = self.state.node_id.as_str(), why = why.as_str(); "backplane events: reconnecting");
        if caught_up {
            Ended::Lost
        } else {
            Ended::Failed
        }
    }
}

impl EventThread {
    /// Tells `ClusterState` once that this thread's first attempt to
    /// follow Redis is over (caught up, or failed).
    fn report_first_attempt(&mut self) {
        if !std::mem::replace(&mut self.first_attempt_made, true) {
            self.state.first_attempt_made();
        }
    }

    /// Subscribes, catches up (and says so in `caught_up`), then applies
    /// events until the connection fails; returns why it failed.
    fn follow(&mut self, caught_up: &mut bool) -> Result<Infallible, String> {
        let text = |e: redis::RedisError| e.to_string();
        // Both connections to the same server: the one the connector found.
        let (mut listener, server) = self.connector.connect(CONNECT_TIMEOUT).map_err(text)?;
        let mut commands = server
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(text)?;
        commands
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(text)?;
        let mut subscription = listener.as_pubsub();
        let channels: Vec<String> = (0..keys::CHANNELS).map(keys::channel).collect();
        subscription.subscribe(&channels).map_err(text)?;
        subscription.subscribe(keys::HEARTBEAT).map_err(text)?;
        subscription.subscribe(keys::USERS).map_err(text)?;
        subscription
            .set_read_timeout(Some(SILENCE_LIMIT))
            .map_err(text)?;
        self.follower.catch_up(&mut commands).map_err(text)?;
        self.state.set_following(true);
        self.report_first_attempt();
        *caught_up = true;
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
                    .follower
                    .apply(&mut commands, event)
                    .map_err(|e| e.to_string())?,
                None => log::warn!(event = text; "backplane: an event no node writes"),
            }
        }
    }
}

/// A ring entry as `XRANGE` gives it: its id and its fields.
type RingEntry = (String, HashMap<String, String>);

/// The message of each well-formed entry, in order.
fn held(entries: Vec<RingEntry>) -> Vec<Held> {
    entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let seq = id.split_once('-')?.0.parse().ok()?;
            Some(Held {
                seq,
                message: fields.remove("m")?,
                ts: fields.remove("ts")?,
            })
        })
        .collect()
}

impl RingSource for redis::Connection {
    type Error = redis::RedisError;

    fn range(&mut self, topic: &str, from: u64, until: u64) -> redis::RedisResult<Vec<Held>> {
        let entries: Vec<RingEntry> = redis::cmd("XRANGE")
            .arg(keys::ring_key(topic))
            .arg(format!("{from}-0"))
            .arg(format!("{until}-0"))
            .query(self)?;
        Ok(held(entries))
    }

    /// `XRANGE` and the `seq` key in one `MULTI`.
    fn newest_from(
        &mut self,
        topic: &str,
        from: u64,
    ) -> redis::RedisResult<(Vec<Held>, Option<u64>)> {
        let (entries, newest): (Vec<RingEntry>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("XRANGE")
            .arg(keys::ring_key(topic))
            .arg(format!("{from}-0"))
            .arg("+")
            .cmd("GET")
            .arg(keys::seq_key(topic))
            .query(self)?;
        Ok((held(entries), newest))
    }
}

impl Catalog for redis::Connection {
    fn incarnation(&mut self) -> redis::RedisResult<String> {
        let incarnation: Option<String> = redis::cmd("GET").arg(keys::INCARNATION).query(self)?;
        match incarnation {
            Some(current) => Ok(current),
            None => {
                let _: () = redis::cmd("SET")
                    .arg(keys::INCARNATION)
                    .arg(new_epoch())
                    .arg("NX")
                    .query(self)?;
                redis::cmd("GET").arg(keys::INCARNATION).query(self)
            }
        }
    }

    fn topics(&mut self) -> redis::RedisResult<HashMap<String, String>> {
        redis::cmd("HGETALL").arg(keys::TOPICS).query(self)
    }

    fn renew(&mut self, name: &str, old: &str, new: &str) -> redis::RedisResult<Option<String>> {
        redis::Script::new(keys::RENEW)
            .key(keys::TOPICS)
            .key(keys::seq_key(name))
            .key(keys::RENEWALS)
            .arg(name)
            .arg(old)
            .arg(new)
            .invoke(self)
    }

    fn renewal_of(&mut self, epoch: &str) -> redis::RedisResult<Option<(String, u64)>> {
        let renewal: Option<String> = redis::cmd("HGET")
            .arg(keys::RENEWALS)
            .arg(epoch)
            .query(self)?;
        Ok(renewal.and_then(|text| {
            let (old, seq) = text.split_once('\n')?;
            Some((old.to_string(), seq.parse().ok()?))
        }))
    }

    fn recreate(&mut self, name: &str, epoch: &str) -> redis::RedisResult<String> {
        let _: i64 = redis::cmd("HSETNX")
            .arg(keys::TOPICS)
            .arg(name)
            .arg(epoch)
            .query(self)?;
        redis::cmd("HGET").arg(keys::TOPICS).arg(name).query(self)
    }
}
