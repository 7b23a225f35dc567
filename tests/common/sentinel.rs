//! Sentinel fixtures: a Redis master, one replica of it and three
//! `redis-sentinel`s watching them, all on free loopback ports, with a
//! short `down-after-milliseconds` so that a failover takes seconds. Every
//! process here is one the fixture started, killed by its pid on drop;
//! every wait is bounded.

use super::cluster::{free_port, RedisServer};
use super::*;
use std::path::PathBuf;

/// The name the sentinels know the master by.
pub const MASTER: &str = "mymaster";

/// A `redis-sentinel` process, with its configuration in a directory of
/// its own.
pub struct SentinelProcess {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl SentinelProcess {
    /// A sentinel on a free port watching the master on `master_port`.
    fn start(master_port: u16, n: usize) -> SentinelProcess {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pubsub-sentinel-{}-{port}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile sentinel.log\n\
                 sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 2000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let spawn = |program: &str, args: &[&std::ffi::OsStr]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = match spawn("redis-sentinel", &[conf.as_os_str()]) {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                spawn("redis-server", &[conf.as_os_str(), "--sentinel".as_ref()])
                    .expect("redis-server --sentinel (Debian: apt-get install redis-sentinel)")
            }
            Err(e) => panic!("cannot run redis-sentinel: {e}"),
        };
        let sentinel = SentinelProcess { port, dir, child };
        eventually(&format!("sentinel on {port} answers"), || {
            sentinel.master_addr().is_some()
        });
        sentinel
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let conn = client
            .get_connection_with_timeout(Duration::from_millis(300))
            .ok()?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        Some(conn)
    }

    /// The master's port as this sentinel names it now.
    pub fn master_addr(&self) -> Option<u16> {
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER)
            .query(&mut self.connection()?)
            .ok()?;
        named.map(|(_, port)| port)
    }

    /// How many other sentinels and replicas this one knows of.
    fn known(&self) -> Option<(usize, usize)> {
        let mut conn = self.connection()?;
        let sentinels: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("sentinels")
            .arg(MASTER)
            .query(&mut conn)
            .ok()?;
        let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("replicas")
            .arg(MASTER)
            .query(&mut conn)
            .ok()?;
        Some((sentinels.len(), replicas.len()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, its replica and three sentinels that know both and each
/// other (so that a failover can be voted at once).
pub struct SentinelSet {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<SentinelProcess>,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let master = RedisServer::start();
        let replica = RedisServer::start();
        let _: () = replica.query(redis::cmd("REPLICAOF").arg("127.0.0.1").arg(master.port));
        eventually("the replica in sync", || {
            replica.info_field("master_link_status").as_deref() == Some("up")
        });
        let sentinels: Vec<SentinelProcess> = (0..3)
            .map(|n| SentinelProcess::start(master.port, n))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        for sentinel in &sentinels {
            while sentinel.known() != Some((2, 1)) {
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} knows {:?}; log:\n{}",
                    sentinel.port,
                    sentinel.known(),
                    sentinel.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        SentinelSet {
            master,
            replica,
            sentinels,
        }
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// Waits (at most `limit`) until every sentinel names the master on
    /// `port`.
    pub fn wait_master(&self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        for sentinel in &self.sentinels {
            while sentinel.master_addr() != Some(port) {
                assert!(
                    Instant::now() < deadline,
                    "sentinel {} names {:?}, not {port}, after {limit:?}; log:\n{}",
                    sentinel.port,
                    sentinel.master_addr(),
                    sentinel.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
