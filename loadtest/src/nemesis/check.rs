//! The nemesis checker: given every publish attempt and every subscriber's
//! history, proves per subscriber and topic, in each epoch, that nothing
//! was duplicated, reordered or skipped without being announced
//! (`recovered: false`, `topic_reset`), that every acked message reached
//! every subscriber that was subscribed in its epoch (unless a gap was
//! announced for it) under its own `seq`, and that nothing delivered was
//! never published. Pure: it must not touch sockets, processes or clocks.

use super::history::{Entry, Outcome, Publish, Subscriber};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// At most this many violations are described; all are counted.
const DESCRIBED: usize = 20;

/// The checker's figures and the violations it found.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    pub published: u64,
    pub acked: u64,
    pub unknown_outcome: u64,
    /// Acked messages times the subscribers that had to get each one.
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reorderings: u64,
    pub unannounced_gaps: u64,
    /// Delivered ids that no publisher ever sent.
    pub unpublished: u64,
    /// A delivered id under another `seq` than its ack's, or one
    /// `(epoch, seq)` carrying different ids for different subscribers.
    pub mismatched: u64,
    /// A `recovered: true` resume that was not a faithful continuation.
    pub bad_resumes: u64,
    pub resumes: u64,
    pub recovered_true: u64,
    pub recovered_false: u64,
    pub topic_resets: u64,
    /// Acked messages a subscriber did not get because a gap was
    /// announced to it.
    pub announced_missed: u64,
    pub violations: u64,
    pub described: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations == 0
    }

    fn violation(&mut self, text: String) {
        self.violations += 1;
        if self.described.len() < DESCRIBED {
            self.described.push(text);
        }
    }
}

/// A span of `seq`s announced as missed, in one epoch (both ends included).
#[derive(Debug, Clone)]
struct Gap {
    epoch: String,
    from: u64,
    to: u64,
}

/// What one subscriber's history says, once walked.
struct Walked {
    /// Each epoch it lived in, with the last `seq` before its coverage.
    epochs: Vec<(String, u64)>,
    /// Delivered ids.
    ids: HashSet<String>,
    gaps: Vec<Gap>,
}

impl Walked {
    fn announced(&self, epoch: &str, seq: u64) -> bool {
        self.gaps
            .iter()
            .any(|g| g.epoch == epoch && (g.from..=g.to).contains(&seq))
    }

    fn covers(&self, epoch: &str, seq: u64) -> bool {
        self.epochs
            .iter()
            .any(|(e, after)| e == epoch && seq > *after)
    }
}

/// Checks a run.
pub fn check(publishes: &[Publish], subscribers: &[Subscriber]) -> Verdict {
    let mut verdict = Verdict::default();
    // (topic, id) -> acked seq, or None for an unknown outcome.
    let mut sent: HashMap<(&str, &str), Option<u64>> = HashMap::new();
    for publish in publishes {
        verdict.published += 1;
        let seq = match publish.outcome {
            Outcome::Acked(seq) => {
                verdict.acked += 1;
                Some(seq)
            }
            Outcome::Unknown => {
                verdict.unknown_outcome += 1;
                None
            }
        };
        sent.insert((&publish.topic, &publish.id), seq);
    }
    // Where each id was delivered, and what each position carried.
    let mut placed: HashMap<(&str, &str), (String, u64)> = HashMap::new();
    let mut carried: HashMap<(&str, String, u64), String> = HashMap::new();
    let mut walked = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let w = walk(subscriber, &mut verdict);
        for (epoch, seq, id) in deliveries(subscriber) {
            verdict.delivered += 1;
            let topic = subscriber.topic.as_str();
            match sent.get(&(topic, id)) {
                None => verdict.violation(format!(
                    "{}: {topic} seq {seq} carried id {id:?}, which nobody published",
                    subscriber.name
                )),
                Some(Some(acked)) if *acked != seq => verdict.violation(format!(
                    "{}: {topic} id {id:?} delivered as seq {seq}, acked as seq {acked}",
                    subscriber.name
                )),
                Some(_) => {}
            }
            if let Some(other) = carried.insert((topic, epoch.clone(), seq), id.to_string()) {
                if other != id {
                    verdict.mismatched += 1;
                    verdict.violation(format!(
                        "{}: {topic} epoch {epoch} seq {seq} carried {id:?}, elsewhere {other:?}",
                        subscriber.name
                    ));
                }
            }
            placed.insert((topic, id), (epoch, seq));
        }
        walked.push(w);
    }
    for publish in publishes {
        let Outcome::Acked(seq) = publish.outcome else {
            continue;
        };
        let key = (publish.topic.as_str(), publish.id.as_str());
        for (subscriber, w) in subscribers.iter().zip(&walked) {
            if subscriber.topic != publish.topic {
                continue;
            }
            // Never delivered to anyone: its epoch is the subscriber's
            // first, where its coverage starts.
            let epoch = match placed.get(&key) {
                Some((epoch, _)) => epoch.as_str(),
                None => match w.epochs.first() {
                    Some((epoch, _)) => epoch.as_str(),
                    None => continue,
                },
            };
            if !w.covers(epoch, seq) {
                continue;
            }
            verdict.expected_deliveries += 1;
            if w.ids.contains(&publish.id) {
                continue;
            }
            if w.announced(epoch, seq) {
                verdict.announced_missed += 1;
            } else {
                verdict.lost += 1;
                verdict.violation(format!(
                    "{}: acked {} seq {seq} (id {:?}) never delivered, no gap announced",
                    subscriber.name, publish.topic, publish.id
                ));
            }
        }
    }
    verdict
}

/// Each event of a history with the epoch it was delivered in.
fn deliveries(subscriber: &Subscriber) -> Vec<(String, u64, &str)> {
    let mut epoch = String::new();
    let mut out = Vec::new();
    for entry in &subscriber.entries {
        match entry {
            Entry::Subscribed { epoch: e, .. } | Entry::Reset { epoch: e, .. } => epoch = e.clone(),
            Entry::Event { seq, id } => out.push((epoch.clone(), *seq, id.as_str())),
        }
    }
    out
}

/// Walks one history: order, duplicates, gaps and resumes; collects its
/// coverage and announced gaps.
fn walk(subscriber: &Subscriber, verdict: &mut Verdict) -> Walked {
    let name = &subscriber.name;
    let mut w = Walked {
        epochs: Vec::new(),
        ids: HashSet::new(),
        gaps: Vec::new(),
    };
    let mut epoch = String::new();
    let mut next = 1;
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    for entry in &subscriber.entries {
        match entry {
            Entry::Subscribed {
                epoch: e,
                last_seq,
                resume: None,
            } => {
                if !w.epochs.is_empty() {
                    verdict.violation(format!("{name}: subscribed twice without resuming"));
                }
                w.epochs.push((e.clone(), *last_seq));
                epoch = e.clone();
                next = last_seq + 1;
            }
            Entry::Subscribed {
                epoch: e,
                last_seq,
                resume: Some(resume),
            } => {
                verdict.resumes += 1;
                if resume.recovered {
                    verdict.recovered_true += 1;
                    if resume.epoch != epoch || resume.since_seq + 1 != next || *e != epoch {
                        verdict.bad_resumes += 1;
                        verdict.violation(format!(
                            "{name}: resume from {} in {} acked recovered in {e}, \
                             but it had seen up to {} in {epoch}",
                            resume.since_seq,
                            resume.epoch,
                            next - 1
                        ));
                    }
                } else {
                    verdict.recovered_false += 1;
                    announce(&mut w, &mut epoch, &mut next, e, *last_seq);
                }
            }
            Entry::Reset { epoch: e, last_seq } => {
                verdict.topic_resets += 1;
                announce(&mut w, &mut epoch, &mut next, e, *last_seq);
            }
            Entry::Event { seq, id } => {
                if !seen.insert((epoch.clone(), *seq)) || !w.ids.insert(id.clone()) {
                    verdict.duplicates += 1;
                    verdict.violation(format!(
                        "{name}: {} seq {seq} (id {id:?}) delivered again",
                        subscriber.topic
                    ));
                } else if *seq < next {
                    verdict.reorderings += 1;
                    verdict.violation(format!(
                        "{name}: {} seq {seq} came after {}",
                        subscriber.topic,
                        next - 1
                    ));
                } else {
                    if *seq > next {
                        verdict.unannounced_gaps += 1;
                        verdict.violation(format!(
                            "{name}: {} jumped from {} to {seq}, no gap announced",
                            subscriber.topic,
                            next - 1
                        ));
                    }
                    next = seq + 1;
                }
            }
        }
    }
    w
}

/// A gap announced at `next` (a resume that did not recover, or a
/// `topic_reset`): the stream goes on in `new_epoch` after `last_seq`.
fn announce(w: &mut Walked, epoch: &mut String, next: &mut u64, new_epoch: &str, last_seq: u64) {
    if new_epoch == epoch.as_str() {
        if last_seq >= *next {
            w.gaps.push(Gap {
                epoch: epoch.clone(),
                from: *next,
                to: last_seq,
            });
        }
    } else {
        w.gaps.push(Gap {
            epoch: epoch.clone(),
            from: *next,
            to: u64::MAX,
        });
        w.gaps.push(Gap {
            epoch: new_epoch.to_string(),
            from: 1,
            to: last_seq,
        });
        w.epochs.push((new_epoch.to_string(), 0));
        *epoch = new_epoch.to_string();
    }
    *next = last_seq + 1;
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
