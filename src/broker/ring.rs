//! The per-topic replay ring: the last N event frames of a topic, oldest
//! first, with their `seq`. It holds shared frames, so keeping a message
//! for replay costs a pointer, not a copy.
//!
//! Frames are pushed with consecutive `seq`s, so the ring knows every
//! frame's `seq` from its newest one: it can answer `last_n` replay,
//! resume after a `seq` (and whether it still holds everything after it),
//! and history reads.

use crate::ws::frame::SharedFrame;
use std::collections::VecDeque;

pub struct ReplayRing {
    frames: VecDeque<SharedFrame>,
    capacity: usize,
    /// The `seq` of the newest frame (0 before the first).
    newest_seq: u64,
}

impl ReplayRing {
    /// A ring that keeps at most `capacity` frames. Storage grows as
    /// messages arrive, so an idle topic costs nothing.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a replay ring holds at least one message");
        ReplayRing {
            frames: VecDeque::new(),
            capacity,
            newest_seq: 0,
        }
    }

    /// Keeps `frame`, the event of `seq` (the newest `seq` + 1),
    /// forgetting the oldest one when full.
    pub fn push(&mut self, seq: u64, frame: SharedFrame) {
        debug_assert!(
            self.frames.is_empty() || seq == self.newest_seq + 1,
            "ring seqs are consecutive"
        );
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
        self.newest_seq = seq;
    }

    /// The `min(n, held)` most recent frames, oldest first.
    pub fn last(&self, n: usize) -> Vec<SharedFrame> {
        let skip = self.frames.len().saturating_sub(n);
        self.frames.iter().skip(skip).cloned().collect()
    }

    /// True if the ring holds every frame after `seq` up to the newest (or
    /// there is none): a subscriber that saw `seq` can resume from here.
    pub fn holds_after(&self, seq: u64) -> bool {
        seq >= self.newest_seq || seq + 1 >= self.oldest_seq()
    }

    /// The held frames with a `seq` above `seq`, oldest first, at most
    /// `limit`; with their `seq`s.
    pub fn after(&self, seq: u64, limit: usize) -> impl Iterator<Item = (u64, &SharedFrame)> {
        let oldest = self.oldest_seq();
        let skip = seq.saturating_add(1).saturating_sub(oldest);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.frames
            .iter()
            .enumerate()
            .skip(skip)
            .take(limit)
            .map(move |(i, frame)| (oldest + i as u64, frame))
    }

    /// The `seq` of the oldest frame held (newest + 1 when empty).
    fn oldest_seq(&self) -> u64 {
        self.newest_seq + 1 - self.frames.len() as u64
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn clear(&mut self) {
        self.frames = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(n: u8) -> SharedFrame {
        Arc::new(vec![n])
    }

    fn bytes(frames: Vec<SharedFrame>) -> Vec<u8> {
        frames.iter().map(|f| f[0]).collect()
    }

    fn ring_of(capacity: usize, published: u8) -> ReplayRing {
        let mut ring = ReplayRing::new(capacity);
        for n in 1..=published {
            ring.push(u64::from(n), frame(n));
        }
        ring
    }

    fn seqs_after(ring: &ReplayRing, seq: u64, limit: usize) -> Vec<u64> {
        ring.after(seq, limit)
            .map(|(s, f)| {
                assert_eq!(u64::from(f[0]), s, "a frame's seq");
                s
            })
            .collect()
    }

    #[test]
    fn keeps_the_most_recent_oldest_first() {
        let mut ring = ring_of(3, 0);
        assert!(ring.is_empty());
        assert_eq!(bytes(ring.last(5)), Vec::<u8>::new());
        for n in 1..=5 {
            ring.push(u64::from(n), frame(n));
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(bytes(ring.last(0)), Vec::<u8>::new());
        assert_eq!(bytes(ring.last(1)), vec![5]);
        assert_eq!(bytes(ring.last(2)), vec![4, 5]);
        assert_eq!(bytes(ring.last(3)), vec![3, 4, 5]);
        assert_eq!(bytes(ring.last(usize::MAX)), vec![3, 4, 5]);
        ring.clear();
        assert!(ring.is_empty());
    }

    #[test]
    fn a_ring_of_one_keeps_the_last() {
        let ring = ring_of(1, 2);
        assert_eq!(bytes(ring.last(10)), vec![2]);
    }

    #[test]
    fn resume_is_possible_while_the_ring_holds_the_next_seq() {
        // Holds 3, 4, 5.
        let ring = ring_of(3, 5);
        assert!(!ring.holds_after(0));
        assert!(!ring.holds_after(1));
        assert!(ring.holds_after(2), "3 is the oldest held");
        assert!(ring.holds_after(4));
        assert!(ring.holds_after(5), "nothing missed");
        assert!(ring.holds_after(9), "beyond the newest: nothing to replay");
        let empty = ring_of(3, 0);
        assert!(empty.holds_after(0));
    }

    #[test]
    fn after_gives_the_held_frames_above_a_seq() {
        let ring = ring_of(3, 5);
        assert_eq!(seqs_after(&ring, 0, 10), vec![3, 4, 5]);
        assert_eq!(seqs_after(&ring, 2, 10), vec![3, 4, 5]);
        assert_eq!(seqs_after(&ring, 3, 10), vec![4, 5]);
        assert_eq!(seqs_after(&ring, 3, 1), vec![4]);
        assert_eq!(seqs_after(&ring, 5, 10), Vec::<u64>::new());
        assert_eq!(seqs_after(&ring, u64::MAX, 10), Vec::<u64>::new());
        assert_eq!(seqs_after(&ring, 0, 0), Vec::<u64>::new());
    }
}
