//! TLS for the end-to-end tests: a certificate authority of the test's own
//! (rcgen), the files a broker serves (a chain of the server's certificate
//! and an intermediate CA's, and its key) and client certificates it signs,
//! and rustls clients that trust only that CA: HTTPS requests and
//! WebSocket clients (`wss://`) over real sockets.

use super::{read_response, request_text, Client, HttpResponse, WAIT};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub type TlsSocket = StreamOwned<ClientConnection, TcpStream>;

/// A root CA and an intermediate CA under it, which signs the server's
/// and the clients' certificates.
pub struct TestCa {
    root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    intermediate: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate chain and its key, as PEM text and as rustls takes them.
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    /// The certificate's SubjectPublicKeyInfo (DER), which a browser can be
    /// told to trust.
    pub spki: Vec<u8>,
}

impl Identity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Writes `NAME.pem` (the chain) and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let root = rcgen::CertifiedIssuer::self_signed(
            ca_params(&format!("{name} root")),
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let intermediate = rcgen::CertifiedIssuer::signed_by(
            ca_params(&format!("{name} intermediate")),
            rcgen::KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        TestCa { root, intermediate }
    }

    /// The root certificate, as a client's trust anchor or `TLS_CLIENT_CA_FILE`.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by the
    /// intermediate; the chain holds both, as a server must send them.
    pub fn issue(&self, names: &[&str], common_name: &str) -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.intermediate).unwrap();
        Identity {
            chain_pem: format!("{}{}", cert.pem(), self.intermediate.pem()),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone(), self.intermediate.der().clone()],
            key_der: key.serialize_der(),
            spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        }
    }

    /// The broker's certificate: for 127.0.0.1 and localhost.
    pub fn server(&self) -> Identity {
        self.issue(&["127.0.0.1", "localhost"], "pubsub test server")
    }

    /// A client configuration that trusts this CA only, offers ALPN
    /// `http/1.1`, and presents `identity` if given.
    pub fn client(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        identity: Option<&Identity>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.der().clone()).unwrap();
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots);
        let mut config = match identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.chain.clone(), identity.key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Both versions the broker speaks.
pub fn all_versions() -> Vec<&'static SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

/// A TLS connection to `addr` with its handshake done, or the error that
/// ended the handshake.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<TlsSocket> {
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(WAIT))?;
    socket.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(tls, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// One HTTPS request on a connection of its own.
pub fn https(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> HttpResponse {
    let mut stream = connect(addr, config).expect("TLS handshake");
    stream
        .write_all(request_text(method, path, body).as_bytes())
        .unwrap();
    read_response(&mut BufReader::new(stream))
}

/// `GET /health` over TLS, or the error that ended the connection. Under
/// TLS 1.3 a refused client certificate shows only here: the client's
/// handshake is done before the server has checked it.
pub fn try_health(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<String> {
    let mut stream = connect(addr, config)?;
    stream.write_all(request_text("GET", "/health", None).as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"}") {
        match stream.read(&mut buf)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A protocol client over `wss://` on `stream`.
pub fn wss_client(stream: TlsSocket) -> Client<TlsSocket> {
    let url = "wss://127.0.0.1/ws";
    let (ws, response) = tungstenite::client(url, stream)
        .unwrap_or_else(|e| panic!("WebSocket upgrade over TLS: {e}"));
    assert_eq!(response.status(), 101);
    Client { ws }
}
