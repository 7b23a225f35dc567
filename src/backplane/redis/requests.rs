//! The Redis backend's request thread. It takes the changes workers
//! queue (never blocking them), sends whatever is waiting as one pipeline
//! of script calls, and answers each to the worker that asked, through its
//! mailbox. Once a second it also tells Redis this node's subscriber
//! counts and reads the other nodes'.
//!
//! When Redis cannot be reached, or does not answer within
//! `REQUEST_TIMEOUT`, waiting changes are answered `Unavailable`, the
//! backplane is reported down, and the thread reconnects
//! ([`run_forever`]). It never applies an event to a topic: only the event
//! thread does (a creation it answers is mirrored, so that the creator
//! finds the topic here at once).
//!
//! With `REDIS_REPLICAS_ACK=N`, every pipeline that carries a change ends
//! with one `WAIT N 1000`: if fewer than N replicas acknowledged, each
//! change of the pipeline is answered `Unavailable` (it may or may not
//! have been made) instead of its outcome.

use super::client::{Connector, REQUEST_TIMEOUT};
use super::keys;
use crate::backplane::queue::Request;
use crate::backplane::reconnect::{run_forever, Ended, Reconnect};
use crate::backplane::state::ClusterState;
use crate::broker::change::{Change, Outcome};
use crate::broker::{new_epoch, Broker};
use crate::protocol::timestamp;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Changes sent in one pipeline at most.
const MAX_PIPELINE: usize = 512;
/// How often a node tells Redis it is alive, with its subscriber counts.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long no longer counts.
const NODE_EXPIRY: Duration = Duration::from_secs(5);
/// How long a pipeline's `WAIT` waits for its replicas (the contract's
/// second).
const REPLICAS_WAIT: Duration = Duration::from_secs(1);
const NOT_REPLICATED: &str =
    "the backplane did not replicate the change in time; it may or may not have been made";

/// Starts the request thread, which takes its changes from `receiver`.
pub fn start(
    state: Arc<ClusterState>,
    connector: Connector,
    ring_size: usize,
    replicas_ack: u32,
    broker: Arc<Broker>,
    receiver: Receiver<Request>,
) -> std::io::Result<()> {
    let mut thread = RequestThread {
        state,
        connector,
        ring_size,
        replicas_ack,
        broker,
        receiver,
        next_heartbeat: Instant::now(),
        unsent: Vec::new(),
        first_attempt: true,
    };
    std::thread::Builder::new()
        .name("backplane-requests".into())
        .spawn(move || run_forever(&mut thread))?;
    Ok(())
}

/// The scripts' SHA1s, as `EVALSHA` names them.
struct Scripts {
    publish: String,
    create: String,
    delete: String,
}

struct RequestThread {
    state: Arc<ClusterState>,
    connector: Connector,
    ring_size: usize,
    /// Replicas that must hold a pipeline's changes (`REDIS_REPLICAS_ACK`).
    replicas_ack: u32,
    broker: Arc<Broker>,
    receiver: Receiver<Request>,
    next_heartbeat: Instant,
    /// Changes taken for a connection found dead before they were sent on
    /// it: certainly not carried out, so they go on the next connection.
    unsent: Vec<Request>,
    /// The first attempt to reach Redis is still to be made (and told).
    first_attempt: bool,
}

/// Why the request thread stopped serving on a connection.
enum Served {
    /// The workers are gone.
    Stopped,
    /// Found dead before a batch was sent on it (the batch waits in
    /// `unsent`): a new connection is tried at once.
    FoundDead(String),
    /// Failed with changes in flight, or on a heartbeat.
    Lost(String),
}

/// A connection without a round trip for this long is checked (`PING`)
/// before a batch is sent on it: Redis may have gone and come back while
/// it sat idle, which the first write would not tell.
const IDLE_PROBE: Duration = Duration::from_millis(100);

impl Reconnect for RequestThread {
    fn attempt(&mut self) -> Ended {
        let connected = self.connect();
        if std::mem::take(&mut self.first_attempt) {
            self.state.first_attempt_made();
        }
        let ended = match connected {
            Ok((mut conn, scripts)) => {
                self.state.set_up(true, "");
                match self.serve(&mut conn, &scripts) {
                    Served::Stopped => return Ended::Stopped,
                    Served::FoundDead(why) => {
                        log::info!(node = self.state.node_id.as_str(), why = why.as_str(); "backplane connection found dead while idle; reconnecting");
                        return Ended::Again;
                    }
                    Served::Lost(why) => {
                        self.state.set_up(false, &why);
                        Ended::Lost
                    }
                }
            }
            Err(e) => {
                self.state.set_up(false, &e.to_string());
                Ended::Failed
            }
        };
        for request in self.unsent.drain(..) {
            request.answer(Outcome::Unavailable("the backplane is down"));
        }
        ended
    }

    /// While the backplane is down: every change that arrives is answered
    /// `Unavailable` at once. False once the workers are gone.
    fn pause(&mut self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match self.receiver.recv_timeout(left) {
                Ok(request) => request.answer(Outcome::Unavailable("the backplane is down")),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

impl RequestThread {
    fn connect(&self) -> redis::RedisResult<(redis::Connection, Scripts)> {
        let (mut conn, _) = self.connector.connect(REQUEST_TIMEOUT)?;
        // A pipeline's `WAIT` may take its whole second before it answers.
        let read_timeout = if self.replicas_ack > 0 {
            REQUEST_TIMEOUT + REPLICAS_WAIT
        } else {
            REQUEST_TIMEOUT
        };
        conn.set_read_timeout(Some(read_timeout))?;
        conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let load = |conn: &mut redis::Connection, source: &str| -> redis::RedisResult<String> {
            redis::cmd("SCRIPT").arg("LOAD").arg(source).query(conn)
        };
        let scripts = Scripts {
            publish: load(&mut conn, keys::PUBLISH)?,
            create: load(&mut conn, keys::CREATE)?,
            delete: load(&mut conn, keys::DELETE)?,
        };
        Ok((conn, scripts))
    }

    /// Carries out changes until the connection fails (first those left
    /// unsent on the last one).
    fn serve(&mut self, conn: &mut redis::Connection, scripts: &Scripts) -> Served {
        let mut last_round_trip = Instant::now();
        let mut losses_seen = self.state.subscription_losses();
        if !self.unsent.is_empty() {
            let batch = std::mem::take(&mut self.unsent);
            if let Err(e) = self.carry_out(conn, scripts, batch) {
                return Served::Lost(e.to_string());
            }
        }
        loop {
            if Instant::now() >= self.next_heartbeat {
                if let Err(e) = self.heartbeat(conn) {
                    return Served::Lost(e.to_string());
                }
                last_round_trip = Instant::now();
                self.next_heartbeat = last_round_trip + HEARTBEAT;
            }
            let wait = self
                .next_heartbeat
                .saturating_duration_since(Instant::now());
            let first = match self.receiver.recv_timeout(wait) {
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Served::Stopped,
            };
            let mut batch = vec![first];
            batch.extend(self.receiver.try_iter().take(MAX_PIPELINE - 1));
            let losses = self.state.subscription_losses();
            if losses != losses_seen || last_round_trip.elapsed() > IDLE_PROBE {
                losses_seen = losses;
                match redis::cmd("PING").query::<()>(conn) {
                    Ok(()) => {}
                    // Hung rather than gone: the batch was not sent.
                    Err(e) if e.is_timeout() => {
                        for request in batch {
                            request.answer(Outcome::Unavailable(
                                "the backplane did not answer in time",
                            ));
                        }
                        return Served::Lost(e.to_string());
                    }
                    Err(e) => {
                        self.unsent = batch;
                        return Served::FoundDead(e.to_string());
                    }
                }
            }
            if let Err(e) = self.carry_out(conn, scripts, batch) {
                return Served::Lost(e.to_string());
            }
            last_round_trip = Instant::now();
        }
    }

    /// One pipeline for every change in `batch`; each is answered.
    fn carry_out(
        &self,
        conn: &mut redis::Connection,
        scripts: &Scripts,
        batch: Vec<Request>,
    ) -> redis::RedisResult<()> {
        let (late, batch): (Vec<Request>, Vec<Request>) = batch
            .into_iter()
            .partition(|r| r.queued.elapsed() > REQUEST_TIMEOUT);
        for request in late {
            request.answer(Outcome::Unavailable("the backplane did not answer in time"));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let ts = timestamp(SystemTime::now());
        let epochs: Vec<Option<String>> = batch
            .iter()
            .map(|r| self.invoke(&mut pipe, scripts, &r.change, &ts))
            .collect();
        let wait = self.replicas_ack > 0
            && batch
                .iter()
                .any(|r| !matches!(r.change, Change::ReadLastSeq { .. }));
        if wait {
            pipe.cmd("WAIT")
                .arg(self.replicas_ack)
                .arg(REPLICAS_WAIT.as_millis() as u64);
        }
        let started = Instant::now();
        let mut replies: Vec<redis::Value> = match pipe.query(conn) {
            Ok(replies) => replies,
            Err(e) => {
                for request in batch {
                    request.answer(Outcome::Unavailable(
                        "lost the backplane; the change may or may not have been made",
                    ));
                }
                return Err(e);
            }
        };
        self.state.record_rtt(started.elapsed());
        let replicated = !wait || self.replicated(replies.pop());
        for ((request, reply), epoch) in batch.into_iter().zip(replies).zip(epochs) {
            let outcome = match &request.change {
                Change::ReadLastSeq { .. } => outcome_of(&request.change, &reply),
                _ if !replicated => Outcome::Unavailable(NOT_REPLICATED),
                change => outcome_of(change, &reply),
            };
            if let (Outcome::Created, Change::Create { name }, Some(epoch)) =
                (&outcome, &request.change, epoch)
            {
                // So that this node knows the topic when the client that
                // created it subscribes here next; the event that follows
                // finds it there already.
                self.broker.mirror(name, &epoch, 1);
            }
            request.answer(outcome);
        }
        Ok(())
    }

    /// Whether `WAIT`'s reply says enough replicas hold the pipeline.
    fn replicated(&self, reply: Option<redis::Value>) -> bool {
        match reply {
            Some(redis::Value::Int(acked)) if acked >= i64::from(self.replicas_ack) => true,
            Some(redis::Value::Int(acked)) => {
                log::warn!(node = self.state.node_id.as_str(), acked, wanted = self.replicas_ack; "backplane: too few replicas acknowledged a pipeline");
                false
            }
            reply => {
                log::error!(reply:? = reply; "unexpected reply to WAIT from the backplane");
                false
            }
        }
    }

    /// Adds the script call for `change` to `pipe` (for a question, the
    /// command that answers it); for a creation, returns the new topic's
    /// epoch.
    fn invoke(
        &self,
        pipe: &mut redis::Pipeline,
        scripts: &Scripts,
        change: &Change,
        ts: &str,
    ) -> Option<String> {
        let script_call = |pipe: &mut redis::Pipeline, sha: &str, name: &str| {
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(3)
                .arg(keys::TOPICS)
                .arg(keys::seq_key(name))
                .arg(keys::ring_key(name))
                .arg(name);
        };
        match change {
            Change::Publish { topic, message } => {
                script_call(pipe, &scripts.publish, topic);
                pipe.arg(message.get())
                    .arg(ts)
                    .arg(self.ring_size)
                    .arg(keys::channel_of(topic));
                None
            }
            Change::Create { name } => {
                let epoch = new_epoch();
                script_call(pipe, &scripts.create, name);
                pipe.arg(&epoch).arg(keys::channel_of(name));
                Some(epoch)
            }
            Change::Delete { name } => {
                script_call(pipe, &scripts.delete, name);
                pipe.arg(keys::channel_of(name));
                None
            }
            Change::ReadLastSeq { topic } => {
                pipe.get(keys::seq_key(topic));
                None
            }
            Change::Disconnect { sub } => {
                pipe.publish(keys::USERS, keys::disconnect_event(sub));
                None
            }
        }
    }

    /// Tells Redis this node is alive and how many subscribers each of its
    /// topics has here; reads every other live node's counts.
    fn heartbeat(&self, conn: &mut redis::Connection) -> redis::RedisResult<()> {
        let node = &self.state.node_id;
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let counts: Vec<(String, usize)> = self
            .broker
            .summaries()
            .into_iter()
            .filter(|s| s.subscribers > 0)
            .map(|s| (s.name, s.subscribers))
            .collect();
        let mut pipe = redis::pipe();
        pipe.del(keys::node_key(node)).ignore();
        if !counts.is_empty() {
            pipe.hset_multiple(keys::node_key(node), &counts).ignore();
        }
        pipe.expire(keys::node_key(node), NODE_EXPIRY.as_secs() as i64)
            .ignore()
            .zadd(keys::NODES, node, now_ms)
            .ignore()
            .zrembyscore(
                keys::NODES,
                "-inf",
                now_ms.saturating_sub(NODE_EXPIRY.as_millis() as u64),
            )
            .ignore()
            .publish(keys::HEARTBEAT, node)
            .ignore()
            .zrange(keys::NODES, 0, -1);
        let (nodes,): (Vec<String>,) = pipe.query(conn)?;
        let others: Vec<&String> = nodes.iter().filter(|n| *n != node).collect();
        let per_node: Vec<HashMap<String, u64>> = if others.is_empty() {
            Vec::new()
        } else {
            let mut read = redis::pipe();
            for other in others {
                read.hgetall(keys::node_key(other));
            }
            read.query(conn)?
        };
        let mut others: HashMap<String, u64> = HashMap::new();
        for counts in per_node {
            for (topic, n) in counts {
                *others.entry(topic).or_default() += n;
            }
        }
        self.state.set_others(others);
        Ok(())
    }
}

/// What a script's reply means for `change`.
fn outcome_of(change: &Change, reply: &redis::Value) -> Outcome {
    use redis::Value;
    match (change, reply) {
        (Change::Publish { .. }, Value::Int(seq)) => Outcome::Published(*seq as u64),
        (Change::Publish { .. }, Value::Nil) => Outcome::NoTopic,
        (Change::Create { .. }, Value::Int(1)) => Outcome::Created,
        (Change::Create { .. }, Value::Int(0)) => Outcome::Exists,
        (Change::Delete { .. }, Value::Int(1)) => Outcome::Deleted,
        (Change::Delete { .. }, Value::Int(0)) => Outcome::NoTopic,
        (Change::ReadLastSeq { .. }, Value::Nil) => Outcome::LastSeq(0),
        (Change::Disconnect { .. }, Value::Int(_)) => Outcome::Disconnected,
        (Change::ReadLastSeq { .. }, Value::BulkString(text)) => {
            match std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()) {
                Some(seq) => Outcome::LastSeq(seq),
                None => unexpected(change, reply),
            }
        }
        _ => unexpected(change, reply),
    }
}

fn unexpected(change: &Change, reply: &redis::Value) -> Outcome {
    log::error!(change:? = change, reply:? = reply; "unexpected reply from the backplane");
    Outcome::Unavailable("the backplane answered unexpectedly")
}
