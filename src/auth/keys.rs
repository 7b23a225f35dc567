//! The public keys of `TOKEN_PUBLIC_KEYS_FILE`, from the file's text: its
//! PEM blocks, the `# kid: NAME` line before each, and each key's type
//! (Ed25519 for `EdDSA`, RSA for `RS256`, EC P-256 for `ES256`), read from
//! its DER so that a key no token could ever be checked with (a private
//! key, a P-384 or a 1024-bit RSA key) stops the broker at start-up
//! instead of refusing every token later.
//!
//! It reads no file (the config does) and checks no token (`token.rs`
//! does). Its errors name a key by position and name, never by content.

use jsonwebtoken::{Algorithm, DecodingKey};
use std::fmt;

/// The key types a token may be signed with, one algorithm each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    Rsa,
    EcP256,
}

impl KeyType {
    /// The one `alg` a token checked with a key of this type must have.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyType::Ed25519 => Algorithm::EdDSA,
            KeyType::Rsa => Algorithm::RS256,
            KeyType::EcP256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Ed25519 => "Ed25519",
            KeyType::Rsa => "RSA",
            KeyType::EcP256 => "P-256",
        })
    }
}

/// One public key of the file.
#[derive(Clone)]
pub struct PublicKey {
    /// The name of its `# kid:` line, if it has one.
    name: Option<String>,
    key_type: KeyType,
    key: DecodingKey,
}

impl PublicKey {
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("name", &self.name)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

const KID_LINE: &str = "# kid:";

/// Every public key in `pem`, in order. A `# kid: NAME` line names the
/// key whose `-----BEGIN` line comes next (blank lines may stand between);
/// other lines outside the blocks are ignored. The error says what is
/// wrong, and with which key.
pub fn parse_public_keys(pem: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut name: Option<String> = None;
    let mut lines = pem.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(kid) = line.strip_prefix(KID_LINE) {
            let kid = kid.trim();
            if kid.is_empty() {
                return Err(format!("a `{KID_LINE}` line with no name"));
            }
            if name.is_some() {
                return Err(format!(
                    "`{KID_LINE} {kid}` follows another `{KID_LINE}` line with no key between them"
                ));
            }
            if keys.iter().any(|key| key.name() == Some(kid)) {
                return Err(format!("two keys are named {kid:?}"));
            }
            name = Some(kid.to_string());
        } else if line.starts_with("-----BEGIN ") {
            let label = label(keys.len(), name.as_deref());
            let mut block = vec![line];
            loop {
                let Some(line) = lines.next() else {
                    return Err(format!("{label}: no -----END line"));
                };
                block.push(line);
                if line.starts_with("-----END ") {
                    break;
                }
            }
            let (key_type, key) =
                block_key(&block.join("\n")).map_err(|why| format!("{label}: {why}"))?;
            keys.push(PublicKey {
                name: name.take(),
                key_type,
                key,
            });
        } else if name.is_some() && !line.is_empty() {
            return Err(format!(
                "a `{KID_LINE}` line must come just before its key's -----BEGIN line"
            ));
        }
    }
    if name.is_some() {
        return Err(format!("the last `{KID_LINE}` line names no key"));
    }
    if keys.is_empty() {
        return Err("holds no PEM public key (-----BEGIN PUBLIC KEY-----)".into());
    }
    Ok(keys)
}

/// How an error names the key at `position`.
fn label(position: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("key {position} ({name:?})"),
        None => format!("key {position}"),
    }
}

/// The type and the key of one PEM block.
fn block_key(block: &str) -> Result<(KeyType, DecodingKey), String> {
    let pem = pem::parse(block).map_err(|_| "not valid PEM".to_string())?;
    match pem.tag() {
        "PUBLIC KEY" => subject_public_key(pem.contents()),
        "RSA PUBLIC KEY" => rsa_key(pem.contents()),
        tag if tag.contains("PRIVATE KEY") => Err(
            "a private key: the file must hold public keys only (`openssl pkey -pubout` gives one)"
                .into(),
        ),
        tag => Err(format!("a {tag}, not a public key")),
    }
}

// DER of the object identifiers a key may have.
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OTHER_CURVES: &[(&[u8], &str)] = &[
    (&[0x2b, 0x81, 0x04, 0x00, 0x22], "P-384"),
    (&[0x2b, 0x81, 0x04, 0x00, 0x23], "P-521"),
    (&[0x2b, 0x81, 0x04, 0x00, 0x0a], "secp256k1"),
];

// DER tags.
const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OBJECT_IDENTIFIER: u8 = 0x06;
const INTEGER: u8 = 0x02;

/// A SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`): its algorithm
/// (and curve) say the type.
fn subject_public_key(der: &[u8]) -> Result<(KeyType, DecodingKey), String> {
    let malformed = || "not a well-formed public key".to_string();
    let spki = whole(SEQUENCE, der).ok_or_else(malformed)?;
    let (algorithm, rest) = element(SEQUENCE, spki).ok_or_else(malformed)?;
    let bits = whole(BIT_STRING, rest).ok_or_else(malformed)?;
    let Some((0, key)) = bits.split_first() else {
        return Err(malformed());
    };
    let (oid, parameters) = element(OBJECT_IDENTIFIER, algorithm).ok_or_else(malformed)?;
    match oid {
        ED25519 if key.len() == 32 => Ok((KeyType::Ed25519, DecodingKey::from_ed_der(key))),
        RSA_ENCRYPTION => rsa_key(key),
        EC_PUBLIC_KEY => {
            let curve = whole(OBJECT_IDENTIFIER, parameters).ok_or_else(malformed)?;
            if curve != P256 {
                let name = OTHER_CURVES
                    .iter()
                    .find(|(oid, _)| *oid == curve)
                    .map_or("a curve other than P-256", |(_, name)| name);
                return Err(format!("an EC key on {name}; ES256 needs P-256"));
            }
            if key.len() != 65 || key[0] != 0x04 {
                return Err("a P-256 key not in uncompressed form".into());
            }
            Ok((KeyType::EcP256, DecodingKey::from_ec_der(key)))
        }
        _ => Err("not an Ed25519, RSA or EC P-256 public key".into()),
    }
}

/// RSA's smallest and largest modulus, in bits, that ring checks RS256 with.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// An RSAPublicKey (PKCS#1: the modulus and the exponent).
fn rsa_key(der: &[u8]) -> Result<(KeyType, DecodingKey), String> {
    let malformed = || "not a well-formed RSA public key".to_string();
    let key = whole(SEQUENCE, der).ok_or_else(malformed)?;
    let (modulus, rest) = element(INTEGER, key).ok_or_else(malformed)?;
    whole(INTEGER, rest).ok_or_else(malformed)?;
    let modulus = &modulus[modulus.iter().take_while(|&&b| b == 0).count()..];
    let bits = modulus
        .first()
        .map_or(0, |&top| modulus.len() * 8 - top.leading_zeros() as usize);
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; RS256 needs {} to {}",
            RSA_BITS.start(),
            RSA_BITS.end()
        ));
    }
    Ok((KeyType::Rsa, DecodingKey::from_rsa_der(der)))
}

/// The contents of the one DER element with `tag` that is all of `der`.
fn whole(tag: u8, der: &[u8]) -> Option<&[u8]> {
    match element(tag, der)? {
        (contents, []) => Some(contents),
        _ => None,
    }
}

/// The contents of the DER element with `tag` at the start of `der`, and
/// what follows it.
fn element(tag: u8, der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, &b| length << 8 | usize::from(b));
        (length, rest)
    };
    (rest.len() >= length).then(|| rest.split_at(length))
}
