//! pubsub: an in-memory publish/subscribe broker. Clients subscribe to
//! topics over WebSocket and get every message published to them; topics
//! are managed over REST. The wire contract is `PROTOCOL.md`; the design is
//! in the README.
//!
//! The module map, from the wire inwards:
//! - [`server`]: the only code that touches sockets: one hand-written mio
//!   event loop per worker thread, connections, timers, shutdown.
//! - [`http`]: request parsing and the REST routes; [`ws`]: the WebSocket
//!   opening handshake. Pure: bytes in, bytes or values out.
//! - [`protocol`]: the JSON messages of `/ws`, decoded and encoded. Pure.
//! - [`auth`]: client tokens checked, the rights they grant, the publish
//!   limit. Pure.
//! - [`backplane`]: where changes are carried out, at once on a single
//!   broker or through a cluster's backend, behind one seam (`Backend`);
//!   the backend-neutral follower of a cluster's events.
//! - [`broker`]: topics, the replay ring, subscriber queues and fan-out.
//! - [`console`]: the browser console and the JavaScript client, files
//!   embedded in the binary and served by [`http`]'s routes.
//! - [`metrics`]: per-worker counters and their Prometheus exposition.
//! - [`config`]: every setting, from the environment; [`logging`]: log
//!   lines as text or JSON.

pub mod auth;
pub mod backplane;
pub mod broker;
pub mod config;
pub mod console;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod ws;

pub use config::Config;

/// The broker's allocator, for everything linked with it (the binary, the
/// tests, the harness). mimalloc is fast for the broker's many small,
/// short-lived allocations, and it gives freed memory back to the system
/// when a worker asks it to (`server::worker`): glibc's malloc kept 30 MB
/// resident in a worker's arena after 100,000 topics were created and
/// deleted.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use server::{ReloadHandle, Server, ShutdownHandle};
