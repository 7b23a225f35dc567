//! One run, whatever the scenario: create the topics (on the first node;
//! against a cluster, wait until every node knows them), start the
//! event-loop threads and let them open their connections, set the window
//! (publishing start, end of warm-up, end of measurement), print a progress
//! line each second, sample the servers' (each node's, Redis's) and the
//! harness's CPU and memory, and each cluster node's backplane round trips,
//! at the window's edges, wait for in-flight deliveries (bounded by the
//! grace period), stop the threads and merge what they counted.

use crate::endpoint::{Endpoint, TargetKind};
use crate::event_loop::{self, ConnSpec, LoopPlan, Pacing, Shared, Window};
use crate::nodes::Nodes;
use crate::rest;
use crate::resume::ResumePlan;
use crate::slow_consumers::{self, SlowOutcome};
use crate::sysstat::{rss_kib, CpuSample, Subject};
use crate::tally::Tally;
use anyhow::{anyhow, bail, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    pub topics: usize,
    pub topic_prefix: String,
    /// Reading subscribers in total; subscriber `i` takes topic `i % topics`.
    pub subscribers: usize,
    pub publishers: usize,
    pub pacing: Pacing,
    pub message_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the window: how long to wait for deliveries still in flight.
    pub grace: Duration,
    pub threads: usize,
    /// Spread subscribers over this many source addresses (127.0.0.1, .2, …).
    pub source_addrs: usize,
    /// Subscribers that never read (the `slow` scenario), and their SO_RCVBUF.
    pub slow_subscribers: usize,
    pub slow_recv_buffer: usize,
    /// Every connection must be set up within this time.
    pub setup_timeout: Duration,
    /// Abort if any connection fails to set up (else count the failures).
    pub require_all_connections: bool,
    /// Print a progress line each second on stderr.
    pub progress: bool,
    /// `resume`: subscribers drop and resume (open loop only).
    pub resume: Option<ResumePlan>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    /// Messages stamped inside the measured window, and the deliveries
    /// expected for them.
    pub published: u64,
    pub expected: u64,
    pub measured_secs: f64,
    /// Time to open every connection.
    pub connect_secs: f64,
    pub harness_cpu_pct: Option<f64>,
    /// The servers' figures, summed over the nodes.
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// The servers' RSS before the harness connected.
    pub server_rss_before_kib: Option<u64>,
    /// Each node's figures, in the order of the nodes.
    pub nodes: Vec<NodeOutcome>,
    /// The Redis server of a spawned cluster: its CPU% over the window.
    pub redis_cpu_pct: Option<f64>,
    pub slow: Option<SlowOutcome>,
}

/// One node's share of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeOutcome {
    /// Its WebSocket address.
    pub addr: String,
    /// Connections placed on it: reading and slow subscribers, publishers.
    pub subscribers: u64,
    pub publishers: u64,
    /// CPU% over the measured window and RSS at its end (with its pid).
    pub cpu_pct: Option<f64>,
    pub rss_kib: Option<u64>,
    /// A cluster node's pipelines of requests to Redis during the measured
    /// window (`pubsub_backplane_rtt_seconds_count` from its `/metrics`).
    pub backplane_round_trips: Option<u64>,
}

/// The processes to sample, if known: each node's (in the order of the
/// nodes, or none), and a spawned cluster's Redis.
#[derive(Debug, Clone, Default)]
pub struct ServerPids {
    pub nodes: Vec<i32>,
    pub redis: Option<i32>,
}

/// Runs `plan` against `nodes`; the processes of `pids` are sampled for
/// CPU and memory.
pub fn run(nodes: &Nodes, plan: &Plan, pids: &ServerPids) -> Result<Outcome> {
    if plan.topics == 0 {
        bail!("--topics must be at least 1");
    }
    if plan.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let topics = topic_names(plan);
    let setup_deadline = Instant::now() + plan.setup_timeout;
    if nodes.kind() == TargetKind::Pubsub {
        rest::create_topics(nodes.rest(), &topics)?;
        for node in &nodes.endpoints()[1..] {
            rest::wait_for_topics(node, &topics, setup_deadline)?;
        }
    }
    let servers: Vec<Subject> = pids.nodes.iter().copied().map(Subject::Pid).collect();
    let server_rss_before_kib = sum(servers.iter().map(|&s| rss_kib(s)));
    let (shared, polls) =
        Shared::new(plan.threads, plan.publishers, plan.topics, plan.subscribers)?;
    let loop_plan = Arc::new(LoopPlan {
        nodes: nodes.clone(),
        topics: topics.clone(),
        publishers: plan.publishers,
        pacing: plan.pacing,
        message_size: plan.message_size,
        setup_deadline,
        resume: plan.resume,
    });
    let barrier = Arc::new(Barrier::new(plan.threads + 1));
    let connecting = Instant::now();
    let threads: Vec<_> = distribute(plan, nodes)
        .into_iter()
        .zip(polls)
        .enumerate()
        .map(|(index, (specs, poll))| {
            let (plan, shared, barrier) = (
                Arc::clone(&loop_plan),
                Arc::clone(&shared),
                Arc::clone(&barrier),
            );
            std::thread::Builder::new()
                .name(format!("loop-{index}"))
                .spawn(move || event_loop::run_thread(index, poll, specs, plan, shared, barrier))
                .expect("spawn a loop thread")
        })
        .collect();
    let slow = slow_consumers::open(
        nodes,
        &topics,
        plan.slow_subscribers,
        plan.slow_recv_buffer,
        plan.subscribers as u64,
        setup_deadline,
    );
    barrier.wait();
    let connect_secs = connecting.elapsed().as_secs_f64();
    let connected: u64 = shared
        .threads
        .iter()
        .map(|t| t.connected.load(Ordering::SeqCst))
        .sum();
    let failed = (plan.subscribers + plan.publishers) as u64 - connected;
    let setup_error = match &slow {
        Err(error) => Some(anyhow!("opening the slow subscribers: {error:#}")),
        Ok(_) if plan.require_all_connections && failed > 0 => Some(anyhow!(
            "{failed} of {} connections failed to set up",
            plan.subscribers + plan.publishers
        )),
        Ok(_) => None,
    };
    if let Some(error) = setup_error {
        // Released without a window, the threads return at once.
        barrier.wait();
        let tally = join(threads)?;
        let samples = tally.connect_failure_samples.join("; ");
        return Err(error.context(samples));
    }
    if plan.progress {
        eprintln!(
            "connected {connected} ({failed} failed) in {connect_secs:.2}s; running {:.1}s warm-up + {:.1}s",
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64()
        );
    }
    let start_ns = shared.now_ns();
    let window = Window {
        start_ns,
        warmup_end_ns: start_ns + plan.warmup.as_nanos() as u64,
        end_ns: start_ns + (plan.warmup + plan.duration).as_nanos() as u64,
    };
    shared.window.set(window).expect("the window is set once");
    barrier.wait();
    let watched = Watched {
        servers,
        redis: pids.redis.map(Subject::Pid),
        metrics: match nodes.kind() {
            TargetKind::Pubsub => nodes.endpoints().to_vec(),
            TargetKind::Nats => Vec::new(),
        },
    };
    let measured = watch(&shared, plan, window, &watched);
    shared.stop_all();
    let tally = join(threads)?;
    let slow = match slow {
        Ok(connections) if plan.slow_subscribers > 0 => Some(slow_consumers::read_out(connections)),
        _ => None,
    };
    let published = shared
        .publishers
        .iter()
        .map(|p| p.published_measured.load(Ordering::SeqCst))
        .sum();
    let expected = shared
        .publishers
        .iter()
        .map(|p| p.expected_measured.load(Ordering::SeqCst))
        .sum();
    Ok(Outcome {
        tally,
        published,
        expected,
        measured_secs: plan.duration.as_secs_f64(),
        connect_secs,
        harness_cpu_pct: measured.harness_cpu_pct,
        server_cpu_pct: sum(measured.server_cpu_pct.iter().copied()),
        server_rss_kib: sum(measured.server_rss_kib.iter().copied()),
        server_rss_before_kib,
        nodes: node_outcomes(plan, nodes, &measured),
        redis_cpu_pct: measured.redis_cpu_pct,
        slow,
    })
}

/// The sum of figures that are all known; `None` if one is not, or if
/// there are none.
fn sum<T: std::iter::Sum<T>>(figures: impl Iterator<Item = Option<T>>) -> Option<T> {
    let mut figures = figures.peekable();
    figures.peek()?;
    figures.sum()
}

/// Each node's connections (as placed by [`distribute`] and the slow
/// subscribers') and figures.
fn node_outcomes(plan: &Plan, nodes: &Nodes, measured: &Measured) -> Vec<NodeOutcome> {
    let mut outcomes: Vec<NodeOutcome> = nodes
        .endpoints()
        .iter()
        .enumerate()
        .map(|(i, endpoint)| NodeOutcome {
            addr: endpoint.addr.to_string(),
            cpu_pct: measured.server_cpu_pct.get(i).copied().flatten(),
            rss_kib: measured.server_rss_kib.get(i).copied().flatten(),
            backplane_round_trips: measured.round_trips.get(i).copied().flatten(),
            ..NodeOutcome::default()
        })
        .collect();
    for i in 0..plan.subscribers + plan.slow_subscribers {
        outcomes[nodes.subscriber_node(i)].subscribers += 1;
    }
    for id in 0..plan.publishers {
        outcomes[nodes.publisher_node(id)].publishers += 1;
    }
    outcomes
}

/// The run's topics: `<prefix>-0`, `<prefix>-1`, ...
pub fn topic_names(plan: &Plan) -> Vec<String> {
    (0..plan.topics)
        .map(|i| format!("{}-{i}", plan.topic_prefix))
        .collect()
}

/// Which connections each loop thread opens, and on which node:
/// subscribers and publishers dealt round-robin over the threads, placed
/// on the nodes as [`Nodes`] says.
fn distribute(plan: &Plan, nodes: &Nodes) -> Vec<Vec<ConnSpec>> {
    let mut specs = vec![Vec::new(); plan.threads];
    for i in 0..plan.subscribers {
        let node = nodes.subscriber_node(i);
        specs[i % plan.threads].push(ConnSpec::Subscriber {
            id: i,
            topic: i % plan.topics,
            node,
            source: source_addr(plan.source_addrs, &nodes.endpoints()[node], i),
        });
    }
    for id in 0..plan.publishers {
        specs[id % plan.threads].push(ConnSpec::Publisher {
            id,
            node: nodes.publisher_node(id),
        });
    }
    specs
}

/// Connection `i`'s source address: 127.0.0.1 + (i mod n), when n > 1 and
/// the server is on IPv4 loopback.
fn source_addr(addrs: usize, endpoint: &Endpoint, i: usize) -> Option<IpAddr> {
    if addrs <= 1 || !endpoint.addr.is_ipv4() {
        return None;
    }
    let base = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    Some(IpAddr::V4(Ipv4Addr::from(base + (i % addrs) as u32)))
}

fn join(threads: Vec<std::thread::JoinHandle<std::io::Result<Tally>>>) -> Result<Tally> {
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread
            .join()
            .map_err(|_| anyhow!("a loop thread panicked"))??;
        total.merge(tally);
    }
    Ok(total)
}

/// What is watched during the window besides the harness.
struct Watched {
    /// The nodes' processes, in order (or none).
    servers: Vec<Subject>,
    redis: Option<Subject>,
    /// pubsub nodes, whose `/metrics` may count backplane round trips.
    metrics: Vec<Endpoint>,
}

/// Samples taken when the measured window starts.
struct WindowStart {
    harness: Option<CpuSample>,
    servers: Vec<Option<CpuSample>>,
    redis: Option<CpuSample>,
    round_trips: Vec<Option<u64>>,
}

impl WindowStart {
    fn take(watched: &Watched) -> WindowStart {
        WindowStart {
            harness: CpuSample::take(Subject::Harness),
            servers: watched
                .servers
                .iter()
                .map(|&s| CpuSample::take(s))
                .collect(),
            redis: watched.redis.and_then(CpuSample::take),
            round_trips: watched
                .metrics
                .iter()
                .map(rest::backplane_round_trips)
                .collect(),
        }
    }

    /// The figures over the window, which ends now.
    fn until_now(self, watched: &Watched) -> Measured {
        let percent = |start: Option<CpuSample>, subject| {
            Some(start?.percent_until(&CpuSample::take(subject)?))
        };
        Measured {
            harness_cpu_pct: percent(self.harness, Subject::Harness),
            server_cpu_pct: watched
                .servers
                .iter()
                .zip(self.servers)
                .map(|(&s, start)| percent(start, s))
                .collect(),
            server_rss_kib: watched.servers.iter().map(|&s| rss_kib(s)).collect(),
            redis_cpu_pct: watched.redis.and_then(|s| percent(self.redis, s)),
            round_trips: watched
                .metrics
                .iter()
                .zip(self.round_trips)
                .map(|(node, start)| rest::backplane_round_trips(node)?.checked_sub(start?))
                .collect(),
        }
    }
}

/// Figures of the measured window; per node, in the order of the nodes.
struct Measured {
    harness_cpu_pct: Option<f64>,
    server_cpu_pct: Vec<Option<f64>>,
    server_rss_kib: Vec<Option<u64>>,
    redis_cpu_pct: Option<f64>,
    round_trips: Vec<Option<u64>>,
}

/// Runs the clock: progress lines, samples at the window's edges, then the
/// wait for in-flight deliveries. Returns when the run should stop.
fn watch(shared: &Shared, plan: &Plan, window: Window, watched: &Watched) -> Measured {
    let at = |ns: u64| shared.epoch + Duration::from_nanos(ns);
    let (warmup_end, end) = (at(window.warmup_end_ns), at(window.end_ns));
    let give_up = end + plan.grace;
    let mut window_start = None;
    let mut measured = None;
    let mut progress = Progress::new(shared, watched);
    let mut next_line = at(window.start_ns) + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if window_start.is_none() && measured.is_none() && now >= warmup_end {
            window_start = Some(WindowStart::take(watched));
        }
        if measured.is_none() && now >= end {
            measured = window_start.take().map(|start| start.until_now(watched));
        }
        if now >= next_line {
            if plan.progress {
                // The phase of the second that just ended.
                let then = now - Duration::from_millis(500);
                let phase = if then < warmup_end {
                    "warm-up"
                } else if then < end {
                    "measure"
                } else {
                    "drain"
                };
                progress.line(now.duration_since(at(window.start_ns)), phase);
            }
            next_line += Duration::from_secs(1);
        }
        if now >= end && (now >= give_up || progress.all_delivered()) {
            return measured.expect("sampled at the end of the window");
        }
        let next_edge = [warmup_end, end, next_line]
            .into_iter()
            .filter(|&edge| edge > now)
            .min()
            .unwrap_or(give_up);
        let wait = next_edge
            .min(now + Duration::from_millis(20))
            .duration_since(now);
        std::thread::sleep(wait);
    }
}

/// The once-a-second progress line, from the threads' shared counters.
struct Progress<'a> {
    shared: &'a Shared,
    watched: &'a Watched,
    last_sent: u64,
    last_delivered: u64,
    last_harness: Option<CpuSample>,
    last_servers: Vec<Option<CpuSample>>,
    last_redis: Option<CpuSample>,
}

impl<'a> Progress<'a> {
    fn new(shared: &'a Shared, watched: &'a Watched) -> Progress<'a> {
        Progress {
            shared,
            watched,
            last_sent: 0,
            last_delivered: 0,
            last_harness: CpuSample::take(Subject::Harness),
            last_servers: watched
                .servers
                .iter()
                .map(|&s| CpuSample::take(s))
                .collect(),
            last_redis: watched.redis.and_then(CpuSample::take),
        }
    }

    /// True once every publisher has sent its last message and every
    /// expected delivery of the measured window has arrived (or, in
    /// `resume`, is known never to come: missed by a resume that did not
    /// recover).
    fn all_delivered(&self) -> bool {
        let publishers = &self.shared.publishers;
        if !publishers.iter().all(|p| p.finished.load(Ordering::SeqCst)) {
            return false;
        }
        let expected: u64 = publishers
            .iter()
            .map(|p| p.expected_measured.load(Ordering::SeqCst))
            .sum();
        let delivered: u64 = self
            .shared
            .threads
            .iter()
            .map(|t| t.delivered_measured.load(Ordering::SeqCst) + t.missed.load(Ordering::SeqCst))
            .sum();
        delivered >= expected
    }

    fn line(&mut self, elapsed: Duration, phase: &str) {
        let sent: u64 = self
            .shared
            .publishers
            .iter()
            .map(|p| p.sent.load(Ordering::Relaxed))
            .sum();
        let threads = &self.shared.threads;
        let delivered: u64 = threads
            .iter()
            .map(|t| t.delivered.load(Ordering::Relaxed))
            .sum();
        let disconnects: u64 = threads
            .iter()
            .map(|t| t.disconnects.load(Ordering::Relaxed))
            .sum();
        let errors: u64 = threads
            .iter()
            .map(|t| t.errors.load(Ordering::Relaxed))
            .sum();
        let harness = CpuSample::take(Subject::Harness);
        let servers: Vec<Option<CpuSample>> = self
            .watched
            .servers
            .iter()
            .map(|&s| CpuSample::take(s))
            .collect();
        let redis = self.watched.redis.and_then(CpuSample::take);
        let percent = |before: Option<CpuSample>, after: Option<CpuSample>| {
            Some(before?.percent_until(&after?))
        };
        let shown = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.0}%"));
        let server = sum(self
            .last_servers
            .iter()
            .zip(&servers)
            .map(|(&before, &after)| percent(before, after)));
        let redis_part = match self.watched.redis {
            Some(_) => format!(" redis {}", shown(percent(self.last_redis, redis))),
            None => String::new(),
        };
        eprintln!(
            "[{:>5.1}s] {phase:<7} sent/s {:>9} delivered/s {:>10} disconnects {disconnects} errors {errors} cpu harness {} server {}{redis_part}",
            elapsed.as_secs_f64(),
            sent - self.last_sent,
            delivered - self.last_delivered,
            shown(percent(self.last_harness, harness)),
            shown(server),
        );
        self.last_sent = sent;
        self.last_delivered = delivered;
        self.last_harness = harness;
        self.last_servers = servers;
        self.last_redis = redis;
    }
}
