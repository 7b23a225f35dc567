//! The publish limit of one connection (`PUBLISH_RATE`, `PUBLISH_BURST`):
//! a token bucket, kept as the time its schedule catches up with the
//! clock (the generic cell rate algorithm), so a check is two comparisons
//! and an addition.
//!
//! It reads no clock: the caller passes the instant, so one is taken per
//! turn, not per message, and tests need no sleeping. It neither counts
//! nor reports refusals.

use std::time::{Duration, Instant};

/// How many publishes a connection may make: `burst` at once, then
/// `rate` per second.
#[derive(Debug, Clone)]
pub struct PublishLimiter {
    /// Time one publish uses up: a second over the rate; zero for no limit.
    interval: Duration,
    /// How far ahead of the clock the schedule may run: `burst - 1`
    /// intervals.
    tolerance: Duration,
    /// When the publishes taken so far would have been paid off at the
    /// rate; `None` before the first.
    paid_off: Option<Instant>,
}

impl PublishLimiter {
    /// `rate` publishes per second (0: no limit), with bursts of up to
    /// `burst` (at least 1; 0 counts as 1).
    pub fn new(rate: u32, burst: u32) -> PublishLimiter {
        let interval = match rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs(1) / rate,
        };
        PublishLimiter {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            paid_off: None,
        }
    }

    /// True if a publish at `now` is within the limit, and counts it;
    /// false (and nothing counted) if it is over.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let start = self.paid_off.map_or(now, |paid_off| paid_off.max(now));
        if start > now + self.tolerance {
            return false;
        }
        self.paid_off = Some(start + self.interval);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(limiter: &mut PublishLimiter, now: Instant, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.try_take(now)).count()
    }

    #[test]
    fn no_rate_is_no_limit() {
        let mut limiter = PublishLimiter::new(0, 0);
        assert_eq!(taken(&mut limiter, Instant::now(), 100_000), 100_000);
    }

    #[test]
    fn a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(10, 5);
        assert_eq!(taken(&mut limiter, start, 20), 5, "the burst");
        let ms = |n| start + Duration::from_millis(n);
        assert!(!limiter.try_take(ms(99)));
        assert!(limiter.try_take(ms(100)), "one more every 100 ms");
        assert!(!limiter.try_take(ms(150)));
        assert_eq!(
            taken(&mut limiter, ms(250), 20),
            1,
            "150 ms: one and a half"
        );
        assert_eq!(
            taken(&mut limiter, ms(60_000), 20),
            5,
            "idle time refills no more than the burst"
        );
    }

    #[test]
    fn a_burst_of_one_spaces_publishes_evenly() {
        let start = Instant::now();
        for burst in [0, 1] {
            let mut limiter = PublishLimiter::new(4, burst);
            assert_eq!(taken(&mut limiter, start, 3), 1, "burst {burst}");
            assert!(!limiter.try_take(start + Duration::from_millis(249)));
            assert!(limiter.try_take(start + Duration::from_millis(250)));
        }
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(1000, 1);
        for n in 0..10_000 {
            assert!(limiter.try_take(start + Duration::from_millis(n)), "{n}");
        }
    }

    #[test]
    fn refusals_cost_nothing() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(1, 1);
        assert!(limiter.try_take(start));
        assert_eq!(taken(&mut limiter, start, 1000), 0);
        assert!(limiter.try_take(start + Duration::from_secs(1)));
    }
}
