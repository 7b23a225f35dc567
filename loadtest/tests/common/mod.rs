//! What the end-to-end tests of the scenarios share: a pubsub broker
//! started in the test process on a free loopback port (plain, or behind
//! TLS), the run options of a short run, and the verdict of a clean one.

use loadtest::certs::Pki;
use loadtest::endpoint::{Endpoint, TargetKind};
use loadtest::nodes::Nodes;
use loadtest::report::Report;
use loadtest::scenario::RunOptions;
use std::collections::HashMap;

/// A pubsub broker in this process; shut down when dropped.
pub struct Broker {
    /// Over TLS if the broker serves it, presenting the client
    /// certificate if it requires one.
    pub endpoint: Endpoint,
    server: Option<pubsub::Server>,
}

impl Broker {
    /// Starts a broker with `vars`, and with `tls`, behind TLS with its
    /// server certificate (and with its client certificate, requiring
    /// one: mutual TLS).
    pub fn start(vars: &[(&str, &str)], tls: Option<&Pki>) -> Broker {
        let mut settings: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(pki) = tls {
            let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
            settings.insert("TLS_CERT_FILE".into(), path(&pki.server_cert));
            settings.insert("TLS_KEY_FILE".into(), path(&pki.server_key));
            if pki.client.is_some() {
                settings.insert("TLS_CLIENT_CA_FILE".into(), path(&pki.ca));
            }
        }
        settings.insert("ADDR".into(), "127.0.0.1:0".into());
        settings
            .entry("WORKERS".into())
            .or_insert_with(|| "2".into());
        let config =
            pubsub::Config::from_vars(|name| settings.get(name).cloned()).expect("valid config");
        let server = pubsub::Server::start(config).expect("the broker starts");
        let mut endpoint = Endpoint::local(TargetKind::Pubsub, server.local_addr(), "/ws").unwrap();
        if let Some(pki) = tls {
            let config =
                loadtest::tls::client_config(&pki.ca, pki.client_identity(), None).unwrap();
            endpoint = endpoint.with_tls(&config).unwrap();
        }
        Broker {
            endpoint,
            server: Some(server),
        }
    }

    /// The broker as the only node.
    pub fn nodes(&self) -> Nodes {
        Nodes::single(self.endpoint.clone())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_handle().shutdown();
            server.wait();
        }
    }
}

pub fn run_options() -> RunOptions {
    RunOptions {
        threads: 2,
        grace: 10.0,
        setup_timeout: 20.0,
        topic_prefix: "it".into(),
        quiet: true,
    }
}

/// Nothing lost, duplicated, reordered or refused.
pub fn assert_clean(report: &Report) {
    assert_eq!(
        report.failures(),
        Vec::<String>::new(),
        "{}",
        report.table()
    );
    assert!(report.published > 0, "{}", report.table());
    assert!(report.expected > 0, "{}", report.table());
    assert_eq!(report.delivered, report.expected, "{}", report.table());
    assert_eq!(report.lost, 0, "{}", report.table());
    assert_eq!(report.duplicates, 0, "{}", report.table());
    assert_eq!(report.out_of_order, 0, "{}", report.table());
    assert_eq!(report.gaps, 0, "{}", report.table());
    assert_eq!(report.malformed, 0, "{}", report.table());
    assert_eq!(report.disconnects, 0, "{}", report.table());
    assert_eq!(report.errors, 0, "{}", report.table());
}
