//! Every setting of the broker, in one typed table: each environment
//! variable's name, default, accepted values and meaning, and how its text
//! becomes a field of [`Config`]. The parser ([`Config::from_vars`]),
//! `--help`, the start-up log ([`Config::shown`]) and the README check (a
//! test below) all read it; a new setting is one entry here (or in a
//! submodule: `access` has the token and limit settings, `tls` the
//! listener's TLS), one line of [`SETTINGS`] and one field. `setting` is
//! how an entry is read; `pem_file` the PEM files of Redis TLS.
//!
//! This module only turns text into a [`Config`]; it never reads the process
//! environment itself except in [`Config::from_env`], so every rule here is
//! testable with a plain closure.

use crate::auth::TokenVerifier;
use crate::logging::LogFormat;
use log::LevelFilter;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

mod access;
mod pem_file;
mod setting;
mod tls;

pub use access::{
    ALLOWED_ORIGINS, PUBLISH_BURST, PUBLISH_RATE, TOKEN_AUDIENCE, TOKEN_HMAC_SECRET, TOKEN_ISSUER,
    TOKEN_LEEWAY_SECS, TOKEN_PUBLIC_KEYS_FILE,
};
pub use pem_file::PemFile;
use pem_file::{read_certificates, read_private_key};
pub use setting::{Described, Fallback, Setting, Values};
pub use tls::{ServerTls, TlsFiles, TLS_CERT_FILE, TLS_CLIENT_CA_FILE, TLS_KEY_FILE};

pub const ADDR: Setting<SocketAddr> = Setting {
    name: "ADDR",
    default: Fallback::Text(":8080"),
    values: Values::Parsed(parse_addr),
    meaning: "listen address; `:PORT` means all interfaces, IPv6 and IPv4 (IPv4 alone on a host without IPv6); `127.0.0.1:0` picks a free port",
    shown: |c| c.addr.to_string(),
};

pub const API_KEY: Setting<Option<Secret>> = Setting {
    name: "API_KEY",
    default: Fallback::Computed {
        shown: "",
        value: || None,
    },
    values: Values::Verbatim(|key| Some(Secret(key))),
    meaning: "enables authentication when set and non-empty",
    shown: |c| if c.api_key.is_some() { "set" } else { "unset" }.to_string(),
};

pub const SUBSCRIBER_QUEUE_SIZE: Setting<usize> = Setting {
    name: "SUBSCRIBER_QUEUE_SIZE",
    default: Fallback::Text("100"),
    values: Values::Whole {
        min: 1,
        max: 1_000_000,
        into: |n| n as usize,
    },
    meaning: "events a connection may have queued before it is a slow consumer",
    shown: |c| c.subscriber_queue_size.to_string(),
};

pub const RING_BUFFER_SIZE: Setting<usize> = Setting {
    name: "RING_BUFFER_SIZE",
    default: Fallback::Text("100"),
    values: Values::Whole {
        min: 1,
        max: 1_000_000,
        into: |n| n as usize,
    },
    meaning: "messages kept per topic for replay",
    shown: |c| c.ring_buffer_size.to_string(),
};

const MAX_WORKERS: u64 = 1024;

pub const WORKERS: Setting<usize> = Setting {
    name: "WORKERS",
    default: Fallback::Computed {
        shown: "number of cores",
        value: || {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.min(MAX_WORKERS as usize)
        },
    },
    values: Values::Whole {
        min: 1,
        max: MAX_WORKERS,
        into: |n| n as usize,
    },
    meaning: "event-loop threads",
    shown: |c| c.workers.to_string(),
};

pub const HEARTBEAT_INTERVAL_SECS: Setting<Duration> = Setting {
    name: "HEARTBEAT_INTERVAL_SECS",
    default: Fallback::Text("30"),
    values: Values::Whole {
        min: 1,
        max: 86_400,
        into: Duration::from_secs,
    },
    meaning: "heartbeat period; a peer silent for three periods is closed as dead",
    shown: |c| c.heartbeat_interval.as_secs().to_string(),
};

pub const SHUTDOWN_TIMEOUT_SECS: Setting<Duration> = Setting {
    name: "SHUTDOWN_TIMEOUT_SECS",
    default: Fallback::Text("5"),
    values: Values::Whole {
        min: 0,
        max: 3600,
        into: Duration::from_secs,
    },
    meaning: "drain deadline on shutdown",
    shown: |c| c.shutdown_timeout.as_secs().to_string(),
};

pub const MAX_MESSAGE_BYTES: Setting<usize> = Setting {
    name: "MAX_MESSAGE_BYTES",
    default: Fallback::Text("1048576"),
    values: Values::Whole {
        min: 128,
        max: 64 << 20,
        into: |n| n as usize,
    },
    meaning: "largest WebSocket message accepted",
    shown: |c| c.max_message_bytes.to_string(),
};

pub const MAX_CONNECTIONS: Setting<usize> = Setting {
    name: "MAX_CONNECTIONS",
    default: Fallback::Text("100000"),
    values: Values::Whole {
        min: 1,
        max: 10_000_000,
        into: |n| n as usize,
    },
    meaning: "open connections; past it new ones get HTTP 503 and are closed",
    shown: |c| c.max_connections.to_string(),
};

pub const HANDSHAKE_TIMEOUT_SECS: Setting<Duration> = Setting {
    name: "HANDSHAKE_TIMEOUT_SECS",
    default: Fallback::Text("10"),
    values: Values::Whole { min: 1, max: 3600, into: Duration::from_secs },
    meaning: "an HTTP connection that has not completed a request within this time (since it opened, its TLS handshake included, or since its last response) is closed",
    shown: |c| c.handshake_timeout.as_secs().to_string(),
};

const LOG_LEVELS: &[(&str, LevelFilter)] = &[
    ("error", LevelFilter::Error),
    ("warn", LevelFilter::Warn),
    ("info", LevelFilter::Info),
    ("debug", LevelFilter::Debug),
    ("trace", LevelFilter::Trace),
];

pub const LOG_LEVEL: Setting<LevelFilter> = Setting {
    name: "LOG_LEVEL",
    default: Fallback::Text("info"),
    values: Values::OneOf(LOG_LEVELS),
    meaning: "`error`, `warn`, `info`, `debug` or `trace`",
    shown: |c| word_for(LOG_LEVELS, &c.log_level),
};

const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];

pub const LOG_FORMAT: Setting<LogFormat> = Setting {
    name: "LOG_FORMAT",
    default: Fallback::Text("text"),
    values: Values::OneOf(LOG_FORMATS),
    meaning: "`text` (one readable line per event) or `json` (one JSON object per line, with `ts`, `level`, `msg` and fields)",
    shown: |c| word_for(LOG_FORMATS, &c.log_format),
};

pub const REDIS_URL: Setting<Option<Secret>> = Setting {
    name: "REDIS_URL",
    default: Fallback::Text(""),
    values: Values::Parsed(parse_redis_url),
    meaning:
        "`redis://HOST:PORT[/DB]` (or `rediss://` for TLS): cluster mode through that Redis server; `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER`: through the master those Redis Sentinels name, followed across failovers (the password goes to the sentinels and the master alike); empty: a single broker",
    shown: Config::redis_url_shown,
};

pub const REDIS_REPLICAS_ACK: Setting<u32> = Setting {
    name: "REDIS_REPLICAS_ACK",
    default: Fallback::Text("0"),
    values: Values::Whole {
        min: 0,
        max: 64,
        into: |n| n as u32,
    },
    meaning: "replicas that must hold a change before it is acked (Redis `WAIT`, one per pipeline, at most a second: else `UNAVAILABLE`, the change may or may not have been made); 0: acked once the master holds it",
    shown: |c| c.redis_replicas_ack.to_string(),
};

pub const REDIS_CA_FILE: Setting<Option<PemFile>> = Setting {
    name: "REDIS_CA_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(read_certificates),
    meaning: "a PEM file of the CA certificates a `rediss://` server's certificate must chain to; empty: the system's",
    shown: |c| PemFile::shown(&c.redis_ca),
};

pub const REDIS_CLIENT_CERT_FILE: Setting<Option<PemFile>> = Setting {
    name: "REDIS_CLIENT_CERT_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(read_certificates),
    meaning: "a PEM file of this node's certificate, for a `rediss://` server that asks for one (with `REDIS_CLIENT_KEY_FILE`)",
    shown: |c| PemFile::shown(&c.redis_client_cert),
};

pub const REDIS_CLIENT_KEY_FILE: Setting<Option<PemFile>> = Setting {
    name: "REDIS_CLIENT_KEY_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(read_private_key),
    meaning: "a PEM file of the private key of `REDIS_CLIENT_CERT_FILE`",
    shown: |c| PemFile::shown(&c.redis_client_key),
};

pub const NODE_ID: Setting<String> = Setting {
    name: "NODE_ID",
    default: Fallback::Computed {
        shown: "generated",
        value: generated_node_id,
    },
    values: Values::Parsed(parse_node_id),
    meaning: "this node's name in a cluster, its logs, `/health` and metrics: 1 to 64 letters, digits, `.`, `_` or `-`",
    shown: |c| c.node_id.clone(),
};

/// The word of `choices` that means `value`.
fn word_for<T: PartialEq>(choices: &[(&'static str, T)], value: &T) -> String {
    choices
        .iter()
        .find(|(_, v)| v == value)
        .map_or("?", |(word, _)| word)
        .to_string()
}

/// Every variable `Config::from_vars` reads, in the order the README lists them.
pub const SETTINGS: &[&dyn Described] = &[
    &ADDR,
    &API_KEY,
    &SUBSCRIBER_QUEUE_SIZE,
    &RING_BUFFER_SIZE,
    &WORKERS,
    &HEARTBEAT_INTERVAL_SECS,
    &SHUTDOWN_TIMEOUT_SECS,
    &MAX_MESSAGE_BYTES,
    &MAX_CONNECTIONS,
    &HANDSHAKE_TIMEOUT_SECS,
    &LOG_LEVEL,
    &LOG_FORMAT,
    &REDIS_URL,
    &REDIS_CA_FILE,
    &REDIS_CLIENT_CERT_FILE,
    &REDIS_CLIENT_KEY_FILE,
    &REDIS_REPLICAS_ACK,
    &NODE_ID,
    &TOKEN_HMAC_SECRET,
    &TOKEN_PUBLIC_KEYS_FILE,
    &TOKEN_AUDIENCE,
    &TOKEN_ISSUER,
    &TOKEN_LEEWAY_SECS,
    &PUBLISH_RATE,
    &PUBLISH_BURST,
    &ALLOWED_ORIGINS,
    &TLS_CERT_FILE,
    &TLS_KEY_FILE,
    &TLS_CLIENT_CA_FILE,
];

/// The broker's settings, parsed and range-checked.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    pub api_key: Option<Secret>,
    pub subscriber_queue_size: usize,
    pub ring_buffer_size: usize,
    pub workers: usize,
    pub heartbeat_interval: Duration,
    pub shutdown_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub log_level: LevelFilter,
    pub log_format: LogFormat,
    /// Cluster mode when set: the backplane's address, checked.
    pub redis_url: Option<Secret>,
    /// The CAs a `rediss://` backplane is checked against, if not the
    /// system's.
    pub redis_ca: Option<PemFile>,
    /// This node's certificate and key, for a backplane that asks for one.
    pub redis_client_cert: Option<PemFile>,
    pub redis_client_key: Option<PemFile>,
    /// Replicas that must hold a change before it is acked.
    pub redis_replicas_ack: u32,
    pub node_id: String,
    /// Client tokens: `None` when neither `TOKEN_HMAC_SECRET` nor
    /// `TOKEN_PUBLIC_KEYS_FILE` is set.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// Publishes per second per connection (0: no limit), and the burst
    /// (the rate unless set).
    pub publish_rate: u32,
    pub publish_burst: u32,
    /// The origins a WebSocket upgrade may come from; empty: any.
    pub allowed_origins: Vec<String>,
    /// The TLS the listener speaks; `None`: plain TCP.
    pub tls: Option<ServerTls>,
}

/// The text of a setting that is or may hold a secret (the API key, a
/// Redis URL with its password): `Debug` shows `***`, so a config printed
/// whole shows no secret. It reads as a `str`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
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
        let (publish_rate, publish_burst) = access::read_publish_limit(&lookup)?;
        let config = Config {
            addr: ADDR.read(&lookup)?,
            api_key: API_KEY.read(&lookup)?,
            subscriber_queue_size: SUBSCRIBER_QUEUE_SIZE.read(&lookup)?,
            ring_buffer_size: RING_BUFFER_SIZE.read(&lookup)?,
            workers: WORKERS.read(&lookup)?,
            heartbeat_interval: HEARTBEAT_INTERVAL_SECS.read(&lookup)?,
            shutdown_timeout: SHUTDOWN_TIMEOUT_SECS.read(&lookup)?,
            max_message_bytes: MAX_MESSAGE_BYTES.read(&lookup)?,
            max_connections: MAX_CONNECTIONS.read(&lookup)?,
            handshake_timeout: HANDSHAKE_TIMEOUT_SECS.read(&lookup)?,
            log_level: LOG_LEVEL.read(&lookup)?,
            log_format: LOG_FORMAT.read(&lookup)?,
            redis_url: REDIS_URL.read(&lookup).map_err(|e| ConfigError {
                value: without_password(&e.value),
                ..e
            })?,
            redis_ca: REDIS_CA_FILE.read(&lookup)?,
            redis_client_cert: REDIS_CLIENT_CERT_FILE.read(&lookup)?,
            redis_client_key: REDIS_CLIENT_KEY_FILE.read(&lookup)?,
            redis_replicas_ack: REDIS_REPLICAS_ACK.read(&lookup)?,
            node_id: NODE_ID.read(&lookup)?,
            tokens: access::read_tokens(&lookup)?,
            publish_rate,
            publish_burst,
            allowed_origins: ALLOWED_ORIGINS.read(&lookup)?,
            tls: tls::read_server_tls(&lookup)?,
        };
        config.check_redis_tls()?;
        Ok(config)
    }

    /// The TLS files go with a `rediss://` URL, a certificate with its key,
    /// and the client must take them (`redis_client`, which the backplane
    /// defines: it alone builds the client).
    fn check_redis_tls(&self) -> Result<(), ConfigError> {
        let files = [
            (&REDIS_CA_FILE, &self.redis_ca),
            (&REDIS_CLIENT_CERT_FILE, &self.redis_client_cert),
            (&REDIS_CLIENT_KEY_FILE, &self.redis_client_key),
        ];
        let tls = self
            .redis_url
            .as_ref()
            .is_some_and(|url| url.starts_with("rediss://"));
        let mut given = files
            .iter()
            .filter_map(|(setting, file)| Some((setting, (*file).as_ref()?)));
        let Some((setting, file)) = given.next() else {
            return Ok(());
        };
        let refused = |setting: &Setting<Option<PemFile>>, value: &str, reason: &str| ConfigError {
            variable: setting.name,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !tls {
            return Err(refused(
                setting,
                &file.path,
                "only for a rediss:// REDIS_URL",
            ));
        }
        match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), None) => {
                return Err(refused(
                    &REDIS_CLIENT_CERT_FILE,
                    &cert.path,
                    "needs REDIS_CLIENT_KEY_FILE",
                ))
            }
            (None, Some(key)) => {
                return Err(refused(
                    &REDIS_CLIENT_KEY_FILE,
                    &key.path,
                    "needs REDIS_CLIENT_CERT_FILE",
                ))
            }
            _ => {}
        }
        match self.redis_client() {
            Some(Err(e)) => Err(refused(setting, &file.path, &format!("not usable: {e}"))),
            _ => Ok(()),
        }
    }

    /// `REDIS_URL` for logs, without its password.
    pub fn redis_url_shown(&self) -> String {
        self.redis_url
            .as_deref()
            .map(without_password)
            .unwrap_or_default()
    }

    /// Every setting's name and value, for the start-up log (the API key
    /// and the HMAC secret only as `set` or `unset`).
    pub fn shown(&self) -> Vec<(&'static str, String)> {
        SETTINGS
            .iter()
            .map(|setting| (setting.name(), setting.shown(self)))
            .collect()
    }

    /// A config for tests and embedding: loopback, a free port, defaults otherwise.
    pub fn loopback() -> Config {
        Config {
            addr: "127.0.0.1:0".parse().expect("valid address"),
            ..Config::default()
        }
    }
}

/// A URL with the password of its user part replaced by `***`, for logs
/// and errors.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

/// A URL the backplane accepts ([`crate::backplane::check_url`]); empty
/// means none.
fn parse_redis_url(text: &str) -> Result<Option<Secret>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    crate::backplane::check_url(text)?;
    Ok(Some(Secret(text.to_string())))
}

fn parse_node_id(text: &str) -> Result<String, String> {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    if text.is_empty() || text.len() > 64 || !text.bytes().all(valid) {
        return Err("must be 1 to 64 letters, digits, '.', '_' or '-'".into());
    }
    Ok(text.to_string())
}

/// `node-` and 8 random characters: unique enough among a cluster's nodes,
/// and stable for the life of the process.
fn generated_node_id() -> String {
    let epoch = crate::broker::new_epoch();
    format!("node-{}", &epoch[..8])
}

/// `:PORT` means every interface, `[::]:PORT` (dual-stack: see
/// `server::bind_listeners`); anything else is `host:port`.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("[::]{text}")
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

#[cfg(test)]
mod tests;
