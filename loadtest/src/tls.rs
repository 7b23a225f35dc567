//! TLS on the client side: the rustls configuration (from `--ca-file`,
//! `--client-cert` and `--client-key`, or a generated CA), the name a
//! server's certificate must carry, and the two ways a connection's bytes
//! go through a `rustls::ClientConnection`:
//!
//! - blocking, [`BlockingStream`]: the set-up exchange of every connection
//!   (TCP connect, TLS handshake, WebSocket upgrade, subscribe), the REST
//!   calls, and the slow consumers' read-out;
//! - non-blocking, [`read`] and [`write`]: the event loops, and the
//!   `handshakes` scenario, on the thread that owns the socket, reading
//!   and writing only when mio says the socket is ready. No extra thread,
//!   no async runtime.
//!
//! Why the set-up is blocking and the run is not: the harness already sets
//! up every connection blocking, before the measured window, because that
//! keeps the set-up code a straight line (connect, upgrade, subscribe, ack)
//! and its errors plain; TLS joins that line as one more step (rustls's own
//! `complete_io` does the handshake on the blocking socket). The
//! `ClientConnection`, with its keys and any record it already decrypted,
//! then moves with the socket to the event loop, which only pumps records:
//! one set-up path for ws:// and wss://, and no handshake state machine in
//! the hot loop. The exceptions are the reconnects of `resume` and the
//! `handshakes` scenario, which must not block a loop: their handshake runs
//! through the same [`read`] and [`write`] as everything else (rustls
//! buffers the upgrade request written before the handshake ends, and sends
//! it once it has).
//!
//! Every configuration offers TLS 1.3 and 1.2 (or the one `--tls-version`
//! names) and ALPN `http/1.1`, as the broker serves them, and resumes no
//! session: each connection pays a full handshake, the worst case and the
//! same for every server. Only `handshakes --resume` turns resumption on
//! ([`with_resumption`]).

use anyhow::{anyhow, Context, Result};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// Session tickets and IDs kept for `handshakes --resume` (rustls's
/// default size).
const SESSION_CACHE: usize = 256;

/// What a client needs to talk TLS to one server: the configuration, and
/// the name (DNS name or IP address) its certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl TlsTarget {
    /// `host` as a URL spells it: a DNS name, an IPv4 address or a
    /// bracketed IPv6 one.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<TlsTarget> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(literal.to_string())
            .map_err(|_| anyhow!("{host:?} is not a name a certificate can carry"))?;
        Ok(TlsTarget { config, name })
    }

    /// A new client connection to this server (nothing sent yet).
    pub fn connection(&self) -> io::Result<ClientConnection> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone()).map_err(io::Error::other)
    }
}

/// A TLS version the client may be limited to (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

impl TlsVersion {
    /// The versions offered: this one, or with `None`, both.
    fn offered(version: Option<TlsVersion>) -> &'static [&'static SupportedProtocolVersion] {
        const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
        const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match version {
            None => rustls::ALL_VERSIONS,
            Some(TlsVersion::Tls12) => TLS12,
            Some(TlsVersion::Tls13) => TLS13,
        }
    }
}

/// The client configuration: trust `ca` (PEM, one or more certificates),
/// and with `identity` (a PEM certificate chain and its PEM key), present
/// that certificate to servers that ask for one (mutual TLS); offer TLS
/// 1.3 and 1.2, or only `version`.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    version: Option<TlsVersion>,
) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a CA certificate", ca.display()))?;
    }
    let provider = Arc::new(browser_order(rustls::crypto::ring::default_provider()));
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("the certificate verifier")?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TlsVersion::offered(version))
        .context("the TLS versions")?
        .with_webpki_verifier(verifier);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow!("{}: no private key: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .with_context(|| format!("{} and its key", cert.display()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// `provider` offering its cipher suites in the order browsers do: AES-128-GCM
/// first (ring's default puts AES-256-GCM first). A server that takes the
/// client's first choice, as rustls does, then does the same work for the
/// harness as for a browser, and as NATS (Go), which prefers AES-128-GCM.
fn browser_order(mut provider: rustls::crypto::CryptoProvider) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite::{
        TLS13_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    };
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// `config`, resuming sessions: TLS 1.3 tickets and TLS 1.2 session IDs
/// or tickets, kept in memory and shared by every connection made with
/// the returned configuration.
pub fn with_resumption(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.resumption = Resumption::in_memory_sessions(SESSION_CACHE);
    Arc::new(config)
}

/// Every certificate of a PEM file; an error if there is none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// A blocking connection, plain or TLS, with its read and write timeouts
/// set on the TCP socket.
pub enum BlockingStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl BlockingStream {
    /// Does the TLS handshake with `target` on a connected socket whose
    /// timeouts bound it.
    pub fn handshake(mut socket: TcpStream, target: &TlsTarget) -> io::Result<BlockingStream> {
        let mut tls = target.connection()?;
        while tls.is_handshaking() {
            tls.complete_io(&mut socket)?;
        }
        Ok(BlockingStream::Tls(Box::new(StreamOwned::new(tls, socket))))
    }

    /// A connection the event loop gave back, or never took.
    pub fn from_parts(socket: TcpStream, tls: Option<Box<ClientConnection>>) -> BlockingStream {
        match tls {
            None => BlockingStream::Plain(socket),
            Some(tls) => BlockingStream::Tls(Box::new(StreamOwned::new(*tls, socket))),
        }
    }

    /// Takes the connection apart for an event loop: the socket and the
    /// TLS state. Bytes rustls had already decrypted are appended to
    /// `unread` (the loop could not learn of them from the socket).
    pub fn into_parts(self, unread: &mut Vec<u8>) -> (TcpStream, Option<Box<ClientConnection>>) {
        match self {
            BlockingStream::Plain(socket) => (socket, None),
            BlockingStream::Tls(stream) => {
                let StreamOwned { mut conn, sock } = *stream;
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = conn.reader().read(&mut chunk) {
                    unread.extend_from_slice(&chunk[..n]);
                }
                (sock, Some(Box::new(conn)))
            }
        }
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            BlockingStream::Plain(socket) => socket,
            BlockingStream::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(socket) => socket.read(buf),
            BlockingStream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for BlockingStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlockingStream::Plain(socket) => socket.write(buf),
            BlockingStream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlockingStream::Plain(socket) => socket.flush(),
            BlockingStream::Tls(stream) => stream.flush(),
        }
    }
}

/// Reads decrypted bytes into `buf` through `tls` from a non-blocking
/// `socket`, answering what the TLS layer must answer (handshake messages,
/// key updates) on the way. `Ok((n, drained))`: `n` bytes, and whether
/// the socket would block (so that an edge-triggered loop may stop
/// reading); `Ok((0, _))` at the end of the connection (close_notify, or
/// EOF); `WouldBlock` if there is nothing to read.
pub fn read(
    tls: &mut ClientConnection,
    socket: &mut (impl Read + Write),
    buf: &mut [u8],
) -> io::Result<(usize, bool)> {
    let mut filled = 0;
    loop {
        // rustls says WouldBlock only once its plaintext is all read, so
        // `read_tls` below never finds that buffer full.
        match tls.reader().read(&mut buf[filled..]) {
            Ok(0) => return Ok((filled, false)),
            Ok(n) => {
                filled += n;
                if filled == buf.len() {
                    return Ok((filled, false));
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // EOF without close_notify: the end, as for a plain socket.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok((filled, false)),
            Err(e) => return Err(e),
        }
        match tls.read_tls(socket) {
            // Ok(0), EOF, is noted by rustls; its reader says so next.
            Ok(_) => {
                if let Err(error) = tls.process_new_packets() {
                    // The alert, best effort.
                    let _ = tls.write_tls(socket);
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("tls: {error}"),
                    ));
                }
                write_pending(tls, socket)?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return if filled > 0 {
                    Ok((filled, true))
                } else {
                    Err(e)
                };
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hands `data` to `tls` (as much as its buffers take) and writes records
/// to a non-blocking `socket` until it has none left or the socket is
/// full. Returns how many bytes of `data` were taken. Before the handshake
/// is over, rustls keeps what it takes and sends it once it is.
pub fn write(
    tls: &mut ClientConnection,
    socket: &mut (impl Read + Write),
    data: &[u8],
) -> io::Result<usize> {
    let mut taken = 0;
    loop {
        if taken < data.len() {
            taken += tls.writer().write(&data[taken..])?;
        }
        if !tls.wants_write() {
            return Ok(taken);
        }
        match tls.write_tls(socket) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(taken),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes the records rustls has to send until none is left or the
/// socket is full (the writable event will come).
pub fn write_pending(
    tls: &mut ClientConnection,
    socket: &mut (impl Read + Write),
) -> io::Result<()> {
    write(tls, socket, &[]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Pki;
    use rustls::{ServerConfig, ServerConnection};
    use std::os::unix::net::UnixStream;

    fn server_config(pki: &Pki) -> Arc<ServerConfig> {
        let chain = CertificateDer::pem_file_iter(&pki.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// A client (non-blocking, through `read` and `write`) and a rustls
    /// server (blocking, on its own thread) over a socket pair: the
    /// generated certificate verifies for `host`, the request written
    /// before the handshake is over arrives, and a reply larger than one
    /// record is read whole, `drained` only when the socket is empty.
    fn exchange(host: &str) {
        let pki = Pki::generate(false).unwrap();
        let config = client_config(&pki.ca, None, None).unwrap();
        let target = TlsTarget::new(config, host).unwrap();
        let (mut client_socket, server_socket) = UnixStream::pair().unwrap();
        let server_config = server_config(&pki);
        let reply: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let expected = reply.clone();
        let server = std::thread::spawn(move || {
            let tls = ServerConnection::new(server_config).unwrap();
            let mut stream = StreamOwned::new(tls, server_socket);
            let mut request = [0u8; 5];
            stream.read_exact(&mut request).unwrap();
            assert_eq!(&request, b"hello");
            stream.write_all(&reply).unwrap();
            stream.flush().unwrap();
            stream.conn.send_close_notify();
            stream.flush().unwrap();
        });
        client_socket.set_nonblocking(true).unwrap();
        let mut tls = target.connection().unwrap();
        assert_eq!(write(&mut tls, &mut client_socket, b"hello").unwrap(), 5);
        let mut received = Vec::new();
        let mut buf = vec![0u8; 8192];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            assert!(std::time::Instant::now() < deadline, "timed out");
            match read(&mut tls, &mut client_socket, &mut buf) {
                Ok((0, _)) => break,
                Ok((n, _)) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        server.join().unwrap();
        assert_eq!(received, expected);
        assert!(!tls.is_handshaking());
    }

    #[test]
    fn the_generated_certificate_verifies_for_the_loopback_names() {
        exchange("127.0.0.1");
        exchange("localhost");
        exchange("[::1]");
    }

    #[test]
    fn a_server_signed_by_another_ca_is_refused() {
        let (ours, theirs) = (Pki::generate(false).unwrap(), Pki::generate(false).unwrap());
        let target =
            TlsTarget::new(client_config(&ours.ca, None, None).unwrap(), "127.0.0.1").unwrap();
        let (mut client_socket, server_socket) = UnixStream::pair().unwrap();
        let server_config = server_config(&theirs);
        let server = std::thread::spawn(move || {
            let mut tls = ServerConnection::new(server_config).unwrap();
            let mut socket = server_socket;
            while tls.is_handshaking() {
                if tls.complete_io(&mut socket).is_err() {
                    break;
                }
            }
        });
        client_socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut tls = target.connection().unwrap();
        let error = loop {
            match tls.complete_io(&mut client_socket) {
                Ok(_) if tls.is_handshaking() => {}
                Ok(_) => panic!("the handshake succeeded"),
                Err(error) => break error,
            }
        };
        assert!(
            error.to_string().contains("invalid peer certificate"),
            "{error}"
        );
        drop(client_socket);
        server.join().unwrap();
    }

    #[test]
    fn unusable_files_are_refused_naming_the_file() {
        let pki = Pki::generate(true).unwrap();
        // A key is not a certificate.
        let error = client_config(&pki.server_key, None, None).unwrap_err();
        assert!(
            format!("{error:#}").contains("no PEM certificate"),
            "{error:#}"
        );
        let missing = pki.ca.with_file_name("missing.pem");
        let error = client_config(&missing, None, None).unwrap_err();
        assert!(format!("{error:#}").contains("missing.pem"), "{error:#}");
        let (cert, key) = pki.client.clone().unwrap();
        client_config(&pki.ca, Some((&cert, &key)), None).expect("a client identity");
        let error = client_config(&pki.ca, Some((&cert, &cert)), None).unwrap_err();
        assert!(format!("{error:#}").contains("no private key"), "{error:#}");
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        let config = client_config(&Pki::generate(false).unwrap().ca, None, None).unwrap();
        let name = |host| TlsTarget::new(Arc::clone(&config), host).unwrap().name;
        assert!(matches!(name("127.0.0.1"), ServerName::IpAddress(_)));
        assert!(matches!(name("[::1]"), ServerName::IpAddress(_)));
        assert!(matches!(name("localhost"), ServerName::DnsName(_)));
        assert!(TlsTarget::new(config, "bad host").is_err());
    }
}
