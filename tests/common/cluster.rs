//! Cluster fixtures: a real `redis-server` on a free loopback port (which
//! a test can kill, restart, pause and resume), nodes (the real binary in
//! cluster mode) that share it, and threads that read a subscriber's
//! frames or publish a stream while the test breaks things.
//!
//! Every process here is one the fixture started, stopped by its pid, and
//! stopped on drop; every wait is bounded.
//!
//! Long on purpose: the cluster tests' fixtures (a Redis server that can
//! be killed, paused and restarted, broker nodes, collecting subscribers
//! and publishers) in one place, so that each test is about its failure.

use super::*;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// Sends `signal` to the process `pid` (one this test started).
fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
    // SAFETY: kill(2) with a pid of a child this fixture owns.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        io::Error::last_os_error()
    );
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

// ---- Redis ------------------------------------------------------------------------

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` on 127.0.0.1, without persistence or with an
/// append-only file fsynced on every write (`with_aof`), in a temporary
/// directory of its own. Killed and its directory removed on drop.
pub struct RedisServer {
    pub port: u16,
    /// A second port that speaks TLS (`start_with_tls`), with a server
    /// certificate for 127.0.0.1 from a CA of the test's own, and that
    /// asks clients for a certificate from the same CA.
    pub tls_port: Option<u16>,
    dir: PathBuf,
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// `--save "" --appendonly no` on a free port.
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// `--appendonly yes --appendfsync always` on a free port.
    pub fn start_with_aof() -> RedisServer {
        RedisServer::launch(true)
    }

    /// As `start`, and TLS on a second port: see `tls_url`, `ca_file`.
    pub fn start_with_tls() -> RedisServer {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let mut server = RedisServer::new(free_port(), false);
            server.tls_port = Some(free_port());
            server.write_certificates();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => failures.push(log),
            }
        }
        panic!("redis-server did not start with TLS on 5 free ports: {failures:#?}");
    }

    /// A CA (`ca.pem`), the server's certificate for 127.0.0.1 signed by
    /// it (`server.pem`, `server.key`) and a client's (`client.pem`,
    /// `client.key`), in the server's directory.
    fn write_certificates(&self) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pubsub test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["pubsub-node".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        std::fs::write(self.dir.join("client.pem"), client.pem()).unwrap();
        std::fs::write(self.dir.join("client.key"), client_key.serialize_pem()).unwrap();
        std::fs::write(self.dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(self.dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(self.dir.join("server.key"), server_key.serialize_pem()).unwrap();
    }

    /// `rediss://` on the TLS port.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("started with TLS")
        )
    }

    /// The CA the TLS port's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client certificate and its key that the TLS port accepts.
    pub fn client_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client.key"))
    }

    /// Without persistence on `port` (which a node may already be trying).
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer::new(port, false);
        if let Err(log) = server.spawn() {
            panic!("redis-server did not start on port {port}: {log}");
        }
        server
    }

    fn launch(aof: bool) -> RedisServer {
        // Another process may take the port between our probe and Redis's
        // bind: try another.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let mut server = RedisServer::new(free_port(), aof);
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => failures.push(log),
            }
        }
        panic!("redis-server did not start on 5 free ports: {failures:#?}");
    }

    fn new(port: u16, aof: bool) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "pubsub-redis-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        RedisServer {
            port,
            tls_port: None,
            dir,
            aof,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Starts `redis-server` and waits until it answers PING; `Err` with
    /// its log if it exits first (the port was taken, say).
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--logfile", "redis.log"]);
        if let Some(tls_port) = self.tls_port {
            command
                .arg("--tls-port")
                .arg(tls_port.to_string())
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.ca_file())
                .args(["--tls-auth-clients", "yes"]);
        }
        if self.aof {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: the cluster tests need it \
                 (Debian/Ubuntu: apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited with {status}; log:\n{}", self.log()));
            }
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer within {WAIT:?}; log:\n{}",
            self.port,
            self.log()
        );
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .is_ok_and(|pong| pong == "PONG")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// A new connection (1 s timeouts).
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("connect to Redis: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        conn
    }

    /// Runs `cmd` on a new connection.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query(&mut self.connection())
            .unwrap_or_else(|e| panic!("a Redis command failed: {e}"))
    }

    /// A field of `INFO`, if Redis has it.
    pub fn info_field(&self, field: &str) -> Option<String> {
        let info: String = self.query(&redis::cmd("INFO"));
        info.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        child.kill().expect("kill redis-server");
        child.wait().unwrap();
    }

    /// Starts it again on the same port and directory (with an AOF, it
    /// loads what it had).
    pub fn restart(&mut self) {
        // The port is ours, but the kernel may take a moment to free it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(log) if Instant::now() > deadline => {
                    panic!("redis-server did not start again: {log}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGSTOP: Redis holds every connection and answers nothing.
    pub fn pause(&self) {
        send_signal(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        send_signal(self.pid(), libc::SIGCONT);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---- nodes ------------------------------------------------------------------------

/// A broker process in cluster mode.
pub struct Node {
    pub id: String,
    pub process: BrokerProcess,
}

/// The settings every test node gets unless the test says otherwise:
/// queues and rings big enough that a burst is never a slow consumer and
/// an outage of a few seconds is repaired from the ring.
pub const NODE_DEFAULTS: &[(&str, &str)] = &[
    ("SUBSCRIBER_QUEUE_SIZE", "100000"),
    ("RING_BUFFER_SIZE", "20000"),
];

impl Node {
    /// Starts the binary with `REDIS_URL=redis_url`, `NODE_ID=id`,
    /// `NODE_DEFAULTS` and `env` (which may override them); waits for its
    /// `listening on` line only.
    pub fn spawn(redis_url: &str, id: &str, env: &[(&str, &str)]) -> Node {
        let mut vars: Vec<(&str, &str)> = vec![("REDIS_URL", redis_url), ("NODE_ID", id)];
        vars.extend_from_slice(NODE_DEFAULTS);
        vars.extend_from_slice(env);
        Node {
            id: id.to_string(),
            process: BrokerProcess::spawn(&vars),
        }
    }

    /// As `spawn`, then waits until `/readyz` says ready.
    pub fn start(redis_url: &str, id: &str, env: &[(&str, &str)]) -> Node {
        let node = Node::spawn(redis_url, id, env);
        node.wait_ready(WAIT);
        node
    }

    pub fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    pub fn ws_url(&self) -> String {
        ws_url(self.addr())
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.ws_url())
    }

    /// `/readyz`: status code and body.
    pub fn readyz(&self) -> (u16, Value) {
        http_json(self.addr(), "GET", "/readyz", None, &[])
    }

    /// What `/health` says of the backplane: `"up"` or `"down"`.
    pub fn backplane(&self) -> String {
        let (status, health) = http_json(self.addr(), "GET", "/health", None, &[]);
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["cluster"]["node"], self.id.as_str(), "{health}");
        health["cluster"]["backplane"]
            .as_str()
            .unwrap_or_else(|| panic!("no cluster.backplane in /health: {health}"))
            .to_string()
    }

    /// Waits (at most `limit`) until `/readyz` answers 200.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let (status, body) = self.readyz();
            if status == 200 {
                assert_eq!(body["status"], "ready");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready within {limit:?}: {status} {body}; stderr:\n{}",
                self.id,
                self.process.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process still runs and has not panicked (a panic on a thread
    /// other than main does not end it).
    pub fn assert_sound(&mut self) {
        if let Some(status) = self.process.child.try_wait().unwrap() {
            panic!(
                "node {} exited with {status}; stderr:\n{}",
                self.id,
                self.process.stderr()
            );
        }
        let stderr = self.process.stderr();
        assert!(
            !stderr.contains("panicked"),
            "node {} panicked:\n{stderr}",
            self.id
        );
    }

    /// SIGSTOP on the broker process.
    pub fn pause(&self) {
        send_signal(self.process.child.id(), libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        send_signal(self.process.child.id(), libc::SIGCONT);
    }

    /// A counter or gauge of `/metrics` (unlabelled), if the node has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let response = http(self.addr(), "GET", "/metrics", None, &[]);
        assert_eq!(response.status, 200);
        String::from_utf8(response.body)
            .unwrap()
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
    }
}

/// A Redis server and nodes `a`, `b`, `c`, ... on it, all ready.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub redis: RedisServer,
}

impl Cluster {
    /// A Redis without persistence and `n` nodes with `env`.
    pub fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Cluster::on(RedisServer::start(), n, env)
    }

    /// `n` nodes with `env` on `redis`.
    pub fn on(redis: RedisServer, n: usize, env: &[(&str, &str)]) -> Cluster {
        let url = redis.url();
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let id = char::from(b'a' + i as u8).to_string();
                Node::spawn(&url, &id, env)
            })
            .collect();
        for node in &nodes {
            node.wait_ready(WAIT);
        }
        Cluster { nodes, redis }
    }

    /// Waits until every node lists `topic` (its creation reached them).
    pub fn wait_listed(&self, topic: &str) {
        for node in &self.nodes {
            eventually(&format!("{topic} listed on node {}", node.id), || {
                subscribers(node.addr(), topic).is_some()
            });
        }
    }

    /// Every node still runs and none panicked.
    pub fn assert_sound(&mut self) {
        for node in &mut self.nodes {
            node.assert_sound();
        }
    }

    /// Every node's log lines at WARN or ERROR, for a failure's message.
    pub fn warnings(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for line in node.process.stderr().lines() {
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    out.push_str(&format!("[{}] {line}\n", node.id));
                }
            }
        }
        out
    }

    /// Waits (at most `limit`) until every node is ready.
    pub fn wait_ready(&self, limit: Duration) {
        for node in &self.nodes {
            node.wait_ready(limit);
        }
    }
}

// ---- subscribers and publishers on threads ------------------------------------------

/// A WebSocket connection read on a thread: every JSON frame it receives
/// (heartbeats aside) is kept, in order. It can be asked to send pings.
pub struct Collector {
    seen: Arc<Mutex<Vec<Value>>>,
    to_send: mpsc::Sender<Value>,
    reader: TestThread,
    pub name: String,
}

/// A thread a test runs until it says stop (the body polls the flag it is
/// given) or the body ends; stopped and joined on drop too.
struct TestThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestThread {
    fn spawn(body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> TestThread {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || body(stop))
        };
        TestThread {
            stop,
            thread: Some(thread),
        }
    }

    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the body to end; a panic in it fails the test.
    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("a test thread panicked");
        }
    }

    /// Tells the body to stop, then `join`s.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

impl Drop for TestThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Collector {
    /// Subscribes `client` to `topic` (the ack is checked and returned),
    /// then reads it on a thread.
    pub fn subscribe(name: &str, mut client: Client, topic: &str) -> (Collector, Value) {
        let ack = client.subscribe(topic, 0);
        (Collector::start(name, client), ack)
    }

    pub fn start(name: &str, mut client: Client) -> Collector {
        client.set_read_timeout(Duration::from_millis(50));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (to_send, outgoing) = mpsc::channel::<Value>();
        let reader = {
            let seen = Arc::clone(&seen);
            TestThread::spawn(move |stop| {
                // Bounded by the test's stop (and by WAIT after it at most).
                while !stop.load(Ordering::Relaxed) {
                    for value in outgoing.try_iter() {
                        client.send(value);
                    }
                    let value = match client.ws.read() {
                        Ok(Message::Text(text)) => {
                            serde_json::from_str(text.as_str()).expect("server sends JSON")
                        }
                        Ok(Message::Close(frame)) => {
                            json!({"type":"closed","frame":format!("{frame:?}")})
                        }
                        Ok(_) => continue,
                        Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
                        Err(e) => json!({"type":"read_error","error":e.to_string()}),
                    };
                    if value["type"] == "info" && value["msg"] == "ping" {
                        continue;
                    }
                    let end = matches!(value["type"].as_str(), Some("closed" | "read_error"));
                    seen.lock().unwrap().push(value);
                    if end {
                        return;
                    }
                }
            })
        };
        Collector {
            seen,
            to_send,
            reader,
            name: name.to_string(),
        }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// Sends `value` from the reading thread.
    pub fn send(&self, value: Value) {
        self.to_send.send(value).expect("the reader runs");
    }

    /// Waits (at most `limit`) until `condition` holds of what was
    /// received; panics with it otherwise.
    pub fn wait_until(&self, what: &str, limit: Duration, condition: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if condition(&seen) {
                    return;
                }
                if Instant::now() > deadline {
                    let tail: Vec<&Value> = seen.iter().rev().take(5).collect();
                    panic!(
                        "{}: timed out after {limit:?} waiting for {what}; {} frames, the last: {tail:#?}",
                        self.name,
                        seen.len()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a ping and waits (at most `limit`) for its pong.
    pub fn ping(&self, tag: &str, limit: Duration) {
        self.send(json!({"type":"ping","request_id":tag}));
        self.wait_until(&format!("pong {tag}"), limit, |seen| {
            seen.iter()
                .any(|v| v["type"] == "pong" && v["request_id"] == tag)
        });
    }

    /// Waits (at most `limit`) until an event of `topic` with `seq` arrived.
    pub fn wait_for_seq(&self, topic: &str, seq: u64, limit: Duration) {
        self.wait_until(&format!("{topic} seq {seq}"), limit, |seen| {
            seen.iter()
                .any(|v| v["type"] == "event" && v["topic"] == topic && v["seq"] == seq)
        });
    }

    /// Stops the thread; returns everything received.
    pub fn finish(mut self) -> Vec<Value> {
        self.reader.stop();
        self.seen()
    }
}

/// What became of one publish.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    /// The ack's `seq`, or the error code.
    pub outcome: Result<u64, String>,
    /// From the send to the reply.
    pub latency: Duration,
    /// When the reply came.
    pub answered: Instant,
}

/// A WebSocket publisher on a thread: publishes to `topic` with ids
/// `<prefix>-<i>`, `window` frames in flight at a time (then their
/// replies), with `pause` between windows, until stopped or `limit` sent.
pub struct Publisher {
    sent: Arc<Mutex<Vec<Sent>>>,
    thread: TestThread,
}

pub struct PublisherPlan<'a> {
    pub topic: &'a str,
    pub prefix: &'a str,
    pub window: usize,
    pub pause: Duration,
    pub limit: usize,
    pub payload_bytes: usize,
}

impl Publisher {
    pub fn start(mut client: Client, plan: PublisherPlan<'_>) -> Publisher {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (topic, prefix) = (plan.topic.to_string(), plan.prefix.to_string());
        let (window, pause, limit) = (plan.window.max(1), plan.pause, plan.limit);
        let filler = "x".repeat(plan.payload_bytes);
        let thread = {
            let sent = Arc::clone(&sent);
            TestThread::spawn(move |stop| {
                let mut i = 0;
                while i < limit && !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let batch: Vec<String> = (i..limit.min(i + window))
                        .map(|n| format!("{prefix}-{n}"))
                        .collect();
                    for id in &batch {
                        client.send(json!({"type":"publish","topic":topic,
                            "message":{"id":id,"payload":{"f":filler}},"request_id":id}));
                    }
                    for id in &batch {
                        let reply = client.recv();
                        assert_eq!(
                            reply["request_id"],
                            id.as_str(),
                            "replies in order: {reply}"
                        );
                        let outcome = match reply["type"].as_str() {
                            Some("ack") => Ok(reply["seq"]
                                .as_u64()
                                .unwrap_or_else(|| panic!("a publish ack carries seq: {reply}"))),
                            Some("error") => {
                                Err(reply["error"]["code"].as_str().unwrap().to_string())
                            }
                            _ => panic!("a reply to a publish: {reply}"),
                        };
                        sent.lock().unwrap().push(Sent {
                            id: id.clone(),
                            outcome,
                            latency: started.elapsed(),
                            answered: Instant::now(),
                        });
                    }
                    i += batch.len();
                    std::thread::sleep(pause);
                }
            })
        };
        Publisher { sent, thread }
    }

    /// Replies so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// Acks so far.
    pub fn acked(&self) -> usize {
        self.sent().iter().filter(|s| s.outcome.is_ok()).count()
    }

    /// Waits (at most `limit`) until `n` more publishes were acked than now.
    pub fn wait_acked(&self, more: usize, limit: Duration) {
        let target = self.acked() + more;
        let deadline = Instant::now() + limit;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "{more} acks did not come within {limit:?}; last replies: {:?}",
                self.sent().iter().rev().take(3).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most `limit`) until all of the plan's publishes were
    /// answered; returns every reply.
    pub fn complete(mut self, limit: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the publisher did not finish within {limit:?}; {} replies",
                self.sent().len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.thread.join();
        self.sent()
    }

    /// Stops (after the window in flight) and returns every reply.
    pub fn finish(mut self) -> Vec<Sent> {
        self.thread.stop();
        self.sent()
    }
}

// ---- what subscribers saw -----------------------------------------------------------

/// The `topic_reset` that began a run (none for the first), and the run's
/// events: (seq, message id).
pub type Run = (Option<Value>, Vec<(u64, String)>);

/// `topic`'s frames in what one subscriber saw, in runs: each run is the
/// events (seq, message id) after the subscribe or after a `topic_reset`
/// (which is returned with it).
pub fn runs(seen: &[Value], topic: &str) -> Vec<Run> {
    let mut runs = vec![(None, Vec::new())];
    for value in seen.iter().filter(|v| v["topic"] == topic) {
        match (value["type"].as_str(), value["msg"].as_str()) {
            (Some("event"), _) => runs.last_mut().unwrap().1.push((
                value["seq"].as_u64().expect("an event carries seq"),
                value["message"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            (Some("info"), Some("topic_reset")) => runs.push((Some(value.clone()), Vec::new())),
            _ => {}
        }
    }
    runs
}

/// Asserts that the `seq`s of `events` are consecutive, starting at
/// `first`; `who` names the subscriber in the failure.
pub fn assert_consecutive(who: &str, events: &[(u64, String)], first: u64) {
    for (i, (seq, id)) in events.iter().enumerate() {
        assert_eq!(
            *seq,
            first + i as u64,
            "{who}: event {i} (id {id}) has seq {seq}, want {}: a gap or a duplicate; around it: {:?}",
            first + i as u64,
            &events[i.saturating_sub(3)..(i + 3).min(events.len())]
        );
    }
}
