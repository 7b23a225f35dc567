//! The broker's REST API, the calls the harness needs: creating the run's
//! topics (`POST /topics`; 409, "already exists", is fine) and, after a
//! `resume` run, each topic's `last_seq` (`GET /topics/{name}`).

use crate::endpoint::Endpoint;
use anyhow::{bail, Context, Result};
use std::time::Duration;

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
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

/// Each topic's `last_seq`: the `seq` of the last message published to it.
pub fn topic_last_seqs(endpoint: &Endpoint, topics: &[String]) -> Result<Vec<u64>> {
    let agent = agent();
    topics
        .iter()
        .map(|topic| {
            let url = format!("http://{}/topics/{topic}", endpoint.addr);
            let mut request = agent.get(&url);
            if let Some(key) = &endpoint.api_key {
                request = request.header("X-API-Key", key);
            }
            let mut response = request.call().with_context(|| format!("GET {url}"))?;
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
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
