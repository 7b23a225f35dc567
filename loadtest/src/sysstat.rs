//! CPU time and resident memory of a process, from `/proc` (the `procfs`
//! crate): the broker's, by pid, and the harness's own. CPU% over a span is
//! (utime + stime) divided by wall time; 100% is one core.

use procfs::process::Process;
use std::time::{Duration, Instant};

/// Whose figures to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Harness,
    Pid(i32),
}

/// CPU time used so far, at a moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    cpu: Duration,
}

impl CpuSample {
    /// Reads the subject's user + system time; `None` if the process is gone.
    pub fn take(subject: Subject) -> Option<CpuSample> {
        let process = match subject {
            Subject::Harness => Process::myself(),
            Subject::Pid(pid) => Process::new(pid),
        }
        .ok()?;
        let stat = process.stat().ok()?;
        let ticks = stat.utime + stat.stime;
        let per_second = procfs::ticks_per_second().max(1);
        Some(CpuSample {
            at: Instant::now(),
            cpu: Duration::from_nanos(ticks * 1_000_000_000 / per_second),
        })
    }

    /// CPU% used between `self` and a later sample.
    pub fn percent_until(&self, later: &CpuSample) -> f64 {
        let wall = later.at.duration_since(self.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        later.cpu.saturating_sub(self.cpu).as_secs_f64() / wall * 100.0
    }
}

/// The subject's resident set (VmRSS) in KiB.
pub fn rss_kib(subject: Subject) -> Option<u64> {
    let process = match subject {
        Subject::Harness => Process::myself(),
        Subject::Pid(pid) => Process::new(pid),
    }
    .ok()?;
    process.status().ok()?.vmrss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_can_read_its_own_figures() {
        let first = CpuSample::take(Subject::Harness).expect("own stat");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let second = CpuSample::take(Subject::Harness).expect("own stat");
        assert!(first.percent_until(&second) >= 0.0);
        assert!(rss_kib(Subject::Harness).expect("own status") > 0);
    }
}
