//! One run, whatever the scenario: create the topics, start the event-loop
//! threads and let them open their connections, set the window (publishing
//! start, end of warm-up, end of measurement), print a progress line each
//! second, sample the broker's and the harness's CPU and memory at the
//! window's edges, wait for in-flight deliveries (bounded by the grace
//! period), stop the threads and merge what they counted.

use crate::endpoint::{Endpoint, TargetKind};
use crate::event_loop::{self, ConnSpec, LoopPlan, Pacing, Shared, Window};
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
    pub server_cpu_pct: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// The server's RSS before the harness connected.
    pub server_rss_before_kib: Option<u64>,
    pub slow: Option<SlowOutcome>,
}

/// Runs `plan` against `endpoint`; `server_pid` (if known) is sampled for
/// CPU and memory.
pub fn run(endpoint: &Endpoint, plan: &Plan, server_pid: Option<i32>) -> Result<Outcome> {
    if plan.topics == 0 {
        bail!("--topics must be at least 1");
    }
    if plan.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let topics = topic_names(plan);
    if endpoint.kind == TargetKind::Pubsub {
        rest::create_topics(endpoint, &topics)?;
    }
    let server = server_pid.map(Subject::Pid);
    let server_rss_before_kib = server.and_then(rss_kib);
    let setup_deadline = Instant::now() + plan.setup_timeout;
    let (shared, polls) =
        Shared::new(plan.threads, plan.publishers, plan.topics, plan.subscribers)?;
    let loop_plan = Arc::new(LoopPlan {
        endpoint: endpoint.clone(),
        topics: topics.clone(),
        publishers: plan.publishers,
        pacing: plan.pacing,
        message_size: plan.message_size,
        setup_deadline,
        resume: plan.resume,
    });
    let barrier = Arc::new(Barrier::new(plan.threads + 1));
    let connecting = Instant::now();
    let threads: Vec<_> = distribute(plan, endpoint)
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
        endpoint,
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
    let measured = watch(&shared, plan, window, server);
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
        server_cpu_pct: measured.server_cpu_pct,
        server_rss_kib: measured.server_rss_kib,
        server_rss_before_kib,
        slow,
    })
}

/// The run's topics: `<prefix>-0`, `<prefix>-1`, ...
pub fn topic_names(plan: &Plan) -> Vec<String> {
    (0..plan.topics)
        .map(|i| format!("{}-{i}", plan.topic_prefix))
        .collect()
}

/// Which connections each loop thread opens: subscribers and publishers
/// dealt round-robin.
fn distribute(plan: &Plan, endpoint: &Endpoint) -> Vec<Vec<ConnSpec>> {
    let mut specs = vec![Vec::new(); plan.threads];
    for i in 0..plan.subscribers {
        specs[i % plan.threads].push(ConnSpec::Subscriber {
            id: i,
            topic: i % plan.topics,
            source: source_addr(plan.source_addrs, endpoint, i),
        });
    }
    for id in 0..plan.publishers {
        specs[id % plan.threads].push(ConnSpec::Publisher { id });
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

/// Figures sampled at the window's edges.
struct Measured {
    harness_cpu_pct: Option<f64>,
    server_cpu_pct: Option<f64>,
    server_rss_kib: Option<u64>,
}

/// Runs the clock: progress lines, samples at the window's edges, then the
/// wait for in-flight deliveries. Returns when the run should stop.
fn watch(shared: &Shared, plan: &Plan, window: Window, server: Option<Subject>) -> Measured {
    let at = |ns: u64| shared.epoch + Duration::from_nanos(ns);
    let (warmup_end, end) = (at(window.warmup_end_ns), at(window.end_ns));
    let give_up = end + plan.grace;
    let mut window_start_samples = None;
    let mut measured = None;
    let mut progress = Progress::new(shared, server);
    let mut next_line = at(window.start_ns) + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        if window_start_samples.is_none() && now >= warmup_end {
            window_start_samples = Some((
                CpuSample::take(Subject::Harness),
                server.and_then(CpuSample::take),
            ));
        }
        if measured.is_none() && now >= end {
            let (harness_start, server_start) = window_start_samples.unwrap_or((None, None));
            let percent = |start: Option<CpuSample>, subject| {
                Some(start?.percent_until(&CpuSample::take(subject)?))
            };
            measured = Some(Measured {
                harness_cpu_pct: percent(harness_start, Subject::Harness),
                server_cpu_pct: server.and_then(|s| percent(server_start, s)),
                server_rss_kib: server.and_then(rss_kib),
            });
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
    server: Option<Subject>,
    last_sent: u64,
    last_delivered: u64,
    last_harness: Option<CpuSample>,
    last_server: Option<CpuSample>,
}

impl<'a> Progress<'a> {
    fn new(shared: &'a Shared, server: Option<Subject>) -> Progress<'a> {
        Progress {
            shared,
            server,
            last_sent: 0,
            last_delivered: 0,
            last_harness: CpuSample::take(Subject::Harness),
            last_server: server.and_then(CpuSample::take),
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
        let server = self.server.and_then(CpuSample::take);
        let percent = |before: Option<CpuSample>, after: Option<CpuSample>| match (before, after) {
            (Some(b), Some(a)) => format!("{:.0}%", b.percent_until(&a)),
            _ => "-".to_string(),
        };
        eprintln!(
            "[{:>5.1}s] {phase:<7} sent/s {:>9} delivered/s {:>10} disconnects {disconnects} errors {errors} cpu harness {} server {}",
            elapsed.as_secs_f64(),
            sent - self.last_sent,
            delivered - self.last_delivered,
            percent(self.last_harness, harness),
            percent(self.last_server, server),
        );
        self.last_sent = sent;
        self.last_delivered = delivered;
        self.last_harness = harness;
        self.last_server = server;
    }
}
