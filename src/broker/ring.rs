//! The per-topic replay ring: the last N event frames of a topic, oldest
//! first. It holds shared frames, so keeping a message for replay costs a
//! pointer, not a copy.

use crate::ws::frame::SharedFrame;
use std::collections::VecDeque;

pub struct ReplayRing {
    frames: VecDeque<SharedFrame>,
    capacity: usize,
}

impl ReplayRing {
    /// A ring that keeps at most `capacity` frames. Storage grows as
    /// messages arrive, so an idle topic costs nothing.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a replay ring holds at least one message");
        ReplayRing {
            frames: VecDeque::new(),
            capacity,
        }
    }

    /// Keeps `frame`, forgetting the oldest one when full.
    pub fn push(&mut self, frame: SharedFrame) {
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
    }

    /// The `min(n, held)` most recent frames, oldest first.
    pub fn last(&self, n: usize) -> Vec<SharedFrame> {
        let skip = self.frames.len().saturating_sub(n);
        self.frames.iter().skip(skip).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
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

    #[test]
    fn keeps_the_most_recent_oldest_first() {
        let mut ring = ReplayRing::new(3);
        assert!(ring.is_empty());
        assert_eq!(bytes(ring.last(5)), Vec::<u8>::new());
        for n in 1..=5 {
            ring.push(frame(n));
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
        let mut ring = ReplayRing::new(1);
        ring.push(frame(1));
        ring.push(frame(2));
        assert_eq!(bytes(ring.last(10)), vec![2]);
    }
}
