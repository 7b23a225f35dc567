//! The PEM files of the Redis TLS settings (CA certificates, this node's
//! certificate and its key): read at start-up, checked to hold what they
//! name, and kept as bytes. Only a path is ever shown: a key must not
//! reach a log line.

use std::fmt;

/// A PEM file read at start-up: certificates, or a private key.
#[derive(Clone)]
pub struct PemFile {
    pub path: String,
    pub pem: Vec<u8>,
}

impl PemFile {
    /// Its path, as the start-up log shows it; empty when unset.
    pub(super) fn shown(file: &Option<PemFile>) -> String {
        file.as_ref().map(|f| f.path.clone()).unwrap_or_default()
    }
}

/// The path alone: a key must not reach a log line.
impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PemFile").field(&self.path).finish()
    }
}

/// A PEM file that holds at least one certificate; empty means none.
pub(super) fn read_certificates(path: &str) -> Result<Option<PemFile>, String> {
    read_pem(
        path,
        "CERTIFICATE-----",
        "PEM certificate (-----BEGIN CERTIFICATE-----)",
    )
}

/// A PEM file that holds a private key; empty means none.
pub(super) fn read_private_key(path: &str) -> Result<Option<PemFile>, String> {
    read_pem(
        path,
        "PRIVATE KEY-----",
        "PEM private key (-----BEGIN ... PRIVATE KEY-----)",
    )
}

/// Reads `path`, which must have a `-----BEGIN ...` line ending in
/// `label_end` (`what`, for the error).
fn read_pem(path: &str, label_end: &str, what: &str) -> Result<Option<PemFile>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let text = String::from_utf8_lossy(&pem);
    if !text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(label_end))
    {
        return Err(format!("holds no {what}"));
    }
    Ok(Some(PemFile {
        path: path.to_string(),
        pem,
    }))
}
