//! CPU pinning: parsing `taskset`-style CPU lists ("0", "0-3", "0,2,5-7")
//! and applying them to the harness (before it starts its threads, which
//! inherit the mask) or to a server process it spawns.

use anyhow::{bail, Context, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A parsed CPU list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl std::str::FromStr for CpuList {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<CpuList> {
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let first: usize = first
                .parse()
                .with_context(|| format!("bad CPU {first:?}"))?;
            let last: usize = last.parse().with_context(|| format!("bad CPU {last:?}"))?;
            if first > last {
                bail!("bad CPU range {part:?}");
            }
            cpus.extend(first..=last);
        }
        if cpus.is_empty() {
            bail!("empty CPU list");
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

impl CpuList {
    fn cpu_set(&self) -> Result<CpuSet> {
        let mut set = CpuSet::new();
        for &cpu in &self.0 {
            set.set(cpu)
                .with_context(|| format!("CPU {cpu} is out of range"))?;
        }
        Ok(set)
    }

    /// Pins the calling thread, and so every thread it starts afterwards.
    pub fn pin_current_thread(&self) -> Result<()> {
        sched_setaffinity(Pid::from_raw(0), &self.cpu_set()?).context("sched_setaffinity")
    }

    /// Makes `command`'s process start pinned to these CPUs (all its
    /// threads inherit the mask).
    pub fn pin_command(&self, command: &mut Command) -> Result<()> {
        let set = self.cpu_set()?;
        // SAFETY: the closure runs in the forked child before exec; it only
        // makes one system call on a value built before the fork, and
        // neither allocates nor takes locks.
        unsafe {
            command.pre_exec(move || {
                sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!("1".parse::<CpuList>().unwrap(), CpuList(vec![1]));
        assert_eq!(
            "0,2-4, 3".parse::<CpuList>().unwrap(),
            CpuList(vec![0, 2, 3, 4])
        );
        assert!("".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("a".parse::<CpuList>().is_err());
    }
}
