//! A WebSocket session's credentials over its life: its [`Access`], the
//! deadline by which it must (again) show a valid token (the handshake
//! timeout while it has none, its token's `exp` plus the leeway after),
//! and its publish limit. The session asks here what it may do; the
//! connection asks when the deadline is and what passing it means.
//!
//! No sockets, no protocol: the session words the replies.

use super::context::WorkerCtx;
use crate::auth::{Access, Grant, PublishLimiter};
use std::time::{Duration, Instant, SystemTime};

pub struct Credentials {
    access: Access,
    /// When the connection ends unless a (new) token comes first.
    deadline: Option<Instant>,
    /// The deadline moved since the connection last looked.
    deadline_moved: bool,
    limiter: Option<PublishLimiter>,
}

/// What passing the deadline means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// No token came within the handshake timeout.
    NoToken,
    /// The token expired and no newer one came.
    TokenExpired,
}

/// Why a new token was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherUser;

impl Credentials {
    pub fn new(access: Access, ctx: &WorkerCtx) -> Credentials {
        let config = &ctx.shared.config;
        let limiter = (config.publish_rate > 0)
            .then(|| PublishLimiter::new(config.publish_rate, config.publish_burst));
        let mut credentials = Credentials {
            access: Access::Pending,
            deadline: None,
            deadline_moved: false,
            limiter,
        };
        match access {
            Access::Pending => {
                credentials.deadline = Some(ctx.now + config.handshake_timeout);
            }
            Access::Token(grant) => credentials.take(*grant, ctx),
            Access::Full => credentials.access = Access::Full,
        }
        credentials
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once after the deadline moved (the connection re-arms its
    /// timer).
    pub fn take_deadline_moved(&mut self) -> bool {
        std::mem::take(&mut self.deadline_moved)
    }

    /// What passing the deadline means, if it has passed at `now`.
    pub fn lapsed(&self, now: Instant) -> Option<Lapse> {
        if self.deadline.is_none_or(|deadline| now < deadline) {
            return None;
        }
        Some(match self.access {
            Access::Pending => Lapse::NoToken,
            Access::Token(_) | Access::Full => Lapse::TokenExpired,
        })
    }

    /// A publish may go out under the limit; false: over it.
    pub fn may_publish_now(&mut self, now: Instant) -> bool {
        self.limiter.as_mut().is_none_or(|l| l.try_take(now))
    }

    /// A new, valid token: its rights replace the old ones. A connection
    /// that has a token keeps it if the new one names another `sub`.
    /// Returns the `sub` it had before (`None`: none).
    pub fn refresh(&mut self, grant: Grant, ctx: &WorkerCtx) -> Result<Option<String>, OtherUser> {
        let before = self.access.sub().map(str::to_owned);
        if before.as_deref().is_some_and(|sub| sub != grant.sub) {
            return Err(OtherUser);
        }
        self.take(grant, ctx);
        Ok(before)
    }

    fn take(&mut self, grant: Grant, ctx: &WorkerCtx) {
        let leeway = ctx
            .shared
            .config
            .tokens
            .as_ref()
            .map_or(Duration::ZERO, |tokens| tokens.leeway());
        let left = (grant.expires + leeway)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        // A date too far away for the clock to name is no deadline.
        self.deadline = ctx.now.checked_add(left);
        self.deadline_moved = true;
        self.access = Access::Token(Box::new(grant));
    }
}
