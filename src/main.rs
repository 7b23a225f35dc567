//! The `pubsub` binary: `--help` and `--version`, configuration from the
//! environment, logging, signals, and exit codes (0 after a graceful
//! shutdown, 2 for a bad setting, 1 if the server cannot start or a second
//! signal cuts the drain short).

use clap::{CommandFactory, FromArgMatches, Parser};
use log::Level;
use pubsub::config::{LOG_FORMAT, SETTINGS};
use pubsub::logging::{self, LogFormat};
use pubsub::{Config, Server};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let shutdown = server.shutdown_handle();
    let signals = AtomicUsize::new(0);
    let handler = move || {
        if signals.fetch_add(1, Ordering::SeqCst) == 0 {
            log::info!("signal received: draining (a second signal exits at once)");
            shutdown.shutdown();
        } else {
            logging::announce(format, Level::Warn, "pubsub: second signal, exiting now");
            std::process::exit(1);
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        logging::announce(
            format,
            Level::Error,
            &format!("pubsub: cannot install the signal handler: {e}"),
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
