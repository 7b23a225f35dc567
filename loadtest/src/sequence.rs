//! Per-subscriber order checking: for each publisher, the counters
//! (`lt_n`) a subscriber has seen (or, in `resume`, the topic's `seq`), so
//! that duplicates, late (out-of-order) deliveries and gaps are counted
//! without storing every message.

/// What one publisher's messages to one subscriber looked like so far:
/// the next counter expected, and which of the 64 before it arrived.
#[derive(Debug, Default, Clone, Copy)]
pub struct SequenceCheck {
    next: u64,
    /// Bit `i` set: counter `next - 1 - i` has arrived.
    seen: u64,
}

/// How one delivery fits the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Arrived after a later counter and is not a duplicate: counts as a
    /// delivery, and as out of order.
    Late,
    /// A counter already delivered (or too old to tell): not a new delivery.
    Duplicate,
    /// Ahead of the expected counter by this many missing messages (they may
    /// still arrive late, or be lost).
    Gap(u64),
}

impl SequenceCheck {
    /// A check that expects `next` first.
    pub fn starting_at(next: u64) -> SequenceCheck {
        SequenceCheck { next, seen: 0 }
    }

    /// The counter expected next (one past the highest seen).
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Expects `next` from now on: the counters skipped are no longer
    /// expected (nor counted as a gap). Returns how many were skipped; a
    /// `next` at or behind the expected one changes nothing.
    pub fn skip_to(&mut self, next: u64) -> u64 {
        let Some(skipped) = next.checked_sub(self.next).filter(|&n| n > 0) else {
            return 0;
        };
        self.seen = if skipped >= 64 {
            0
        } else {
            self.seen << skipped
        };
        self.next = next;
        skipped
    }

    pub fn observe(&mut self, counter: u64) -> Arrival {
        if counter >= self.next {
            let skipped = counter - self.next;
            let shift = skipped + 1;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift } | 1;
            self.next = counter + 1;
            return if skipped == 0 {
                Arrival::InOrder
            } else {
                Arrival::Gap(skipped)
            };
        }
        let behind = self.next - 1 - counter;
        if behind >= 64 {
            return Arrival::Duplicate;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            Arrival::Duplicate
        } else {
            self.seen |= bit;
            Arrival::Late
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_gaps_late_and_duplicates() {
        let mut check = SequenceCheck::default();
        assert_eq!(check.observe(0), Arrival::InOrder);
        assert_eq!(check.observe(1), Arrival::InOrder);
        assert_eq!(check.observe(1), Arrival::Duplicate);
        assert_eq!(check.observe(4), Arrival::Gap(2));
        assert_eq!(check.observe(3), Arrival::Late);
        assert_eq!(check.observe(3), Arrival::Duplicate);
        assert_eq!(check.observe(2), Arrival::Late);
        assert_eq!(check.observe(5), Arrival::InOrder);
        assert_eq!(check.observe(200), Arrival::Gap(194));
        assert_eq!(check.observe(6), Arrival::Duplicate, "too old to tell");
    }

    #[test]
    fn a_check_can_start_anywhere_and_skip_ahead() {
        let mut check = SequenceCheck::starting_at(11);
        assert_eq!(check.observe(11), Arrival::InOrder);
        assert_eq!(check.skip_to(12), 0, "already expected");
        assert_eq!(check.skip_to(5), 0, "never backwards");
        assert_eq!(check.next_expected(), 12);
        assert_eq!(check.skip_to(20), 8);
        assert_eq!(check.observe(20), Arrival::InOrder);
        assert_eq!(
            check.observe(11),
            Arrival::Duplicate,
            "seen before the skip"
        );
        assert_eq!(check.observe(15), Arrival::Late, "skipped, then arrived");
        assert_eq!(check.skip_to(1000), 979);
        assert_eq!(check.observe(1000), Arrival::InOrder);
    }
}
