//! The settings of the TLS the broker serves itself (`TLS_CERT_FILE`,
//! `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`; the Redis client's TLS is in the
//! parent module), and the one way their files become a rustls
//! [`ServerConfig`]: at start-up, where a bad file stops the broker naming
//! its variable, and again on every reload (`server::tls`).
//!
//! Only paths are ever shown or put in an error: a private key must not
//! reach a log line, so no text read from a file is quoted back.

use super::access::optional_text;
use super::{ConfigError, Fallback, Setting, Values};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use std::fmt;
use std::sync::Arc;

/// TLS 1.2 sessions a broker remembers for resumption by session ID (TLS
/// 1.3 resumes with tickets, which the server does not store): about 100
/// bytes each.
const REMEMBERED_SESSIONS: usize = 16 * 1024;

pub const TLS_CERT_FILE: Setting<Option<String>> = Setting {
    name: "TLS_CERT_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(optional_text),
    meaning: "a PEM file of the certificate chain to serve (the server's certificate first); with `TLS_KEY_FILE`, the listener speaks TLS only (`https://`, `wss://`); read again on SIGHUP",
    shown: |c| c.tls.as_ref().map(|t| t.files.cert_file.clone()).unwrap_or_default(),
};

pub const TLS_KEY_FILE: Setting<Option<String>> = Setting {
    name: "TLS_KEY_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(optional_text),
    meaning:
        "a PEM file of the private key of `TLS_CERT_FILE` (PKCS#8, RSA or EC); read again on SIGHUP",
    shown: |c| {
        c.tls
            .as_ref()
            .map(|t| t.files.key_file.clone())
            .unwrap_or_default()
    },
};

pub const TLS_CLIENT_CA_FILE: Setting<Option<String>> = Setting {
    name: "TLS_CLIENT_CA_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(optional_text),
    meaning: "a PEM file of the CA certificates a client's certificate must chain to: every client must present one (mutual TLS); needs `TLS_CERT_FILE`",
    shown: |c| {
        let ca = c.tls.as_ref().and_then(|t| t.files.client_ca_file.clone());
        ca.unwrap_or_default()
    },
};

/// Where the broker's TLS files are. Paths only, so `Debug` shows no key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: Option<String>,
}

/// The broker's TLS: its files, and the configuration they gave at
/// start-up.
#[derive(Clone)]
pub struct ServerTls {
    pub files: TlsFiles,
    pub initial: Arc<ServerConfig>,
}

/// The files alone: rustls's `Debug` of a configuration is not ours to
/// vouch for.
impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.files.fmt(f)
    }
}

/// The TLS settings, read and checked: `None` when neither file is set.
pub(super) fn read_server_tls(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<ServerTls>, ConfigError> {
    let cert = TLS_CERT_FILE.read(lookup)?;
    let key = TLS_KEY_FILE.read(lookup)?;
    let client_ca = TLS_CLIENT_CA_FILE.read(lookup)?;
    let files = match (cert, key) {
        (Some(cert_file), Some(key_file)) => TlsFiles {
            cert_file,
            key_file,
            client_ca_file: client_ca,
        },
        (Some(cert), None) => return Err(file_error(&TLS_CERT_FILE, &cert, "needs TLS_KEY_FILE")),
        (None, Some(key)) => return Err(file_error(&TLS_KEY_FILE, &key, "needs TLS_CERT_FILE")),
        (None, None) => {
            return match client_ca {
                Some(ca) => Err(file_error(&TLS_CLIENT_CA_FILE, &ca, "needs TLS_CERT_FILE")),
                None => Ok(None),
            }
        }
    };
    let initial = files.load(None)?;
    Ok(Some(ServerTls { files, initial }))
}

impl TlsFiles {
    /// Reads the files and builds the configuration new connections get.
    /// Sessions issued under `previous`, if given, stay resumable: its
    /// session cache and ticket keys carry over.
    pub fn load(&self, previous: Option<&ServerConfig>) -> Result<Arc<ServerConfig>, ConfigError> {
        let provider = Arc::new(ring::default_provider());
        let chain = read_chain(&TLS_CERT_FILE, &self.cert_file)?;
        let key = read_key(&self.key_file)?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| file_error(&TLS_CERT_FILE, &self.cert_file, &e.to_string()))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let reason = match &e {
                rustls::Error::InconsistentKeys(_) => {
                    "does not match the certificate of TLS_CERT_FILE".to_string()
                }
                // Not quoted: rustls's words for a key it could not load
                // are not ours to vouch for.
                _ => "is not a usable private key (RSA, ECDSA or Ed25519)".to_string(),
            };
            file_error(&TLS_KEY_FILE, &self.key_file, &reason)
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        match previous {
            Some(previous) => {
                config.session_storage = Arc::clone(&previous.session_storage);
                config.ticketer = Arc::clone(&previous.ticketer);
            }
            None => {
                config.session_storage = ServerSessionMemoryCache::new(REMEMBERED_SESSIONS);
                // Ticket keys of its own, rotated every six hours.
                config.ticketer = ring::Ticketer::new().map_err(|e| {
                    file_error(
                        &TLS_CERT_FILE,
                        &self.cert_file,
                        &format!("no session ticket keys: {e}"),
                    )
                })?;
            }
        }
        Ok(Arc::new(config))
    }
}

fn file_error(setting: &Setting<Option<String>>, path: &str, reason: &str) -> ConfigError {
    ConfigError {
        variable: setting.name,
        value: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate of the PEM file at `path`, at least one.
fn read_chain(
    setting: &Setting<Option<String>>,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| file_error(setting, path, &format!("cannot read it: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| file_error(setting, path, "holds a PEM certificate that does not parse"))?;
    if chain.is_empty() {
        return Err(file_error(
            setting,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(chain)
}

/// The private key of the PEM file at `path`. The parser's own error is
/// not quoted: it could carry bytes of the key.
fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| file_error(&TLS_KEY_FILE, path, &format!("cannot read it: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        file_error(
            &TLS_KEY_FILE,
            path,
            "holds no usable PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        )
    })
}

/// Requires a client certificate chaining to the CAs of the file at `path`.
fn client_verifier(
    path: &str,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ConfigError> {
    let mut roots = RootCertStore::empty();
    for ca in read_chain(&TLS_CLIENT_CA_FILE, path)? {
        roots.add(ca).map_err(|e| {
            file_error(
                &TLS_CLIENT_CA_FILE,
                path,
                &format!("holds a CA that is not usable: {e}"),
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| file_error(&TLS_CLIENT_CA_FILE, path, &e.to_string()))
}
