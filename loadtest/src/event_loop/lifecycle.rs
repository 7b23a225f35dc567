//! A connection's life on the loop thread: opening and registering it
//! before the run, a resuming subscriber's reconnect (non-blocking connect,
//! then, over TLS, a new session whose handshake goes out with the upgrade
//! request), writing, closing and reaping. It must not parse received
//! bytes (`receive`) or generate publishes (`publish`).

use super::conn::{io_reason, Conn, Handshake, Publisher, Role, Subscriber};
use super::{ConnSpec, LoopPlan, LoopThread};
use crate::connect::{self, Opened, SocketOptions};
use crate::resume::ResumeStream;
use crate::sequence::SequenceCheck;
use mio::{Interest, Token};
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl LoopThread {
    /// Opens one connection (blocking, before the run) and registers it.
    pub(super) fn open(&mut self, plan: &LoopPlan, spec: ConnSpec) {
        let started = Instant::now();
        let opened = match spec {
            ConnSpec::Subscriber {
                id,
                topic,
                node,
                source,
            } => connect::open_subscriber(
                &plan.nodes.endpoints()[node],
                SocketOptions {
                    source,
                    recv_buffer: None,
                },
                &plan.topics[topic],
                id as u64,
                plan.setup_deadline,
            ),
            ConnSpec::Publisher { node, .. } => {
                connect::open_publisher(&plan.nodes.endpoints()[node], plan.setup_deadline)
            }
        };
        let registered = opened.and_then(|opened| self.register(spec, opened).map_err(Into::into));
        match registered {
            Ok(()) => {
                self.tally.connected += 1;
                self.tally
                    .connect_time
                    .saturating_record(started.elapsed().as_nanos() as u64);
                if let ConnSpec::Subscriber { topic, .. } = spec {
                    self.shared.live_subscribers[topic].fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(error) => {
                self.tally.record_connect_failure(&error);
                if let ConnSpec::Publisher { id, .. } = spec {
                    self.shared.publishers[id]
                        .finished
                        .store(true, Ordering::SeqCst);
                }
            }
        }
    }

    fn register(&mut self, spec: ConnSpec, opened: Opened) -> io::Result<()> {
        let Opened {
            stream,
            tls,
            unread,
            nats,
            subscribe_ack,
        } = opened;
        if let Some(tls) = &tls {
            self.tally.record_tls_session(tls);
        }
        let resume_stream = match (spec, &self.resume) {
            (ConnSpec::Subscriber { id, .. }, Some(plan)) => Some(
                ResumeStream::new(&subscribe_ack.unwrap_or_default(), plan, id as u64)
                    .map_err(io::Error::other)?,
            ),
            _ => None,
        };
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let token = Token(self.conns.len());
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let role = match spec {
            ConnSpec::Subscriber {
                id, topic, node, ..
            } => {
                let subscriber = Subscriber {
                    id,
                    topic,
                    node,
                    touched: false,
                    checks: vec![SequenceCheck::default(); self.publishers],
                    stream: resume_stream,
                };
                subscriber.publish_progress(&self.shared, self.topics.len());
                Role::Subscriber(subscriber)
            }
            ConnSpec::Publisher { id, .. } => {
                self.publisher_conns.push(self.conns.len());
                Role::Publisher(Publisher {
                    id,
                    generated: 0,
                    counters: vec![0; self.topics.len()],
                    published_measured: 0,
                    expected_measured: 0,
                    oldest_undelivered: 0,
                    finished: false,
                })
            }
        };
        self.conns.push(Some(Conn {
            stream,
            tls,
            role,
            carry: unread,
            fragments: Vec::new(),
            in_fragmented_message: false,
            nats,
            out: Vec::new(),
            out_written: 0,
            open: true,
            handshake: None,
        }));
        Ok(())
    }

    /// Drops a resuming subscriber's connection (abruptly or cleanly, as
    /// its stream decides) and starts a new one, which `write_connection`
    /// and `read_connection` take through the upgrade and the resume.
    pub(super) fn reconnect(&mut self, index: usize) {
        let now_ns = self.shared.now_ns();
        let Some(conn) = self.conns[index].as_mut().filter(|conn| conn.open) else {
            return;
        };
        let Role::Subscriber(Subscriber {
            stream: Some(stream),
            node,
            ..
        }) = &mut conn.role
        else {
            return;
        };
        // Resumes on the next node (the same one, against one server).
        *node = self.nodes.next_node(*node);
        let next = *node;
        let endpoint = &self.nodes.endpoints()[next];
        if stream.reconnect(now_ns, &mut self.tally.resume) {
            // SO_LINGER 0: closing the socket resets the connection.
            let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
        } else {
            conn.send_close(1000);
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
        // Over TLS, a new session: its handshake runs on this loop as
        // the upgrade request is written (see `write_connection`).
        let connected = connect::start_in_loop(endpoint, self.poll.registry(), Token(index));
        match connected {
            Ok((stream, tls)) => {
                // The old socket is closed here.
                conn.stream = stream;
                conn.tls = tls.map(Box::new);
                conn.carry.clear();
                conn.fragments.clear();
                conn.in_fragmented_message = false;
                conn.out.clear();
                conn.out_written = 0;
                conn.handshake = Some(Handshake::Connecting { node: next });
            }
            Err(e) => self.close(index, format!("reconnect: {}", io_reason(&e))),
        }
    }

    pub(super) fn write_connection(&mut self, index: usize) {
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if !conn.open {
            return;
        }
        if let Some(Handshake::Connecting { node }) = conn.handshake {
            match conn.connected() {
                Ok(false) => return,
                Ok(true) => {
                    let (request, key) = connect::upgrade_request(&self.nodes.endpoints()[node]);
                    conn.out.extend_from_slice(&request);
                    conn.handshake = Some(Handshake::Upgrading { key });
                }
                Err(e) => {
                    self.close(index, format!("reconnect: {}", io_reason(&e)));
                    return;
                }
            }
        }
        if let Err(e) = conn.flush() {
            self.close(index, io_reason(&e));
        }
    }

    /// Marks a connection lost; it is deregistered and dropped in `reap`.
    pub(super) fn close(&mut self, index: usize, reason: String) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        if !conn.open {
            return;
        }
        conn.open = false;
        match &mut conn.role {
            Role::Subscriber(subscriber) => {
                self.shared.live_subscribers[subscriber.topic].fetch_sub(1, Ordering::SeqCst);
                // A lost subscriber no longer holds back any window.
                for publisher in 0..self.publishers {
                    self.shared
                        .progress(subscriber.id, publisher)
                        .store(u64::MAX, Ordering::SeqCst);
                }
                self.wake_blocked_threads();
            }
            Role::Publisher(publisher) => {
                publisher.finished = true;
                self.shared.publishers[publisher.id]
                    .finished
                    .store(true, Ordering::SeqCst);
            }
        }
        self.tally.record_disconnect(reason);
    }

    pub(super) fn reap(&mut self) {
        for slot in &mut self.conns {
            if slot.as_ref().is_some_and(|conn| !conn.open) {
                if let Some(mut conn) = slot.take() {
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                }
            }
        }
    }
}
