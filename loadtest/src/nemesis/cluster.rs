//! The processes a nemesis run owns, and the faults done to them: a
//! `redis-server` with an fsynced AOF in a directory of its own (or, with
//! `--sentinel`, a master, a replica and three sentinels: `sentinel`), and
//! pubsub nodes on fixed loopback ports (so that a restarted node is where
//! clients look for it). Kill (SIGKILL) and restart, pause (SIGSTOP) and
//! continue, `CLIENT KILL TYPE pubsub`, the master failover. It must not decide when or which
//! fault happens (that is `faults`), and it touches no process it did not
//! start.

use super::sentinel::{self, SentinelSet};
use crate::endpoint::{Endpoint, TargetKind};
use crate::rest;
use crate::spawn::{free_loopback_port, SpawnedServer};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a (re)started node may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One node's slot: its name and port survive its restarts.
struct Node {
    name: String,
    addr: SocketAddr,
    server: Option<SpawnedServer>,
    paused: bool,
}

/// Redis and the nodes; dropped, every process still running is killed
/// and Redis's directory removed.
pub struct Cluster {
    broker: PathBuf,
    redis_path: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    redis_port: u16,
    redis: Option<SpawnedServer>,
    /// With `--sentinel`, the backplane instead of `redis`.
    sentinel: Option<SentinelSet>,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts Redis (AOF, `appendfsync always`; with `sentinel`, a master,
    /// a replica and three sentinels) and `nodes` brokers with `env`, and
    /// waits until every node is ready.
    pub fn start(
        broker: &Path,
        redis_path: &Path,
        nodes: usize,
        env: &[(String, String)],
        sentinel: bool,
    ) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("loadtest-nemesis-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = Cluster {
            broker: broker.to_path_buf(),
            redis_path: redis_path.to_path_buf(),
            env: env.to_vec(),
            dir,
            redis_port: free_loopback_port()?,
            redis: None,
            sentinel: None,
            nodes: Vec::with_capacity(nodes),
        };
        if sentinel {
            cluster.sentinel = Some(
                SentinelSet::start(redis_path, &cluster.dir)
                    .context("starting the master, its replica and the sentinels")?,
            );
        } else {
            cluster.start_redis()?;
        }
        for index in 0..nodes {
            cluster.nodes.push(Node {
                name: format!("n{index}"),
                addr: SocketAddr::from(([127, 0, 0, 1], free_loopback_port()?)),
                server: None,
                paused: false,
            });
            cluster.start_node(index)?;
        }
        for index in 0..nodes {
            cluster.wait_ready(index)?;
        }
        Ok(cluster)
    }

    /// Each node's address, by index.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    pub fn endpoint(&self, index: usize) -> Result<Endpoint> {
        Endpoint::local(TargetKind::Pubsub, self.nodes[index].addr, "/ws")
    }

    fn start_redis(&mut self) -> Result<()> {
        let redis = SpawnedServer::redis_aof(&self.redis_path, self.redis_port, &self.dir)?;
        self.redis = Some(redis);
        Ok(())
    }

    fn start_node(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let url = match &self.sentinel {
            Some(set) => set.url(),
            None => format!("redis://127.0.0.1:{}", self.redis_port),
        };
        let mut env = vec![
            ("REDIS_URL".to_string(), url),
            ("NODE_ID".to_string(), node.name.clone()),
            ("ADDR".to_string(), node.addr.to_string()),
        ];
        env.extend_from_slice(&self.env);
        let server = SpawnedServer::pubsub(&self.broker, &env, None, &node.name)?;
        if server.addr != node.addr {
            bail!(
                "node {} listens on {}, not {}",
                node.name,
                server.addr,
                node.addr
            );
        }
        self.nodes[index].server = Some(server);
        Ok(())
    }

    fn wait_ready(&self, index: usize) -> Result<()> {
        rest::wait_ready(&self.endpoint(index)?, Instant::now() + READY_TIMEOUT)
    }

    /// SIGKILL on a node (its slot stays, for the restart).
    pub fn kill_node(&mut self, index: usize) {
        // Dropping a running server kills it and reaps it.
        drop(self.nodes[index].server.take());
        self.nodes[index].paused = false;
    }

    /// Starts a killed node again on its port and waits until it is ready.
    pub fn restart_node(&mut self, index: usize) -> Result<()> {
        if self.nodes[index].server.is_none() {
            self.start_node(index)?;
        }
        self.wait_ready(index)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) on a running node.
    pub fn pause_node(&mut self, index: usize, pause: bool) -> Result<()> {
        let node = &mut self.nodes[index];
        if let Some(server) = &node.server {
            let signal = if pause {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            kill(Pid::from_raw(server.pid()), signal)?;
            node.paused = pause;
        }
        Ok(())
    }

    /// SIGKILL on Redis; what it acked is in its AOF.
    pub fn kill_redis(&mut self) {
        drop(self.redis.take());
    }

    /// Starts Redis again from its AOF, on the same port (with
    /// `--sentinel`, any server down, as a replica of the master).
    pub fn restart_redis(&mut self) -> Result<()> {
        if let Some(set) = &mut self.sentinel {
            return set.heal();
        }
        if self.redis.is_none() {
            self.start_redis()?;
        }
        Ok(())
    }

    /// Whether the backplane is a master, a replica and sentinels.
    pub fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// The master failover (`--sentinel` only): the master SIGKILLed, the
    /// replica's promotion awaited, the old master restarted as a replica
    /// after `hold`. Returns the old and the new master's ports.
    pub fn master_failover(&mut self, hold: Duration) -> Result<(u16, u16)> {
        match &mut self.sentinel {
            Some(set) => set.failover(hold),
            None => bail!("a master failover needs --sentinel"),
        }
    }

    /// Seconds each promotion took (kill to every sentinel naming the new
    /// master), and each rejoin (restart to a settled set).
    /// And how many failovers the sentinels made by themselves.
    pub fn failover_times(&self) -> (Vec<f64>, Vec<f64>, u64) {
        match &self.sentinel {
            Some(set) => (set.promotions.clone(), set.rejoins.clone(), set.unprompted),
            None => (Vec::new(), Vec::new(), 0),
        }
    }

    /// `CLIENT KILL TYPE pubsub` on Redis (the master, with `--sentinel`):
    /// every node loses its subscriptions' connection. Returns how many
    /// connections Redis cut.
    pub fn client_kill_pubsub(&self) -> Result<u64> {
        let port = match &self.sentinel {
            Some(set) => set.master_port()?,
            None => self.redis_port,
        };
        match sentinel::command(port, &["CLIENT", "KILL", "TYPE", "pubsub"])? {
            sentinel::Resp::Integer(count) => Ok(count as u64),
            reply => bail!("CLIENT KILL answered {reply:?}"),
        }
    }

    /// Undoes every fault still in force: Redis running, every node
    /// running, continued and ready.
    pub fn heal(&mut self) -> Result<()> {
        self.restart_redis()?;
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.pause_node(index, false)?;
            }
            self.restart_node(index)?;
        }
        Ok(())
    }

    /// Stops the nodes, then Redis (SIGTERM, SIGKILL after a few seconds).
    pub fn stop(mut self) {
        let _ = self.heal_signals();
        for node in &mut self.nodes {
            if let Some(server) = node.server.take() {
                let _ = server.stop();
            }
        }
        if let Some(redis) = self.redis.take() {
            let _ = redis.stop();
        }
        if let Some(set) = self.sentinel.take() {
            set.stop();
        }
    }

    /// SIGCONT on every paused node, so that it can hear SIGTERM.
    fn heal_signals(&mut self) -> Result<()> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.pause_node(index, false)?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.heal_signals();
        for node in &mut self.nodes {
            drop(node.server.take());
        }
        drop(self.redis.take());
        drop(self.sentinel.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
