//! What one request or connection may do, once the gate has seen its
//! credentials: every right, a token's grant, or (a WebSocket upgraded
//! without credentials while tokens are on) nothing until its first `auth`
//! message. The rights were compiled once, from the token; a check here
//! is a lookup, never a parse.

use super::{Grant, Rights};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every right: the API key, or no authentication configured.
    Full,
    /// A token's grant: its `sub`, its rights, its expiry (boxed: most
    /// connections of a broker without tokens never hold one).
    Token(Box<Grant>),
    /// Tokens are on and no valid token has come yet: only `auth` is taken.
    Pending,
}

impl Access {
    /// The token's rights; `None` for every right (`Full`) and for none
    /// (`Pending`).
    fn rights(&self) -> Option<&Rights> {
        match self {
            Access::Token(grant) => Some(&grant.rights),
            Access::Full | Access::Pending => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Access::Full => true,
            Access::Token(grant) => grant.rights.is_admin(),
            Access::Pending => false,
        }
    }

    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.rights()
            .map_or(self.is_full(), |r| r.may_subscribe(topic))
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.rights()
            .map_or(self.is_full(), |r| r.may_publish(topic))
    }

    pub fn may_see(&self, topic: &str) -> bool {
        self.rights().map_or(self.is_full(), |r| r.may_see(topic))
    }

    fn is_full(&self) -> bool {
        matches!(self, Access::Full)
    }

    pub fn is_pending(&self) -> bool {
        matches!(self, Access::Pending)
    }

    /// Who the token names, for logs and `POST /disconnect`.
    pub fn sub(&self) -> Option<&str> {
        match self {
            Access::Token(grant) => Some(&grant.sub),
            Access::Full | Access::Pending => None,
        }
    }
}
