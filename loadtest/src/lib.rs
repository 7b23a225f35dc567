//! loadtest: the pubsub broker's load-test harness. It talks to a broker
//! (or, for comparison, a NATS server over WebSocket) only as any client
//! would, on loopback, over plain TCP or TLS, and measures throughput,
//! latency, loss, order, connection capacity, TLS handshakes and
//! slow-consumer handling. See the README.
//!
//! The module map, from the command line down to the wire:
//! - [`cli`]: options, spawning the servers, pinning, running a scenario.
//! - [`nodes`]: one server or a cluster's nodes, and which node each
//!   connection goes to.
//! - [`scenario`]: `fanout`, `conns`, `slow`, `resume` and `handshakes` as
//!   library functions.
//! - [`run`]: one run's timeline: set-up, window, progress, stop.
//! - [`report`]: the summary table and the JSON object.
//! - [`event_loop`]: the mio threads that own the connections; the hot path.
//! - [`tally`]: what each thread counts, merged at the end.
//! - [`connect`]: opening a connection: TCP, TLS, WebSocket upgrade,
//!   subscribe.
//! - [`tls`]: the TLS client configuration, and a connection's bytes
//!   through rustls, blocking (set-up) or not (the loops); [`certs`]: the
//!   CA and certificates generated for servers spawned with `--tls`.
//! - [`handshakes`]: the `handshakes` scenario's own non-blocking loop:
//!   connections set up and closed as fast as the server takes them.
//! - [`slow_consumers`]: subscribers that never read, and their fate.
//! - [`nemesis`]: faults injected into a cluster it starts, under
//!   publishers and resuming subscribers, and the checker of what they saw.
//! - [`resume`]: subscribers that drop and resume: their `seq` stream
//!   across reconnects, drop schedule, counts and verdict.
//! - [`wire`], [`nats`], [`wsframe`], [`probe`], [`sequence`]: pure
//!   protocol code: pubsub JSON, NATS text protocol, WebSocket frames, the
//!   payload's timestamp and counters, order checking.
//! - [`spawn`], [`affinity`], [`sysstat`], [`rest`], [`endpoint`]: the
//!   server processes (one, or Redis and a cluster's nodes), CPU pinning,
//!   /proc figures, topic creation and the other REST calls, and the
//!   loopback-only target address.

pub mod affinity;
pub mod certs;
pub mod cli;
pub mod connect;
pub mod endpoint;
pub mod event_loop;
pub mod handshakes;
pub mod nats;
pub mod nemesis;
pub mod nodes;
pub mod probe;
pub mod report;
pub mod rest;
pub mod resume;
pub mod run;
pub mod scenario;
pub mod sequence;
pub mod slow_consumers;
pub mod spawn;
pub mod sysstat;
pub mod tally;
pub mod tls;
pub mod wire;
pub mod wsframe;
