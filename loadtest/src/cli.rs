//! The command line: which scenario, which server (a running one by URL,
//! or one this harness spawns and stops), CPU pinning, and output format.
//! `execute` prepares the process (file limit, timer slack, pinning), runs
//! the scenario and stops a spawned server.

use crate::affinity::CpuList;
use crate::endpoint::{Endpoint, TargetKind};
use crate::report::Report;
use crate::scenario::{self, ConnsOptions, FanoutOptions, ResumeOptions, SlowOptions};
use crate::spawn::{self, SpawnedServer};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::path::PathBuf;

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
}

/// Which server to test and how the processes are placed.
#[derive(Debug, Clone, Args)]
pub struct ServerOptions {
    #[arg(long, value_enum, default_value_t = TargetKind::Pubsub)]
    pub target: TargetKind,
    /// WebSocket URL of a running server (loopback only), e.g.
    /// ws://127.0.0.1:8080/ws.
    #[arg(long, conflicts_with = "spawn")]
    pub url: Option<String>,
    /// Start the server on a free loopback port, and stop it at the end.
    #[arg(long)]
    pub spawn: bool,
    /// The server binary for --spawn (default: pubsub next to this
    /// loadtest binary, else the workspace's target/release/pubsub;
    /// nats-server from PATH for --target nats).
    #[arg(long, requires = "spawn")]
    pub broker: Option<PathBuf>,
    /// KEY=VALUE for the spawned pubsub broker's environment (repeatable).
    #[arg(long = "env", value_parser = parse_key_value, requires = "spawn")]
    pub env: Vec<(String, String)>,
    /// Pin the spawned server to these CPUs (e.g. 0 or 0-1).
    #[arg(long, requires = "spawn")]
    pub server_cpus: Option<CpuList>,
    /// Pin the harness to these CPUs.
    #[arg(long)]
    pub cpus: Option<CpuList>,
    /// The running server's pid, for its CPU% and RSS.
    #[arg(long, conflicts_with = "spawn")]
    pub server_pid: Option<i32>,
    /// API key for a pubsub broker started with API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
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
    pub fn server(&self) -> &ServerOptions {
        match self {
            ScenarioCommand::Fanout { server, .. }
            | ScenarioCommand::Conns { server, .. }
            | ScenarioCommand::Slow { server, .. }
            | ScenarioCommand::Resume { server, .. } => server,
        }
    }
}

/// Runs the scenario the command line asks for and returns its report.
pub fn execute(cli: &Cli) -> Result<Report> {
    let server = cli.scenario.server();
    if let ScenarioCommand::Resume { .. } = cli.scenario {
        // Before a NATS server is spawned for nothing.
        scenario::check_resume_target(server.target)?;
    }
    raise_open_file_limit();
    // Open-loop pacing wakes on timers; the default 50 µs of slack would
    // show up as send lag.
    let _ = nix::sys::prctl::set_timerslack(1);
    let spawned = spawn_server(server)?;
    let (endpoint, server_pid) = match &spawned {
        Some(spawned) => {
            let path = match server.target {
                TargetKind::Pubsub => "/ws",
                TargetKind::Nats => "/",
            };
            let mut endpoint = Endpoint::local(server.target, spawned.addr, path)?;
            endpoint.api_key = server.api_key.clone();
            eprintln!(
                "spawned {} (pid {}) on {}",
                server.target,
                spawned.pid(),
                spawned.addr
            );
            (endpoint, Some(spawned.pid()))
        }
        None => {
            let Some(url) = &server.url else {
                bail!("give --url ws://127.0.0.1:PORT/ws for a running server, or --spawn");
            };
            (
                Endpoint::from_url(server.target, url, server.api_key.clone())?,
                server.server_pid,
            )
        }
    };
    // After spawning, so the server does not inherit the harness's mask.
    if let Some(cpus) = &server.cpus {
        cpus.pin_current_thread()?;
    }
    let report = match &cli.scenario {
        ScenarioCommand::Fanout { options, .. } => scenario::fanout(&endpoint, options, server_pid),
        ScenarioCommand::Conns { options, .. } => scenario::conns(&endpoint, options, server_pid),
        ScenarioCommand::Slow { options, .. } => scenario::slow(&endpoint, options, server_pid),
        ScenarioCommand::Resume { options, .. } => scenario::resume(&endpoint, options, server_pid),
    };
    if let Some(spawned) = spawned {
        match spawned.stop() {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!("warning: the spawned server exited with {status}"),
            Err(e) => eprintln!("warning: stopping the spawned server: {e:#}"),
        }
    }
    report
}

fn spawn_server(server: &ServerOptions) -> Result<Option<SpawnedServer>> {
    if !server.spawn {
        return Ok(None);
    }
    let spawned = match server.target {
        TargetKind::Pubsub => {
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
            SpawnedServer::pubsub(&path, &server.env, server.server_cpus.as_ref())?
        }
        TargetKind::Nats => {
            if !server.env.is_empty() {
                bail!("--env applies to the pubsub broker only");
            }
            let path = server
                .broker
                .clone()
                .unwrap_or_else(|| PathBuf::from("nats-server"));
            SpawnedServer::nats(&path, server.server_cpus.as_ref())
                .context("starting nats-server")?
        }
    };
    Ok(Some(spawned))
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
        ] {
            refusal(args);
        }
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
