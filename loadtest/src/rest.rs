//! The broker's REST API, the calls the harness needs: creating the run's
//! topics (`POST /topics`; 409, "already exists", is fine); against a
//! cluster, waiting until every node knows them (`GET /topics`); after a
//! `resume` run, each topic's `last_seq` (`GET /topics/{name}`); waiting
//! for a spawned node's `/readyz`; and a cluster node's backplane round
//! trips so far, from `/metrics`. HTTP/1.1 written by hand (one request
//! per connection, `Connection: close`, the body by `Content-Length`),
//! over `http://` or `https://` as the endpoint's WebSocket URL is.

use crate::connect::{self, SocketOptions};
use crate::endpoint::Endpoint;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// How often a wait asks again.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long one call may take, unless said otherwise.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response head read.
const MAX_HEAD: usize = 16 << 10;

/// Creates each topic on a pubsub broker.
pub fn create_topics(endpoint: &Endpoint, topics: &[String]) -> Result<()> {
    for topic in topics {
        let body = serde_json::json!({ "name": topic }).to_string();
        let (status, text) = call(endpoint, "POST", "/topics", Some(&body), CALL_TIMEOUT)?;
        if status != 201 && status != 409 {
            bail!("creating topic {topic:?}: HTTP {status} {text}");
        }
    }
    Ok(())
}

/// `method path` on `endpoint` (with its API key, and a JSON `body` if
/// given), on a connection of its own, plain or TLS as the endpoint is,
/// done within `timeout`: the status and the body.
fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    exchange(endpoint, method, path, body, Instant::now() + timeout)
        .with_context(|| format!("{method} {}", endpoint.http_url(path)))
}

fn exchange(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
    deadline: Instant,
) -> Result<(u16, String)> {
    let mut stream = connect::connect(endpoint, SocketOptions::default(), deadline)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        endpoint.addr
    );
    if let Some(key) = &endpoint.api_key {
        request.push_str(&format!("X-API-Key: {key}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    stream.socket().set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut response: Option<(u16, usize, Option<usize>)> = None;
    loop {
        if response.is_none() {
            response = parse_head(&received)?;
        }
        if let Some((status, head_len, Some(length))) = response {
            if received.len() >= head_len + length {
                let body = &received[head_len..head_len + length];
                return Ok((status, String::from_utf8_lossy(body).into_owned()));
            }
        }
        stream.socket().set_read_timeout(Some(left(deadline)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            // A TLS server that closes without close_notify.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("timed out")
            }
            Err(e) => return Err(e).context("read"),
        };
        if n == 0 {
            // The end of a response without Content-Length.
            let Some((status, head_len, None)) = response else {
                bail!("the connection closed before the whole response came");
            };
            let body = &received[head_len..];
            return Ok((status, String::from_utf8_lossy(body).into_owned()));
        }
        received.extend_from_slice(&chunk[..n]);
    }
}

/// The status, head length and `Content-Length` of the response at the
/// start of `buf`, once its head is whole.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).context("unparsable response")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => bail!("response head over 16 KiB"),
        httparse::Status::Partial => return Ok(None),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .context("bad Content-Length")
        })
        .transpose()?;
    Ok(Some((response.code.unwrap_or(0), head_len, length)))
}

/// The time left before `deadline`; an error once it has passed.
fn left(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("timed out");
    }
    Ok(left)
}

/// `GET path` on `endpoint`: the status and the body.
fn get(endpoint: &Endpoint, path: &str, timeout: Duration) -> Result<(u16, String)> {
    call(endpoint, "GET", path, None, timeout)
}

/// Waits until `endpoint` lists every topic of `topics` (a cluster node
/// learns of a topic created on another node a moment later), or fails at
/// `deadline`.
pub fn wait_for_topics(endpoint: &Endpoint, topics: &[String], deadline: Instant) -> Result<()> {
    loop {
        let (status, text) = get(endpoint, "/topics", CALL_TIMEOUT)?;
        let listed: HashSet<String> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(list) if status == 200 => list["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect(),
            _ => bail!("GET {}: HTTP {status} {text}", endpoint.http_url("/topics")),
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
    loop {
        let last = match get(endpoint, "/readyz", Duration::from_secs(1)) {
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
    let (status, text) = get(endpoint, "/metrics", Duration::from_secs(2)).ok()?;
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
    topics
        .iter()
        .map(|topic| {
            let path = format!("/topics/{topic}");
            let url = endpoint.http_url(&path);
            let (status, text) = get(endpoint, &path, CALL_TIMEOUT)?;
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
    fn a_response_head_is_read_once_whole() {
        assert_eq!(
            parse_head(b"HTTP/1.1 201 Created\r\nContent-Le").unwrap(),
            None
        );
        let head = b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n{\"name\":\"a\"}";
        assert_eq!(parse_head(head).unwrap(), Some((201, 44, Some(12))));
        let head = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(parse_head(head).unwrap(), Some((200, 19, None)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(b"nonsense\r\n\r\n").is_err());
    }

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
