//! The gate in front of every route that needs credentials: which
//! credential a request carries (the API key, or a token in
//! `Authorization: Bearer`; on the WebSocket upgrade also `?api_key=` and
//! `?token=`), whether it is good, and the `Origin` check of upgrades.
//! What comes out is the request's [`Access`], or the refusal to send.
//!
//! Pure: a request and the settings in, an access or a response out. It
//! never logs, and no response it writes quotes a credential.

use super::request::Request;
use super::response::Response;
use crate::auth::{Access, Refusal, TokenVerifier};
use crate::metrics::AuthFailure;
use subtle::ConstantTimeEq;

/// What the gate checks against.
#[derive(Clone, Copy, Default)]
pub struct Gate<'a> {
    pub api_key: Option<&'a str>,
    pub tokens: Option<&'a TokenVerifier>,
    /// Origins allowed to upgrade; empty: any.
    pub allowed_origins: &'a [String],
}

impl Gate<'_> {
    /// The access `req` carries. An `upgrade` also takes credentials from
    /// the query (a browser cannot set headers on a WebSocket), and with
    /// tokens on, one without credentials is let in `Pending`: its first
    /// message must be an `auth`.
    pub fn admit(&self, req: &Request<'_>, upgrade: bool) -> Result<Access, Response> {
        if self.api_key.is_none() && self.tokens.is_none() {
            return Ok(Access::Full);
        }
        let header_key = req.header("X-API-Key");
        let query_key = match header_key {
            None if upgrade => req.query_param("api_key"),
            _ => None,
        };
        if let Some(key) = header_key.or(query_key.as_deref().map(str::as_bytes)) {
            return match self.api_key {
                Some(expected) if bool::from(key.ct_eq(expected.as_bytes())) => Ok(Access::Full),
                _ => Err(refused(401, AuthFailure::Invalid, "wrong API key")),
            };
        }
        let token = bearer_token(req)
            .map(str::to_string)
            .or_else(|| upgrade.then(|| req.query_param("token"))?);
        match (token, self.tokens) {
            (Some(token), Some(tokens)) => match tokens.verify(&token) {
                Ok(grant) => Ok(Access::Token(Box::new(grant))),
                Err(refusal) => Err(refused_token(refusal)),
            },
            (Some(_), None) => Err(refused(
                401,
                AuthFailure::Invalid,
                "this server takes an API key, not tokens",
            )),
            (None, Some(_)) if upgrade => Ok(Access::Pending),
            (None, Some(_)) => Err(refused(
                401,
                AuthFailure::Missing,
                "missing API key or token (Authorization: Bearer)",
            )),
            (None, None) => Err(refused(401, AuthFailure::Missing, "missing API key")),
        }
    }

    /// An upgrade whose `Origin` is present and not allowed is refused;
    /// one without `Origin` (not a browser) is not.
    pub fn check_origin(&self, req: &Request<'_>) -> Result<(), Response> {
        let Some(origin) = req.header("Origin") else {
            return Ok(());
        };
        if self.allowed_origins.is_empty()
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()))
        {
            return Ok(());
        }
        Err(refused(
            403,
            AuthFailure::Origin,
            "this origin may not open a WebSocket here",
        ))
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer_token<'a>(req: &Request<'a>) -> Option<&'a str> {
    let value = std::str::from_utf8(req.header("Authorization")?).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The refusal of a token, as a 401 that says why without quoting it.
pub fn refused_token(refusal: Refusal) -> Response {
    refused(401, refusal.failure(), &refusal.to_string())
}

/// A 401 `UNAUTHORIZED` or 403 `FORBIDDEN`, counted as `reason`.
pub fn refused(status: u16, reason: AuthFailure, message: &str) -> Response {
    let code = if status == 401 {
        "UNAUTHORIZED"
    } else {
        "FORBIDDEN"
    };
    let mut response = Response::error(status, code, message);
    response.auth_failure = Some(reason);
    response
}

/// 403 `FORBIDDEN` for a request outside the token's rights. Says nothing
/// of the topic, not even whether it exists.
pub fn forbidden() -> Response {
    refused(
        403,
        AuthFailure::Forbidden,
        "your token does not grant this",
    )
}
