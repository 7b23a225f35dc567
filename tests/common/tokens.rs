//! Tokens for the tests, signed as an application's backend would sign
//! them (jsonwebtoken), and forged as an attacker would (`alg: none`, a
//! signature from another key, algorithm confusion); key pairs made by the
//! test (rcgen) and written to a key file in a directory of its own.

use super::*;
use data_encoding::BASE64URL_NOPAD;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The HS256 secret of the token tests' brokers.
pub const SECRET: &str = "a-secret-of-the-application-backend";

/// Seconds since the Unix epoch, now plus `offset` (may be negative).
pub fn epoch_secs(offset: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + offset
}

/// Claims for `sub` valid for ten minutes, with these topic patterns.
pub fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "sub": sub,
        "exp": epoch_secs(600),
        "topics": {"subscribe": subscribe, "publish": publish},
    })
}

/// `claims` signed with HS256 and `SECRET`.
pub fn hs256(claims: &Value) -> String {
    hs256_with(claims, SECRET)
}

pub fn hs256_with(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign HS256")
}

/// A token with `{"alg":"none"}` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    format!("{header}.{body}.")
}

/// A token whose header says `alg` but which is signed with HS256 and
/// `secret` (the classic confusion: an RS256 key's public PEM used as an
/// HMAC secret).
pub fn signed_as(alg: &str, claims: &Value, secret: &[u8]) -> String {
    let header = BASE64URL_NOPAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{body}");
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("HMAC");
    format!("{signing_input}.{signature}")
}

/// An Ed25519 key pair: the private key's PKCS#8 PEM, the public key's PEM.
pub struct Ed25519 {
    pub private_pem: String,
    pub public_pem: String,
}

impl Ed25519 {
    pub fn generate() -> Ed25519 {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
        Ed25519 {
            private_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
        }
    }

    /// `claims` signed with EdDSA, with `kid` in the header if given.
    pub fn sign(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_string);
        let key = EncodingKey::from_ed_pem(self.private_pem.as_bytes()).expect("Ed25519 PEM");
        encode(&header, claims, &key).expect("sign EdDSA")
    }
}

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

/// Writes `text` to a new file under the target directory; returns its path.
pub fn write_key_file(text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("token-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "keys-{}-{}.pem",
        std::process::id(),
        NEXT_FILE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A WebSocket upgrade to `url` with these extra headers; the HTTP status
/// and, if it upgraded, the client.
pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(value).unwrap(),
        );
    }
    match tungstenite::connect(request) {
        Ok((ws, _)) => Ok(Client::from_socket(ws)),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("upgrade to {url}: {e}"),
    }
}

/// `POST /disconnect` of `sub` with the API key `key`, which must answer
/// 200 `{"status":"disconnected","sub":...}`.
pub fn disconnect_user(addr: std::net::SocketAddr, key: &str, sub: &str) {
    let (status, body) = http_json(
        addr,
        "POST",
        "/disconnect",
        Some(&json!({ "sub": sub }).to_string()),
        &[("X-API-Key", key)],
    );
    assert_eq!(
        (status, body),
        (200, json!({"status":"disconnected","sub":sub}))
    );
}
