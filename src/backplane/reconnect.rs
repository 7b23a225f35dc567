//! The one reconnect loop of every thread that talks to a backend: an
//! attempt (connect, then serve or follow until the connection fails), a
//! pause, another attempt. The pause starts at 100 ms, doubles after each
//! attempt to 2 s at most, and starts over after an attempt that had
//! connected.
//!
//! It owns the back-off and nothing else: what an attempt does and how a
//! thread passes its pause (sleeping, or answering what arrives meanwhile)
//! is the thread's. It never touches a connection.

use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Nothing is left to do (the workers are gone): the loop returns.
    Stopped,
    /// The connection was made, then found dead before it was used:
    /// another attempt at once, no pause (and the next pause starts over
    /// from the shortest, as after `Lost`).
    Again,
    /// The connection worked, then failed: the pause starts over from the
    /// shortest.
    Lost,
    /// The attempt failed: a pause, longer than the last one.
    Failed,
}

/// A thread that reconnects with [`run_forever`].
pub trait Reconnect {
    /// Connects and uses the connection until it fails.
    fn attempt(&mut self) -> Ended;

    /// Waits `pause` before the next attempt; false to stop.
    fn pause(&mut self, pause: Duration) -> bool {
        std::thread::sleep(pause);
        true
    }
}

/// Runs `thread`'s attempts until one says [`Ended::Stopped`] or a pause
/// says stop.
pub fn run_forever(thread: &mut impl Reconnect) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match thread.attempt() {
            Ended::Stopped => return,
            Ended::Again => {
                backoff = FIRST_BACKOFF;
                continue;
            }
            Ended::Lost => backoff = FIRST_BACKOFF,
            Ended::Failed => {}
        }
        if !thread.pause(backoff) {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends its attempts as scripted and records its pauses; stops when
    /// the script runs out.
    struct Scripted<'a> {
        endings: std::slice::Iter<'a, Ended>,
        pauses: Vec<u64>,
    }

    impl Reconnect for Scripted<'_> {
        fn attempt(&mut self) -> Ended {
            self.endings.next().copied().unwrap_or(Ended::Stopped)
        }

        fn pause(&mut self, pause: Duration) -> bool {
            self.pauses.push(pause.as_millis() as u64);
            true
        }
    }

    fn pauses(endings: &[Ended]) -> Vec<u64> {
        let mut thread = Scripted {
            endings: endings.iter(),
            pauses: Vec::new(),
        };
        run_forever(&mut thread);
        thread.pauses
    }

    #[test]
    fn pauses_double_to_two_seconds_and_start_over_after_a_success() {
        use Ended::*;
        assert_eq!(
            pauses(&[Failed, Failed, Failed, Failed, Failed, Failed]),
            [100, 200, 400, 800, 1600, 2000]
        );
        assert_eq!(
            pauses(&[Failed, Failed, Lost, Failed]),
            [100, 200, 100, 200]
        );
        assert_eq!(
            pauses(&[Failed, Failed, Again, Failed, Failed]),
            [100, 200, 100, 200]
        );
        assert_eq!(pauses(&[Stopped, Failed]), Vec::<u64>::new());
    }

    #[test]
    fn a_pause_may_stop_the_loop() {
        struct Impatient(usize);
        impl Reconnect for Impatient {
            fn attempt(&mut self) -> Ended {
                self.0 += 1;
                Ended::Failed
            }
            fn pause(&mut self, _: Duration) -> bool {
                false
            }
        }
        let mut thread = Impatient(0);
        run_forever(&mut thread);
        assert_eq!(thread.0, 1);
    }
}
