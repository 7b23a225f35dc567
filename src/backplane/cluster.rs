//! Cluster mode's side of the backplane boundary: the Redis client's two
//! threads and the state they share with the workers.
//!
//! - The **request thread** takes the changes workers queue (never
//!   blocking them), sends whatever is waiting as one pipeline of script
//!   calls, and answers each to the worker that asked, through its mailbox.
//!   Once a second it also tells Redis this node's subscriber counts and
//!   reads the other nodes'.
//! - The **event thread** ([`super::events`]) reads every change from
//!   Redis's channels and applies it to this node's topics.
//!
//! When Redis cannot be reached, or does not answer within
//! `REQUEST_TIMEOUT`, waiting changes are answered `Unavailable`, the
//! backplane is reported down, and the threads reconnect with back-off.

use super::keys;
use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use crate::broker::{new_epoch, Broker};
use crate::protocol::timestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// A change not answered within this is answered `Unavailable`: under a
/// second, which the contract promises, with room for the hand-off to and
/// from the request thread.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(900);
/// Changes sent in one pipeline at most.
const MAX_PIPELINE: usize = 512;
/// How often a node tells Redis it is alive, with its subscriber counts.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long no longer counts.
const NODE_EXPIRY: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Upper bounds of the round-trip histogram, in seconds.
pub const RTT_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// What the workers, the REST side and both threads share.
pub struct ClusterState {
    pub node_id: String,
    pub client: redis::Client,
    pub ring_size: usize,
    up: AtomicBool,
    /// The event thread is subscribed and has caught up with Redis: this
    /// node knows every topic and delivers their events.
    following: AtomicBool,
    /// Gaps in a channel's stream filled from a topic's ring.
    pub gaps_repaired: AtomicU64,
    /// `topic_reset`s announced.
    pub topic_resets: AtomicU64,
    /// Request pipelines' round trips: counts per `RTT_BUCKETS` bucket (and
    /// one over), and their sum in microseconds.
    rtt_counts: [AtomicU64; RTT_BUCKETS.len() + 1],
    rtt_sum_micros: AtomicU64,
    /// Every other live node's subscribers, per topic.
    others: RwLock<HashMap<String, u64>>,
    /// Times the event thread's subscription broke: Redis may have gone
    /// away, so the request thread checks its connection before it next
    /// sends on it.
    subscription_losses: AtomicU64,
    /// The threads that have not yet made their first attempt to reach
    /// Redis (see `wait_first_attempts`).
    first_attempts_left: Mutex<usize>,
    first_attempts_done: Condvar,
}

/// The threads whose first attempt to reach Redis `Backplane::start`
/// waits for: the request thread and the event thread.
const THREADS: usize = 2;

/// The round trips, for `/metrics`: cumulative counts per bucket, the
/// total count and the sum in seconds.
pub struct RttSnapshot {
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl ClusterState {
    pub fn new(node_id: String, client: redis::Client, ring_size: usize) -> ClusterState {
        ClusterState {
            node_id,
            client,
            ring_size,
            up: AtomicBool::new(false),
            following: AtomicBool::new(false),
            gaps_repaired: AtomicU64::new(0),
            topic_resets: AtomicU64::new(0),
            rtt_counts: Default::default(),
            rtt_sum_micros: AtomicU64::new(0),
            others: RwLock::new(HashMap::new()),
            subscription_losses: AtomicU64::new(0),
            first_attempts_left: Mutex::new(THREADS),
            first_attempts_done: Condvar::new(),
        }
    }

    /// One backplane thread has made its first attempt to reach Redis,
    /// and it succeeded or failed (each thread says so once).
    pub fn first_attempt_made(&self) {
        let mut left = self
            .first_attempts_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.first_attempts_done.notify_all();
        }
    }

    /// Waits, at most `limit`, until both threads have made their first
    /// attempt: so that a node does not listen while it would still answer
    /// `UNAVAILABLE` (or not know a topic) with Redis up. False on time-out.
    pub fn wait_first_attempts(&self, limit: Duration) -> bool {
        let left = self
            .first_attempts_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (left, _) = self
            .first_attempts_done
            .wait_timeout_while(left, limit, |left| *left > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *left == 0
    }

    /// The event thread lost its subscription (see `subscription_losses`).
    pub fn subscription_lost(&self) {
        self.subscription_losses.fetch_add(1, Ordering::AcqRel);
    }

    fn subscription_losses(&self) -> u64 {
        self.subscription_losses.load(Ordering::Acquire)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Takes this node's subscriber counts out of Redis at once (a
    /// graceful stop, after its last connection closed), rather than
    /// letting them expire after `NODE_EXPIRY`: the other nodes count
    /// right again at their next heartbeat. Best effort, within
    /// `REQUEST_TIMEOUT`.
    pub fn leave(&self) {
        let left = self
            .client
            .get_connection_with_timeout(REQUEST_TIMEOUT)
            .and_then(|mut conn| {
                conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                redis::pipe()
                    .del(keys::node_key(&self.node_id))
                    .ignore()
                    .zrem(keys::NODES, &self.node_id)
                    .ignore()
                    .query::<()>(&mut conn)
            });
        match left {
            Ok(()) => log::info!(node = self.node_id.as_str(); "left the cluster"),
            Err(e) => {
                log::warn!(node = self.node_id.as_str(), why = e.to_string().as_str(); "could not leave the cluster; its counts expire")
            }
        }
    }

    /// Requests can be carried out and events are followed: what
    /// `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        self.is_up() && self.following.load(Ordering::Acquire)
    }

    /// Records whether the event thread follows Redis's events.
    pub fn set_following(&self, following: bool) {
        self.following.store(following, Ordering::Release);
    }

    /// Records whether requests can be carried out; logs each change.
    pub fn set_up(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            if up {
                log::info!(node = self.node_id.as_str(); "backplane up");
            } else {
                log::warn!(node = self.node_id.as_str(), why; "backplane down");
            }
        }
    }

    fn record_rtt(&self, rtt: Duration) {
        let seconds = rtt.as_secs_f64();
        let bucket = RTT_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(RTT_BUCKETS.len());
        self.rtt_counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.rtt_sum_micros
            .fetch_add(rtt.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn rtt(&self) -> RttSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(RTT_BUCKETS.len());
        for (i, le) in RTT_BUCKETS.iter().enumerate() {
            running += self.rtt_counts[i].load(Ordering::Relaxed);
            cumulative.push((*le, running));
        }
        let count = running + self.rtt_counts[RTT_BUCKETS.len()].load(Ordering::Relaxed);
        RttSnapshot {
            cumulative,
            count,
            sum_seconds: self.rtt_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Subscribers of `topic` on the other live nodes (as of the last
    /// heartbeat).
    pub fn others_subscribers(&self, topic: &str) -> u64 {
        self.others
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
            .unwrap_or(0)
    }
}

/// A change waiting for the request thread.
pub struct Request {
    pub change: Change,
    pub mailbox: Arc<WorkerMailbox>,
    pub key: ConnectionKey,
    pub queued: Instant,
}

impl Request {
    fn answer(self, outcome: Outcome) {
        self.mailbox.answer(self.key, outcome);
    }
}

/// The workers' end of the request queue.
pub struct Requests {
    sender: Mutex<Sender<Request>>,
}

impl Requests {
    pub fn send(&self, request: Request) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(mpsc::SendError(request)) = sender.send(request) {
            request.answer(Outcome::Unavailable("the backplane has stopped"));
        }
    }
}

/// Starts the request thread; returns the queue workers send to.
pub fn start_requests(state: Arc<ClusterState>, broker: Arc<Broker>) -> std::io::Result<Requests> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("backplane-requests".into())
        .spawn(move || RequestThread::new(state, broker, receiver).run())?;
    Ok(Requests {
        sender: Mutex::new(sender),
    })
}

/// The scripts' SHA1s, as `EVALSHA` names them.
struct Scripts {
    publish: String,
    create: String,
    delete: String,
}

struct RequestThread {
    state: Arc<ClusterState>,
    broker: Arc<Broker>,
    receiver: Receiver<Request>,
    next_heartbeat: Instant,
    /// Changes taken for a connection found dead before they were sent on
    /// it: certainly not carried out, so they go on the next connection.
    unsent: Vec<Request>,
}

/// Why the request thread stopped serving on a connection.
enum Ended {
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

impl RequestThread {
    fn new(state: Arc<ClusterState>, broker: Arc<Broker>, receiver: Receiver<Request>) -> Self {
        RequestThread {
            state,
            broker,
            receiver,
            next_heartbeat: Instant::now(),
            unsent: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut backoff = FIRST_BACKOFF;
        let mut first_attempt = true;
        loop {
            let connected = self.connect();
            if std::mem::take(&mut first_attempt) {
                self.state.first_attempt_made();
            }
            match connected {
                Ok((mut conn, scripts)) => {
                    backoff = FIRST_BACKOFF;
                    self.state.set_up(true, "");
                    match self.serve(&mut conn, &scripts) {
                        Ended::Stopped => return,
                        Ended::FoundDead(why) => {
                            log::info!(node = self.state.node_id.as_str(), why = why.as_str(); "backplane connection found dead while idle; reconnecting");
                            continue;
                        }
                        Ended::Lost(why) => self.state.set_up(false, &why),
                    }
                }
                Err(e) => self.state.set_up(false, &e.to_string()),
            }
            for request in self.unsent.drain(..) {
                request.answer(Outcome::Unavailable("the backplane is down"));
            }
            if !self.refuse_until(Instant::now() + backoff) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn connect(&self) -> redis::RedisResult<(redis::Connection, Scripts)> {
        let mut conn = self
            .state
            .client
            .get_connection_with_timeout(REQUEST_TIMEOUT)?;
        conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
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

    /// While the backplane is down: every change that arrives is answered
    /// `Unavailable` at once. False once the workers are gone.
    fn refuse_until(&self, until: Instant) -> bool {
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

    /// Carries out changes until the connection fails (first those left
    /// unsent on the last one).
    fn serve(&mut self, conn: &mut redis::Connection, scripts: &Scripts) -> Ended {
        let mut last_round_trip = Instant::now();
        let mut losses_seen = self.state.subscription_losses();
        if !self.unsent.is_empty() {
            let batch = std::mem::take(&mut self.unsent);
            if let Err(e) = self.carry_out(conn, scripts, batch) {
                return Ended::Lost(e.to_string());
            }
        }
        loop {
            if Instant::now() >= self.next_heartbeat {
                if let Err(e) = self.heartbeat(conn) {
                    return Ended::Lost(e.to_string());
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
                Err(RecvTimeoutError::Disconnected) => return Ended::Stopped,
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
                        return Ended::Lost(e.to_string());
                    }
                    Err(e) => {
                        self.unsent = batch;
                        return Ended::FoundDead(e.to_string());
                    }
                }
            }
            if let Err(e) = self.carry_out(conn, scripts, batch) {
                return Ended::Lost(e.to_string());
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
        let started = Instant::now();
        let replies: Vec<redis::Value> = match pipe.query(conn) {
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
        for ((request, reply), epoch) in batch.into_iter().zip(replies).zip(epochs) {
            let outcome = outcome_of(&request.change, &reply);
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
                    .arg(self.state.ring_size)
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
        *self
            .state
            .others
            .write()
            .unwrap_or_else(PoisonError::into_inner) = others;
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
