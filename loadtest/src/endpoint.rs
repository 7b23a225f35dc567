//! Where the harness sends traffic: which kind of server (pubsub or NATS),
//! its WebSocket URL (`ws://`, or `wss://` with the TLS client
//! configuration it needs), checked to be a loopback address before
//! anything is sent. This harness never talks to another host.

use crate::tls::TlsTarget;
use anyhow::{bail, Context, Result};
use rustls::ClientConfig;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// This repository's broker: JSON over WebSocket, topics over REST.
    Pubsub,
    /// A NATS server's WebSocket listener, text protocol.
    Nats,
}

/// The flag's spelling: `pubsub`, `nats`.
impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// A loopback WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub kind: TargetKind,
    pub addr: SocketAddr,
    /// The `Host` header and the request path of the upgrade.
    pub host: String,
    pub path: String,
    /// Sent as `X-API-Key` on REST calls, and on the upgrade unless there
    /// is a token (pubsub only).
    pub api_key: Option<String>,
    /// Sent as `Authorization: Bearer` on the upgrade (pubsub with tokens).
    pub token: Option<String>,
    /// `wss://` (and its REST calls over `https://`).
    pub tls: Option<TlsTarget>,
}

impl Endpoint {
    /// Parses `ws://HOST:PORT/PATH` or `wss://HOST:PORT/PATH`; HOST must be
    /// in 127.0.0.0/8, `::1` or `localhost`. A `wss://` URL needs `tls`,
    /// the client configuration (`--ca-file`); a `ws://` one is refused
    /// with it (TLS files for a plain server are a mistake).
    pub fn from_url(
        kind: TargetKind,
        url: &str,
        api_key: Option<String>,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Endpoint> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        let default_port = match (uri.scheme_str(), tls) {
            (Some("ws"), None) => 80,
            (Some("wss"), Some(_)) => 443,
            (Some("ws"), Some(_)) => {
                bail!("{url}: --ca-file, --client-cert and --client-key are for wss:// URLs")
            }
            (Some("wss"), None) => bail!(
                "{url}: a wss:// URL needs --ca-file PATH, the PEM certificate of the CA \
                 that signed the server's certificate"
            ),
            (Some(other), _) => bail!("only ws:// and wss:// URLs are supported, not {other}://"),
            (None, _) => bail!("the URL {url:?} has no scheme (ws:// or wss://)"),
        };
        let host = uri.host().context("the URL has no host")?;
        let ip = loopback_ip(host)?;
        let port = uri.port_u16().unwrap_or(default_port);
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Endpoint {
            kind,
            addr: SocketAddr::new(ip, port),
            host: uri.authority().map_or(host, |a| a.as_str()).to_string(),
            path,
            api_key,
            token: None,
            tls: tls
                .map(|config| TlsTarget::new(Arc::clone(config), host))
                .transpose()?,
        })
    }

    /// An endpoint for a server this process knows the address of.
    pub fn local(kind: TargetKind, addr: SocketAddr, path: &str) -> Result<Endpoint> {
        loopback_ip(&addr.ip().to_string())?;
        Ok(Endpoint {
            kind,
            addr,
            host: addr.to_string(),
            path: path.to_string(),
            api_key: None,
            token: None,
            tls: None,
        })
    }

    /// The same endpoint over TLS with `config`; the server's certificate
    /// must name its IP address.
    pub fn with_tls(mut self, config: &Arc<ClientConfig>) -> Result<Endpoint> {
        self.tls = Some(TlsTarget::new(
            Arc::clone(config),
            &self.addr.ip().to_string(),
        )?);
        Ok(self)
    }

    /// The REST URL of `path` on this server: `http://` or `https://`.
    pub fn http_url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// The address of a loopback host name or literal, or an error for any
/// other host. `localhost` is mapped without a DNS lookup.
pub fn loopback_ip(host: &str) -> Result<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = literal
        .parse()
        .map_err(|_| anyhow::anyhow!("refusing host {host:?}: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed"))?;
    let allowed = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    };
    if !allowed {
        bail!("refusing host {host:?}: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed");
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let e =
            Endpoint::from_url(TargetKind::Pubsub, "ws://127.0.0.1:8080/ws", None, None).unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.path, "/ws");
        assert_eq!(e.host, "127.0.0.1:8080");
        let e = Endpoint::from_url(TargetKind::Nats, "ws://localhost:9222", None, None).unwrap();
        assert_eq!(e.addr, "127.0.0.1:9222".parse().unwrap());
        assert_eq!(e.path, "/");
        let e = Endpoint::from_url(TargetKind::Pubsub, "ws://[::1]:81/ws?api_key=k", None, None)
            .unwrap();
        assert_eq!(e.addr, "[::1]:81".parse().unwrap());
        assert_eq!(e.path, "/ws?api_key=k");
        assert!(Endpoint::from_url(TargetKind::Pubsub, "ws://127.9.8.7/ws", None, None).is_ok());
    }

    #[test]
    fn targets_print_as_the_flag_spells_them() {
        assert_eq!(TargetKind::Pubsub.to_string(), "pubsub");
        assert_eq!(TargetKind::Nats.to_string(), "nats");
    }

    #[test]
    fn other_hosts_and_schemes_are_refused() {
        for url in [
            "ws://10.0.0.1:8080/ws",
            "ws://192.168.1.2/ws",
            "ws://example.com/ws",
            "ws://[::2]:80/ws",
            "ws://0.0.0.0:8080/ws",
            "http://127.0.0.1/ws",
            "127.0.0.1:8080",
        ] {
            assert!(
                Endpoint::from_url(TargetKind::Pubsub, url, None, None).is_err(),
                "{url}"
            );
        }
        let config = config();
        for url in [
            "wss://10.0.0.1/ws",
            "wss://example.com/ws",
            "https://127.0.0.1/ws",
        ] {
            assert!(
                Endpoint::from_url(TargetKind::Pubsub, url, None, Some(&config)).is_err(),
                "{url}"
            );
        }
    }

    fn config() -> Arc<ClientConfig> {
        let pki = crate::certs::Pki::generate(false).unwrap();
        crate::tls::client_config(&pki.ca, None, None).unwrap()
    }

    #[test]
    fn wss_urls_carry_the_tls_configuration_and_the_name_to_check() {
        let config = config();
        let e = Endpoint::from_url(
            TargetKind::Pubsub,
            "wss://127.0.0.1/ws",
            None,
            Some(&config),
        )
        .unwrap();
        assert_eq!(e.addr, "127.0.0.1:443".parse().unwrap());
        assert_eq!(e.http_url("/topics"), "https://127.0.0.1:443/topics");
        let tls = e.tls.expect("TLS");
        assert_eq!(tls.name.to_str(), "127.0.0.1");
        let e = Endpoint::from_url(
            TargetKind::Nats,
            "wss://localhost:9443",
            None,
            Some(&config),
        )
        .unwrap();
        assert_eq!(e.addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(e.tls.expect("TLS").name.to_str(), "localhost");
        let e = Endpoint::from_url(
            TargetKind::Pubsub,
            "wss://[::1]:8443/ws",
            None,
            Some(&config),
        )
        .unwrap();
        assert_eq!(e.tls.expect("TLS").name.to_str(), "::1");
        let spawned =
            Endpoint::local(TargetKind::Pubsub, "127.0.0.1:9000".parse().unwrap(), "/ws").unwrap();
        assert_eq!(spawned.http_url("/readyz"), "http://127.0.0.1:9000/readyz");
        let spawned = spawned.with_tls(&config).unwrap();
        assert_eq!(spawned.tls.expect("TLS").name.to_str(), "127.0.0.1");
    }

    #[test]
    fn wss_needs_a_ca_and_ws_refuses_one() {
        let error =
            Endpoint::from_url(TargetKind::Pubsub, "wss://127.0.0.1/ws", None, None).unwrap_err();
        assert!(error.to_string().contains("--ca-file"), "{error}");
        let error = Endpoint::from_url(
            TargetKind::Pubsub,
            "ws://127.0.0.1/ws",
            None,
            Some(&config()),
        )
        .unwrap_err();
        assert!(error.to_string().contains("are for wss:// URLs"), "{error}");
    }
}
