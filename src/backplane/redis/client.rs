//! The Redis client, built from the `REDIS_*` settings: the URL, and for a
//! `rediss://` server the CA certificates to check it against and this
//! node's certificate and key; and how long a request to Redis may take. `config` reads and checks the settings' text
//! (asking [`check_url`] and [`Config::redis_client`] whether the client
//! takes them); this module alone turns them into a client. It never
//! connects.

use crate::config::Config;
use std::time::Duration;

/// A change not answered within this is answered `Unavailable`: under a
/// second, which the contract promises, with room for the hand-off to and
/// from the request thread.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(900);

/// A `redis://` or `rediss://` URL the client accepts.
pub fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err("expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]".into());
    }
    redis::Client::open(url).map_err(|e| format!("not a Redis URL: {e}"))?;
    Ok(())
}

impl Config {
    /// The client of the cluster's Redis (`None`: a single broker), which
    /// checks a `rediss://` server against `REDIS_CA_FILE` if set, else
    /// against the system's CAs, and shows it this node's certificate if
    /// `REDIS_CLIENT_CERT_FILE` is set.
    pub fn redis_client(&self) -> Option<redis::RedisResult<redis::Client>> {
        let url = self.redis_url.as_deref()?;
        let client_tls = match (&self.redis_client_cert, &self.redis_client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.pem.clone(),
                client_key: key.pem.clone(),
            }),
            _ => None,
        };
        let root_cert = self.redis_ca.as_ref().map(|ca| ca.pem.clone());
        Some(if client_tls.is_none() && root_cert.is_none() {
            redis::Client::open(url)
        } else {
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        })
    }
}
