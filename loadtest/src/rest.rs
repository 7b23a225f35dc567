//! The broker's REST API, the one call the harness needs: creating the
//! run's topics (`POST /topics`; 409, "already exists", is fine).

use crate::endpoint::Endpoint;
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Creates each topic on a pubsub broker.
pub fn create_topics(endpoint: &Endpoint, topics: &[String]) -> Result<()> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        // The broker is on loopback: never go through a proxy from the
        // environment.
        .proxy(None)
        .build();
    let agent = ureq::Agent::new_with_config(config);
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
