//! The three scenarios as library functions: their options (also the
//! command line's, through clap) and how each turns into a run [`Plan`] and
//! a [`Report`]. Each takes the server's endpoint, so a test can point one
//! at a broker it started in-process.

use crate::endpoint::Endpoint;
use crate::event_loop::Pacing;
use crate::report::Report;
use crate::run::{self, Plan};
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Options every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Event-loop threads in the harness (connections are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seconds to wait after the window for deliveries still in flight.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Seconds allowed for setting up every connection.
    #[arg(long, default_value_t = 30.0)]
    pub setup_timeout: f64,
    /// Topics are named PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "lt")]
    pub topic_prefix: String,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `fanout`: P publishers, T topics, S subscribers per topic.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Topics (created over REST first, for pubsub).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Subscribers per topic.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Approximate size of a published frame, in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Publishes per second in total, on a fixed schedule (open loop);
    /// 0: as fast as the window allows (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Closed loop: messages per publisher not yet delivered to all
    /// subscribers.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `conns`: many idle subscriber connections.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnsOptions {
    /// Subscriber connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Topics the connections subscribe to, round-robin.
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Seconds to hold the connections open.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Source addresses to spread connections over (127.0.0.1, .2, ...);
    /// default: one per 20000 connections.
    #[arg(long)]
    pub source_addrs: Option<usize>,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `slow`: healthy subscribers next to some that never read.
#[derive(Debug, Clone, clap::Args)]
pub struct SlowOptions {
    /// Publishing connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Topics (created over REST first, for pubsub).
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Healthy (reading) subscribers per topic.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Subscribers that stop reading, in total (spread over the topics).
    #[arg(long, default_value_t = 2)]
    pub slow: usize,
    /// SO_RCVBUF of the slow subscribers, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub slow_rcvbuf: usize,
    /// Publishes per second in total (open loop).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Approximate size of a published frame, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[command(flatten)]
    pub run: RunOptions,
}

/// Connections per source address before another one is used.
const CONNECTIONS_PER_SOURCE_ADDR: usize = 20_000;

pub fn fanout(
    endpoint: &Endpoint,
    options: &FanoutOptions,
    server_pid: Option<i32>,
) -> Result<Report> {
    if options.publishers == 0 || options.subscribers == 0 {
        bail!("fanout needs at least one publisher and one subscriber");
    }
    let pacing = pacing(options.rate, options.window)?;
    let plan = Plan {
        topics: options.topics,
        subscribers: options.subscribers * options.topics,
        publishers: options.publishers,
        pacing,
        message_size: options.size,
        warmup: seconds("--warmup", options.warmup)?,
        duration: seconds("--duration", options.duration)?,
        source_addrs: 1,
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        require_all_connections: true,
        ..common(&options.run)?
    };
    let outcome = run::run(endpoint, &plan, server_pid)?;
    Ok(Report::new(
        "fanout",
        endpoint.kind,
        outcome,
        is_open_loop(pacing),
    ))
}

pub fn conns(
    endpoint: &Endpoint,
    options: &ConnsOptions,
    server_pid: Option<i32>,
) -> Result<Report> {
    let plan = Plan {
        topics: options.topics,
        subscribers: options.connections,
        publishers: 0,
        pacing: Pacing::ClosedLoop { window: 1 },
        message_size: 0,
        warmup: Duration::ZERO,
        duration: seconds("--hold", options.hold)?,
        source_addrs: options
            .source_addrs
            .unwrap_or(options.connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDR)),
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        require_all_connections: false,
        ..common(&options.run)?
    };
    let outcome = run::run(endpoint, &plan, server_pid)?;
    Ok(Report::new("conns", endpoint.kind, outcome, false))
}

pub fn slow(endpoint: &Endpoint, options: &SlowOptions, server_pid: Option<i32>) -> Result<Report> {
    if options.publishers == 0 || options.subscribers == 0 {
        bail!("slow needs at least one publisher and one healthy subscriber");
    }
    if options.rate <= 0.0 {
        bail!("slow runs at a fixed --rate above 0");
    }
    let pacing = pacing(options.rate, 1)?;
    let plan = Plan {
        topics: options.topics,
        subscribers: options.subscribers * options.topics,
        publishers: options.publishers,
        pacing,
        message_size: options.size,
        warmup: seconds("--warmup", options.warmup)?,
        duration: seconds("--duration", options.duration)?,
        source_addrs: 1,
        slow_subscribers: options.slow,
        slow_recv_buffer: options.slow_rcvbuf,
        require_all_connections: true,
        ..common(&options.run)?
    };
    let outcome = run::run(endpoint, &plan, server_pid)?;
    Ok(Report::new("slow", endpoint.kind, outcome, true))
}

/// The plan's fields that come from [`RunOptions`]; the scenario fills
/// in the rest.
fn common(options: &RunOptions) -> Result<Plan> {
    Ok(Plan {
        topics: 1,
        topic_prefix: options.topic_prefix.clone(),
        subscribers: 0,
        publishers: 0,
        pacing: Pacing::ClosedLoop { window: 1 },
        message_size: 0,
        warmup: Duration::ZERO,
        duration: Duration::ZERO,
        grace: seconds("--grace", options.grace)?,
        threads: options.threads,
        source_addrs: 1,
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        setup_timeout: seconds("--setup-timeout", options.setup_timeout)?,
        require_all_connections: true,
        progress: !options.quiet,
    })
}

fn pacing(rate: f64, window: u64) -> Result<Pacing> {
    if !rate.is_finite() || rate < 0.0 {
        bail!("--rate must be 0 or more");
    }
    if rate > 0.0 {
        Ok(Pacing::OpenLoop { rate })
    } else if window == 0 {
        bail!("--window must be at least 1")
    } else {
        Ok(Pacing::ClosedLoop { window })
    }
}

fn is_open_loop(pacing: Pacing) -> bool {
    matches!(pacing, Pacing::OpenLoop { .. })
}

fn seconds(option: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{option} must be a number of seconds ≥ 0"))
}
