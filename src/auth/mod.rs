//! Token authorization without sockets: checking a client's JWT
//! ([`token`], with the public keys of [`keys`]), the rights it grants
//! ([`rights`]), and the per-connection publish limit ([`limiter`]).
//!
//! Everything here is pure: values in, values out. It never reads a file,
//! the environment or a socket, never logs, and never holds a token after
//! a check; the config builds the [`TokenVerifier`] once at start-up, and
//! the server asks it and the rights what a connection may do.

pub mod access;
pub mod keys;
pub mod limiter;
pub mod rights;
pub mod token;

pub use access::Access;
pub use keys::{parse_public_keys, KeyType, PublicKey};
pub use limiter::PublishLimiter;
pub use rights::{Rights, TopicPatterns};
pub use token::{Grant, Refusal, TokenSettings, TokenVerifier};

#[cfg(test)]
mod tests;
