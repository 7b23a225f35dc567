//! The `resume` scenario's subscriber side, without sockets: what a
//! subscriber that drops and reconnects remembers about its topic (the
//! epoch of its first subscribe ack, the last `seq` it saw), how each
//! event's `seq` fits that stream across reconnects, when and how it drops
//! next (seeded), what a loop thread counts, and the run's summary and
//! verdict.

use crate::report::Percentiles;
use crate::sequence::{Arrival, SequenceCheck};
use crate::tally::new_histogram;
use crate::wire::{self, ResumeFrom};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// How the subscribers drop and resume.
#[derive(Debug, Clone, Copy)]
pub struct ResumePlan {
    /// Mean time a connection lives, from its subscribe ack to its drop;
    /// each one's is uniform in [0.5, 1.5] times this.
    pub reconnect_every: Duration,
    /// Seeds every subscriber's drop times and kinds.
    pub seed: u64,
}

/// One subscriber's stream of its topic, across its connections.
#[derive(Debug)]
pub struct ResumeStream {
    /// From the first subscribe ack; every resume names it.
    epoch: String,
    /// By `seq`: expects one past the last seen.
    check: SequenceCheck,
    /// The current connection's subscribe ack's `last_seq`: events up to
    /// it are replayed, later ones live.
    replay_until: u64,
    /// A resume subscribe was sent and its ack has not arrived.
    awaiting_ack: bool,
    /// When the current connection replaced the dropped one (ns).
    reconnected_ns: u64,
    /// No event has arrived since the last reconnect.
    first_event_pending: bool,
    /// No duplicate, gap or late event, and nothing skipped by a resume
    /// that did not recover.
    clean: bool,
    rng: SplitMix64,
    mean_ns: f64,
}

impl ResumeStream {
    /// The stream of subscriber `subscriber`, from its first subscribe ack.
    pub fn new(ack: &[u8], plan: &ResumePlan, subscriber: u64) -> Result<ResumeStream, String> {
        let ack = read_ack(ack)?;
        Ok(ResumeStream {
            epoch: String::from_utf8_lossy(ack.epoch).into_owned(),
            check: SequenceCheck::starting_at(ack.last_seq + 1),
            replay_until: ack.last_seq,
            awaiting_ack: false,
            reconnected_ns: 0,
            first_event_pending: false,
            clean: true,
            rng: SplitMix64::new(plan.seed, subscriber),
            mean_ns: plan.reconnect_every.as_nanos() as f64,
        })
    }

    /// The last `seq` seen in order (the first ack's `last_seq` before any).
    pub fn last_seen(&self) -> u64 {
        self.check.next_expected() - 1
    }

    /// When to drop the connection next, counting from `now_ns`.
    pub fn next_drop_ns(&mut self, now_ns: u64) -> u64 {
        now_ns + (self.mean_ns * (0.5 + self.rng.unit())) as u64
    }

    /// The connection is dropped at `now_ns` and a new one opened. Returns
    /// true to drop it abruptly (a reset, no close frame), false for a
    /// clean close (a close frame first); each about half the time.
    pub fn reconnect(&mut self, now_ns: u64, tally: &mut ResumeTally) -> bool {
        self.awaiting_ack = true;
        self.reconnected_ns = now_ns;
        self.first_event_pending = true;
        // Counted from the coin, not from the bool it gives: rustc 1.95
        // drops `u64::from(abrupt)` once this is inlined next to a branch
        // on `abrupt` (rust-lang/rust#158206, SimplifyComparisonIntegral).
        let coin = self.rng.next_u64() & 1;
        tally.reconnects += 1;
        tally.abrupt_drops += coin;
        coin == 1
    }

    /// Appends the new connection's subscribe: from the last `seq` seen,
    /// in the first ack's epoch.
    pub fn append_request(&self, out: &mut Vec<u8>, topic: &str, subscriber: u64) {
        let from = ResumeFrom {
            since_seq: self.last_seen(),
            epoch: &self.epoch,
        };
        wire::append_subscribe_json(out, topic, subscriber, Some(from));
    }

    /// An ack arrived on the current connection at `now_ns`. Returns true
    /// if it was the awaited resume ack (the connection is resumed), false
    /// if none was awaited.
    pub fn acked(
        &mut self,
        ack: &[u8],
        now_ns: u64,
        tally: &mut ResumeTally,
    ) -> Result<bool, String> {
        if !self.awaiting_ack {
            return Ok(false);
        }
        let ack = read_ack(ack)?;
        self.awaiting_ack = false;
        tally
            .resume_ack
            .saturating_record(now_ns.saturating_sub(self.reconnected_ns));
        if ack.recovered == Some(true) {
            tally.recovered += 1;
        } else {
            // Live events follow from last_seq + 1: what lies between was
            // missed, and the broker said so.
            tally.not_recovered += 1;
            let missed = self.check.skip_to(ack.last_seq + 1);
            tally.missed += missed;
            self.clean &= missed == 0;
        }
        self.replay_until = ack.last_seq;
        Ok(true)
    }

    /// An event with `seq` arrived at `now_ns`: how it fits the stream.
    pub fn observe(&mut self, seq: u64, now_ns: u64, tally: &mut ResumeTally) -> Arrival {
        let arrival = self.check.observe(seq);
        self.clean &= arrival == Arrival::InOrder;
        if arrival == Arrival::Duplicate {
            return arrival;
        }
        if seq <= self.replay_until {
            tally.replayed += 1;
        } else {
            tally.live += 1;
        }
        if self.first_event_pending {
            self.first_event_pending = false;
            tally
                .first_event
                .saturating_record(now_ns.saturating_sub(self.reconnected_ns));
        }
        arrival
    }

    /// Where the stream of a subscriber of `topic` ended.
    pub fn end(&self, topic: usize) -> StreamEnd {
        StreamEnd {
            topic,
            last_seen: self.last_seen(),
            clean: self.clean,
        }
    }
}

fn read_ack(ack: &[u8]) -> Result<wire::SubscribeAck<'_>, String> {
    wire::subscribe_ack(ack).ok_or_else(|| {
        format!(
            "a subscribe ack without epoch and last_seq (does the broker resume?): {}",
            String::from_utf8_lossy(ack)
        )
    })
}

/// Where one subscriber's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    pub topic: usize,
    pub last_seen: u64,
    /// Every `seq` after the first ack's, up to `last_seen`, exactly once
    /// and in order.
    pub clean: bool,
}

/// What one loop thread's resuming subscribers counted.
#[derive(Debug, Clone)]
pub struct ResumeTally {
    pub reconnects: u64,
    pub abrupt_drops: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    /// Events whose `seq` is at most their connection's ack's `last_seq`.
    pub replayed: u64,
    pub live: u64,
    /// `seq`s skipped by resumes that did not recover.
    pub missed: u64,
    /// From a drop to the new connection's subscribe ack, ns.
    pub resume_ack: Histogram<u64>,
    /// From a drop to the first event on the new connection, ns.
    pub first_event: Histogram<u64>,
    /// Filled in when the thread finishes.
    pub ends: Vec<StreamEnd>,
}

impl Default for ResumeTally {
    fn default() -> Self {
        ResumeTally {
            reconnects: 0,
            abrupt_drops: 0,
            recovered: 0,
            not_recovered: 0,
            replayed: 0,
            live: 0,
            missed: 0,
            resume_ack: new_histogram(),
            first_event: new_histogram(),
            ends: Vec::new(),
        }
    }
}

impl ResumeTally {
    pub fn merge(&mut self, other: ResumeTally) {
        self.reconnects += other.reconnects;
        self.abrupt_drops += other.abrupt_drops;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.replayed += other.replayed;
        self.live += other.live;
        self.missed += other.missed;
        self.resume_ack.add(&other.resume_ack).expect("same bounds");
        self.first_event
            .add(&other.first_event)
            .expect("same bounds");
        self.ends.extend(other.ends);
    }
}

/// The `resume` part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeOutcome {
    pub subscribers: u64,
    pub reconnects: u64,
    pub abrupt_drops: u64,
    pub recovered: u64,
    pub not_recovered: u64,
    pub replayed: u64,
    pub live: u64,
    pub missed: u64,
    /// Subscribers that saw every `seq` of their topic, from their first
    /// ack's `last_seq` to the topic's last, exactly once and in order.
    pub subscribers_complete: u64,
    /// Subscribers whose last `seq` seen is short of their topic's last
    /// (those lost on the way included).
    pub subscribers_short: u64,
    /// Each topic's `last_seq` after the run, as the broker reports it.
    pub topic_last_seq: Vec<u64>,
    pub require_recovery: bool,
    pub resume_ack_us: Percentiles,
    pub first_event_us: Percentiles,
}

impl ResumeOutcome {
    /// `subscribers` resuming subscribers were planned; `topic_last_seq`
    /// is each topic's `last_seq` once the run is over.
    pub fn new(
        tally: &ResumeTally,
        subscribers: u64,
        topic_last_seq: Vec<u64>,
        require_recovery: bool,
    ) -> ResumeOutcome {
        let last = |end: &StreamEnd| topic_last_seq.get(end.topic).copied().unwrap_or(0);
        let complete = tally
            .ends
            .iter()
            .filter(|end| end.clean && end.last_seen == last(end))
            .count() as u64;
        let reached = tally
            .ends
            .iter()
            .filter(|end| end.last_seen >= last(end))
            .count() as u64;
        ResumeOutcome {
            subscribers,
            reconnects: tally.reconnects,
            abrupt_drops: tally.abrupt_drops,
            recovered: tally.recovered,
            not_recovered: tally.not_recovered,
            replayed: tally.replayed,
            live: tally.live,
            missed: tally.missed,
            subscribers_complete: complete,
            subscribers_short: subscribers.saturating_sub(reached),
            topic_last_seq,
            require_recovery,
            resume_ack_us: Percentiles::of(&tally.resume_ack),
            first_event_us: Percentiles::of(&tally.first_event),
        }
    }

    /// Why the run fails on resume's account: no resume at all; a resume
    /// that did not recover, if recovery is required; and a subscriber
    /// that did not see its topic's every `seq` exactly once when every
    /// resume recovered, or (when some did not) that ended short.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.reconnects == 0 {
            failures.push(
                "no subscriber dropped and resumed (lower --reconnect-every or raise --duration)"
                    .to_string(),
            );
        }
        if self.require_recovery && self.not_recovered > 0 {
            failures.push(format!(
                "{} of {} resumes did not recover ({} seqs missed): the broker's ring \
                 (RING_BUFFER_SIZE) is too small for this rate",
                self.not_recovered, self.reconnects, self.missed
            ));
        }
        if self.not_recovered == 0 {
            if self.subscribers_complete < self.subscribers {
                failures.push(format!(
                    "{} of {} subscribers did not see every seq of their topic exactly once",
                    self.subscribers - self.subscribers_complete,
                    self.subscribers
                ));
            }
        } else if self.subscribers_short > 0 {
            failures.push(format!(
                "{} of {} subscribers ended before their topic's last seq",
                self.subscribers_short, self.subscribers
            ));
        }
        failures
    }
}

/// A small seeded generator (SplitMix64): each subscriber has its own, so
/// its drops do not depend on how subscribers are spread over threads
/// (`nemesis` draws its faults and offline spells from it too).
#[derive(Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64, stream: u64) -> SplitMix64 {
        SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: ResumePlan = ResumePlan {
        reconnect_every: Duration::from_millis(100),
        seed: 7,
    };

    fn ack(last_seq: u64, recovered: Option<bool>) -> Vec<u8> {
        let recovered = match recovered {
            Some(r) => format!(",\"recovered\":{r}"),
            None => String::new(),
        };
        format!(
            r#"{{"type":"ack","request_id":"sub","topic":"t","status":"ok","epoch":"E1","last_seq":{last_seq}{recovered},"ts":"x"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_recovered_resume_replays_then_goes_live_with_no_gap() {
        let mut tally = ResumeTally::default();
        let mut stream = ResumeStream::new(&ack(3, None), &PLAN, 0).unwrap();
        assert_eq!(stream.last_seen(), 3);
        for seq in 4..=6 {
            assert_eq!(stream.observe(seq, 10, &mut tally), Arrival::InOrder);
        }
        let abrupt = stream.reconnect(1_000, &mut tally);
        assert_eq!(
            (tally.reconnects, tally.abrupt_drops),
            (1, u64::from(abrupt))
        );
        let mut request = Vec::new();
        stream.append_request(&mut request, "t", 0);
        let request: serde_json::Value = serde_json::from_slice(&request).unwrap();
        assert_eq!(
            (request["since_seq"].as_u64(), request["epoch"].as_str()),
            (Some(6), Some("E1"))
        );
        // 7..=9 were published while it was away.
        assert_eq!(
            stream.acked(&ack(9, Some(true)), 1_400, &mut tally),
            Ok(true)
        );
        for seq in 7..=11 {
            assert_eq!(
                stream.observe(seq, 1_500 + seq, &mut tally),
                Arrival::InOrder
            );
        }
        assert_eq!((tally.replayed, tally.live), (3, 3 + 2));
        assert_eq!(
            (tally.recovered, tally.not_recovered, tally.missed),
            (1, 0, 0)
        );
        assert_eq!(tally.resume_ack.max(), 400);
        assert_eq!(
            tally.first_event.len(),
            1,
            "only the first event after a reconnect"
        );
        assert!(tally.first_event.equivalent(tally.first_event.max(), 507));
        assert_eq!(
            stream.end(2),
            StreamEnd {
                topic: 2,
                last_seen: 11,
                clean: true
            }
        );
        // An ack that is not awaited (no reconnect since) is not the stream's.
        assert_eq!(
            stream.acked(&ack(11, Some(true)), 2_000, &mut tally),
            Ok(false)
        );
        assert_eq!(tally.recovered, 1);
    }

    #[test]
    fn duplicates_gaps_and_late_events_spoil_the_stream() {
        let mut tally = ResumeTally::default();
        let mut stream = ResumeStream::new(&ack(0, None), &PLAN, 1).unwrap();
        assert_eq!(stream.observe(1, 0, &mut tally), Arrival::InOrder);
        assert_eq!(stream.observe(1, 0, &mut tally), Arrival::Duplicate);
        assert!(!stream.end(0).clean, "a duplicate is not exactly once");
        stream.reconnect(0, &mut tally);
        // The broker claims recovery but replays from too far back, then
        // skips one.
        stream.acked(&ack(3, Some(true)), 0, &mut tally).unwrap();
        assert_eq!(stream.observe(1, 0, &mut tally), Arrival::Duplicate);
        assert_eq!(stream.observe(2, 0, &mut tally), Arrival::InOrder);
        assert_eq!(stream.observe(4, 0, &mut tally), Arrival::Gap(1));
        assert_eq!(stream.observe(3, 0, &mut tally), Arrival::Late);
        let end = stream.end(0);
        assert_eq!((end.last_seen, end.clean), (4, false));
        // 1 and 4 live, 2 and 3 replayed; duplicates are neither.
        assert_eq!((tally.replayed, tally.live), (2, 2));
    }

    #[test]
    fn a_resume_that_does_not_recover_skips_what_was_missed_without_a_gap() {
        let mut tally = ResumeTally::default();
        let mut stream = ResumeStream::new(&ack(0, None), &PLAN, 2).unwrap();
        stream.observe(1, 0, &mut tally);
        stream.reconnect(0, &mut tally);
        assert_eq!(
            stream.acked(&ack(250, Some(false)), 5, &mut tally),
            Ok(true)
        );
        assert_eq!(stream.observe(251, 9, &mut tally), Arrival::InOrder);
        assert_eq!((tally.not_recovered, tally.missed, tally.live), (1, 249, 2));
        assert_eq!(
            stream.end(0),
            StreamEnd {
                topic: 0,
                last_seen: 251,
                clean: false
            }
        );
        // Nothing was published while away: nothing missed, still clean.
        let mut stream = ResumeStream::new(&ack(0, None), &PLAN, 3).unwrap();
        stream.reconnect(0, &mut tally);
        stream.acked(&ack(0, Some(false)), 0, &mut tally).unwrap();
        assert!(stream.end(0).clean);
        assert!(
            ResumeStream::new(br#"{"type":"ack","status":"ok"}"#, &PLAN, 0)
                .unwrap_err()
                .contains("without epoch")
        );
    }

    #[test]
    fn drops_are_seeded_spread_around_the_mean_and_of_both_kinds() {
        let drops = |seed: u64, subscriber: u64| {
            let plan = ResumePlan { seed, ..PLAN };
            let mut stream = ResumeStream::new(&ack(0, None), &plan, subscriber).unwrap();
            let mut tally = ResumeTally::default();
            (0..200)
                .map(|_| (stream.next_drop_ns(1_000), stream.reconnect(0, &mut tally)))
                .collect::<Vec<_>>()
        };
        let a = drops(7, 0);
        assert_eq!(a, drops(7, 0), "the same seed, the same drops");
        assert_ne!(a, drops(7, 1), "another subscriber, other drops");
        assert_ne!(a, drops(8, 0), "another seed, other drops");
        let mean_ns = 100_000_000;
        assert!(a
            .iter()
            .all(|&(at, _)| (1_000 + mean_ns / 2..1_000 + mean_ns * 3 / 2).contains(&at)));
        let mean = a.iter().map(|&(at, _)| at - 1_000).sum::<u64>() / a.len() as u64;
        assert!(
            (mean_ns * 9 / 10..mean_ns * 11 / 10).contains(&mean),
            "{mean}"
        );
        let abrupt = a.iter().filter(|&&(_, abrupt)| abrupt).count();
        assert!((60..140).contains(&abrupt), "{abrupt} of 200 abrupt");
    }

    fn outcome(ends: &[StreamEnd], not_recovered: u64, require_recovery: bool) -> ResumeOutcome {
        let tally = ResumeTally {
            reconnects: 10,
            recovered: 10 - not_recovered,
            not_recovered,
            missed: not_recovered * 5,
            ends: ends.to_vec(),
            ..ResumeTally::default()
        };
        ResumeOutcome::new(&tally, 3, vec![100, 50], require_recovery)
    }

    const fn end(topic: usize, last_seen: u64, clean: bool) -> StreamEnd {
        StreamEnd {
            topic,
            last_seen,
            clean,
        }
    }

    #[test]
    fn the_verdict_wants_every_seq_once_when_every_resume_recovered() {
        let all = [end(0, 100, true), end(1, 50, true), end(0, 100, true)];
        let passed = outcome(&all, 0, true);
        assert_eq!(
            (passed.subscribers_complete, passed.subscribers_short),
            (3, 0)
        );
        assert_eq!(passed.failures(), Vec::<String>::new());
        let spoiled = outcome(
            &[end(0, 100, true), end(1, 50, false), end(0, 99, true)],
            0,
            true,
        );
        assert_eq!(
            (spoiled.subscribers_complete, spoiled.subscribers_short),
            (1, 1)
        );
        assert_eq!(
            spoiled.failures(),
            ["2 of 3 subscribers did not see every seq of their topic exactly once"]
        );
        // One subscriber was lost on the way: its end is missing.
        let lost = outcome(&all[..2], 0, true);
        assert_eq!(lost.subscribers_short, 1);
        assert_eq!(lost.failures().len(), 1);
        let mut none = outcome(&all, 0, true);
        none.reconnects = 0;
        assert!(none.failures()[0].starts_with("no subscriber dropped and resumed"));
    }

    #[test]
    fn a_resume_that_did_not_recover_fails_only_when_recovery_is_required() {
        let ends = [end(0, 100, false), end(1, 50, true), end(0, 100, true)];
        assert_eq!(
            outcome(&ends, 2, true).failures(),
            [
                "2 of 10 resumes did not recover (10 seqs missed): the broker's ring \
              (RING_BUFFER_SIZE) is too small for this rate"
            ]
        );
        let tolerated = outcome(&ends, 2, false);
        assert_eq!(tolerated.subscribers_complete, 2);
        assert_eq!(tolerated.failures(), Vec::<String>::new());
        // Still: every subscriber must reach its topic's last seq.
        let short = outcome(
            &[end(0, 100, false), end(1, 49, true), end(0, 100, true)],
            2,
            false,
        );
        assert_eq!(
            short.failures(),
            ["1 of 3 subscribers ended before their topic's last seq"]
        );
    }
}
