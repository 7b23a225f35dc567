//! `loadtest nemesis`: a fault-injection run against a cluster this
//! harness starts on loopback (Redis with an fsynced AOF, or with
//! `--sentinel` a master, a replica and three sentinels; and pubsub
//! nodes), with acked publishers and resuming subscribers, while faults
//! drawn from a seed are injected; then the checker's verdict as one JSON
//! object. This module owns the run's timeline and its options; the
//! processes are `cluster`'s, the faults `faults`', the clients
//! `clients`', the judgement `check`'s. It must never reach beyond
//! loopback nor outlive `--duration` plus its bounded set-up, the fault in
//! progress (a master failover: at most 2 min) and grace.

pub mod check;
pub mod clients;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod sentinel;

use crate::rest;
use crate::spawn::default_broker_path;
use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::Args;
use clients::{Cuts, Offline, Progress, Shared};
use cluster::Cluster;
use history::{Entry, Subscriber};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of `loadtest nemesis`.
#[derive(Debug, Clone, Args)]
pub struct NemesisOptions {
    /// Seconds of publishing under faults; the run then heals the cluster
    /// and waits (at most --grace) for subscribers to catch up.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seeds the faults and the offline spells (default: from the clock;
    /// printed, so that a run can be replayed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pubsub nodes.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub nodes: usize,
    /// Topics.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub topics: usize,
    /// Publishers, spread over the nodes.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub publishers: usize,
    /// Resuming subscribers per topic, spread over the nodes.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub subscribers: usize,
    /// Subscribers per topic that also stay away, now and then, longer
    /// than the ring holds (so that their resume gets recovered: false).
    #[arg(long, default_value_t = 1)]
    pub offline: usize,
    /// Seconds an offline subscriber stays connected between spells
    /// (0.5 to 1.5 times this).
    #[arg(long, default_value_t = 10.0)]
    pub offline_every: f64,
    /// Seconds an offline spell lasts: make it hold more than --ring
    /// messages of one topic (rate / topics × seconds).
    #[arg(long, default_value_t = 6.0)]
    pub offline_for: f64,
    /// Publishes per second, in total (each publisher waits for its ack).
    #[arg(long, default_value_t = 120.0)]
    pub rate: f64,
    /// The nodes' RING_BUFFER_SIZE.
    #[arg(long, default_value_t = 100)]
    pub ring: usize,
    /// Seconds to wait, after healing, for subscribers to catch up.
    #[arg(long, default_value_t = 20.0)]
    pub grace: f64,
    /// The broker binary (default: pubsub next to loadtest, else
    /// target/release/pubsub).
    #[arg(long)]
    pub broker: Option<PathBuf>,
    /// The redis-server binary (default: from PATH); with --sentinel it
    /// also runs the sentinels (`redis-server CONF --sentinel`).
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// A master, one replica and three sentinels (down after 1 s) instead
    /// of one Redis; the nodes use `redis+sentinel://`, and master
    /// failovers take the place of Redis kills among the faults.
    #[arg(long)]
    pub sentinel: bool,
    /// The nodes' REDIS_REPLICAS_ACK (with --sentinel): 1 means nothing is
    /// acked before the replica holds it.
    #[arg(long, requires = "sentinel")]
    pub replicas_ack: Option<u64>,
}

/// Runs the nemesis, prints its JSON summary; the summary's verdict.
pub fn run(options: &NemesisOptions) -> Result<bool> {
    if !(options.duration > 0.0 && options.rate > 0.0 && options.grace >= 0.0) {
        bail!("--duration and --rate must be above 0, --grace at least 0");
    }
    let seed = options.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let duration = Duration::from_secs_f64(options.duration);
    let sentinel_flags = match (options.sentinel, options.replicas_ack) {
        (false, _) => String::new(),
        (true, None) => " --sentinel".to_string(),
        (true, Some(n)) => format!(" --sentinel --replicas-ack {n}"),
    };
    eprintln!(
        "nemesis: seed {seed} (replay: loadtest nemesis{sentinel_flags} --seed {seed} --duration {})",
        options.duration
    );
    let broker = options.broker.clone().unwrap_or_else(default_broker_path);
    let env = vec![
        ("RING_BUFFER_SIZE".to_string(), options.ring.to_string()),
        ("SUBSCRIBER_QUEUE_SIZE".to_string(), "10000".to_string()),
        ("LOG_LEVEL".to_string(), "error".to_string()),
    ];
    let mut env = env;
    if let Some(n) = options.replicas_ack {
        env.push(("REDIS_REPLICAS_ACK".to_string(), n.to_string()));
    }
    let cluster = Cluster::start(
        &broker,
        &options.redis_server,
        options.nodes,
        &env,
        options.sentinel,
    )
    .context("starting the cluster")?;
    let topics: Vec<String> = (0..options.topics)
        .map(|t| format!("nemesis-{t}"))
        .collect();
    let setup = Instant::now() + Duration::from_secs(30);
    rest::create_topics(&cluster.endpoint(0)?, &topics)?;
    for index in 1..options.nodes {
        rest::wait_for_topics(&cluster.endpoint(index)?, &topics, setup)?;
    }
    let shared = Arc::new(Shared {
        nodes: cluster.addrs(),
        cuts: Arc::new(Cuts::default()),
        stop_publishing: AtomicBool::new(false),
        come_back: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let (subscribers, progress) = start_subscribers(options, &shared, &topics, seed);
    while !progress
        .iter()
        .all(|p| p.subscribed.load(Ordering::Relaxed))
    {
        if Instant::now() > setup {
            shared.stop.store(true, Ordering::Relaxed);
            bail!("the subscribers could not all subscribe within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let interval = Duration::from_secs_f64(options.publishers as f64 / options.rate);
    let publishers: Vec<_> = (0..options.publishers)
        .map(|index| {
            let (shared, topics) = (Arc::clone(&shared), topics.clone());
            let client = progress.len() + index;
            std::thread::spawn(move || {
                clients::publisher(&shared, client, index, &topics, interval)
            })
        })
        .collect();
    let stop_faults = Arc::new(AtomicBool::new(false));
    let injector = {
        let (cuts, stop) = (Arc::clone(&shared.cuts), Arc::clone(&stop_faults));
        let faults = faults::schedule(seed, duration, options.sentinel);
        std::thread::spawn(move || faults::inject(cluster, faults, cuts, stop))
    };
    // The injector ends early only on an error: then stop at once.
    let end = Instant::now() + duration;
    while Instant::now() < end && !injector.is_finished() {
        std::thread::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        );
    }
    shared.stop_publishing.store(true, Ordering::Relaxed);
    stop_faults.store(true, Ordering::Relaxed);
    let publishes: Vec<_> = publishers
        .into_iter()
        .flat_map(|p| p.join().expect("a publisher panicked"))
        .collect();
    let (cluster, faults_done) = injector.join().expect("the injector panicked");
    shared.come_back.store(true, Ordering::Relaxed);
    let caught_up = faults_done.is_ok() && catch_up(options, &cluster, &topics, &progress);
    shared.stop.store(true, Ordering::Relaxed);
    let histories: Vec<Subscriber> = subscribers
        .into_iter()
        .map(|s| s.join().expect("a subscriber panicked"))
        .collect();
    let (promotions, rejoins, unprompted) = cluster.failover_times();
    cluster.stop();
    let faults_done = faults_done?;
    let verdict = check::check(&publishes, &histories);
    let offline_not_recovered = offline_recovered_false(&histories);
    let mut failures = verdict.described.clone();
    if !caught_up {
        failures.push("the subscribers did not all catch up within --grace".into());
    }
    if options.offline > 0
        && options.duration >= 2.0 * options.offline_every
        && offline_not_recovered == 0
    {
        failures.push(
            "no offline subscriber got recovered: false: the ring-overflow path was not exercised"
                .into(),
        );
    }
    let summary = json!({
        "seed": seed,
        "duration_secs": options.duration,
        "nodes": options.nodes,
        "topics": options.topics,
        "publishers": options.publishers,
        "subscribers": histories.len(),
        "ring": options.ring,
        "sentinel": options.sentinel,
        "replicas_ack": options.replicas_ack.unwrap_or(0),
        "faults": faults_done,
        "faults_total": faults_done.values().sum::<u64>(),
        "checker": verdict,
        "offline_recovered_false": offline_not_recovered,
        "caught_up": caught_up,
        "failover_promotion_secs": spread(&promotions),
        "failover_rejoin_secs": spread(&rejoins),
        "failovers_by_the_sentinels_alone": unprompted,
        "passed": failures.is_empty(),
    });
    println!("{summary}");
    for failure in &failures {
        eprintln!("nemesis: VIOLATION: {failure}");
    }
    Ok(failures.is_empty())
}

/// Starts `--subscribers` resuming subscribers per topic and `--offline`
/// more that also stay away now and then.
fn start_subscribers(
    options: &NemesisOptions,
    shared: &Arc<Shared>,
    topics: &[String],
    seed: u64,
) -> (Vec<std::thread::JoinHandle<Subscriber>>, Vec<Arc<Progress>>) {
    let offline = Offline {
        every: Duration::from_secs_f64(options.offline_every),
        away: Duration::from_secs_f64(options.offline_for),
        seed,
    };
    let mut threads = Vec::new();
    let mut progress = Vec::new();
    for topic in topics {
        for n in 0..options.subscribers + options.offline {
            let away = n >= options.subscribers;
            let name = format!("{}{}-{topic}", if away { "offline" } else { "s" }, n);
            let client = progress.len();
            let p = Arc::new(Progress::default());
            let (shared, p2, topic) = (Arc::clone(shared), Arc::clone(&p), topic.clone());
            let offline = away.then_some(offline);
            threads.push(std::thread::spawn(move || {
                clients::subscriber(&shared, client, name, topic, offline, &p2)
            }));
            progress.push(p);
        }
    }
    (threads, progress)
}

/// Waits (at most `--grace`) until every subscriber has seen its topic's
/// `last_seq`; true if they all did.
fn catch_up(
    options: &NemesisOptions,
    cluster: &Cluster,
    topics: &[String],
    progress: &[Arc<Progress>],
) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(options.grace);
    let per_topic = progress.len() / topics.len();
    while Instant::now() < deadline {
        if let Ok(last) = cluster
            .endpoint(0)
            .and_then(|e| rest::topic_last_seqs(&e, topics))
        {
            let done = progress
                .iter()
                .enumerate()
                .all(|(i, p)| p.last_seen.load(Ordering::Relaxed) >= last[i / per_topic]);
            if done {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The count, least, mean and most of `times` (null when there are none).
fn spread(times: &[f64]) -> serde_json::Value {
    if times.is_empty() {
        return serde_json::Value::Null;
    }
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    json!({
        "count": times.len(),
        "min": round(min),
        "mean": round(times.iter().sum::<f64>() / times.len() as f64),
        "max": round(max),
    })
}

/// Resumes of the offline subscribers acked `recovered: false`.
fn offline_recovered_false(histories: &[Subscriber]) -> u64 {
    histories
        .iter()
        .filter(|h| h.name.starts_with("offline"))
        .flat_map(|h| &h.entries)
        .filter(|e| matches!(e, Entry::Subscribed { resume: Some(r), .. } if !r.recovered))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_count_min_mean_max_or_null() {
        assert_eq!(spread(&[]), serde_json::Value::Null);
        assert_eq!(
            spread(&[2.0, 1.004, 3.5]),
            json!({"count": 3, "min": 1.0, "mean": 2.17, "max": 3.5})
        );
    }
}
