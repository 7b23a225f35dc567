//! The settings of who may do what beyond the API key: the keys and claim
//! checks of client tokens (read into one [`TokenVerifier`]), the
//! per-connection publish limit, and the origins allowed to upgrade.
//!
//! Like the rest of the config it only turns text into values; the
//! checking itself is `crate::auth`'s. A secret is never part of an error
//! or of what the start-up log shows.

use super::{ConfigError, Fallback, Setting, Values};
use crate::auth::{parse_public_keys, PublicKey, TokenSettings, TokenVerifier};
use std::sync::Arc;
use std::time::Duration;

/// The shortest HS256 secret: RFC 7518 (3.2) asks for the hash's 256 bits.
const MIN_HMAC_SECRET_BYTES: usize = 32;

pub const TOKEN_HMAC_SECRET: Setting<Option<String>> = Setting {
    name: "TOKEN_HMAC_SECRET",
    default: Fallback::Computed {
        shown: "",
        value: || None,
    },
    values: Values::Verbatim(Some),
    meaning: "HS256 key for client tokens, taken verbatim, at least 32 bytes; with it or `TOKEN_PUBLIC_KEYS_FILE`, every request needs a token or the API key",
    shown: |c| {
        let set = c.tokens.as_ref().is_some_and(|t| t.has_hmac_secret());
        if set { "set" } else { "unset" }.to_string()
    },
};

pub const TOKEN_PUBLIC_KEYS_FILE: Setting<Option<Vec<PublicKey>>> = Setting {
    name: "TOKEN_PUBLIC_KEYS_FILE",
    default: Fallback::Text(""),
    values: Values::Parsed(read_public_keys),
    meaning: "a PEM file of public keys for client tokens: Ed25519 (`EdDSA`), RSA (`RS256`) or EC P-256 (`ES256`); a `# kid: NAME` line just before a key names it, else its position (`0`, `1`, ...) does",
    shown: |c| {
        let Some(tokens) = &c.tokens else {
            return String::new();
        };
        let shown: Vec<String> = tokens
            .public_keys()
            .enumerate()
            .map(|(position, key)| match key.name() {
                Some(name) => format!("{name} ({})", key.key_type()),
                None => format!("{position} ({})", key.key_type()),
            })
            .collect();
        shown.join(", ")
    },
};

pub const TOKEN_AUDIENCE: Setting<Option<String>> = Setting {
    name: "TOKEN_AUDIENCE",
    default: Fallback::Text(""),
    values: Values::Parsed(optional_text),
    meaning: "the `aud` a client token must have (or list); empty: `aud` is not checked",
    shown: |c| {
        let audience = c.tokens.as_ref().and_then(|t| t.audience());
        audience.unwrap_or_default().to_string()
    },
};

pub const TOKEN_ISSUER: Setting<Option<String>> = Setting {
    name: "TOKEN_ISSUER",
    default: Fallback::Text(""),
    values: Values::Parsed(optional_text),
    meaning: "the `iss` a client token must have; empty: `iss` is not checked",
    shown: |c| {
        let issuer = c.tokens.as_ref().and_then(|t| t.issuer());
        issuer.unwrap_or_default().to_string()
    },
};

pub const TOKEN_LEEWAY_SECS: Setting<Duration> = Setting {
    name: "TOKEN_LEEWAY_SECS",
    default: Fallback::Text("5"),
    values: Values::Whole {
        min: 0,
        max: 3600,
        into: Duration::from_secs,
    },
    meaning: "clock skew allowed on a token's `exp` and `nbf`",
    shown: |c| {
        let leeway = c.tokens.as_ref().map(|t| t.leeway().as_secs());
        leeway.map(|secs| secs.to_string()).unwrap_or_default()
    },
};

pub const PUBLISH_RATE: Setting<u32> = Setting {
    name: "PUBLISH_RATE",
    default: Fallback::Text("0"),
    values: Values::Whole {
        min: 0,
        max: 1_000_000,
        into: |n| n as u32,
    },
    meaning: "publishes per second one connection may make, more get `RATE_LIMITED`; 0: no limit",
    shown: |c| c.publish_rate.to_string(),
};

pub const PUBLISH_BURST: Setting<u32> = Setting {
    name: "PUBLISH_BURST",
    // 0 stands for "the rate" until `read_publish_limit` puts the rate in.
    default: Fallback::Computed {
        shown: "the rate",
        value: || 0,
    },
    values: Values::Whole {
        min: 0,
        max: 1_000_000,
        into: |n| n as u32,
    },
    meaning:
        "publishes one connection may make at once before `PUBLISH_RATE` paces it; 0: the rate",
    shown: |c| c.publish_burst.to_string(),
};

pub const ALLOWED_ORIGINS: Setting<Vec<String>> = Setting {
    name: "ALLOWED_ORIGINS",
    default: Fallback::Text(""),
    values: Values::Parsed(parse_origins),
    meaning: "comma-separated origins (`https://app.example`) a WebSocket upgrade's `Origin` header may name, any other gets HTTP 403; empty: any; an upgrade without `Origin` is not affected",
    shown: |c| c.allowed_origins.join(","),
};

/// The verifier of client tokens; `None` when neither `TOKEN_HMAC_SECRET`
/// nor `TOKEN_PUBLIC_KEYS_FILE` is set, and then no other `TOKEN_`
/// setting may be: tokens that are off while their settings say
/// otherwise would leave a broker open that its operator thinks closed.
pub(super) fn read_tokens(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Arc<TokenVerifier>>, ConfigError> {
    let secret = TOKEN_HMAC_SECRET.read(lookup)?;
    let public_keys = TOKEN_PUBLIC_KEYS_FILE.read(lookup)?;
    let audience = TOKEN_AUDIENCE.read(lookup)?;
    let issuer = TOKEN_ISSUER.read(lookup)?;
    let leeway = TOKEN_LEEWAY_SECS.read(lookup)?;
    if secret
        .as_ref()
        .is_some_and(|secret| secret.len() < MIN_HMAC_SECRET_BYTES)
    {
        return Err(ConfigError {
            variable: TOKEN_HMAC_SECRET.name,
            value: "***".into(),
            reason: format!(
                "shorter than {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 asks for 256 bits)"
            ),
        });
    }
    if secret.is_none() && public_keys.is_none() {
        let given = [
            (TOKEN_AUDIENCE.name, TOKEN_AUDIENCE.given(lookup)),
            (TOKEN_ISSUER.name, TOKEN_ISSUER.given(lookup)),
            (TOKEN_LEEWAY_SECS.name, TOKEN_LEEWAY_SECS.given(lookup)),
        ];
        if let Some((variable, Some(value))) = given.into_iter().find(|(_, text)| text.is_some()) {
            return Err(ConfigError {
                variable,
                value,
                reason: "needs TOKEN_HMAC_SECRET or TOKEN_PUBLIC_KEYS_FILE".into(),
            });
        }
        return Ok(None);
    }
    Ok(Some(Arc::new(TokenVerifier::new(TokenSettings {
        hmac_secret: secret.as_deref().map(str::as_bytes),
        public_keys: public_keys.unwrap_or_default(),
        audience,
        issuer,
        leeway,
    }))))
}

/// `PUBLISH_RATE` and `PUBLISH_BURST`, the burst the rate when 0. A burst
/// without a rate would limit nothing, so it is refused.
pub(super) fn read_publish_limit(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(u32, u32), ConfigError> {
    match (PUBLISH_RATE.read(lookup)?, PUBLISH_BURST.read(lookup)?) {
        (0, burst @ 1..) => Err(ConfigError {
            variable: PUBLISH_BURST.name,
            value: burst.to_string(),
            reason: "needs a PUBLISH_RATE above 0".into(),
        }),
        (rate, 0) => Ok((rate, rate)),
        limit => Ok(limit),
    }
}

/// The keys of a PEM file; empty means none.
fn read_public_keys(path: &str) -> Result<Option<Vec<PublicKey>>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse_public_keys(&text).map(Some)
}

/// Trimmed text; empty means none.
pub(super) fn optional_text(text: &str) -> Result<Option<String>, String> {
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// Origins as a browser writes them in `Origin`: `SCHEME://HOST[:PORT]`,
/// no path, not even `/`.
fn parse_origins(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| match origin.split_once("://") {
            Some((scheme, host))
                if !scheme.is_empty() && !host.is_empty() && !host.contains('/') =>
            {
                Ok(origin.to_string())
            }
            _ => Err(format!(
                "{origin:?} is not an origin (SCHEME://HOST[:PORT], with no path)"
            )),
        })
        .collect()
}
