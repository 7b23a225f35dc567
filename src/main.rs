//! The `pubsub` binary: `--help` and `--version`, configuration from the
//! environment, logging, signals (SIGINT and SIGTERM drain, SIGHUP reloads
//! the TLS certificate), and exit codes (0 after a graceful shutdown, 2 for
//! a bad setting, 1 if the server cannot start or a second SIGINT or
//! SIGTERM cuts the drain short).

use clap::{CommandFactory, FromArgMatches, Parser};
use log::Level;
use pubsub::config::{LOG_FORMAT, SETTINGS};
use pubsub::logging::{self, LogFormat};
use pubsub::{Config, ReloadHandle, Server, ShutdownHandle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::process::ExitCode;

/// An in-memory publish/subscribe broker: WebSocket fan-out at /ws, topics
/// over REST. Every setting comes from the environment.
#[derive(Parser)]
#[command(name = "pubsub", version)]
struct Cli {}

/// The `--help` section that lists every environment variable.
fn environment_help() -> String {
    let mut text = String::from("Environment variables:\n");
    for setting in SETTINGS {
        let default = match setting.default_text() {
            "" => "empty",
            text => text,
        };
        text.push_str(&format!(
            "  {:<24} default {default}\n      {}\n",
            setting.name(),
            setting.meaning()
        ));
    }
    text
}

fn main() -> ExitCode {
    let command = Cli::command().after_help(environment_help());
    if let Err(e) = command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        // --help and --version land here too, with exit code 0.
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            // The configured format if LOG_FORMAT itself is valid.
            let format = LOG_FORMAT
                .read(&|name| std::env::var(name).ok())
                .unwrap_or(LogFormat::Text);
            logging::announce(format, Level::Error, &format!("pubsub: {e}"));
            return ExitCode::from(2);
        }
    };
    let format = config.log_format;
    logging::init(config.log_level, format);
    let mut settings = config.shown();
    settings.push(("version", env!("CARGO_PKG_VERSION").to_string()));
    log::logger().log(
        &log::Record::builder()
            .level(Level::Info)
            .target(module_path!())
            .args(format_args!("starting"))
            .key_values(&settings)
            .build(),
    );
    let server = match Server::start(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            logging::announce(
                format,
                Level::Error,
                &format!("pubsub: cannot listen on {}: {e}", config.addr),
            );
            return ExitCode::from(1);
        }
    };
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).and_then(|signals| {
        let (shutdown, reload) = (server.shutdown_handle(), server.reload_handle());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || handle_signals(signals, shutdown, reload, format))
    });
    if let Err(e) = signals {
        logging::announce(
            format,
            Level::Error,
            &format!("pubsub: cannot install the signal handlers: {e}"),
        );
        return ExitCode::from(1);
    }
    // Always written, whatever LOG_LEVEL says: supervisors and tests wait
    // for this line to learn the port.
    logging::announce(
        format,
        Level::Info,
        &format!("pubsub: listening on {}", server.local_addr()),
    );
    server.wait();
    log::info!("shutdown complete");
    ExitCode::SUCCESS
}

/// The signal thread: the first SIGINT or SIGTERM drains, a second one
/// exits at once; SIGHUP reloads the TLS certificate. signal-hook's
/// handler only writes to a pipe that this thread reads, so none of this
/// runs in a signal handler.
fn handle_signals(
    mut signals: Signals,
    shutdown: ShutdownHandle,
    reload: ReloadHandle,
    format: LogFormat,
) {
    let mut draining = false;
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload.reload_tls();
        } else if !draining {
            draining = true;
            log::info!("signal received: draining (a second signal exits at once)");
            shutdown.shutdown();
        } else {
            logging::announce(format, Level::Warn, "pubsub: second signal, exiting now");
            std::process::exit(1);
        }
    }
}
