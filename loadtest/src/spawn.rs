//! Starting and stopping the servers under test: for `--spawn`, the pubsub
//! broker binary on `127.0.0.1:0` (its address read from the
//! `listening on` line it prints), or `nats-server` with a generated config
//! file whose WebSocket listener is on a free loopback port (with `--tls`,
//! its `tls` block; pubsub gets `TLS_CERT_FILE` and the rest through its
//! environment, from [`ServerTls::pubsub_env`]); for
//! `--spawn-cluster N`, a `redis-server` on a free loopback port (no
//! persistence; for `nemesis`, with an fsynced AOF) and N brokers in
//! cluster mode on it, each waited for until its `/readyz` says it is
//! ready. Optionally pinned to CPUs. Stopped with
//! SIGTERM (brokers first, then Redis), then killed after a few seconds;
//! killed if dropped while running (the run failed).

use crate::affinity::CpuList;
use crate::endpoint::{Endpoint, TargetKind};
use crate::rest;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustls::ClientConfig;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS for spawned servers: their certificate chain and key, and for
/// mutual TLS the CA their clients' certificates must be signed by.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The pubsub broker's settings: `TLS_CERT_FILE`, `TLS_KEY_FILE` and,
    /// for mutual TLS, `TLS_CLIENT_CA_FILE`.
    pub fn pubsub_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("TLS_CERT_FILE".to_string(), path_text(&self.cert)),
            ("TLS_KEY_FILE".to_string(), path_text(&self.key)),
        ];
        if let Some(ca) = &self.client_ca {
            env.push(("TLS_CLIENT_CA_FILE".to_string(), path_text(ca)));
        }
        env
    }

    /// The `tls` block of a NATS `websocket` listener.
    fn nats_block(&self) -> String {
        let mut block = format!(
            "  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n",
            path_text(&self.cert),
            path_text(&self.key)
        );
        if let Some(ca) = &self.client_ca {
            block.push_str(&format!(
                "    ca_file: {:?}\n    verify: true\n",
                path_text(ca)
            ));
        }
        block.push_str("  }\n");
        block
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A server process this harness started; killed if dropped while running.
pub struct SpawnedServer {
    child: Child,
    /// The signal that asks this server to exit cleanly (nats-server exits
    /// with status 1 on SIGTERM, 0 on SIGINT).
    stop_signal: Signal,
    /// The WebSocket listener.
    pub addr: SocketAddr,
    /// The NATS config file, removed when the server is dropped.
    _config: Option<ConfigFile>,
}

impl SpawnedServer {
    /// Starts the pubsub broker at `path` with `env` on top of
    /// `ADDR=127.0.0.1:0` and `LOG_LEVEL=warn`; its stderr is forwarded,
    /// each line prefixed `[label]`.
    pub fn pubsub(
        path: &Path,
        env: &[(String, String)],
        cpus: Option<&CpuList>,
        label: &str,
    ) -> Result<SpawnedServer> {
        let mut command = Command::new(path);
        command
            .env("ADDR", "127.0.0.1:0")
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cpus) = cpus {
            cpus.pin_command(&mut command)?;
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, addr_found) = mpsc::channel();
        let label = label.to_string();
        // Reads the broker's stderr for the address, then keeps forwarding
        // it (prefixed) so the pipe never fills and warnings are seen.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("listening on ") {
                    let addr = line[at + "listening on ".len()..]
                        .trim()
                        .parse::<SocketAddr>();
                    if let (Some(found), Ok(addr)) = (found.take(), addr) {
                        let _ = found.send(addr);
                        continue;
                    }
                }
                eprintln!("[{label}] {line}");
            }
        });
        let addr = match addr_found.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("{} did not report its address ({status})", path.display());
            }
        };
        Ok(SpawnedServer {
            child,
            stop_signal: Signal::SIGTERM,
            addr,
            _config: None,
        })
    }

    /// Starts `nats-server` (`path`) with a config file that serves
    /// WebSocket on a free loopback port, over TLS with `tls`.
    pub fn nats(
        path: &Path,
        cpus: Option<&CpuList>,
        tls: Option<&ServerTls>,
    ) -> Result<SpawnedServer> {
        let ws_port = free_loopback_port()?;
        let security = match tls {
            Some(tls) => tls.nats_block(),
            None => "  no_tls: true\n".to_string(),
        };
        let config = ConfigFile::create(&format!(
            "host: 127.0.0.1\nport: -1\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n{security}}}\n"
        ))?;
        let mut command = Command::new(path);
        command.arg("-c").arg(&config.path);
        let child = spawn_quiet(command, path, "nats-server", cpus)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], ws_port));
        SpawnedServer {
            child,
            stop_signal: Signal::SIGINT,
            addr,
            _config: Some(config),
        }
        .listening(path)
    }

    /// Starts `redis-server` (`path`) on a free loopback port, without
    /// persistence (`--save "" --appendonly no`).
    pub fn redis(path: &Path, cpus: Option<&CpuList>) -> Result<SpawnedServer> {
        let port = free_loopback_port()?;
        let mut command = Command::new(path);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        SpawnedServer::redis_process(command, path, port, cpus)
    }

    /// Starts `redis-server` (`path`) on loopback `port` with an
    /// append-only file fsynced on every write, in `dir`: started again on
    /// the same port and directory, it reloads what it acked.
    pub fn redis_aof(path: &Path, port: u16, dir: &Path) -> Result<SpawnedServer> {
        SpawnedServer::redis_aof_with(path, port, dir, &[])
    }

    /// As [`SpawnedServer::redis_aof`], with `extra` arguments after the
    /// others (for `nemesis --sentinel`: `--replicaof 127.0.0.1 PORT`).
    pub fn redis_aof_with(
        path: &Path,
        port: u16,
        dir: &Path,
        extra: &[String],
    ) -> Result<SpawnedServer> {
        let mut command = Command::new(path);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir)
            .args(extra);
        SpawnedServer::redis_process(command, path, port, None)
    }

    /// Starts `redis-server` (`path`) as a Sentinel (`--sentinel`) with the
    /// configuration file `conf` (which it rewrites), listening on loopback
    /// `port` as that file says.
    pub fn redis_sentinel(path: &Path, port: u16, conf: &Path) -> Result<SpawnedServer> {
        let mut command = Command::new(path);
        command.arg(conf).arg("--sentinel");
        SpawnedServer::redis_process(command, path, port, None)
    }

    /// Spawns `command` (a `redis-server` at `path`, as a server or a
    /// sentinel, on loopback `port`) and waits until it listens.
    fn redis_process(
        command: Command,
        path: &Path,
        port: u16,
        cpus: Option<&CpuList>,
    ) -> Result<SpawnedServer> {
        let child = spawn_quiet(command, path, "redis-server", cpus)?;
        SpawnedServer {
            child,
            stop_signal: Signal::SIGTERM,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _config: None,
        }
        .listening(path)
    }

    /// Waits until the server accepts connections on `addr`; fails (and
    /// the server is killed, being dropped) if it exits or takes longer
    /// than [`START_TIMEOUT`].
    fn listening(mut self, path: &Path) -> Result<SpawnedServer> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status})", path.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not open {}", path.display(), self.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM (SIGINT for NATS), then SIGKILL if the server has not
    /// exited within [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<ExitStatus> {
        let _ = kill(Pid::from_raw(self.pid()), self.stop_signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The servers a run started: one, or a cluster's nodes and its Redis.
/// Dropped, every one still running is killed (nodes first).
pub struct Spawned {
    /// The pubsub or NATS server, or the cluster's nodes in order.
    pub servers: Vec<SpawnedServer>,
    /// The cluster's Redis.
    pub redis: Option<SpawnedServer>,
}

impl Spawned {
    /// Starts `redis` (the `redis-server` binary), then `nodes` brokers
    /// (`broker`) in cluster mode on it, each with `REDIS_URL`,
    /// `NODE_ID=n0`, `n1`, ... and `env`, and waits until every node is
    /// ready (asking over `https://` with `client_tls`, for brokers that
    /// `env` puts behind TLS). Everything is pinned to `cpus`, if given.
    pub fn cluster(
        broker: &Path,
        redis: &Path,
        nodes: usize,
        env: &[(String, String)],
        cpus: Option<&CpuList>,
        client_tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Spawned> {
        if let Some((key, _)) = env.iter().find(|(k, _)| k == "REDIS_URL" || k == "NODE_ID") {
            bail!("--spawn-cluster sets {key} itself: leave it out of --env");
        }
        let redis = SpawnedServer::redis(redis, cpus)?;
        eprintln!(
            "spawned redis-server (pid {}) on {}",
            redis.pid(),
            redis.addr
        );
        let redis_url = format!("redis://{}", redis.addr);
        let mut spawned = Spawned {
            servers: Vec::with_capacity(nodes),
            redis: Some(redis),
        };
        for index in 0..nodes {
            let name = format!("n{index}");
            let mut node_env = vec![
                ("REDIS_URL".to_string(), redis_url.clone()),
                ("NODE_ID".to_string(), name.clone()),
            ];
            node_env.extend_from_slice(env);
            let node = SpawnedServer::pubsub(broker, &node_env, cpus, &name)?;
            eprintln!("spawned node {name} (pid {}) on {}", node.pid(), node.addr);
            spawned.servers.push(node);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &spawned.servers {
            let mut endpoint = Endpoint::local(TargetKind::Pubsub, node.addr, "/ws")?;
            if let Some(config) = client_tls {
                endpoint = endpoint.with_tls(config)?;
            }
            rest::wait_ready(&endpoint, deadline)?;
        }
        Ok(spawned)
    }

    /// Stops every server, nodes first and Redis last; warns of any that
    /// did not exit cleanly.
    pub fn stop(self) {
        let Spawned { servers, redis } = self;
        for server in servers.into_iter().chain(redis) {
            let pid = server.pid();
            match server.stop() {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    eprintln!("warning: the spawned server (pid {pid}) exited with {status}")
                }
                Err(e) => eprintln!("warning: stopping the spawned server (pid {pid}): {e:#}"),
            }
        }
    }
}

/// A file in the temporary directory, named after this process, removed
/// when dropped.
struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    fn create(text: &str) -> Result<ConfigFile> {
        let path = std::env::temp_dir().join(format!("loadtest-nats-{}.conf", std::process::id()));
        // create_new: never follows or reuses a file someone else put there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let config = ConfigFile { path };
        file.write_all(text.as_bytes())?;
        Ok(config)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts a server that needs no input and whose output is not read,
/// pinned to `cpus`; a failure names the Debian `package` to install.
fn spawn_quiet(
    mut command: Command,
    path: &Path,
    package: &str,
    cpus: Option<&CpuList>,
) -> Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(cpus) = cpus {
        cpus.pin_command(&mut command)?;
    }
    command.spawn().with_context(|| {
        format!(
            "cannot start {} (apt-get install {package})",
            path.display()
        )
    })
}

/// A loopback port that was free a moment ago.
pub fn free_loopback_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The default broker binary: `pubsub` next to this executable (both are
/// built into the same `target/<profile>/`), else the workspace's
/// `target/release/pubsub`.
pub fn default_broker_path() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("pubsub")));
    match sibling {
        Some(path) if path.is_file() => path,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/pubsub"),
    }
}
