//! The broker's REST API, the calls the harness needs: creating the run's
//! topics (`POST /topics`; 409, "already exists", is fine); against a
//! cluster, waiting until every node knows them (`GET /topics`); after a
//! `resume` run, each topic's `last_seq` (`GET /topics/{name}`); waiting
//! for a spawned node's `/readyz`; and a cluster node's backplane round
//! trips so far, from `/metrics`.

use crate::endpoint::Endpoint;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often a wait asks again.
const POLL_EVERY: Duration = Duration::from_millis(20);

fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(10))
}

fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        // The broker is on loopback: never go through a proxy from the
        // environment.
        .proxy(None)
        .build();
    ureq::Agent::new_with_config(config)
}

/// Creates each topic on a pubsub broker.
pub fn create_topics(endpoint: &Endpoint, topics: &[String]) -> Result<()> {
    let agent = agent();
    let url = format!("http://{}/topics", endpoint.addr);
    for topic in topics {
        let body = serde_json::json!({ "name": topic }).to_string();
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        if let Some(key) = &endpoint.api_key {
            request = request.header("X-API-Key", key);
        }
        let mut response = request
            .send(body.as_str())
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        if status != 201 && status != 409 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            bail!("creating topic {topic:?}: HTTP {status} {text}");
        }
    }
    Ok(())
}

/// `GET path` on `endpoint`: the status and the body.
fn get(agent: &ureq::Agent, endpoint: &Endpoint, path: &str) -> Result<(u16, String)> {
    let url = format!("http://{}{path}", endpoint.addr);
    let mut request = agent.get(&url);
    if let Some(key) = &endpoint.api_key {
        request = request.header("X-API-Key", key);
    }
    let mut response = request.call().with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((status, text))
}

/// Waits until `endpoint` lists every topic of `topics` (a cluster node
/// learns of a topic created on another node a moment later), or fails at
/// `deadline`.
pub fn wait_for_topics(endpoint: &Endpoint, topics: &[String], deadline: Instant) -> Result<()> {
    let agent = agent();
    loop {
        let (status, text) = get(&agent, endpoint, "/topics")?;
        let listed: HashSet<String> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(list) if status == 200 => list["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect(),
            _ => bail!("GET http://{}/topics: HTTP {status} {text}", endpoint.addr),
        };
        let missing = topics.iter().filter(|t| !listed.contains(*t)).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} does not know {missing} of the {} topics created on the first node",
                endpoint.addr,
                topics.len()
            );
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits until `GET /readyz` answers 200 (a cluster node: once it reaches
/// Redis), or fails at `deadline` with the last answer.
pub fn wait_ready(endpoint: &Endpoint, deadline: Instant) -> Result<()> {
    let agent = agent_with_timeout(Duration::from_secs(1));
    loop {
        let last = match get(&agent, endpoint, "/readyz") {
            Ok((200, _)) => return Ok(()),
            Ok((status, text)) => format!("HTTP {status} {text}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{} is not ready: {last}", endpoint.addr);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// A cluster node's backplane round trips so far (the count of its
/// `pubsub_backplane_rtt_seconds` histogram: one per pipeline of requests
/// to Redis); `None` if it cannot be read or the node is not in cluster
/// mode.
pub fn backplane_round_trips(endpoint: &Endpoint) -> Option<u64> {
    let (status, text) = get(
        &agent_with_timeout(Duration::from_secs(2)),
        endpoint,
        "/metrics",
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    metric_value(&text, "pubsub_backplane_rtt_seconds_count")
}

/// The value of an unlabelled metric in Prometheus text format.
fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Each topic's `last_seq`: the `seq` of the last message published to it.
pub fn topic_last_seqs(endpoint: &Endpoint, topics: &[String]) -> Result<Vec<u64>> {
    let agent = agent();
    topics
        .iter()
        .map(|topic| {
            let url = format!("http://{}/topics/{topic}", endpoint.addr);
            let (status, text) = get(&agent, endpoint, &format!("/topics/{topic}"))?;
            if status != 200 {
                bail!("GET {url}: HTTP {status} {text}");
            }
            let detail: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("GET {url}: {text}"))?;
            detail["last_seq"]
                .as_u64()
                .with_context(|| format!("GET {url}: no last_seq in {text}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_read_from_its_own_line() {
        let text = "# TYPE pubsub_backplane_rtt_seconds histogram\n\
                    pubsub_backplane_rtt_seconds_bucket{le=\"0.001\"} 40\n\
                    pubsub_backplane_rtt_seconds_sum 0.012500\n\
                    pubsub_backplane_rtt_seconds_count 42\n\
                    pubsub_backplane_rtt_seconds_count_other 7\n";
        assert_eq!(
            metric_value(text, "pubsub_backplane_rtt_seconds_count"),
            Some(42)
        );
        assert_eq!(metric_value(text, "pubsub_backplane_rtt_seconds"), None);
        assert_eq!(metric_value("pubsub_up 1\n", "pubsub_backplane_up"), None);
    }
}
