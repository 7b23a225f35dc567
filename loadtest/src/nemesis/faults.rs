//! Which faults a nemesis run injects and when: a schedule drawn from the
//! seed alone (so that a seed replays the same faults at the same times),
//! and the thread that walks it, doing each fault to the cluster or a
//! client and undoing it after its hold. It must not check deliveries, and
//! every fault it starts it ends within its hold.

use super::clients::Cuts;
use super::cluster::Cluster;
use crate::resume::SplitMix64;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// SIGKILL on a node, restarted after the hold.
    NodeKill,
    /// SIGSTOP on a node, SIGCONT after the hold.
    NodePause,
    /// SIGKILL on Redis, restarted from its AOF after the hold.
    RedisKill,
    /// With `--sentinel`, in place of `RedisKill`: SIGKILL on the master;
    /// once the sentinels have promoted the replica, and after the hold,
    /// the old master restarted from its AOF as the new one's replica.
    MasterFailover,
    /// `CLIENT KILL TYPE pubsub` on Redis.
    RedisClientKill,
    /// A client's socket shut down both ways (a publisher or subscriber).
    ClientCut,
}

const KINDS: [Kind; 5] = [
    Kind::NodeKill,
    Kind::NodePause,
    Kind::RedisKill,
    Kind::RedisClientKill,
    Kind::ClientCut,
];

/// The kinds with `--sentinel`: the master failover in `RedisKill`'s place
/// (so that a seed draws the same schedule, one kind renamed).
const SENTINEL_KINDS: [Kind; 5] = [
    Kind::NodeKill,
    Kind::NodePause,
    Kind::MasterFailover,
    Kind::RedisClientKill,
    Kind::ClientCut,
];

/// One fault: after `wait` from the end of the previous one, done to
/// `target` (a node, or a client, modulo their number) for `hold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub wait: Duration,
    pub kind: Kind,
    pub target: usize,
    pub hold: Duration,
}

/// The faults of a run of `duration` from `seed`: waits of 0.5 to 3 s,
/// holds of 0.3 to 3 s (none for instant kinds); the last ends before
/// `duration` (a master failover also takes the sentinels' promotion and
/// the resync, which the schedule does not count: the run stops the
/// faults at `duration` whatever is left). With `sentinel`, master
/// failovers in place of Redis kills.
pub fn schedule(seed: u64, duration: Duration, sentinel: bool) -> Vec<Fault> {
    let kinds = if sentinel { SENTINEL_KINDS } else { KINDS };
    let mut rng = SplitMix64::new(seed, 0xFA17);
    let mut faults = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let wait = Duration::from_secs_f64(0.5 + 2.5 * rng.unit());
        let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
        let target = (rng.next_u64() % 1024) as usize;
        let hold = match kind {
            Kind::RedisClientKill | Kind::ClientCut => Duration::ZERO,
            _ => Duration::from_secs_f64(0.3 + 2.7 * rng.unit()),
        };
        at += wait + hold;
        if at >= duration {
            return faults;
        }
        faults.push(Fault {
            wait,
            kind,
            target,
            hold,
        });
    }
}

/// Walks `faults` on `cluster` until they are done or `stop` is set, then
/// heals the cluster; returns it and how many faults of each kind were
/// done. Progress goes to stderr.
pub fn inject(
    mut cluster: Cluster,
    faults: Vec<Fault>,
    cuts: Arc<Cuts>,
    stop: Arc<AtomicBool>,
) -> (Cluster, Result<BTreeMap<Kind, u64>>) {
    let mut done = BTreeMap::new();
    let started = Instant::now();
    let nodes = cluster.addrs().len();
    for fault in faults {
        if sleep_unless(&stop, fault.wait) {
            break;
        }
        let target = match fault.kind {
            Kind::NodeKill | Kind::NodePause => format!(" n{}", fault.target % nodes),
            Kind::ClientCut => " a client".to_string(),
            Kind::RedisKill | Kind::RedisClientKill | Kind::MasterFailover => String::new(),
        };
        eprintln!(
            "nemesis: {:6.1}s {:?}{target} for {:.1}s",
            started.elapsed().as_secs_f64(),
            fault.kind,
            fault.hold.as_secs_f64()
        );
        if let Err(e) = apply(&mut cluster, &cuts, fault, fault.target % nodes) {
            return (cluster, Err(e.context(format!("during {:?}", fault.kind))));
        }
        *done.entry(fault.kind).or_insert(0) += 1;
    }
    let healed = cluster.heal();
    (cluster, healed.map(|()| done))
}

/// Does one fault, holds it, undoes it.
fn apply(cluster: &mut Cluster, cuts: &Cuts, fault: Fault, node: usize) -> Result<()> {
    match fault.kind {
        Kind::NodeKill => {
            cluster.kill_node(node);
            std::thread::sleep(fault.hold);
            cluster.restart_node(node)
        }
        Kind::NodePause => {
            cluster.pause_node(node, true)?;
            std::thread::sleep(fault.hold);
            cluster.pause_node(node, false)
        }
        Kind::RedisKill => {
            cluster.kill_redis();
            std::thread::sleep(fault.hold);
            cluster.restart_redis()
        }
        Kind::MasterFailover => {
            let (old, new) = cluster.master_failover(fault.hold)?;
            eprintln!("nemesis:        master {old} killed; {new} master, {old} its replica");
            Ok(())
        }
        Kind::RedisClientKill => cluster.client_kill_pubsub().map(drop),
        Kind::ClientCut => {
            match cuts.cut(fault.target) {
                Some(client) => eprintln!("nemesis:        cut client {client}"),
                None => eprintln!("nemesis:        no client to cut"),
            }
            Ok(())
        }
    }
}

/// Sleeps `wait`, or less if `stop` is set; true if it was.
fn sleep_unless(stop: &AtomicBool, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_schedule_within_the_duration() {
        let duration = Duration::from_secs(120);
        let faults = schedule(42, duration, false);
        assert_eq!(faults, schedule(42, duration, false));
        assert_ne!(faults, schedule(43, duration, false));
        let total: Duration = faults.iter().map(|f| f.wait + f.hold).sum();
        assert!(total < duration);
        for kind in KINDS {
            assert!(
                faults.iter().any(|f| f.kind == kind),
                "{kind:?} never drawn"
            );
        }
        assert!(!faults.iter().any(|f| f.kind == Kind::MasterFailover));
        for fault in &faults {
            assert!(fault.hold <= Duration::from_secs(3), "{fault:?}");
        }
    }

    #[test]
    fn with_sentinel_a_seed_replays_master_failovers_in_place_of_redis_kills() {
        let duration = Duration::from_secs(600);
        let faults = schedule(7, duration, true);
        assert_eq!(faults, schedule(7, duration, true));
        assert_ne!(faults, schedule(8, duration, true));
        for kind in SENTINEL_KINDS {
            assert!(
                faults.iter().any(|f| f.kind == kind),
                "{kind:?} never drawn"
            );
        }
        assert!(!faults.iter().any(|f| f.kind == Kind::RedisKill));
        // The same draws as without --sentinel, Redis kills renamed.
        let single = schedule(7, duration, false);
        assert_eq!(faults.len(), single.len());
        for (f, s) in faults.iter().zip(&single) {
            let kind = if s.kind == Kind::RedisKill {
                Kind::MasterFailover
            } else {
                s.kind
            };
            assert_eq!(
                (f.wait, f.kind, f.target, f.hold),
                (s.wait, kind, s.target, s.hold)
            );
        }
        for fault in faults.iter().filter(|f| f.kind == Kind::MasterFailover) {
            assert!(fault.hold >= Duration::from_millis(300), "{fault:?}");
        }
    }
}
