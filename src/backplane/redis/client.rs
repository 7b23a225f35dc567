//! How this node reaches Redis, built from the `REDIS_*` settings: a
//! [`Connector`], either one server (`redis://`, or `rediss://` with the CA
//! certificates to check it against and this node's certificate and key)
//! or the master that Redis Sentinel names (`redis+sentinel://`, see
//! `sentinel`); and how long a request to Redis may take. `config` reads
//! and checks the settings' text (asking [`check_url`] and
//! [`Config::redis_client`] whether they are usable); this module alone
//! turns them into a connector. Every connection to Redis (the request
//! thread's, the event thread's, `leave`'s) is opened through it, so that
//! each asks where the master is now. It never keeps a connection.

use super::sentinel::{self, Sentinels};
use crate::config::Config;
use std::time::Duration;

/// A change not answered within this is answered `Unavailable`: under a
/// second, which the contract promises, with room for the hand-off to and
/// from the request thread.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(900);

/// A `redis://`, `rediss://` or `redis+sentinel://` URL this backend takes.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with(sentinel::SCHEME) {
        return Sentinels::parse(url).map(|_| ());
    }
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(
            "expected redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] or \
             redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER"
                .into(),
        );
    }
    redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
    Ok(())
}

/// Where connections to the cluster's Redis go.
#[derive(Clone)]
pub enum Connector {
    /// One server.
    Direct(redis::Client),
    /// The master that the sentinels name at each connection.
    Sentinel(Sentinels),
}

impl Connector {
    /// A connection to the master (for Sentinel: where a sentinel says it
    /// is now, its role checked), and a client of the same server, for
    /// more connections that must reach the same one.
    pub fn connect(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<(redis::Connection, redis::Client)> {
        match self {
            Connector::Direct(client) => {
                Ok((client.get_connection_with_timeout(timeout)?, client.clone()))
            }
            Connector::Sentinel(sentinels) => sentinels.connect(timeout),
        }
    }
}

impl Config {
    /// How to reach the cluster's Redis (`None`: a single broker). A
    /// `rediss://` server is checked against `REDIS_CA_FILE` if set, else
    /// against the system's CAs, and shown this node's certificate if
    /// `REDIS_CLIENT_CERT_FILE` is set.
    pub fn redis_client(&self) -> Option<redis::RedisResult<Connector>> {
        let url = self.redis_url.as_deref()?;
        if url.starts_with(sentinel::SCHEME) {
            return Some(Sentinels::parse(url).map(Connector::Sentinel).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "REDIS_URL", e))
            }));
        }
        let client_tls = match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.pem.clone(),
                client_key: key.pem.clone(),
            }),
            _ => None,
        };
        let root_cert = self.redis_ca.as_ref().map(|ca| ca.pem.clone());
        let client = if client_tls.is_none() && root_cert.is_none() {
            redis::Client::open(url)
        } else {
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        };
        Some(client.map(Connector::Direct))
    }
}
