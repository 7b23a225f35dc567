//! The five scenarios as library functions: their options (also the
//! command line's, through clap) and how each turns into a run [`Plan`]
//! (`handshakes`: per-thread [`handshakes::ThreadPlan`]s) and a
//! [`Report`]. Each takes the servers' endpoints (one broker, or a
//! cluster's nodes), so a test can point one at a broker it started
//! in-process.

use crate::endpoint::TargetKind;
use crate::event_loop::Pacing;
use crate::handshakes::{self, ThreadPlan};
use crate::nodes::Nodes;
use crate::report::{HandshakeOutcome, Report};
use crate::rest;
use crate::resume::{ResumeOutcome, ResumePlan};
use crate::run::{self, Plan, ServerPids};
use crate::tls::{self, TlsTarget};
use anyhow::{anyhow, bail, Result};
use clap::builder::RangedU64ValueParser;
use std::time::{Duration, Instant};

/// Options every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Event-loop threads in the harness (connections are spread over them).
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub threads: usize,
    /// Seconds to wait after the window for deliveries still in flight.
    #[arg(long, default_value_t = 5.0, value_parser = seconds_arg)]
    pub grace: f64,
    /// Seconds allowed for setting up every connection.
    #[arg(long, default_value_t = 30.0, value_parser = seconds_arg)]
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
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub publishers: usize,
    /// Topics (created over REST first, for pubsub).
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub topics: usize,
    /// Subscribers per topic.
    #[arg(long, default_value_t = 10, value_parser = at_least_one())]
    pub subscribers: usize,
    /// Approximate size of a published frame, in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Publishes per second in total, on a fixed schedule (open loop);
    /// 0: as fast as the window allows (closed loop).
    #[arg(long, default_value_t = 0.0, value_parser = rate_arg)]
    pub rate: f64,
    /// Closed loop: messages per publisher not yet delivered to all
    /// subscribers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub window: u64,
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0, value_parser = seconds_arg)]
    pub warmup: f64,
    /// Seconds of the measured window (more than 0).
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub duration: f64,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `conns`: many idle subscriber connections.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnsOptions {
    /// Subscriber connections to open.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one())]
    pub connections: usize,
    /// Topics the connections subscribe to, round-robin.
    #[arg(long, default_value_t = 10, value_parser = at_least_one())]
    pub topics: usize,
    /// Seconds to hold the connections open: the measured window (more
    /// than 0).
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub hold: f64,
    /// Source addresses to spread connections over (127.0.0.1, .2, ...);
    /// default: one per 20000 connections.
    #[arg(long, value_parser = at_least_one())]
    pub source_addrs: Option<usize>,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `slow`: healthy subscribers next to some that never read.
#[derive(Debug, Clone, clap::Args)]
pub struct SlowOptions {
    /// Publishing connections.
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub publishers: usize,
    /// Topics (created over REST first, for pubsub).
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub topics: usize,
    /// Healthy (reading) subscribers per topic.
    #[arg(long, default_value_t = 10, value_parser = at_least_one())]
    pub subscribers: usize,
    /// Subscribers that stop reading, in total (spread over the topics).
    #[arg(long, default_value_t = 2)]
    pub slow: usize,
    /// SO_RCVBUF of the slow subscribers, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub slow_rcvbuf: usize,
    /// Publishes per second in total (open loop, more than 0).
    #[arg(long, default_value_t = 2000.0, value_parser = positive_rate_arg)]
    pub rate: f64,
    /// Approximate size of a published frame, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Seconds of publishing before the measured window.
    #[arg(long, default_value_t = 1.0, value_parser = seconds_arg)]
    pub warmup: f64,
    /// Seconds of the measured window (more than 0).
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub duration: f64,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `resume`: subscribers that drop and resume while publishers run.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeOptions {
    /// Publishing connections.
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub publishers: usize,
    /// Topics (created over REST first).
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub topics: usize,
    /// Resuming subscribers per topic.
    #[arg(long, default_value_t = 10, value_parser = at_least_one())]
    pub subscribers: usize,
    /// Approximate size of a published frame, in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Publishes per second in total (open loop, more than 0).
    #[arg(long, default_value_t = 1000.0, value_parser = positive_rate_arg)]
    pub rate: f64,
    /// Seconds of publishing, all measured (more than 0).
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub duration: f64,
    /// Mean milliseconds a subscriber's connection lives before it drops
    /// it (each time uniform in 0.5 to 1.5 times this).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub reconnect_every: u64,
    /// Seed of the drop times and kinds (abrupt or clean).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fail the run if a resume did not recover (false: report it only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub require_recovery: bool,
    #[command(flatten)]
    pub run: RunOptions,
}

/// `handshakes`: connections set up and closed at once, as fast as the
/// server takes them.
#[derive(Debug, Clone, clap::Args)]
pub struct HandshakeOptions {
    /// Seconds to open connections for (more than 0); those in flight
    /// then finish.
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub duration: f64,
    /// Connections to open at most, in all.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Connections in flight at once, per thread.
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    pub concurrency: usize,
    /// Event-loop threads in the harness.
    #[arg(long, default_value_t = 1, value_parser = at_least_one())]
    pub threads: usize,
    /// Also upgrade each connection to WebSocket (up to its 101) before
    /// closing it.
    #[arg(long)]
    pub upgrade: bool,
    /// Resume TLS sessions (TLS 1.3 tickets, TLS 1.2 session IDs or
    /// tickets) from one in-memory cache; the report says how many were
    /// resumed. wss:// only.
    #[arg(long)]
    pub resume: bool,
    /// Seconds a connection may take to be set up before it counts as
    /// failed (more than 0).
    #[arg(long, default_value_t = 5.0, value_parser = window_arg)]
    pub timeout: f64,
}

/// Connections per source address before another one is used.
const CONNECTIONS_PER_SOURCE_ADDR: usize = 20_000;

pub fn fanout(nodes: &Nodes, options: &FanoutOptions, pids: &ServerPids) -> Result<Report> {
    if options.publishers == 0 || options.subscribers == 0 {
        bail!("fanout needs at least one publisher and one subscriber");
    }
    let pacing = pacing(options.rate, options.window, options.duration)?;
    let plan = Plan {
        topics: options.topics,
        subscribers: options.subscribers * options.topics,
        publishers: options.publishers,
        pacing,
        message_size: options.size,
        warmup: seconds("--warmup", options.warmup)?,
        duration: window("--duration", options.duration)?,
        source_addrs: 1,
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        require_all_connections: true,
        ..common(&options.run)?
    };
    let outcome = run::run(nodes, &plan, pids)?;
    Ok(Report::new(
        "fanout",
        nodes.kind(),
        outcome,
        is_open_loop(pacing),
    ))
}

pub fn conns(nodes: &Nodes, options: &ConnsOptions, pids: &ServerPids) -> Result<Report> {
    let plan = Plan {
        topics: options.topics,
        subscribers: options.connections,
        publishers: 0,
        pacing: Pacing::ClosedLoop { window: 1 },
        message_size: 0,
        warmup: Duration::ZERO,
        duration: window("--hold", options.hold)?,
        source_addrs: options
            .source_addrs
            .unwrap_or(options.connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDR)),
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        require_all_connections: false,
        ..common(&options.run)?
    };
    let outcome = run::run(nodes, &plan, pids)?;
    Ok(Report::new("conns", nodes.kind(), outcome, false))
}

pub fn slow(nodes: &Nodes, options: &SlowOptions, pids: &ServerPids) -> Result<Report> {
    if options.publishers == 0 || options.subscribers == 0 {
        bail!("slow needs at least one publisher and one healthy subscriber");
    }
    if options.rate <= 0.0 {
        bail!("slow runs at a fixed --rate above 0");
    }
    let pacing = pacing(options.rate, 1, options.duration)?;
    let plan = Plan {
        topics: options.topics,
        subscribers: options.subscribers * options.topics,
        publishers: options.publishers,
        pacing,
        message_size: options.size,
        warmup: seconds("--warmup", options.warmup)?,
        duration: window("--duration", options.duration)?,
        source_addrs: 1,
        slow_subscribers: options.slow,
        slow_recv_buffer: options.slow_rcvbuf,
        require_all_connections: true,
        ..common(&options.run)?
    };
    let outcome = run::run(nodes, &plan, pids)?;
    Ok(Report::new("slow", nodes.kind(), outcome, true))
}

pub fn resume(nodes: &Nodes, options: &ResumeOptions, pids: &ServerPids) -> Result<Report> {
    check_resume_target(nodes.kind())?;
    if options.publishers == 0 || options.subscribers == 0 {
        bail!("resume needs at least one publisher and one subscriber");
    }
    if options.rate <= 0.0 {
        bail!("resume runs at a fixed --rate above 0");
    }
    if options.reconnect_every == 0 {
        bail!("--reconnect-every must be at least 1 ms");
    }
    let pacing = pacing(options.rate, 1, options.duration)?;
    let plan = Plan {
        topics: options.topics,
        subscribers: options.subscribers * options.topics,
        publishers: options.publishers,
        pacing,
        message_size: options.size,
        warmup: Duration::ZERO,
        duration: window("--duration", options.duration)?,
        source_addrs: 1,
        slow_subscribers: 0,
        slow_recv_buffer: 0,
        require_all_connections: true,
        resume: Some(ResumePlan {
            reconnect_every: Duration::from_millis(options.reconnect_every),
            seed: options.seed,
        }),
        ..common(&options.run)?
    };
    let outcome = run::run(nodes, &plan, pids)?;
    let last_seqs = rest::topic_last_seqs(nodes.rest(), &run::topic_names(&plan))?;
    let resume = ResumeOutcome::new(
        &outcome.tally.resume,
        plan.subscribers as u64,
        last_seqs,
        options.require_recovery,
    );
    let mut report = Report::new("resume", nodes.kind(), outcome, true);
    report.resume = Some(resume);
    Ok(report)
}

pub fn handshakes(nodes: &Nodes, options: &HandshakeOptions, pids: &ServerPids) -> Result<Report> {
    let mut endpoints = nodes.endpoints().to_vec();
    let tls = endpoints[0].tls.clone();
    if options.resume {
        let Some(TlsTarget { config, .. }) = &tls else {
            bail!("--resume resumes TLS sessions: give wss:// URLs, or --spawn --tls");
        };
        // One session cache for every connection of the run.
        let resuming = tls::with_resumption(config);
        for endpoint in &mut endpoints {
            if let Some(tls) = &mut endpoint.tls {
                tls.config = resuming.clone();
            }
        }
    }
    let duration = window("--duration", options.duration)?;
    let timeout = window("--timeout", options.timeout)?;
    let threads = options.threads.max(1);
    let deadline = Instant::now() + duration;
    let plans: Vec<ThreadPlan> = (0..threads)
        .map(|thread| ThreadPlan {
            endpoints: endpoints.clone(),
            thread,
            threads,
            quota: options.count / threads as u64
                + u64::from((thread as u64) < options.count % threads as u64),
            concurrency: options.concurrency.max(1),
            upgrade: options.upgrade,
            resume: options.resume,
            deadline,
            timeout,
        })
        .collect();
    let outcome = handshakes::run(&plans, pids)?;
    let handshakes =
        HandshakeOutcome::new(&outcome, tls.is_some(), options.upgrade, options.resume);
    let mut report = Report::new("handshakes", nodes.kind(), outcome, false);
    report.handshakes = Some(handshakes);
    Ok(report)
}

/// `resume` resumes by `since_seq` and `epoch`, which only the pubsub
/// broker has (the harness speaks core NATS, which has no such thing).
pub fn check_resume_target(kind: TargetKind) -> Result<()> {
    if kind == TargetKind::Nats {
        bail!(
            "the resume scenario works against --target pubsub only: \
             NATS has no resume from a seq (since_seq + epoch)"
        );
    }
    Ok(())
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
        resume: None,
    })
}

/// Open loop at `rate` if it is above 0, else closed loop with `window`.
/// An open loop must schedule at least one message in the `duration`
/// seconds measured.
fn pacing(rate: f64, window: u64, duration: f64) -> Result<Pacing> {
    let rate = check_rate(rate).map_err(|e| anyhow!("--rate {e}"))?;
    if rate > 0.0 {
        if rate * duration < 1.0 {
            bail!(
                "--rate {rate} schedules no message in a --duration of {duration} s: raise either"
            );
        }
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

/// A count option's parser: a whole number, at least 1.
fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// `value` seconds as a duration: finite and not negative, and with
/// `positive`, more than 0.
fn duration(value: f64, positive: bool) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if positive && d.is_zero() => Err(format!(
            "must be more than 0 seconds (it is the measured window), not {value}"
        )),
        Ok(d) => Ok(d),
        Err(_) => Err(format!("must be a number of seconds ≥ 0, not {value}")),
    }
}

fn number(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("must be a number, not {text:?}"))
}

/// Parser of `--warmup`, `--grace`, `--setup-timeout`: seconds, 0 or more.
fn seconds_arg(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    duration(value, false).map(|_| value)
}

/// Parser of `--duration` and `--hold`: the measured window, more than 0
/// seconds.
fn window_arg(text: &str) -> Result<f64, String> {
    let value = number(text)?;
    duration(value, true).map(|_| value)
}

/// Publishes per second: finite and 0 (closed loop) or more.
fn check_rate(value: f64) -> Result<f64, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!(
            "must be 0 or more publishes per second, not {value}"
        ))
    }
}

/// Parser of `fanout --rate`: 0 (closed loop) or more.
fn rate_arg(text: &str) -> Result<f64, String> {
    check_rate(number(text)?)
}

/// Parser of `slow --rate` and `resume --rate`: more than 0.
fn positive_rate_arg(text: &str) -> Result<f64, String> {
    let value = rate_arg(text)?;
    if value == 0.0 {
        return Err(
            "must be more than 0 (this scenario publishes on a fixed schedule)".to_string(),
        );
    }
    Ok(value)
}

fn seconds(option: &str, value: f64) -> Result<Duration> {
    duration(value, false).map_err(|e| anyhow!("{option} {e}"))
}

fn window(option: &str, value: f64) -> Result<Duration> {
    duration(value, true).map_err(|e| anyhow!("{option} {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_must_schedule_a_message_in_the_window() {
        let error = pacing(0.5, 64, 1.0).expect_err("half a message");
        assert!(
            error.to_string().contains("schedules no message"),
            "{error}"
        );
        assert!(matches!(
            pacing(1.0, 64, 1.0),
            Ok(Pacing::OpenLoop { rate }) if rate == 1.0
        ));
        assert!(matches!(
            pacing(0.0, 8, 0.1),
            Ok(Pacing::ClosedLoop { window: 8 })
        ));
    }

    #[test]
    fn the_library_refuses_an_empty_window_too() {
        assert!(window("--duration", 0.0).is_err());
        assert!(window("--duration", f64::INFINITY).is_err());
        assert_eq!(window("--hold", 0.25).unwrap(), Duration::from_millis(250));
        assert_eq!(seconds("--warmup", 0.0).unwrap(), Duration::ZERO);
    }
}
