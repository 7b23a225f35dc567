//! The command line: which scenario, which servers (running ones by URL,
//! one per node of a cluster, or a server or a cluster this harness spawns
//! and stops), TLS (the files for `wss://` URLs, or certificates generated
//! for spawned servers), where publishers connect, CPU pinning, and output
//! format. `execute` prepares the process (file limit, timer slack,
//! pinning), runs the scenario and stops what it spawned. `nemesis`, which
//! starts and breaks its own cluster, is only parsed here and run by
//! `nemesis::run`.

use crate::affinity::CpuList;
use crate::certs::Pki;
use crate::endpoint::{Endpoint, TargetKind};
use crate::nemesis::NemesisOptions;
use crate::nodes::{Nodes, PublishOn};
use crate::report::Report;
use crate::run::ServerPids;
use crate::scenario::{
    self, ConnsOptions, FanoutOptions, HandshakeOptions, ResumeOptions, SlowOptions,
};
use crate::spawn::{self, ServerTls, Spawned, SpawnedServer};
use crate::tls::{self, TlsVersion};
use anyhow::{bail, Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use rustls::ClientConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Load-test harness for the pubsub broker (and NATS, for comparison).
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: ScenarioCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Publishers fan out to subscribers: throughput, latency, loss, order.
    Fanout {
        #[command(flatten)]
        server: ServerOptions,
        #[command(flatten)]
        options: FanoutOptions,
    },
    /// Many idle connections: connect rate, failures, server memory per
    /// connection.
    Conns {
        #[command(flatten)]
        server: ServerOptions,
        #[command(flatten)]
        options: ConnsOptions,
    },
    /// Subscribers that stop reading: are they cut, and do the others
    /// lose nothing?
    Slow {
        #[command(flatten)]
        server: ServerOptions,
        #[command(flatten)]
        options: SlowOptions,
    },
    /// Subscribers that drop and resume (since_seq + epoch) while
    /// publishers run: does each see every seq exactly once? pubsub only.
    Resume {
        #[command(flatten)]
        server: ServerOptions,
        #[command(flatten)]
        options: ResumeOptions,
    },
    /// Connections set up (TCP, TLS handshake, optionally the WebSocket
    /// upgrade) and closed, as fast as the server takes them: handshakes
    /// per second, server CPU per handshake, sessions resumed.
    Handshakes {
        #[command(flatten)]
        server: ServerOptions,
        #[command(flatten)]
        options: HandshakeOptions,
    },
    /// Faults injected from a seed (nodes killed and paused, Redis killed
    /// and restarted from its AOF, Redis pub/sub clients and client
    /// sockets cut) into a cluster it starts, under acked publishers and
    /// resuming subscribers; then a checker's verdict. pubsub only.
    Nemesis {
        #[command(flatten)]
        options: NemesisOptions,
    },
}

/// Which server to test and how the processes are placed.
#[derive(Debug, Clone, Args)]
pub struct ServerOptions {
    #[arg(long, value_enum, default_value_t = TargetKind::Pubsub)]
    pub target: TargetKind,
    /// WebSocket URL of a running server (loopback only), e.g.
    /// ws://127.0.0.1:8080/ws, or wss://127.0.0.1:8443/ws with --ca-file;
    /// once per node of a cluster (subscribers are spread over them, REST
    /// calls go to the first, over https:// for wss://).
    #[arg(long = "url", value_name = "URL", group = "servers")]
    pub urls: Vec<String>,
    /// wss:// URLs: the PEM certificate of the CA that signed the
    /// servers' certificates (the only CA trusted).
    #[arg(long, value_name = "PATH", conflicts_with = "spawning")]
    pub ca_file: Option<PathBuf>,
    /// wss:// URLs: a PEM certificate chain to present to servers that
    /// require client certificates (mutual TLS); with --client-key.
    #[arg(long, value_name = "PATH", requires_all = ["ca_file", "client_key"])]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert.
    #[arg(long, value_name = "PATH", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// With --spawn or --spawn-cluster: serve TLS only, with a CA and a
    /// server certificate (localhost, 127.0.0.1, ::1) generated for the
    /// run (pubsub: TLS_CERT_FILE and TLS_KEY_FILE; NATS: tls on its
    /// WebSocket listener); the harness connects over wss:// and https://.
    #[arg(long, requires = "spawning")]
    pub tls: bool,
    /// With --tls: the servers also require a client certificate signed by
    /// the generated CA (pubsub: TLS_CLIENT_CA_FILE; NATS: verify), and
    /// the harness presents one it generated.
    #[arg(long, requires = "tls")]
    pub mtls: bool,
    /// Offer only this TLS version (default: 1.3 and 1.2, the server
    /// chooses).
    #[arg(long, value_enum, value_name = "1.2|1.3")]
    pub tls_version: Option<TlsVersion>,
    /// Start the server on a free loopback port, and stop it at the end.
    #[arg(long, group = "servers", group = "spawning")]
    pub spawn: bool,
    /// Start a cluster of N pubsub nodes: a redis-server on a free loopback
    /// port (no persistence), N brokers on it (REDIS_URL, NODE_ID=n0, n1,
    /// ..., and --env), ready before the run; stop them all at the end.
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..),
          group = "servers", group = "spawning")]
    pub spawn_cluster: Option<usize>,
    /// Where publishers connect: a node's index (0: the first --url or
    /// spawned node), or spread (publisher p on node p mod N).
    #[arg(long, value_name = "INDEX|spread", default_value = "0")]
    pub publish_on: PublishOn,
    /// The broker binary for --spawn and --spawn-cluster (default: pubsub
    /// next to this loadtest binary, else the workspace's
    /// target/release/pubsub; nats-server from PATH for --target nats).
    #[arg(long, requires = "spawning")]
    pub broker: Option<PathBuf>,
    /// The redis-server binary for --spawn-cluster (default: from PATH).
    #[arg(long)]
    pub redis_server: Option<PathBuf>,
    /// KEY=VALUE for the spawned pubsub brokers' environment (repeatable).
    #[arg(long = "env", value_parser = parse_key_value, requires = "spawning")]
    pub env: Vec<(String, String)>,
    /// Pin the spawned servers (and Redis) to these CPUs (e.g. 0 or 0-1).
    #[arg(long, requires = "spawning")]
    pub server_cpus: Option<CpuList>,
    /// Pin the harness to these CPUs.
    #[arg(long)]
    pub cpus: Option<CpuList>,
    /// A running server's pid, for its CPU% and RSS: none, or one per
    /// --url, in the same order.
    #[arg(long = "server-pid", value_name = "PID", conflicts_with = "spawning")]
    pub server_pids: Vec<i32>,
    /// API key for a pubsub broker started with API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
    /// A token every WebSocket connection presents (`Authorization:
    /// Bearer` on the upgrade) to a pubsub broker with tokens; REST calls
    /// (creating topics) still use --api-key.
    #[arg(long)]
    pub token: Option<String>,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl ScenarioCommand {
    /// The server options of a measuring scenario; `nemesis` starts its
    /// own cluster and has none.
    pub fn server(&self) -> Option<&ServerOptions> {
        match self {
            ScenarioCommand::Fanout { server, .. }
            | ScenarioCommand::Conns { server, .. }
            | ScenarioCommand::Slow { server, .. }
            | ScenarioCommand::Resume { server, .. }
            | ScenarioCommand::Handshakes { server, .. } => Some(server),
            ScenarioCommand::Nemesis { .. } => None,
        }
    }
}

/// Runs the scenario the command line asks for and returns its report.
pub fn execute(cli: &Cli) -> Result<Report> {
    let Some(server) = cli.scenario.server() else {
        bail!("nemesis is run by nemesis::run, and has no report");
    };
    if let ScenarioCommand::Resume { .. } = cli.scenario {
        // Before a NATS server is spawned for nothing.
        scenario::check_resume_target(server.target)?;
    }
    check_servers(server)?;
    raise_open_file_limit();
    // Open-loop pacing wakes on timers; the default 50 µs of slack would
    // show up as send lag.
    let _ = nix::sys::prctl::set_timerslack(1);
    // Kept until the servers are stopped.
    let pki = server.tls.then(|| Pki::generate(server.mtls)).transpose()?;
    let client_tls = client_tls(server, pki.as_ref())?;
    let server_tls = pki.as_ref().map(|pki| ServerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: server.mtls.then(|| pki.ca.clone()),
    });
    let spawned = spawn_servers(server, server_tls.as_ref(), client_tls.as_ref())?;
    let (nodes, pids) = match &spawned {
        Some(spawned) => {
            let path = match server.target {
                TargetKind::Pubsub => "/ws",
                TargetKind::Nats => "/",
            };
            let mut endpoints = Vec::with_capacity(spawned.servers.len());
            for node in &spawned.servers {
                let mut endpoint = Endpoint::local(server.target, node.addr, path)?;
                if let Some(config) = &client_tls {
                    endpoint = endpoint.with_tls(config)?;
                }
                endpoint.api_key = server.api_key.clone();
                endpoint.token = server.token.clone();
                endpoints.push(endpoint);
            }
            let pids = ServerPids {
                nodes: spawned.servers.iter().map(SpawnedServer::pid).collect(),
                redis: spawned.redis.as_ref().map(SpawnedServer::pid),
            };
            (Nodes::new(endpoints, server.publish_on)?, pids)
        }
        None => {
            let endpoints = server
                .urls
                .iter()
                .map(|url| {
                    let mut endpoint = Endpoint::from_url(
                        server.target,
                        url,
                        server.api_key.clone(),
                        client_tls.as_ref(),
                    )?;
                    endpoint.token = server.token.clone();
                    Ok(endpoint)
                })
                .collect::<Result<Vec<_>>>()?;
            let pids = ServerPids {
                nodes: server.server_pids.clone(),
                redis: None,
            };
            (Nodes::new(endpoints, server.publish_on)?, pids)
        }
    };
    // After spawning, so the servers do not inherit the harness's mask.
    if let Some(cpus) = &server.cpus {
        cpus.pin_current_thread()?;
    }
    let report = match &cli.scenario {
        ScenarioCommand::Fanout { options, .. } => scenario::fanout(&nodes, options, &pids),
        ScenarioCommand::Conns { options, .. } => scenario::conns(&nodes, options, &pids),
        ScenarioCommand::Slow { options, .. } => scenario::slow(&nodes, options, &pids),
        ScenarioCommand::Resume { options, .. } => scenario::resume(&nodes, options, &pids),
        ScenarioCommand::Handshakes { options, .. } => scenario::handshakes(&nodes, options, &pids),
        ScenarioCommand::Nemesis { .. } => unreachable!("refused above"),
    };
    if let Some(spawned) = spawned {
        spawned.stop();
    }
    drop(pki);
    report
}

/// The TLS client configuration: for servers spawned with `--tls`, the
/// generated CA (and client certificate, `--mtls`); for `--url`, the
/// `--ca-file` (and `--client-cert`, `--client-key`); none for plain
/// servers.
fn client_tls(server: &ServerOptions, pki: Option<&Pki>) -> Result<Option<Arc<ClientConfig>>> {
    if let Some(pki) = pki {
        return tls::client_config(&pki.ca, pki.client_identity(), server.tls_version).map(Some);
    }
    let Some(ca) = &server.ca_file else {
        if server.tls_version.is_some() {
            bail!("--tls-version applies to TLS: wss:// URLs with --ca-file, or --spawn --tls");
        }
        return Ok(None);
    };
    let identity = server
        .client_cert
        .as_deref()
        .zip(server.client_key.as_deref());
    tls::client_config(ca, identity, server.tls_version).map(Some)
}

/// Refuses, before anything is started, servers that cannot be tested as
/// asked: none given, a NATS cluster to spawn, `--redis-server` without a
/// cluster to spawn, `--publish-on` a node that will not be there, pids
/// that do not match the URLs.
fn check_servers(server: &ServerOptions) -> Result<()> {
    let nodes = match (server.spawn, server.spawn_cluster) {
        (true, _) => 1,
        (false, Some(n)) => n,
        (false, None) => server.urls.len(),
    };
    if nodes == 0 {
        bail!(
            "give --url ws://127.0.0.1:PORT/ws for a running server, --spawn, or --spawn-cluster N"
        );
    }
    if server.spawn_cluster.is_some() && server.target != TargetKind::Pubsub {
        bail!("--spawn-cluster starts pubsub nodes: --target pubsub only");
    }
    if server.redis_server.is_some() && server.spawn_cluster.is_none() {
        bail!("--redis-server applies to --spawn-cluster only");
    }
    if !server.server_pids.is_empty() && server.server_pids.len() != server.urls.len() {
        bail!(
            "{} --server-pid for {} --url: give one per --url, in the same order, or none",
            server.server_pids.len(),
            server.urls.len()
        );
    }
    server.publish_on.check(nodes)
}

/// Starts what `--spawn` or `--spawn-cluster` asks for, if either does,
/// serving TLS with `tls` (and asked whether ready with `client_tls`).
fn spawn_servers(
    server: &ServerOptions,
    tls: Option<&ServerTls>,
    client_tls: Option<&Arc<ClientConfig>>,
) -> Result<Option<Spawned>> {
    let mut env = server.env.clone();
    if let Some(tls) = tls {
        env.extend(tls.pubsub_env());
    }
    if !server.spawn && server.spawn_cluster.is_none() {
        return Ok(None);
    }
    let broker = || -> Result<PathBuf> {
        let path = server
            .broker
            .clone()
            .unwrap_or_else(spawn::default_broker_path);
        if !path.is_file() {
            bail!(
                "no broker binary at {} (run cargo build --release, or give --broker)",
                path.display()
            );
        }
        Ok(path)
    };
    if let Some(nodes) = server.spawn_cluster {
        let redis = server
            .redis_server
            .clone()
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let spawned = Spawned::cluster(
            &broker()?,
            &redis,
            nodes,
            &env,
            server.server_cpus.as_ref(),
            client_tls,
        )?;
        return Ok(Some(spawned));
    }
    let spawned = match server.target {
        TargetKind::Pubsub => {
            SpawnedServer::pubsub(&broker()?, &env, server.server_cpus.as_ref(), "broker")?
        }
        TargetKind::Nats => {
            if !server.env.is_empty() {
                bail!("--env applies to the pubsub broker only");
            }
            let path = server
                .broker
                .clone()
                .unwrap_or_else(|| PathBuf::from("nats-server"));
            SpawnedServer::nats(&path, server.server_cpus.as_ref(), tls)
                .context("starting nats-server")?
        }
    };
    eprintln!(
        "spawned {} (pid {}) on {}{}",
        server.target,
        spawned.pid(),
        spawned.addr,
        if tls.is_some() { " (TLS)" } else { "" }
    );
    Ok(Some(Spawned {
        servers: vec![spawned],
        redis: None,
    }))
}

/// Lifts the soft limit on open files to the hard one: `conns` holds one
/// descriptor per connection (and a spawned server inherits the limit).
fn raise_open_file_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn refusal(args: &[&str]) -> String {
        let error = Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
            .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::ValueValidation, "{error}");
        error.to_string()
    }

    #[test]
    fn options_that_leave_no_measured_window_are_refused() {
        for args in [
            &["fanout", "--duration", "0"][..],
            &["slow", "--duration", "0"],
            &["conns", "--hold", "0"],
            &["resume", "--duration", "0"],
        ] {
            let message = refusal(args);
            assert!(message.contains("more than 0 seconds"), "{message}");
        }
        let message = refusal(&["fanout", "--duration=-1"]);
        assert!(message.contains("seconds ≥ 0"), "{message}");
        let message = refusal(&["fanout", "--warmup", "NaN"]);
        assert!(message.contains("seconds ≥ 0"), "{message}");
    }

    #[test]
    fn counts_and_rates_that_leave_nothing_to_measure_are_refused() {
        for args in [
            &["fanout", "--publishers", "0"][..],
            &["fanout", "--subscribers", "0"],
            &["fanout", "--topics", "0"],
            &["fanout", "--window", "0"],
            &["fanout", "--threads", "0"],
            &["conns", "--connections", "0"],
            &["slow", "--subscribers", "0"],
            &["fanout", "--rate=-5"],
            &["slow", "--rate", "0"],
            &["resume", "--rate", "0"],
            &["resume", "--subscribers", "0"],
            &["resume", "--reconnect-every", "0"],
            &["handshakes", "--count", "0"],
            &["handshakes", "--concurrency", "0"],
            &["handshakes", "--threads", "0"],
            &["handshakes", "--duration", "0"],
            &["handshakes", "--timeout", "0"],
        ] {
            refusal(args);
        }
    }

    #[test]
    fn tls_options_parse_with_what_they_need() {
        let options = server(&[
            "--url",
            "wss://127.0.0.1:8443/ws",
            "--ca-file",
            "ca.pem",
            "--client-cert",
            "client.pem",
            "--client-key",
            "client-key.pem",
        ]);
        assert_eq!(options.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(options.client_cert, Some(PathBuf::from("client.pem")));
        assert_eq!(options.client_key, Some(PathBuf::from("client-key.pem")));
        assert!(!options.tls);
        let options = server(&["--spawn", "--tls", "--mtls"]);
        assert!(options.tls && options.mtls);
        let options = server(&["--spawn-cluster", "2", "--tls", "--tls-version", "1.2"]);
        assert!(options.tls && !options.mtls);
        assert_eq!(options.tls_version, Some(TlsVersion::Tls12));
        let error = Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--spawn",
            "--tls",
            "--tls-version",
            "1.1",
        ])
        .expect_err("refused");
        assert_eq!(error.kind(), ErrorKind::InvalidValue, "{error}");
        let cli = Cli::try_parse_from([
            "loadtest",
            "handshakes",
            "--spawn",
            "--tls",
            "--resume",
            "--upgrade",
            "--count",
            "500",
        ])
        .expect("parses");
        let ScenarioCommand::Handshakes { options, server } = cli.scenario else {
            panic!("handshakes")
        };
        assert!(options.resume && options.upgrade && server.tls);
        assert_eq!(
            (options.count, options.concurrency, options.threads),
            (500, 4, 1)
        );
    }

    #[test]
    fn tls_options_without_what_they_need_are_refused() {
        for args in [
            // Generated certificates are for spawned servers.
            &["fanout", "--tls", "--url", "ws://127.0.0.1:1/ws"][..],
            &["fanout", "--mtls", "--spawn"],
            // A CA file is for running servers: spawned ones get theirs.
            &["fanout", "--spawn", "--ca-file", "ca.pem"],
            &[
                "fanout",
                "--url",
                "wss://127.0.0.1:1/ws",
                "--client-cert",
                "c.pem",
            ],
            &[
                "fanout",
                "--url",
                "wss://127.0.0.1:1/ws",
                "--client-cert",
                "c.pem",
                "--client-key",
                "k.pem",
            ],
            &[
                "fanout",
                "--url",
                "wss://127.0.0.1:1/ws",
                "--client-key",
                "k.pem",
            ],
        ] {
            refused_by_clap(args);
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_is_refused_before_anything_is_sent() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--url",
            "wss://127.0.0.1:1/ws",
            "--ca-file",
            "/nonexistent/ca.pem",
        ])
        .expect("parses");
        let error = execute(&cli).expect_err("refused");
        assert!(
            format!("{error:#}").contains("/nonexistent/ca.pem"),
            "{error:#}"
        );
        let cli = Cli::try_parse_from([
            "loadtest",
            "handshakes",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--resume",
        ])
        .expect("parses");
        let error = execute(&cli).expect_err("refused");
        assert!(
            error.to_string().contains("--resume resumes TLS sessions"),
            "{error:#}"
        );
        let cli = Cli::try_parse_from(["loadtest", "fanout", "--spawn", "--tls-version", "1.3"])
            .expect("parses");
        let error = execute(&cli).expect_err("refused");
        assert!(
            error.to_string().contains("--tls-version applies to TLS"),
            "{error:#}"
        );
    }

    #[test]
    fn sensible_options_parse() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--rate",
            "0",
        ])
        .expect("parses");
        let ScenarioCommand::Fanout { options, .. } = cli.scenario else {
            panic!("fanout")
        };
        assert_eq!((options.duration, options.warmup), (0.5, 0.0));
        Cli::try_parse_from(["loadtest", "slow", "--slow", "0"]).expect("no slow ones is allowed");
        let cli = Cli::try_parse_from(["loadtest", "resume", "--reconnect-every", "250"])
            .expect("parses");
        let ScenarioCommand::Resume { options, .. } = cli.scenario else {
            panic!("resume")
        };
        assert_eq!(
            (options.reconnect_every, options.require_recovery),
            (250, true)
        );
        let cli = Cli::try_parse_from(["loadtest", "resume", "--require-recovery", "false"])
            .expect("parses");
        let ScenarioCommand::Resume { options, .. } = cli.scenario else {
            panic!("resume")
        };
        assert!(!options.require_recovery);
    }

    fn server(args: &[&str]) -> ServerOptions {
        let cli = Cli::try_parse_from(["loadtest", "fanout"].iter().chain(args)).expect("parses");
        cli.scenario.server().expect("fanout").clone()
    }

    #[test]
    fn a_cluster_is_given_by_several_urls_or_spawned() {
        let options = server(&[
            "--url",
            "ws://127.0.0.1:8081/ws",
            "--url",
            "ws://127.0.0.1:8082/ws",
            "--server-pid",
            "10",
            "--server-pid",
            "11",
            "--publish-on",
            "spread",
        ]);
        assert_eq!(options.urls.len(), 2);
        assert_eq!(options.server_pids, [10, 11]);
        assert_eq!(options.publish_on, PublishOn::Spread);
        let options = server(&["--spawn-cluster", "3", "--env", "WORKERS=1"]);
        assert_eq!(options.spawn_cluster, Some(3));
        assert_eq!(options.publish_on, PublishOn::Node(0));
        check_servers(&options).expect("a cluster of three");
    }

    /// `args` (after `loadtest`) conflict, or lack an argument another needs.
    fn refused_by_clap(args: &[&str]) {
        let args = std::iter::once("loadtest").chain(args.iter().copied());
        let error = Cli::try_parse_from(args).expect_err("refused");
        assert!(
            matches!(
                error.kind(),
                ErrorKind::ArgumentConflict | ErrorKind::MissingRequiredArgument
            ),
            "{error}"
        );
    }

    #[test]
    fn servers_given_two_ways_are_refused() {
        for args in [
            &["fanout", "--spawn", "--spawn-cluster", "2"][..],
            &[
                "fanout",
                "--url",
                "ws://127.0.0.1:1/ws",
                "--spawn-cluster",
                "2",
            ],
            &["fanout", "--url", "ws://127.0.0.1:1/ws", "--spawn"],
            &["fanout", "--server-pid", "1", "--spawn-cluster", "2"],
        ] {
            refused_by_clap(args);
        }
        refusal(&["fanout", "--spawn-cluster", "0"]);
    }

    #[test]
    fn a_cluster_that_cannot_be_tested_as_asked_is_refused_before_anything_starts() {
        for (args, why) in [
            (
                &["--spawn-cluster", "2", "--publish-on", "2"][..],
                "there are 2 nodes",
            ),
            (
                &["--url", "ws://127.0.0.1:1/ws", "--publish-on", "1"],
                "there are 1 nodes",
            ),
            (
                &["--spawn-cluster", "2", "--target", "nats"],
                "--target pubsub only",
            ),
            (
                &[
                    "--url",
                    "ws://127.0.0.1:1/ws",
                    "--url",
                    "ws://127.0.0.1:2/ws",
                    "--server-pid",
                    "7",
                ],
                "give one per --url",
            ),
            (
                &["--redis-server", "/bin/redis-server", "--spawn"],
                "--spawn-cluster only",
            ),
            (&[], "give --url"),
        ] {
            let error = check_servers(&server(args)).expect_err("refused");
            assert!(error.to_string().contains(why), "{args:?}: {error:#}");
        }
        // execute refuses it before it spawns anything.
        let cli = Cli::try_parse_from([
            "loadtest",
            "fanout",
            "--spawn-cluster",
            "2",
            "--publish-on",
            "5",
        ])
        .expect("parses");
        let error = execute(&cli).expect_err("refused");
        assert!(error.to_string().contains("there are 2 nodes"), "{error:#}");
    }

    #[test]
    fn resume_refuses_nats_before_spawning_anything() {
        let cli = Cli::try_parse_from(["loadtest", "resume", "--target", "nats", "--spawn"])
            .expect("parses");
        let error = execute(&cli).expect_err("refused");
        assert!(
            error.to_string().contains("--target pubsub only"),
            "{error:#}"
        );
    }
}
