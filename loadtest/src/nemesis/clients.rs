//! The nemesis run's clients, one blocking thread each (a few dozen at
//! most, so no event loop): publishers that send acked publishes with
//! unique ids and record each outcome, and subscribers that resume
//! (`since_seq` + `epoch`) on the next node whenever their connection
//! drops, some of them staying away on purpose longer than the ring holds.
//! They record what they saw into `history`; they must not judge it.

use super::history::{Entry, Outcome, Publish, Resume, Subscriber};
use crate::resume::SplitMix64;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long a publish may wait for its ack, and a subscribe for its.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// A read wakes this often to look at the clock and the stop flags.
const TICK: Duration = Duration::from_millis(100);
/// Pause before trying the next node.
const RETRY: Duration = Duration::from_millis(100);

type Ws = WebSocket<TcpStream>;

/// Every client's current socket, so that the fault injector can cut one.
#[derive(Default)]
pub struct Cuts(Mutex<Vec<Option<TcpStream>>>);

impl Cuts {
    fn set(&self, client: usize, stream: Option<TcpStream>) {
        let mut sockets = self.0.lock().expect("not poisoned");
        if sockets.len() <= client {
            sockets.resize_with(client + 1, || None);
        }
        sockets[client] = stream;
    }

    /// Shuts down client `target mod clients`' socket both ways, if it
    /// has one; returns that client's index.
    pub fn cut(&self, target: usize) -> Option<usize> {
        let sockets = self.0.lock().expect("not poisoned");
        let client = target.checked_rem(sockets.len())?;
        let stream = sockets[client].as_ref()?;
        let _ = stream.shutdown(Shutdown::Both);
        Some(client)
    }
}

/// What the clients share with the run.
pub struct Shared {
    pub nodes: Vec<SocketAddr>,
    pub cuts: Arc<Cuts>,
    /// Publishers stop sending.
    pub stop_publishing: AtomicBool,
    /// Subscribers come back from any offline spell, and take no new one.
    pub come_back: AtomicBool,
    /// Subscribers stop.
    pub stop: AtomicBool,
}

/// Opens a WebSocket to `node`, its socket registered as `client`'s.
fn connect(shared: &Shared, client: usize, node: SocketAddr) -> Result<Ws> {
    let stream = TcpStream::connect_timeout(&node, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_nodelay(true)?;
    shared.cuts.set(client, Some(stream.try_clone()?));
    let (ws, _) = tungstenite::client::client(format!("ws://{node}/ws"), stream)
        .map_err(|e| anyhow!("upgrade on {node}: {e}"))?;
    ws.get_ref().set_read_timeout(Some(TICK))?;
    Ok(ws)
}

/// The next JSON text frame, `None` if none came within a tick.
fn read_json(ws: &mut Ws) -> Result<Option<Value>> {
    match ws.read() {
        Ok(Message::Text(text)) => Ok(Some(serde_json::from_str(&text)?)),
        Ok(Message::Close(_)) => bail!("closed by the broker"),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The reply to `request_id` within [`REPLY_TIMEOUT`]; frames in between
/// are handed to `other`.
fn reply(ws: &mut Ws, request_id: &str, mut other: impl FnMut(Value)) -> Result<Value> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(frame) = read_json(ws)? {
            if frame["request_id"] == request_id {
                return Ok(frame);
            }
            other(frame);
        }
    }
    bail!("no reply to {request_id} within {REPLY_TIMEOUT:?}")
}

/// Publisher `index`: `interval` apart, each publish to topic
/// `(index + k) mod topics` with id `p<index>-<k>`, waiting for its ack;
/// moves to the next node when its connection fails.
pub fn publisher(
    shared: &Shared,
    client: usize,
    index: usize,
    topics: &[String],
    interval: Duration,
) -> Vec<Publish> {
    let mut out = Vec::new();
    let mut node = index;
    let mut ws: Option<Ws> = None;
    let mut next = Instant::now();
    while !shared.stop_publishing.load(Ordering::Relaxed) {
        let Some(socket) = ws.as_mut() else {
            match connect(shared, client, shared.nodes[node % shared.nodes.len()]) {
                Ok(socket) => ws = Some(socket),
                Err(_) => {
                    node += 1;
                    std::thread::sleep(RETRY);
                }
            }
            continue;
        };
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next = next.max(Instant::now() - interval) + interval;
        let k = out.len();
        let topic = &topics[(index + k) % topics.len()];
        let id = format!("p{index}-{k}");
        let frame = json!({"type": "publish", "topic": topic, "request_id": id,
                           "message": {"id": id, "payload": {"n": k}}});
        let answer = socket
            .send(Message::text(frame.to_string()))
            .map_err(anyhow::Error::from)
            .and_then(|()| reply(socket, &id, drop));
        let outcome = match &answer {
            Ok(ack) if ack["type"] == "ack" => {
                ack["seq"].as_u64().map_or(Outcome::Unknown, Outcome::Acked)
            }
            _ => Outcome::Unknown,
        };
        if answer.is_err() {
            ws = None;
            node += 1;
        } else if outcome == Outcome::Unknown {
            std::thread::sleep(RETRY);
        }
        out.push(Publish {
            topic: topic.clone(),
            id,
            outcome,
        });
    }
    shared.cuts.set(client, None);
    out
}

/// How a subscriber stays away on purpose: after a connection has lived
/// `every` (0.5 to 1.5 times, seeded), it closes it and waits `away`.
#[derive(Debug, Clone, Copy)]
pub struct Offline {
    pub every: Duration,
    pub away: Duration,
    pub seed: u64,
}

/// A subscriber's progress, for the run to wait on.
#[derive(Default)]
pub struct Progress {
    /// Its first subscribe was acked.
    pub subscribed: AtomicBool,
    /// The last `seq` it saw, in its current epoch.
    pub last_seen: AtomicU64,
}

/// Subscriber `client` of `topic`, starting on node `client mod N`.
/// Until `stop`, it resumes on the next node whenever its connection ends.
pub fn subscriber(
    shared: &Shared,
    client: usize,
    name: String,
    topic: String,
    offline: Option<Offline>,
    progress: &Progress,
) -> Subscriber {
    let mut history = Subscriber {
        name,
        topic,
        entries: Vec::new(),
    };
    let mut rng = SplitMix64::new(offline.map_or(0, |o| o.seed), client as u64);
    let mut node = client;
    // The epoch and last seq seen, once subscribed.
    let mut at: Option<(String, u64)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let addr = shared.nodes[node % shared.nodes.len()];
        node += 1;
        let Ok(mut ws) = connect(shared, client, addr) else {
            std::thread::sleep(RETRY);
            continue;
        };
        let leave_at = offline.map(|o| Instant::now() + o.every.mul_f64(0.5 + rng.unit()));
        let lived = session(shared, &mut ws, &mut history, &mut at, progress, leave_at);
        let _ = ws.close(None);
        let _ = ws.flush();
        shared.cuts.set(client, None);
        match (lived, offline) {
            (Ok(true), Some(o)) => {
                let back = Instant::now() + o.away;
                while Instant::now() < back && !shared.come_back.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                }
            }
            (Ok(_), _) => {}
            (Err(_), _) => std::thread::sleep(RETRY),
        }
    }
    history
}

/// One connection: subscribe (or resume from `at`), then read events
/// until the connection fails (`Err`), `stop` (`Ok(false)`), or
/// `leave_at` (`Ok(true)`, unless `come_back` is set).
fn session(
    shared: &Shared,
    ws: &mut Ws,
    history: &mut Subscriber,
    at: &mut Option<(String, u64)>,
    progress: &Progress,
    leave_at: Option<Instant>,
) -> Result<bool> {
    let mut request = json!({"type": "subscribe", "topic": history.topic,
                             "client_id": history.name, "request_id": "sub"});
    if let Some((epoch, seq)) = at.as_ref() {
        request["since_seq"] = json!(seq);
        request["epoch"] = json!(epoch);
    }
    ws.send(Message::text(request.to_string()))?;
    let ack = reply(ws, "sub", drop)?;
    if ack["type"] != "ack" {
        bail!("subscribe refused: {ack}");
    }
    let epoch = ack["epoch"]
        .as_str()
        .ok_or_else(|| anyhow!("no epoch: {ack}"))?;
    let last_seq = ack["last_seq"]
        .as_u64()
        .ok_or_else(|| anyhow!("no last_seq: {ack}"))?;
    let resume = match at.as_ref() {
        None => None,
        Some((sent, since_seq)) => Some(Resume {
            since_seq: *since_seq,
            epoch: sent.clone(),
            recovered: ack["recovered"]
                .as_bool()
                .ok_or_else(|| anyhow!("no recovered: {ack}"))?,
        }),
    };
    let recovered = resume.as_ref().is_none_or(|r| r.recovered);
    progress.subscribed.store(true, Ordering::Relaxed);
    history.entries.push(Entry::Subscribed {
        epoch: epoch.to_string(),
        last_seq,
        resume,
    });
    let mut current = match at.take() {
        Some((_, seen)) if recovered => (epoch.to_string(), seen),
        _ => (epoch.to_string(), last_seq),
    };
    let result = loop {
        *at = Some(current.clone());
        progress.last_seen.store(current.1, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            break Ok(false);
        }
        if leave_at.is_some_and(|t| Instant::now() >= t)
            && !shared.come_back.load(Ordering::Relaxed)
        {
            break Ok(true);
        }
        let frame = match read_json(ws) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(e) => break Err(e),
        };
        match frame["type"].as_str() {
            Some("event") => {
                let seq = frame["seq"].as_u64().unwrap_or(0);
                let id = frame["message"]["id"].as_str().unwrap_or("").to_string();
                history.entries.push(Entry::Event { seq, id });
                current.1 = current.1.max(seq);
            }
            Some("info") if frame["msg"] == "topic_reset" => {
                let epoch = frame["epoch"].as_str().unwrap_or("").to_string();
                let last_seq = frame["last_seq"].as_u64().unwrap_or(0);
                history.entries.push(Entry::Reset {
                    epoch: epoch.clone(),
                    last_seq,
                });
                current = (epoch, last_seq);
            }
            Some("error") => break Err(anyhow!("error: {frame}")),
            _ => {}
        }
    };
    *at = Some(current);
    result
}
