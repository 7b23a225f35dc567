//! Deadlines for one worker: mio has no timers, so each connection keeps at
//! most one live entry here (its nearest deadline), and the worker sleeps in
//! `poll` until the earliest one.
//!
//! Entries are never removed early: a connection that moves its deadline
//! pushes a new entry, and the old one is recognised as stale when it comes
//! due (its instant no longer matches the connection's, or the slot now holds
//! another generation).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerEntry {
    pub at: Instant,
    pub slot: usize,
    pub generation: u64,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<TimerEntry>>,
}

impl Timers {
    /// Sets a connection's deadline to `at` if that is earlier than the one
    /// it has (`current`, updated in place).
    pub fn arm(
        &mut self,
        current: &mut Option<Instant>,
        at: Instant,
        slot: usize,
        generation: u64,
    ) {
        if current.is_none_or(|existing| at < existing) {
            *current = Some(at);
            self.heap.push(Reverse(TimerEntry {
                at,
                slot,
                generation,
            }));
        }
    }

    /// The earliest entry due at `now`, stale or not.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerEntry> {
        match self.heap.peek() {
            Some(Reverse(entry)) if entry.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn arms_only_earlier_deadlines_and_pops_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let mut a = None;
        timers.arm(&mut a, t0 + Duration::from_secs(5), 1, 0);
        timers.arm(&mut a, t0 + Duration::from_secs(9), 1, 0);
        assert_eq!(
            a,
            Some(t0 + Duration::from_secs(5)),
            "a later deadline does not replace an earlier one"
        );
        timers.arm(&mut a, t0 + Duration::from_secs(2), 1, 0);
        let mut b = None;
        timers.arm(&mut b, t0 + Duration::from_secs(3), 2, 0);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(timers.pop_due(t0 + Duration::from_secs(1)).is_none());
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(10)))
            .map(|e| (e.slot, e.at - t0))
            .collect();
        assert_eq!(
            due,
            vec![
                (1, Duration::from_secs(2)),
                (2, Duration::from_secs(3)),
                (1, Duration::from_secs(5))
            ],
            "the stale entry at 5 s still comes out; the worker discards it"
        );
    }
}
