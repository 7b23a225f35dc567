//! The session's side of authorization: the `auth` message (a first
//! token, or a fresh one whose rights replace the old and revoke what they
//! no longer cover), the checks of a publish (rights, then the publish
//! limit), `FORBIDDEN`, and what the session says when its credentials
//! lapse or its user is disconnected. Every refusal is counted by reason.

use super::reply::{reply, reply_error, FORBIDDEN};
use super::Session;
use crate::metrics::AuthFailure;
use crate::protocol::{self, ErrorCode};
use crate::server::context::WorkerCtx;
use crate::server::credentials::Lapse;
use crate::server::output::Output;
use crate::ws::frame::shared_text_frame;
use std::time::SystemTime;

impl Session {
    /// What passing the credentials' deadline means, once it has passed:
    /// the notice is in the output; the connection closes with 1008.
    pub fn lapse(&mut self, ctx: &WorkerCtx, out: &mut Output) -> Option<Lapse> {
        let lapse = self.credentials.lapsed(ctx.now)?;
        match lapse {
            Lapse::NoToken => {
                ctx.metrics.record_auth_failure(AuthFailure::Missing);
                reply_error(
                    out,
                    ErrorCode::Unauthorized,
                    "no token came within the handshake timeout",
                    None,
                    None,
                );
            }
            Lapse::TokenExpired => {
                ctx.metrics.record_auth_failure(AuthFailure::Expired);
                reply(
                    out,
                    &protocol::encode_info("token_expired", None, SystemTime::now()),
                );
            }
        }
        Some(lapse)
    }

    /// Why a publish to `topic` may not go out: the token's rights, then
    /// the publish limit.
    pub(super) fn publish_refusal(
        &mut self,
        ctx: &WorkerCtx,
        topic: &str,
    ) -> Option<(ErrorCode, &'static str)> {
        if !self.credentials.access().may_publish(topic) {
            ctx.metrics.record_auth_failure(AuthFailure::Forbidden);
            return Some((ErrorCode::Forbidden, FORBIDDEN));
        }
        if !self.credentials.may_publish_now(ctx.now) {
            ctx.metrics.record_auth_failure(AuthFailure::RateLimited);
            return Some((
                ErrorCode::RateLimited,
                "over the publish rate limit; the message was not published",
            ));
        }
        None
    }

    /// An `auth` message: a first token, or a fresh one for the same user,
    /// whose rights replace the old ones (subscriptions they no longer
    /// cover end, each with `info subscription_revoked`).
    pub(super) fn authenticate(
        &mut self,
        ctx: &mut WorkerCtx,
        token: &str,
        request_id: Option<&str>,
        out: &mut Output,
    ) {
        let Some(tokens) = ctx.shared.config.tokens.clone() else {
            return reply_error(
                out,
                ErrorCode::BadRequest,
                "this server does not take tokens",
                request_id,
                None,
            );
        };
        let grant = match tokens.verify(token) {
            Ok(grant) => grant,
            Err(refusal) => {
                ctx.metrics.record_auth_failure(refusal.failure());
                return reply_error(
                    out,
                    ErrorCode::Unauthorized,
                    &refusal.to_string(),
                    request_id,
                    None,
                );
            }
        };
        let (sub, expires) = (grant.sub.clone(), grant.expires);
        match self.credentials.refresh(grant, ctx) {
            Err(_) => {
                ctx.metrics.record_auth_failure(AuthFailure::Invalid);
                return reply_error(
                    out,
                    ErrorCode::Unauthorized,
                    "the token names another user than this connection's; the old token stays",
                    request_id,
                    None,
                );
            }
            Ok(None) => ctx.shared.broker.users.join(&sub, &ctx.mailbox, self.key),
            Ok(Some(_)) => {}
        }
        log::debug!(conn:% = self.key, sub = sub.as_str(); "token accepted");
        reply(
            out,
            &protocol::encode_auth_ack(request_id, &sub, expires, SystemTime::now()),
        );
        self.revoke_uncovered();
    }

    /// Ends every subscription the connection's rights no longer cover,
    /// each with `info subscription_revoked` behind the events of it
    /// already queued.
    fn revoke_uncovered(&mut self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let access = self.credentials.access();
        self.topics.retain(|topic| {
            if topic.is_deleted() {
                return false;
            }
            if access.may_subscribe(topic.name()) {
                return true;
            }
            topic.unsubscribe(queue);
            let notice = protocol::encode_info(
                "subscription_revoked",
                Some(topic.name()),
                SystemTime::now(),
            );
            queue.deliver(&shared_text_frame(&notice));
            false
        });
    }

    /// Its user was disconnected: no more events; `info disconnected` in
    /// the output.
    pub fn disconnected(&mut self, out: &mut Output) {
        if let Some(queue) = &self.queue {
            queue.close();
        }
        reply(
            out,
            &protocol::encode_info("disconnected", None, SystemTime::now()),
        );
    }
}
