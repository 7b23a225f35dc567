//! Checking a client's token (a JWT, RFC 7519): its signature with the
//! configured keys, its claims as the contract says, and the [`Grant`] it
//! makes (who, until when, with what rights).
//!
//! A token is checked only with a key of its own `alg` (HS256 for the
//! secret, EdDSA, RS256 or ES256 for a public key of that type), so `none`
//! and algorithm confusion have no key to succeed with. A refusal's text
//! is fixed wording, never anything of the token; nothing here logs, holds
//! a token, or keeps state between checks.

use super::keys::PublicKey;
use super::rights::{Rights, TopicPatterns};
use crate::metrics::AuthFailure;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest `exp` accepted, 9999-12-31T23:59:59Z: later instants are
/// no expiry a timer could be set for.
const LAST_EXP: u64 = 253_402_300_799;

/// What a verifier is built from.
pub struct TokenSettings<'a> {
    /// The HS256 secret, if any.
    pub hmac_secret: Option<&'a [u8]>,
    pub public_keys: Vec<PublicKey>,
    /// When set, a token's `aud` must be (or contain) it.
    pub audience: Option<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// The clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Checks tokens with the configured keys; shared by every worker.
pub struct TokenVerifier {
    /// The HS256 secret as a key, with its checks.
    hmac: Option<(DecodingKey, Validation)>,
    /// Each public key with the checks of its algorithm.
    public_keys: Vec<(PublicKey, Validation)>,
    audience: Option<String>,
    issuer: Option<String>,
    leeway: Duration,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who: 1 to 255 bytes.
    pub sub: String,
    /// The token's `exp`; the connection ends at `expires` plus
    /// [`TokenVerifier::leeway`] unless a newer token comes.
    pub expires: SystemTime,
    pub rights: Rights,
}

/// Why a token was refused. Its text is for the client and the log alike:
/// fixed wording that quotes nothing of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token, not signed by a configured key, or claims that break
    /// the contract; says which rule.
    Invalid(&'static str),
    /// Authentic, but past `exp` plus the leeway.
    Expired,
}

impl Refusal {
    /// How `pubsub_auth_failures_total` counts it.
    pub fn failure(&self) -> AuthFailure {
        match self {
            Refusal::Invalid(_) => AuthFailure::Invalid,
            Refusal::Expired => AuthFailure::Expired,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Invalid(why) => write!(f, "invalid token: {why}"),
            Refusal::Expired => f.write_str("token expired"),
        }
    }
}

impl TokenVerifier {
    pub fn new(settings: TokenSettings<'_>) -> TokenVerifier {
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.leeway = settings.leeway.as_secs();
            validation.validate_nbf = true;
            let mut required = vec!["exp"];
            validation.validate_aud = settings.audience.is_some();
            if let Some(audience) = &settings.audience {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            if let Some(issuer) = &settings.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            validation.set_required_spec_claims(&required);
            validation
        };
        TokenVerifier {
            hmac: settings.hmac_secret.map(|secret| {
                (
                    DecodingKey::from_secret(secret),
                    validation(Algorithm::HS256),
                )
            }),
            public_keys: settings
                .public_keys
                .into_iter()
                .map(|key| {
                    let validation = validation(key.key_type().algorithm());
                    (key, validation)
                })
                .collect(),
            audience: settings.audience,
            issuer: settings.issuer,
            leeway: settings.leeway,
        }
    }

    /// Checks `token` now; the grant it makes, or why not.
    pub fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refusal(e.kind()))?;
        let mut last = Refusal::Invalid("no configured key has the token's `alg`");
        for (key, validation) in self.keys_for(header.kid.as_deref(), header.alg)? {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
                Ok(data) => return grant(&data.claims),
                // Another key of the same algorithm may have signed it.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => {
                    last = Refusal::Invalid("bad signature");
                }
                Err(e) => return Err(refusal(e.kind())),
            }
        }
        Err(last)
    }

    /// The keys a token with `kid` and `alg` is checked with: with several
    /// public keys, the one `kid` names (by its `# kid:` name, else by its
    /// position), alone: the secret has no `kid`; otherwise, or without
    /// `kid`, every key of `alg`, the secret first.
    fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<impl Iterator<Item = (&DecodingKey, &Validation)>, Refusal> {
        let named = match kid {
            Some(kid) if self.public_keys.len() > 1 => {
                let index = self
                    .public_keys
                    .iter()
                    .position(|(key, _)| key.name() == Some(kid))
                    .or_else(|| position(kid).filter(|p| *p < self.public_keys.len()))
                    .ok_or(Refusal::Invalid("unknown `kid`"))?;
                if self.public_keys[index].0.key_type().algorithm() != alg {
                    return Err(Refusal::Invalid(
                        "`alg` is not the algorithm of the key `kid` names",
                    ));
                }
                Some(index)
            }
            _ => None,
        };
        let hmac = self
            .hmac
            .iter()
            .filter(move |_| named.is_none() && alg == Algorithm::HS256)
            .map(|(key, validation)| (key, validation));
        let public = self
            .public_keys
            .iter()
            .enumerate()
            .filter(move |(index, (key, _))| {
                named.map_or(key.key_type().algorithm() == alg, |named| named == *index)
            })
            .map(|(_, (key, validation))| (key.decoding_key(), validation));
        Ok(hmac.chain(public))
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    pub fn has_hmac_secret(&self) -> bool {
        self.hmac.is_some()
    }

    pub fn public_keys(&self) -> impl ExactSizeIterator<Item = &PublicKey> {
        self.public_keys.iter().map(|(key, _)| key)
    }

    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref()
    }

    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }
}

/// Whether there is a secret, never the secret.
impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hmac_secret", &self.hmac.as_ref().map(|_| "***"))
            .field("public_keys", &self.public_keys().collect::<Vec<_>>())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// The position a `kid` names: a number as `"0"`, `"1"`, ... write it.
fn position(kid: &str) -> Option<usize> {
    let canonical =
        kid.bytes().all(|b| b.is_ascii_digit()) && (kid == "0" || !kid.starts_with('0'));
    canonical.then(|| kid.parse().ok()).flatten()
}

/// A refusal for an error of jsonwebtoken, in fixed words.
fn refusal(kind: &ErrorKind) -> Refusal {
    Refusal::Invalid(match kind {
        ErrorKind::ExpiredSignature => return Refusal::Expired,
        ErrorKind::ImmatureSignature => "not valid yet (`nbf`)",
        ErrorKind::InvalidAudience => "`aud` is not this broker's audience",
        ErrorKind::InvalidIssuer => "`iss` is not the accepted issuer",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "`exp` is missing or not a NumericDate",
            "aud" => "`aud` is missing",
            "iss" => "`iss` is missing",
            _ => "a required claim is missing",
        },
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "`alg` is not the algorithm of the key",
        ErrorKind::Json(_) => {
            "a header or claims that are not the JSON of a JWT with an accepted `alg`"
        }
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "not a JWT (three base64url parts)"
        }
        _ => "cannot be checked",
    })
}

/// The grant of checked `claims` (signature, `exp`, `nbf`, `aud` and `iss`
/// already are).
fn grant(claims: &Map<String, Value>) -> Result<Grant, Refusal> {
    let sub = match claims.get("sub") {
        Some(Value::String(sub)) if (1..=255).contains(&sub.len()) => sub.clone(),
        _ => return Err(Refusal::Invalid("`sub` must be a string of 1 to 255 bytes")),
    };
    let exp = claims
        .get("exp")
        .and_then(numeric_date)
        .filter(|exp| *exp <= LAST_EXP)
        .ok_or(Refusal::Invalid(
            "`exp` must be a NumericDate before the year 10000",
        ))?;
    for claim in ["nbf", "iat"] {
        if claims.get(claim).is_some_and(|v| numeric_date(v).is_none()) {
            return Err(Refusal::Invalid("`nbf` and `iat` must be NumericDates"));
        }
    }
    for claim in ["iss", "jti"] {
        if claims.get(claim).is_some_and(|v| !v.is_string()) {
            return Err(Refusal::Invalid("`iss` and `jti` must be strings"));
        }
    }
    if let Some(aud) = claims.get("aud") {
        let strings = match aud {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !strings {
            return Err(Refusal::Invalid(
                "`aud` must be a string or an array of strings",
            ));
        }
    }
    let admin = match claims.get("admin") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(admin)) => *admin,
        Some(_) => return Err(Refusal::Invalid("`admin` must be true or false")),
    };
    let topic_rights = topic_rights(claims.get("topics"))?;
    let rights = if admin { Rights::all() } else { topic_rights };
    Ok(Grant {
        sub,
        expires: UNIX_EPOCH + Duration::from_secs(exp),
        rights,
    })
}

/// The rights of a `topics` claim: `{"subscribe":[...],"publish":[...]}`,
/// either list optional, nothing else in it.
fn topic_rights(topics: Option<&Value>) -> Result<Rights, Refusal> {
    const SHAPE: Refusal =
        Refusal::Invalid("`topics` must be {\"subscribe\":[PATTERN...],\"publish\":[PATTERN...]}");
    let topics = match topics {
        None | Some(Value::Null) => {
            return Ok(Rights::topics(
                TopicPatterns::default(),
                TopicPatterns::default(),
            ))
        }
        Some(Value::Object(topics)) => topics,
        Some(_) => return Err(SHAPE),
    };
    if topics
        .keys()
        .any(|key| key != "subscribe" && key != "publish")
    {
        return Err(SHAPE);
    }
    let patterns = |list: &str| match topics.get(list) {
        None => Ok(TopicPatterns::default()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or(SHAPE))
            .collect::<Result<Vec<_>, _>>()
            .map(TopicPatterns::new),
        Some(_) => Err(SHAPE),
    };
    Ok(Rights::topics(patterns("subscribe")?, patterns("publish")?))
}

/// A NumericDate's whole seconds, as jsonwebtoken reads `exp` and `nbf`
/// (a fraction is rounded).
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map(|seconds| seconds.round() as u64)
    })
}
