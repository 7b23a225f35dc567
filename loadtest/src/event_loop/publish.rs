//! Publishing and pacing: generating each publisher's messages when they
//! are due (open loop) or the window allows (closed loop), stamping their
//! probes, counting what the measured window expects, and arming the
//! `timerfd` for the next send or resume drop. It must not read from
//! sockets; it writes only through `LoopThread::write_connection`.

use super::conn::{Publisher, Role, OUT_HIGH_WATER};
use super::{LoopThread, Pacing, Shared, Window};
use crate::probe::Probe;
use crate::tally::Tally;
use crate::wire::PublishEncoder;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl LoopThread {
    /// Generates what each publisher may send now, and writes it.
    pub(super) fn publish(&mut self, now_ns: u64) {
        let closed_loop = matches!(self.pacing, Pacing::ClosedLoop { .. });
        let blocked_flag = &self.shared.threads[self.index].window_blocked;
        if closed_loop {
            // Raised before the publishers look at their delivery counts,
            // so that a thread adding deliveries after that look sees it
            // and wakes this one: no wake is lost.
            blocked_flag.store(true, Ordering::SeqCst);
        }
        let mut blocked = false;
        for i in 0..self.publisher_conns.len() {
            let index = self.publisher_conns[i];
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            let Role::Publisher(publisher) = &mut conn.role else {
                continue;
            };
            if !conn.open || publisher.finished {
                continue;
            }
            let env = PublishEnv {
                shared: &self.shared,
                window: &self.window,
                pacing: self.pacing,
                topics: &self.topics,
                publishers: self.publishers,
            };
            blocked |= env.generate(
                publisher,
                &mut conn.out,
                conn.out_written,
                &mut self.encoder,
                &mut self.tally,
                now_ns,
            );
            self.write_connection(index);
        }
        if closed_loop && !blocked {
            self.shared.threads[self.index]
                .window_blocked
                .store(false, Ordering::SeqCst);
        }
    }

    /// Arms the timer for the next open-loop send (or `resume` drop) due
    /// on this thread.
    pub(super) fn arm_timer(&mut self, now_ns: u64) -> io::Result<()> {
        let Pacing::OpenLoop { rate } = self.pacing else {
            return Ok(());
        };
        let next_due = self
            .publisher_conns
            .iter()
            .filter_map(|&index| self.conns[index].as_ref())
            .filter(|conn| conn.open && conn.pending_out() < OUT_HIGH_WATER)
            .filter_map(|conn| match &conn.role {
                Role::Publisher(p) if !p.finished => Some(due_ns(
                    &self.window,
                    rate,
                    self.publishers,
                    p.id,
                    p.generated,
                )),
                _ => None,
            })
            .chain(self.drops.next_ns())
            .min();
        if next_due == self.timer_due {
            return Ok(());
        }
        match next_due {
            Some(due) => {
                // A zero expiry would disarm the timer: wait at least 1 ns.
                let wait = Duration::from_nanos(due.saturating_sub(now_ns).max(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
            None => self.timer.unset()?,
        }
        self.timer_due = next_due;
        Ok(())
    }
}

/// What generating publishes needs besides the publisher itself.
struct PublishEnv<'a> {
    shared: &'a Shared,
    window: &'a Window,
    pacing: Pacing,
    topics: &'a [String],
    publishers: usize,
}

impl PublishEnv<'_> {
    /// Appends the publisher's due (open loop) or allowed (closed loop)
    /// messages to `out`. Returns true if the closed-loop window is full.
    fn generate(
        &self,
        publisher: &mut Publisher,
        out: &mut Vec<u8>,
        out_written: usize,
        encoder: &mut PublishEncoder,
        tally: &mut Tally,
        now_ns: u64,
    ) -> bool {
        let counters = &self.shared.publishers[publisher.id];
        let mut blocked = false;
        while out.len() - out_written < OUT_HIGH_WATER {
            let sent_ns = match self.pacing {
                Pacing::OpenLoop { rate } => {
                    let due = due_ns(
                        self.window,
                        rate,
                        self.publishers,
                        publisher.id,
                        publisher.generated,
                    );
                    if due >= self.window.end_ns {
                        publisher.finished = true;
                        break;
                    }
                    if due > now_ns {
                        break;
                    }
                    tally.send_lag.saturating_record(now_ns - due);
                    due
                }
                Pacing::ClosedLoop { window } => {
                    if now_ns >= self.window.end_ns {
                        publisher.finished = true;
                        break;
                    }
                    if publisher.generated >= publisher.oldest_undelivered.saturating_add(window) {
                        publisher.oldest_undelivered = self.shared.oldest_undelivered(publisher.id);
                        if publisher.generated
                            >= publisher.oldest_undelivered.saturating_add(window)
                        {
                            blocked = true;
                            break;
                        }
                    }
                    now_ns
                }
            };
            let topic = (publisher.id + publisher.generated as usize) % self.topics.len();
            let counter = publisher.counters[topic];
            publisher.counters[topic] += 1;
            publisher.generated += 1;
            encoder.append(
                out,
                &self.topics[topic],
                &Probe {
                    sent_ns,
                    publisher: publisher.id as u32,
                    counter,
                },
            );
            let live = self.shared.live_subscribers[topic].load(Ordering::Relaxed);
            if self.window.measures(sent_ns) {
                publisher.published_measured += 1;
                publisher.expected_measured += live;
            }
        }
        counters.sent.store(publisher.generated, Ordering::Relaxed);
        counters
            .published_measured
            .store(publisher.published_measured, Ordering::Relaxed);
        counters
            .expected_measured
            .store(publisher.expected_measured, Ordering::SeqCst);
        if publisher.finished {
            counters.finished.store(true, Ordering::SeqCst);
        }
        blocked
    }
}

/// The intended send time of an open-loop publisher's message number `k`.
/// Publishers are spread evenly across each interval.
fn due_ns(window: &Window, rate: f64, publishers: usize, id: usize, k: u64) -> u64 {
    let interval_ns = publishers as f64 * 1e9 / rate;
    let phase = id as f64 / publishers as f64;
    window.start_ns + ((k as f64 + phase) * interval_ns) as u64
}

/// How many messages an open-loop publisher's schedule holds: the first
/// `k` whose send time is not before the end of the window.
pub(super) fn planned_messages(window: &Window, rate: f64, publishers: usize, id: usize) -> u64 {
    let interval_ns = publishers as f64 * 1e9 / rate;
    let estimate = ((window.end_ns - window.start_ns) as f64 / interval_ns).max(0.0) as u64;
    let mut k = estimate;
    while k > 0 && due_ns(window, rate, publishers, id, k - 1) >= window.end_ns {
        k -= 1;
    }
    while due_ns(window, rate, publishers, id, k) < window.end_ns {
        k += 1;
    }
    k
}
