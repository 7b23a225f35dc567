//! The only code that touches sockets: listening sockets, the worker
//! threads and their event loops, connections, timers and shutdown.
//!
//! `Server::start` binds one listening socket per worker on the same
//! address (`SO_REUSEPORT`, so the kernel spreads accepts, but only within
//! this process: see `bind_listeners`), starts the workers and returns;
//! `wait` joins them after a shutdown.

mod connection;
mod context;
mod credentials;
#[cfg(any(test, fuzzing))]
pub mod harness;
mod http_service;
mod lifecycle;
mod output;
mod session;
mod shared;
mod stream;
mod timers;
mod topic_cache;
mod websocket_service;
mod worker;

use crate::broker::delivery::WorkerMailbox;
use crate::config::Config;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use shared::Shared;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running broker.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts a graceful shutdown from any thread (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Begins the drain. Returns false if it had already begun.
    pub fn shutdown(&self) -> bool {
        if self.shared.draining.swap(true, Ordering::AcqRel) {
            return false;
        }
        for mailbox in &self.shared.mailboxes {
            mailbox.wake();
        }
        true
    }
}

/// Reads the TLS certificate and key again (SIGHUP), from any thread.
#[derive(Clone)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
}

impl ReloadHandle {
    /// New connections get the certificate and key the files hold now; if
    /// they cannot be used, the current pair stays and the error is logged
    /// naming the file. Returns false then, or when TLS is off.
    pub fn reload_tls(&self) -> bool {
        let Some(tls) = &self.shared.tls else {
            log::info!("reload asked for: nothing to reload (TLS is off)");
            return false;
        };
        match tls.reload() {
            Ok(()) => {
                let files = tls.files();
                log::info!(cert_file = files.cert_file, key_file = files.key_file; "TLS certificate reloaded");
                true
            }
            Err(e) => {
                log::error!(
                    variable = e.variable, file = e.value, error = e.reason;
                    "TLS reload failed; new connections keep the current certificate"
                );
                false
            }
        }
    }
}

impl Server {
    /// Binds `config.addr` and starts `config.workers` event loops.
    pub fn start(config: Config) -> io::Result<Server> {
        let listeners = bind_listeners(config.addr, config.workers)?;
        let addr = listeners[0].local_addr()?;
        let mut polls = Vec::new();
        let mut mailboxes = Vec::new();
        for id in 0..config.workers {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), worker::WAKER)?;
            mailboxes.push(Arc::new(WorkerMailbox::new(id, Some(waker))));
            polls.push(poll);
        }
        let shared = Arc::new(Shared::new(config, mailboxes)?);
        let mut workers = Vec::new();
        for (id, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let sockets = worker::MioSockets::new(poll, listener, shared.tls.clone())?;
            let worker = worker::Worker::new(id, sockets, Arc::clone(&shared));
            workers.push(
                std::thread::Builder::new()
                    .name(format!("worker-{id}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Server {
            addr,
            shared,
            workers,
        })
    }

    /// The address actually bound (the port is real even if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits for every worker to finish draining, then leaves the cluster,
    /// if any.
    pub fn wait(self) {
        for worker in self.workers {
            if worker.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        self.shared.backplane.backend().leave();
    }
}

/// `count` non-blocking listening sockets on `addr`, all on one port, which
/// the kernel spreads accepts over (`SO_REUSEPORT`).
///
/// `SO_REUSEPORT` lets any process of the same user join a port, so the
/// first socket binds and listens without it, as an exclusive server does:
/// if anything listens on the address, a second broker included, that fails
/// with "address already in use". Only then does it allow the others to
/// join. Two brokers started at once cannot both pass: the kernel decides
/// between their first `listen` calls, and whichever comes second conflicts
/// with the other's exclusive listener. (An old broker that set
/// `SO_REUSEPORT` before binding would still be joined.)
///
/// `[::]`, what `ADDR=:PORT` means, is dual-stack: IPv6 and IPv4 on one
/// socket each, or IPv4's `0.0.0.0` alone on a host without IPv6.
fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = match listen_on(addr, false) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && no_ipv6(&e) => listen_on(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()),
            false,
        )?,
        result => result?,
    };
    first.set_reuse_port(true)?;
    // The real port, if 0 was asked: every worker listens on the same one.
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an internet address"))?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(listen_on(bound, true)?);
    }
    Ok(listeners
        .into_iter()
        .map(|socket| TcpListener::from_std(socket.into()))
        .collect())
}

/// A non-blocking socket listening on `addr`.
fn listen_on(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Connections of an earlier run still in TIME_WAIT do not block a restart.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` takes IPv4 connections too, whatever the host's default.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket)
}

/// The errors of an IPv6 socket on a host without IPv6: the kernel has no
/// IPv6 at all, or it is disabled.
fn no_ipv6(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EAFNOSUPPORT) || e.kind() == io::ErrorKind::AddrNotAvailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Instant;

    /// How many connections each listener accepts, once `total` are in.
    fn accepted(listeners: &[TcpListener], total: usize) -> Vec<usize> {
        let mut counts = vec![0; listeners.len()];
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while counts.iter().sum::<usize>() < total && Instant::now() < deadline {
            for (listener, count) in listeners.iter().zip(&mut counts) {
                *count += std::iter::from_fn(|| listener.accept().ok()).count();
            }
        }
        counts
    }

    #[test]
    fn workers_share_a_port_that_no_other_broker_can_join() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(listeners[1].local_addr().unwrap(), addr);

        let second = bind_listeners(addr, 2).map(|_| ()).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse, "{second}");
        let all_interfaces = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port());
        let overlapping = bind_listeners(all_interfaces, 1).map(|_| ()).unwrap_err();
        assert_eq!(
            overlapping.kind(),
            io::ErrorKind::AddrInUse,
            "{overlapping}"
        );

        // The kernel still spreads connections over both workers' sockets.
        let clients: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let counts = accepted(&listeners, clients.len());
        assert_eq!(counts.iter().sum::<usize>(), clients.len(), "{counts:?}");
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }
}
