//! Certificates for servers the harness spawns with `--tls`: a throwaway
//! CA, a server certificate it signs for every loopback name (`localhost`,
//! `127.0.0.1`, `::1`) and, for `--mtls`, a client certificate, written as
//! PEM files into a directory of their own (mode 0700) that is removed
//! when the [`Pki`] is dropped. Keys are ECDSA P-256, rcgen's default and
//! the common choice: the handshake figures are for that key type.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The names the server certificate carries.
const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The generated files; the directory is removed when dropped.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate: what clients trust (and, for mutual TLS, what
    /// the server checks clients against).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `--mtls`: the client's certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
}

impl Pki {
    /// Generates a CA, a server certificate and, with `client`, a client
    /// certificate, into a new directory under the temporary directory.
    pub fn generate(client: bool) -> Result<Pki> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "loadtest-tls-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        // Never reuses a directory someone else put there.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut pki = Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: None,
            dir,
        };
        pki.write(client).context("generating the certificates")?;
        Ok(pki)
    }

    fn write(&mut self, client: bool) -> Result<()> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "loadtest throwaway CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        write_file(&self.ca, &ca.self_signed(&ca_key)?.pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let server = leaf(
            SERVER_NAMES.map(String::from).to_vec(),
            "loadtest server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write_file(
            &self.server_cert,
            &server.signed_by(&server_key, &issuer)?.pem(),
        )?;
        write_file(&self.server_key, &server_key.serialize_pem())?;

        if client {
            let (cert, key) = (self.dir.join("client.pem"), self.dir.join("client-key.pem"));
            let client_key = KeyPair::generate()?;
            let params = leaf(
                Vec::new(),
                "loadtest client",
                ExtendedKeyUsagePurpose::ClientAuth,
            )?;
            write_file(&cert, &params.signed_by(&client_key, &issuer)?.pem())?;
            write_file(&key, &client_key.serialize_pem())?;
            self.client = Some((cert, key));
        }
        Ok(())
    }

    /// The client certificate and key, for mutual TLS.
    pub fn client_identity(&self) -> Option<(&Path, &Path)> {
        self.client
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An end-entity certificate's parameters: these subject alternative
/// names (IP addresses among them become IP SANs), this common name, for
/// this use.
fn leaf(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_written_and_removed_with_the_pki() {
        let pki = Pki::generate(true).unwrap();
        let (cert, key) = pki.client.clone().unwrap();
        for path in [&pki.ca, &pki.server_cert, &pki.server_key, &cert, &key] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        let dir = pki.dir.clone();
        let other = Pki::generate(false).unwrap();
        assert_ne!(other.dir, dir);
        assert!(other.client.is_none());
        drop(pki);
        assert!(!dir.exists());
    }
}
