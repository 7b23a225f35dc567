//! The `pubsub` binary: configuration from the environment, logging,
//! signals, and exit codes (0 after a graceful shutdown, 2 for a bad
//! setting, 1 if the server cannot start or a second signal cuts the drain).

use pubsub::{Config, Server};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pubsub: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .format_target(false)
        .init();
    log::info!(
        "starting: workers={} subscriber_queue_size={} ring_buffer_size={} heartbeat={}s shutdown_timeout={}s max_message_bytes={} max_connections={} handshake_timeout={}s auth={}",
        config.workers,
        config.subscriber_queue_size,
        config.ring_buffer_size,
        config.heartbeat_interval.as_secs(),
        config.shutdown_timeout.as_secs(),
        config.max_message_bytes,
        config.max_connections,
        config.handshake_timeout.as_secs(),
        if config.api_key.is_some() { "on" } else { "off" },
    );
    let server = match Server::start(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("pubsub: cannot listen on {}: {e}", config.addr);
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
            eprintln!("pubsub: second signal, exiting now");
            std::process::exit(1);
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("pubsub: cannot install the signal handler: {e}");
        return ExitCode::from(1);
    }
    // Always printed, whatever LOG_LEVEL says: supervisors and tests wait
    // for this line to learn the port.
    eprintln!("pubsub: listening on {}", server.local_addr());
    server.wait();
    log::info!("shutdown complete");
    ExitCode::SUCCESS
}
