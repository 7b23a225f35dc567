//! CPU time and resident memory of a process, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`: the broker's, by pid, and the harness's own. CPU%
//! over a span is (utime + stime) divided by wall time; 100% is one core.

use nix::unistd::{sysconf, SysconfVar};
use std::time::{Duration, Instant};

/// Whose figures to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Harness,
    Pid(i32),
}

impl Subject {
    fn read(self, file: &str) -> Option<String> {
        let path = match self {
            Subject::Harness => format!("/proc/self/{file}"),
            Subject::Pid(pid) => format!("/proc/{pid}/{file}"),
        };
        std::fs::read_to_string(path).ok()
    }
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`. The
/// command name (field 2, in parentheses) may hold spaces and parentheses,
/// so fields are counted from the last `)`: utime and stime are fields 14
/// and 15, the 12th and 13th after it.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB, from the text of `/proc/<pid>/status`.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
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
        let ticks = cpu_ticks(&subject.read("stat")?)?;
        let per_second = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100, |t| t.max(1) as u64);
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
    vm_rss_kib(&subject.read("status")?)
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
        assert!(rss_kib(Subject::Pid(std::process::id() as i32)).expect("by pid") > 0);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    7 5 0 0 20 0 3 0 123 456 789";
        assert_eq!(cpu_ticks(stat), Some(12));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn vm_rss_is_read_from_its_line() {
        let status = "Name:\tpubsub\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(5120));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }
}
