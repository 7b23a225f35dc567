//! Every setting of the broker: its environment variable, default, range and
//! meaning, in one table (`SETTINGS`) that the parser, the start-up log and
//! the README are checked against.
//!
//! This module only turns text into a [`Config`]; it never reads the process
//! environment itself except in [`Config::from_env`], so every rule here is
//! testable with a plain closure.

use crate::logging::LogFormat;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// One environment variable the broker reads.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable `Config::from_vars` reads, in the order the README lists them.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "ADDR", default: ":8080", meaning: "listen address; `:PORT` means all interfaces; `127.0.0.1:0` picks a free port" },
    Setting { name: "API_KEY", default: "", meaning: "enables authentication when set and non-empty" },
    Setting { name: "SUBSCRIBER_QUEUE_SIZE", default: "100", meaning: "events a connection may have queued before it is a slow consumer (1 to 1000000)" },
    Setting { name: "RING_BUFFER_SIZE", default: "100", meaning: "messages kept per topic for replay (1 to 1000000)" },
    Setting { name: "WORKERS", default: "number of cores", meaning: "event-loop threads (1 to 1024)" },
    Setting { name: "HEARTBEAT_INTERVAL_SECS", default: "30", meaning: "heartbeat period; a peer silent for three periods is closed as dead (1 to 86400)" },
    Setting { name: "SHUTDOWN_TIMEOUT_SECS", default: "5", meaning: "drain deadline on shutdown (0 to 3600)" },
    Setting { name: "MAX_MESSAGE_BYTES", default: "1048576", meaning: "largest WebSocket message accepted (128 to 67108864)" },
    Setting { name: "MAX_CONNECTIONS", default: "100000", meaning: "open connections; past it new ones get HTTP 503 and are closed (1 to 10000000)" },
    Setting { name: "HANDSHAKE_TIMEOUT_SECS", default: "10", meaning: "an HTTP connection that has not completed a request within this time (since it opened or since its last response) is closed (1 to 3600)" },
    Setting { name: "LOG_LEVEL", default: "info", meaning: "`error`, `warn`, `info`, `debug` or `trace`" },
    Setting {
        name: "LOG_FORMAT",
        default: "text",
        meaning: "`text` (one readable line per event) or `json` (one JSON object per line, with `ts`, `level`, `msg` and fields)",
    },
];

/// The broker's settings, parsed and range-checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub api_key: Option<String>,
    pub subscriber_queue_size: usize,
    pub ring_buffer_size: usize,
    pub workers: usize,
    pub heartbeat_interval: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub log_level: log::LevelFilter,
    pub log_format: LogFormat,
}

/// A setting that does not parse or is out of range; `main` prints it and
/// exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}={:?}: {}",
            self.variable, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config::from_vars(|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// Reads every variable of [`SETTINGS`] from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Builds a config from a lookup function. An unset or empty variable
    /// takes its default.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(text) => {
                        let fail = |reason: String| ConfigError {
                            variable: name,
                            value: text.clone(),
                            reason,
                        };
                        let n: u64 = text
                            .trim()
                            .parse()
                            .map_err(|_| fail("not a whole number".into()))?;
                        if n < min || n > max {
                            return Err(fail(format!("must be between {min} and {max}")));
                        }
                        Ok(n)
                    }
                }
            };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Ok(Config {
            addr: match get("ADDR") {
                None => parse_addr(":8080").expect("default address parses"),
                Some(text) => parse_addr(&text).map_err(|reason| ConfigError {
                    variable: "ADDR",
                    value: text,
                    reason,
                })?,
            },
            api_key: lookup("API_KEY").filter(|k| !k.is_empty()),
            subscriber_queue_size: number("SUBSCRIBER_QUEUE_SIZE", 100, 1, 1_000_000)? as usize,
            ring_buffer_size: number("RING_BUFFER_SIZE", 100, 1, 1_000_000)? as usize,
            workers: number("WORKERS", cores.min(1024), 1, 1024)? as usize,
            heartbeat_interval: Duration::from_secs(number(
                "HEARTBEAT_INTERVAL_SECS",
                30,
                1,
                86_400,
            )?),
            shutdown_timeout: Duration::from_secs(number("SHUTDOWN_TIMEOUT_SECS", 5, 0, 3600)?),
            max_message_bytes: number("MAX_MESSAGE_BYTES", 1 << 20, 128, 64 << 20)? as usize,
            max_connections: number("MAX_CONNECTIONS", 100_000, 1, 10_000_000)? as usize,
            handshake_timeout: Duration::from_secs(number("HANDSHAKE_TIMEOUT_SECS", 10, 1, 3600)?),
            log_level: match get("LOG_LEVEL") {
                None => log::LevelFilter::Info,
                Some(text) => parse_log_level(&text).ok_or_else(|| ConfigError {
                    variable: "LOG_LEVEL",
                    value: text,
                    reason: "must be one of error, warn, info, debug, trace".into(),
                })?,
            },
            log_format: match get("LOG_FORMAT") {
                None => LogFormat::Text,
                Some(text) => LogFormat::parse(&text).ok_or_else(|| ConfigError {
                    variable: "LOG_FORMAT",
                    value: text,
                    reason: "must be text or json".into(),
                })?,
            },
        })
    }

    /// A config for tests and embedding: loopback, a free port, defaults otherwise.
    pub fn loopback() -> Config {
        Config {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            ..Config::default()
        }
    }
}

/// `:PORT` means every IPv4 interface; anything else is `host:port`.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    if let Ok(addr) = full.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (_, port) = full.rsplit_once(':').ok_or("expected HOST:PORT or :PORT")?;
    port.parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
    full.to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

fn parse_log_level(text: &str) -> Option<log::LevelFilter> {
    match text.trim().to_ascii_lowercase().as_str() {
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = with(&[]).unwrap();
        assert_eq!(c.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.api_key, None);
        assert_eq!(c.subscriber_queue_size, 100);
        assert_eq!(c.ring_buffer_size, 100);
        assert!(c.workers >= 1);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.max_message_bytes, 1_048_576);
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            with(&[("ADDR", ":9000")]).unwrap().addr,
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            with(&[("ADDR", "127.0.0.1:0")]).unwrap().addr,
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            with(&[("ADDR", "[::1]:81")]).unwrap().addr,
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(with(&[("ADDR", "localhost:0")]).unwrap().addr.port(), 0);
        for bad in ["8080", "127.0.0.1:99999", ":x", "no port"] {
            let err = with(&[("ADDR", bad)]).unwrap_err();
            assert_eq!(err.variable, "ADDR", "{bad}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("SUBSCRIBER_QUEUE_SIZE", "0"),
            ("SUBSCRIBER_QUEUE_SIZE", "ten"),
            ("RING_BUFFER_SIZE", "0"),
            ("RING_BUFFER_SIZE", "-1"),
            ("WORKERS", "0"),
            ("HEARTBEAT_INTERVAL_SECS", "0"),
            ("SHUTDOWN_TIMEOUT_SECS", "1.5"),
            ("MAX_MESSAGE_BYTES", "1"),
            ("MAX_CONNECTIONS", "0"),
            ("HANDSHAKE_TIMEOUT_SECS", "0"),
            ("LOG_LEVEL", "loud"),
            ("LOG_FORMAT", "xml"),
        ] {
            let err = with(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn empty_values_take_the_default_and_empty_key_disables_auth() {
        let c = with(&[("API_KEY", ""), ("WORKERS", ""), ("LOG_LEVEL", "DEBUG")]).unwrap();
        assert_eq!(c.api_key, None);
        assert!(c.workers >= 1);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(
            with(&[("API_KEY", "s3cret")]).unwrap().api_key.as_deref(),
            Some("s3cret")
        );
    }

    #[test]
    fn the_settings_table_lists_exactly_the_variables_read() {
        let read = std::cell::RefCell::new(Vec::new());
        Config::from_vars(|name| {
            read.borrow_mut().push(name.to_string());
            None
        })
        .unwrap();
        let mut read = read.into_inner();
        read.sort();
        read.dedup();
        let mut listed: Vec<String> = SETTINGS.iter().map(|s| s.name.to_string()).collect();
        listed.sort();
        assert_eq!(read, listed);
    }

    #[test]
    fn settings_table_names_every_variable_once() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
    }
}
