//! A WebSocket connection's session: what its JSON messages mean. It
//! decodes each client message ([`crate::protocol`]), checks it against
//! the connection's [`Credentials`] (a token's rights, the publish limit),
//! acts on the broker (subscribe, unsubscribe, publish, ping, auth), and
//! puts its replies in the connection's output; it owns the connection's
//! subscriptions and event queue.
//!
//! No sockets and no framing state: the connection hands it whole
//! messages and writes what it leaves in the output. A new message type
//! touches `protocol` (its shape) and this module (what it does).

mod access;
mod reply;

use super::context::WorkerCtx;
use super::credentials::Credentials;
use super::output::Output;
use crate::auth::Access;
use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, SubscriberQueue};
use crate::broker::{Replay, Topic};
use crate::metrics::AuthFailure;
use crate::protocol::{self, Acked, ClientRequest, ErrorCode, Start};
use crate::ws::frame::{append_text_frame, SharedFrame};
use crate::ws::SessionKind;
use reply::{forbid, reply, reply_error, reply_to_publish, reply_topic_not_found};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;
use tungstenite::Message;

pub struct Session {
    kind: SessionKind,
    key: ConnectionKey,
    /// Created at the first subscribe, so that a connection that only
    /// publishes costs no queue.
    queue: Option<Arc<SubscriberQueue>>,
    topics: Vec<Arc<Topic>>,
    client_id: Option<String>,
    /// Requests whose reply is not written yet, in the order they came:
    /// the first handed to the backplane (cluster mode) and every publish
    /// after it, so that replies keep the order of requests. The backplane
    /// answers in the order it was asked.
    awaiting: VecDeque<Awaited>,
    /// A message that is not a publish, come while publishes are awaited:
    /// it waits for them (and the connection reads nothing more), so that
    /// its reply, and any replay, comes after theirs.
    deferred: Option<Box<Message>>,
    credentials: Credentials,
}

/// Publishes one connection may have awaiting the backplane before it is
/// read no further.
const MAX_AWAITING: usize = 256;

struct Awaited {
    request: AwaitedRequest,
    request_id: Option<String>,
    answer: Answer,
}

enum Answer {
    /// The backplane has not answered yet.
    Due,
    /// What became of it; known at once (refused by the backplane's state)
    /// or answered, and written in turn.
    Outcome(Outcome),
    /// Refused here (rights, the publish limit), written in turn.
    Refused(ErrorCode, &'static str),
}

enum AwaitedRequest {
    Publish {
        topic: String,
    },
    /// A resume after a `seq` this node has not applied (cluster mode):
    /// the backplane's last `seq` of the topic says whether it exists.
    Resume {
        topic: Arc<Topic>,
        seq: u64,
        epoch: String,
    },
}

impl AwaitedRequest {
    fn topic(&self) -> &str {
        match self {
            AwaitedRequest::Publish { topic } => topic,
            AwaitedRequest::Resume { topic, .. } => topic.name(),
        }
    }
}

impl Session {
    /// A session for the connection `key`, with the access its upgrade
    /// was given (a token's user is known by the broker from now on).
    pub fn new(kind: SessionKind, key: ConnectionKey, access: Access, ctx: &WorkerCtx) -> Session {
        if let Some(sub) = access.sub() {
            ctx.shared.broker.users.join(sub, &ctx.mailbox, key);
        }
        Session {
            kind,
            key,
            queue: None,
            topics: Vec::new(),
            client_id: None,
            awaiting: VecDeque::new(),
            deferred: None,
            credentials: Credentials::new(access, ctx),
        }
    }

    /// The `client_id` of the last subscribe or unsubscribe, for logs.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The user its token names, for logs.
    pub fn sub(&self) -> Option<&str> {
        self.credentials.access().sub()
    }

    /// When the connection ends unless a (new) token comes; and whether
    /// that moved since last asked (the connection re-arms its timer).
    pub fn credentials_deadline(&mut self) -> (Option<std::time::Instant>, bool) {
        let moved = self.credentials.take_deadline_moved();
        (self.credentials.deadline(), moved)
    }

    /// One whole text or binary message from the client.
    pub fn on_message(&mut self, ctx: &mut WorkerCtx, message: Message, out: &mut Output) {
        match (self.kind, message) {
            (SessionKind::PubSub, Message::Text(text)) => {
                if !self.on_request(ctx, text.as_str(), out) {
                    self.deferred = Some(Box::new(Message::Text(text)));
                }
            }
            (SessionKind::PubSub, message) if !self.awaiting.is_empty() => {
                self.deferred = Some(Box::new(message));
            }
            (SessionKind::PubSub, _) => reply_error(
                out,
                ErrorCode::BadRequest,
                "binary frames are not accepted; send JSON in text frames",
                None,
                None,
            ),
            #[cfg(feature = "autobahn")]
            (SessionKind::Echo, message) => echo(message, out),
        }
    }

    /// Carries out one request; false if it must wait for the publishes
    /// awaited before it.
    fn on_request(&mut self, ctx: &mut WorkerCtx, text: &str, out: &mut Output) -> bool {
        let request = match protocol::parse_client_frame(text) {
            Ok(request) => request,
            Err(_) if !self.awaiting.is_empty() => return false,
            Err(invalid) => {
                reply_error(
                    out,
                    ErrorCode::BadRequest,
                    &invalid.message,
                    invalid.request_id.as_deref(),
                    invalid.topic.as_deref(),
                );
                return true;
            }
        };
        let request_id = request.request_id();
        let draining = ctx.is_draining();
        let is_publish = matches!(request, ClientRequest::Publish { .. });
        if !self.awaiting.is_empty() && (draining || !is_publish || self.awaits_resume()) {
            return false;
        }
        if let ClientRequest::Auth { token, .. } = &request {
            self.authenticate(ctx, token, request_id, out);
            return true;
        }
        if self.credentials.access().is_pending() {
            ctx.metrics.record_auth_failure(AuthFailure::Missing);
            reply_error(
                out,
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"...\"}",
                request_id,
                None,
            );
            return true;
        }
        match &request {
            ClientRequest::Ping { .. } => {
                reply(out, &protocol::encode_pong(request_id, SystemTime::now()));
            }
            ClientRequest::Subscribe { topic, .. } | ClientRequest::Publish { topic, .. }
                if draining =>
            {
                reply_error(
                    out,
                    ErrorCode::ShuttingDown,
                    "the server is shutting down",
                    request_id,
                    Some(topic),
                );
            }
            ClientRequest::Subscribe {
                topic,
                client_id,
                start,
                ..
            } => self.subscribe(ctx, topic, client_id, start, request_id, out),
            ClientRequest::Unsubscribe {
                topic, client_id, ..
            } => self.unsubscribe(ctx, topic, client_id, request_id, out),
            ClientRequest::Publish { topic, message, .. } => {
                let answer = match self.publish_refusal(ctx, topic) {
                    Some((code, why)) => Answer::Refused(code, why),
                    None => ctx
                        .publish(topic, *message, self.key)
                        .map_or(Answer::Due, Answer::Outcome),
                };
                // Answered at once unless replies awaited before it must go
                // first; only then is anything kept (nothing is allocated
                // for a publish a single broker carries out now).
                match answer {
                    Answer::Outcome(outcome) if self.awaiting.is_empty() => {
                        reply_to_publish(out, topic, request_id, outcome)
                    }
                    Answer::Refused(code, why) if self.awaiting.is_empty() => {
                        reply_error(out, code, why, request_id, Some(topic))
                    }
                    answer => self.awaiting.push_back(Awaited {
                        request: AwaitedRequest::Publish {
                            topic: topic.to_string(),
                        },
                        request_id: request_id.map(str::to_owned),
                        answer,
                    }),
                }
            }
            ClientRequest::Auth { .. } => {}
        }
        true
    }

    /// What a subscribe and an unsubscribe of `name` begin with: the
    /// `client_id` kept for logs, the token's rights checked (before the
    /// topic is looked up: a forbidden topic reveals nothing), the topic
    /// found. `None` once the refusal is in the output.
    fn topic_to_follow(
        &mut self,
        ctx: &mut WorkerCtx,
        name: &str,
        client_id: &str,
        request_id: Option<&str>,
        out: &mut Output,
    ) -> Option<Arc<Topic>> {
        self.client_id = Some(client_id.to_string());
        if !self.credentials.access().may_subscribe(name) {
            forbid(ctx, out, name, request_id);
            return None;
        }
        let topic = ctx.topics.get(&ctx.shared.broker, name).cloned();
        if topic.is_none() {
            reply_topic_not_found(out, name, request_id);
        }
        topic
    }

    fn subscribe(
        &mut self,
        ctx: &mut WorkerCtx,
        name: &str,
        client_id: &str,
        start: &Start,
        request_id: Option<&str>,
        out: &mut Output,
    ) {
        let Some(topic) = self.topic_to_follow(ctx, name, client_id, request_id, out) else {
            return;
        };
        let replay = match start {
            Start::LastN(n) => Replay::LastN(*n),
            Start::Since { seq, epoch } if topic.is_behind(*seq, epoch) => {
                let question = Change::ReadLastSeq {
                    topic: name.to_owned(),
                };
                let awaited = Awaited {
                    request: AwaitedRequest::Resume {
                        topic,
                        seq: *seq,
                        epoch: epoch.clone(),
                    },
                    request_id: request_id.map(str::to_owned),
                    answer: ctx
                        .change(&question, self.key)
                        .map_or(Answer::Due, Answer::Outcome),
                };
                return match awaited.answer {
                    Answer::Due => self.awaiting.push_back(awaited),
                    answer => self.reply_to(ctx, awaited.request, request_id, answer, out),
                };
            }
            Start::Since { seq, epoch } => Replay::Since { seq: *seq, epoch },
        };
        self.join(ctx, topic, replay, request_id, out);
    }

    /// Subscribes to `topic` with `replay`: the ack, then the replay.
    fn join(
        &mut self,
        ctx: &mut WorkerCtx,
        topic: Arc<Topic>,
        replay: Replay<'_>,
        request_id: Option<&str>,
        out: &mut Output,
    ) {
        let key = self.key;
        let queue = self.queue.get_or_insert_with(|| {
            Arc::new(SubscriberQueue::new(
                ctx.shared.config.subscriber_queue_size,
                key,
                Arc::clone(&ctx.mailbox),
            ))
        });
        self.topics.retain(|t| !t.is_deleted());
        let already_subscribed = self.topics.iter().any(|t| Arc::ptr_eq(t, &topic));
        match topic.subscribe(queue, replay, already_subscribed) {
            Err(_) => reply_topic_not_found(out, topic.name(), request_id),
            Ok(subscribed) => {
                let write_events = |frames: &[SharedFrame], out: &mut Output| {
                    ctx.metrics.record_delivered(frames.len() as u64);
                    out.messages += frames.len() as u64;
                    for frame in frames {
                        out.buffer().extend_from_slice(frame);
                    }
                };
                write_events(&subscribed.earlier, out);
                let acked = Acked::Subscribed {
                    epoch: &subscribed.epoch,
                    last_seq: subscribed.last_seq,
                    recovered: subscribed.recovered,
                };
                reply(
                    out,
                    &protocol::encode_ack(request_id, topic.name(), acked, SystemTime::now()),
                );
                write_events(&subscribed.replay, out);
                if !already_subscribed {
                    self.topics.push(topic);
                }
            }
        }
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut WorkerCtx,
        name: &str,
        client_id: &str,
        request_id: Option<&str>,
        out: &mut Output,
    ) {
        let Some(topic) = self.topic_to_follow(ctx, name, client_id, request_id, out) else {
            return;
        };
        if let Some(queue) = &self.queue {
            topic.unsubscribe(queue);
        }
        self.topics
            .retain(|t| !Arc::ptr_eq(t, &topic) && !t.is_deleted());
        reply(
            out,
            &protocol::encode_ack(request_id, name, Acked::Done, SystemTime::now()),
        );
    }

    /// Read no further message: one waits for awaited publishes, or too
    /// many are awaited.
    pub fn blocks_reading(&self) -> bool {
        self.deferred.is_some() || self.awaiting.len() >= MAX_AWAITING
    }

    /// The backplane carried out the oldest publish it was asked for: the
    /// replies now due are written, and a deferred message is taken up once
    /// no publish is awaited.
    pub fn on_outcome(&mut self, ctx: &mut WorkerCtx, outcome: Outcome, out: &mut Output) {
        if let Some(awaited) = self
            .awaiting
            .iter_mut()
            .find(|a| matches!(a.answer, Answer::Due))
        {
            awaited.answer = Answer::Outcome(outcome);
        }
        while self
            .awaiting
            .front()
            .is_some_and(|a| !matches!(a.answer, Answer::Due))
        {
            let Some(awaited) = self.awaiting.pop_front() else {
                break;
            };
            let request_id = awaited.request_id.as_deref();
            self.reply_to(ctx, awaited.request, request_id, awaited.answer, out);
        }
        if self.awaiting.is_empty() {
            if let Some(message) = self.deferred.take() {
                self.on_message(ctx, *message, out);
            }
        }
    }

    /// Answers a request in turn, once its answer is known.
    fn reply_to(
        &mut self,
        ctx: &mut WorkerCtx,
        request: AwaitedRequest,
        request_id: Option<&str>,
        answer: Answer,
        out: &mut Output,
    ) {
        let outcome = match (answer, &request) {
            (Answer::Outcome(outcome), _) => outcome,
            (Answer::Refused(code, why), request) => {
                return reply_error(out, code, why, request_id, Some(request.topic()))
            }
            (Answer::Due, _) => return,
        };
        match (request, outcome) {
            (AwaitedRequest::Publish { topic }, outcome) => {
                reply_to_publish(out, &topic, request_id, outcome)
            }
            (AwaitedRequest::Resume { topic, seq, epoch }, Outcome::LastSeq(last)) => {
                // Beyond what the backplane holds: not recovered, as on a
                // single broker. Else what follows `seq` comes once it is
                // applied here.
                let replay = if seq > last {
                    Replay::Since { seq, epoch: &epoch }
                } else {
                    Replay::SinceAhead { seq, epoch: &epoch }
                };
                self.join(ctx, topic, replay, request_id, out);
            }
            (AwaitedRequest::Resume { topic, .. }, Outcome::Unavailable(why)) => reply_error(
                out,
                ErrorCode::Unavailable,
                why,
                request_id,
                Some(topic.name()),
            ),
            (AwaitedRequest::Resume { topic, .. }, _) => {
                reply_topic_not_found(out, topic.name(), request_id)
            }
        }
    }

    /// A resume waits for the backplane: every request after it waits too.
    fn awaits_resume(&self) -> bool {
        self.awaiting
            .iter()
            .any(|a| matches!(a.request, AwaitedRequest::Resume { .. }))
    }

    /// The event queue, once the session has subscribed.
    pub fn queue(&self) -> Option<&Arc<SubscriberQueue>> {
        self.queue.as_ref()
    }

    /// If a publisher found the queue full: drops what is queued, leaves
    /// every topic and puts the `SLOW_CONSUMER` error in the output.
    /// True if so; the connection then closes with 1008.
    pub fn cut_if_slow(&mut self, ctx: &WorkerCtx, out: &mut Output) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        if !queue.is_slow() {
            return false;
        }
        queue.clear();
        for topic in self.topics.drain(..) {
            topic.unsubscribe(queue);
        }
        let limit = ctx.shared.config.subscriber_queue_size;
        reply_error(
            out,
            ErrorCode::SlowConsumer,
            &format!("more than {limit} events were waiting to be read; the connection is closed"),
            None,
            None,
        );
        true
    }

    /// Drops the events still queued (the drain deadline passed).
    pub fn drop_queued(&self) {
        if let Some(queue) = &self.queue {
            queue.clear();
        }
    }

    /// Shutdown: no more events; `info server_shutdown` in the output.
    pub fn shut_down(&mut self, out: &mut Output) {
        if let Some(queue) = &self.queue {
            queue.close();
        }
        reply(
            out,
            &protocol::encode_info("server_shutdown", None, SystemTime::now()),
        );
    }

    /// The heartbeat's `info ping`.
    pub fn heartbeat(&self, out: &mut Output) {
        append_text_frame(
            out.buffer(),
            &protocol::encode_info("ping", None, SystemTime::now()),
        );
    }

    /// The connection is gone: no more events, every topic forgets it,
    /// and so does the broker's list of users.
    pub fn leave_all(&mut self, ctx: &WorkerCtx) {
        if let Some(sub) = self.credentials.access().sub() {
            ctx.shared.broker.users.leave(sub, &ctx.mailbox, self.key);
        }
        if let Some(queue) = &self.queue {
            queue.close();
            for topic in self.topics.drain(..) {
                topic.unsubscribe(queue);
            }
        }
    }
}

/// The Autobahn echo session: the message goes back unchanged, through the
/// same output and write path as every other frame.
#[cfg(feature = "autobahn")]
fn echo(message: Message, out: &mut Output) {
    use crate::ws::frame::append_data_frame;
    use tungstenite::protocol::frame::coding::Data;
    out.messages += 1;
    match message {
        Message::Text(text) => append_data_frame(out.buffer(), Data::Text, text.as_bytes()),
        Message::Binary(bytes) => append_data_frame(out.buffer(), Data::Binary, &bytes),
        _ => {}
    }
}
