//! The backplane of `nemesis --sentinel`: two `redis-server`s (each with an
//! fsynced AOF in a directory of its own, one the replica of the other) and
//! three Sentinels watching them, with `down-after-milliseconds 1000` and
//! `failover-timeout 2000` (as `tests/common/sentinel.rs`), all on free
//! loopback ports; and the master failover: the master SIGKILLed, the
//! sentinels' promotion of the replica awaited, the old server started
//! again as a replica of the new master. Every wait is bounded; it touches
//! no process it did not start (each is killed by its pid when dropped).

use crate::spawn::{free_loopback_port, SpawnedServer};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name the sentinels know the master by.
pub const MASTER: &str = "mymaster";
/// How long the sentinels may take to promote the replica once the master
/// is killed (down after 1 s, a vote, and after an earlier failover up to
/// twice the failover timeout before they try again).
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to (re)join as an in-sync replica that every
/// sentinel sees as healthy.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// One Redis server's slot: its port and directory survive its restarts.
struct Slot {
    port: u16,
    dir: PathBuf,
    server: Option<SpawnedServer>,
}

/// The two servers and the three sentinels.
pub struct SentinelSet {
    redis_path: PathBuf,
    slots: [Slot; 2],
    sentinels: Vec<SpawnedServer>,
    /// Seconds from each master kill to every sentinel naming the new one.
    pub promotions: Vec<f64>,
    /// Seconds from each restart of an old master to it being an in-sync
    /// replica seen by every sentinel.
    pub rejoins: Vec<f64>,
    /// Failovers the sentinels made by themselves: after a rejoin, the
    /// master was not the one they had promoted (the promoted master
    /// judged down, e.g. while it forked for the resync, on this loaded
    /// machine with `down-after-milliseconds 1000`).
    pub unprompted: u64,
}

impl SentinelSet {
    /// Starts the master, its replica (in sync) and three sentinels that
    /// know both servers and each other, under `dir`.
    pub fn start(redis_path: &Path, dir: &Path) -> Result<SentinelSet> {
        let slot = |n: usize| -> Result<Slot> {
            let dir = dir.join(format!("redis-{n}"));
            std::fs::create_dir_all(&dir)?;
            Ok(Slot {
                port: free_loopback_port()?,
                dir,
                server: None,
            })
        };
        let mut set = SentinelSet {
            redis_path: redis_path.to_path_buf(),
            slots: [slot(0)?, slot(1)?],
            sentinels: Vec::new(),
            promotions: Vec::new(),
            rejoins: Vec::new(),
            unprompted: 0,
        };
        set.start_slot(0, None)?;
        let master = set.slots[0].port;
        set.start_slot(1, Some(master))?;
        set.wait_in_sync(1, Instant::now() + REJOIN_TIMEOUT)?;
        for n in 0..3 {
            let port = free_loopback_port()?;
            let sdir = dir.join(format!("sentinel-{n}"));
            std::fs::create_dir_all(&sdir)?;
            let conf = sdir.join("sentinel.conf");
            std::fs::write(&conf, sentinel_conf(port, &sdir, master))
                .with_context(|| format!("writing {}", conf.display()))?;
            set.sentinels
                .push(SpawnedServer::redis_sentinel(redis_path, port, &conf)?);
        }
        let deadline = Instant::now() + REJOIN_TIMEOUT;
        for sentinel in set.sentinel_ports() {
            while known(sentinel).ok() != Some((2, 1)) {
                if Instant::now() > deadline {
                    bail!(
                        "sentinel {sentinel} knows (sentinels, replicas) {:?}, not (2, 1)",
                        known(sentinel).ok()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(set)
    }

    fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.addr.port()).collect()
    }

    /// `redis+sentinel://` naming the three sentinels.
    pub fn url(&self) -> String {
        sentinel_url(&self.sentinel_ports())
    }

    fn start_slot(&mut self, index: usize, replica_of: Option<u16>) -> Result<()> {
        let slot = &self.slots[index];
        let extra: Vec<String> = match replica_of {
            Some(port) => vec!["--replicaof".into(), "127.0.0.1".into(), port.to_string()],
            None => Vec::new(),
        };
        let server = SpawnedServer::redis_aof_with(&self.redis_path, slot.port, &slot.dir, &extra)?;
        self.slots[index].server = Some(server);
        Ok(())
    }

    /// Waits until the server of `index` is a replica whose link to its
    /// master is up.
    fn wait_in_sync(&self, index: usize, deadline: Instant) -> Result<()> {
        let port = self.slots[index].port;
        loop {
            let info = command(port, &["INFO", "replication"])
                .and_then(|r| r.text())
                .unwrap_or_default();
            if info_field(&info, "role") == Some("slave")
                && info_field(&info, "master_link_status") == Some("up")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Redis on {port} is not an in-sync replica in time: {info:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The master's port as the first sentinel that answers names it.
    pub fn master_port(&self) -> Result<u16> {
        let mut last = None;
        for port in self.sentinel_ports() {
            match master_addr(port) {
                Ok(master) => return Ok(master),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no sentinel")))
    }

    /// The master failover: SIGKILL on the master, wait until every
    /// sentinel names the replica and it says it is a master, hold `hold`,
    /// then start the old server again (from its AOF, as a replica of the
    /// new master) and wait until the set is settled. Returns the old
    /// master's port and the master's once settled.
    pub fn failover(&mut self, hold: Duration) -> Result<(u16, u16)> {
        self.heal()?;
        let old = self.wait_settled(Instant::now() + REJOIN_TIMEOUT)?;
        let Some(index) = self.slots.iter().position(|s| s.port == old) else {
            bail!("the sentinels name {old} as master, which is none of ours");
        };
        let new = self.slots[1 - index].port;
        let killed = Instant::now();
        drop(self.slots[index].server.take());
        let deadline = killed + PROMOTION_TIMEOUT;
        for sentinel in self.sentinel_ports() {
            while master_addr(sentinel).ok() != Some(new) {
                if Instant::now() > deadline {
                    bail!(
                        "sentinel {sentinel} names {:?}, not {new}, {PROMOTION_TIMEOUT:?} after the kill",
                        master_addr(sentinel).ok()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        while role(new).ok().as_deref() != Some("master") {
            if Instant::now() > deadline {
                bail!(
                    "Redis on {new} is named master but says {:?}",
                    role(new).ok()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.promotions.push(killed.elapsed().as_secs_f64());
        std::thread::sleep(hold);
        let master = self.rejoin(index, new)?;
        Ok((old, master))
    }

    /// Starts the server of `index` as a replica of `master` and waits
    /// until the set is settled (see `settled`); returns the master then,
    /// which is `master` unless the sentinels failed over again by
    /// themselves meanwhile (counted in `unprompted`).
    fn rejoin(&mut self, index: usize, master: u16) -> Result<u16> {
        let started = Instant::now();
        let deadline = started + REJOIN_TIMEOUT;
        self.start_slot(index, Some(master))?;
        let settled = self.wait_settled(deadline).with_context(|| {
            format!(
                "{} restarted as a replica of {master}",
                self.slots[index].port
            )
        })?;
        if settled != master {
            self.unprompted += 1;
            eprintln!(
                "nemesis:        the sentinels failed over by themselves: master {master} -> {settled}"
            );
        }
        self.rejoins.push(started.elapsed().as_secs_f64());
        Ok(settled)
    }

    /// Waits (until `deadline`) for the set to be settled; the master's
    /// port.
    fn wait_settled(&self, deadline: Instant) -> Result<u16> {
        loop {
            match self.settled() {
                Ok(master) => return Ok(master),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("the master and its replica not settled in time"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The master's port if the set is settled: every sentinel names it,
    /// it answers `ROLE` master, and the other server is its replica with
    /// the link up, which every sentinel lists as a healthy replica.
    fn settled(&self) -> Result<u16> {
        let mut named = None;
        for sentinel in self.sentinel_ports() {
            let port = master_addr(sentinel)?;
            if named.is_some_and(|n| n != port) {
                bail!("the sentinels name different masters");
            }
            named = Some(port);
        }
        let master = named.context("no sentinel")?;
        let Some(index) = self.slots.iter().position(|s| s.port == master) else {
            bail!("the sentinels name {master}, none of ours");
        };
        if role(master)? != "master" {
            bail!("{master} is named master but is not");
        }
        let replica = self.slots[1 - index].port;
        let info = command(replica, &["INFO", "replication"])?.text()?;
        if info_field(&info, "role") != Some("slave")
            || info_field(&info, "master_port") != Some(master.to_string().as_str())
            || info_field(&info, "master_link_status") != Some("up")
        {
            bail!("{replica} is not an in-sync replica of {master}");
        }
        for sentinel in self.sentinel_ports() {
            if !healthy_replica(sentinel, replica)? {
                bail!("sentinel {sentinel} does not see {replica} as a healthy replica");
            }
        }
        Ok(master)
    }

    /// Starts again, as a replica of the master the sentinels name, any
    /// server that is down.
    pub fn heal(&mut self) -> Result<()> {
        for index in 0..2 {
            if self.slots[index].server.is_none() {
                let deadline = Instant::now() + PROMOTION_TIMEOUT;
                let other = self.slots[1 - index].port;
                while self.master_port().ok() != Some(other) {
                    if Instant::now() > deadline {
                        bail!("the sentinels do not name {other}, the server left, as master");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.rejoin(index, other)?;
            }
        }
        Ok(())
    }

    /// SIGTERM on the sentinels, then the servers (SIGKILL after a few
    /// seconds).
    pub fn stop(mut self) {
        for sentinel in self.sentinels.drain(..) {
            let _ = sentinel.stop();
        }
        for slot in &mut self.slots {
            if let Some(server) = slot.server.take() {
                let _ = server.stop();
            }
        }
    }
}

/// A sentinel's configuration: loopback, watching the master on
/// `master_port` with a quorum of 2, down after 1 s.
pub fn sentinel_conf(port: u16, dir: &Path, master_port: u16) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
         sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 2000\n\
         sentinel parallel-syncs {MASTER} 1\n",
        dir.display()
    )
}

/// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../mymaster`.
pub fn sentinel_url(ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
}

/// The value of `field` in an `INFO` reply.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn master_addr(sentinel: u16) -> Result<u16> {
    let reply = command(sentinel, &["SENTINEL", "get-master-addr-by-name", MASTER])?;
    match reply {
        Resp::Array(Some(items)) if items.len() == 2 => Ok(items[1].text()?.parse()?),
        other => bail!("get-master-addr-by-name answered {other:?}"),
    }
}

fn role(port: u16) -> Result<String> {
    match command(port, &["ROLE"])? {
        Resp::Array(Some(items)) if !items.is_empty() => items[0].text(),
        other => bail!("ROLE answered {other:?}"),
    }
}

/// How many other sentinels and replicas `sentinel` knows of.
fn known(sentinel: u16) -> Result<(usize, usize)> {
    let count = |what: &str| -> Result<usize> {
        match command(sentinel, &["SENTINEL", what, MASTER])? {
            Resp::Array(Some(items)) => Ok(items.len()),
            other => bail!("SENTINEL {what} answered {other:?}"),
        }
    };
    Ok((count("sentinels")?, count("replicas")?))
}

/// Whether `sentinel` lists the replica on `port` with no flag but
/// `slave` and its link to the master up.
fn healthy_replica(sentinel: u16, port: u16) -> Result<bool> {
    let Resp::Array(Some(replicas)) = command(sentinel, &["SENTINEL", "replicas", MASTER])? else {
        bail!("SENTINEL replicas did not answer an array");
    };
    for replica in replicas {
        let fields = replica.fields()?;
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        if get("port") == Some(port.to_string().as_str()) {
            return Ok(get("flags") == Some("slave") && get("master-link-status") == Some("ok"));
        }
    }
    Ok(false)
}

/// A RESP reply, as much of it as this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    fn text(&self) -> Result<String> {
        match self {
            Resp::Simple(s) | Resp::Bulk(Some(s)) => Ok(s.clone()),
            other => bail!("expected a string, got {other:?}"),
        }
    }

    /// A flat array of key, value, key, value... as pairs.
    fn fields(&self) -> Result<Vec<(String, String)>> {
        let Resp::Array(Some(items)) = self else {
            bail!("expected an array, got {self:?}");
        };
        items
            .chunks(2)
            .map(|kv| {
                Ok((
                    kv[0].text()?,
                    kv.get(1).map_or(Ok(String::new()), Resp::text)?,
                ))
            })
            .collect()
    }
}

/// Sends one command to the server on loopback `port` (1 s to connect,
/// 2 s to answer) and reads its reply; an error reply is an error.
pub fn command(port: u16, args: &[&str]) -> Result<Resp> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    match parse(&mut BufReader::new(stream))? {
        Resp::Error(e) => bail!("{} answered {e}", args.join(" ")),
        reply => Ok(reply),
    }
}

/// Reads one RESP value.
pub fn parse(reader: &mut impl BufRead) -> Result<Resp> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("the connection closed before a reply");
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Integer(rest.parse()?),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut body = vec![0; len as usize + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len as usize);
                Resp::Bulk(Some(String::from_utf8_lossy(&body).into_owned()))
            }
        }
        "*" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                Resp::Array(None)
            } else {
                let items = (0..len).map(|_| parse(reader)).collect::<Result<_>>()?;
                Resp::Array(Some(items))
            }
        }
        _ => bail!("not a RESP reply: {line:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let wire = b"*3\r\n$6\r\nmaster\r\n:42\r\n*2\r\n$-1\r\n+OK\r\n";
        let reply = parse(&mut &wire[..]).unwrap();
        assert_eq!(
            reply,
            Resp::Array(Some(vec![
                Resp::Bulk(Some("master".into())),
                Resp::Integer(42),
                Resp::Array(Some(vec![Resp::Bulk(None), Resp::Simple("OK".into())])),
            ]))
        );
        assert!(parse(&mut &b"?x\r\n"[..]).is_err());
        assert!(parse(&mut &b""[..]).is_err());
    }

    #[test]
    fn reads_sentinel_fields_and_info() {
        let wire = b"*4\r\n$4\r\nport\r\n$4\r\n6380\r\n$5\r\nflags\r\n$5\r\nslave\r\n";
        let fields = parse(&mut &wire[..]).unwrap().fields().unwrap();
        assert_eq!(fields[1], ("flags".to_string(), "slave".to_string()));
        let info = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "master_host"), None);
    }

    #[test]
    fn the_url_and_configuration_are_loopback_with_short_timeouts() {
        assert_eq!(
            sentinel_url(&[1, 2, 3]),
            "redis+sentinel://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/mymaster"
        );
        let conf = sentinel_conf(26379, Path::new("/tmp/x"), 6379);
        assert!(conf.contains("bind 127.0.0.1\n"));
        assert!(conf.contains("sentinel monitor mymaster 127.0.0.1 6379 2\n"));
        assert!(conf.contains("down-after-milliseconds mymaster 1000\n"));
        assert!(conf.contains("failover-timeout mymaster 2000\n"));
    }
}
