//! The session's replies to one client: acks, errors and notices put in
//! the connection's output as text frames, each counted as a message. The
//! wording of refusals lives here, so that every path says the same.

use crate::broker::change::Outcome;
use crate::metrics::AuthFailure;
use crate::protocol::{self, ErrorCode};
use crate::server::context::WorkerCtx;
use crate::server::output::Output;
use crate::ws::frame::{append_text_frame, append_text_frame_with};
use std::time::SystemTime;

pub(super) fn reply(out: &mut Output, text: &str) {
    out.messages += 1;
    append_text_frame(out.buffer(), text);
}

pub(super) fn reply_error(
    out: &mut Output,
    code: ErrorCode,
    message: &str,
    request_id: Option<&str>,
    topic: Option<&str>,
) {
    reply(
        out,
        &protocol::encode_error(code, message, request_id, topic, SystemTime::now()),
    );
}

pub(super) fn reply_to_publish(
    out: &mut Output,
    topic: &str,
    request_id: Option<&str>,
    outcome: Outcome,
) {
    match outcome {
        Outcome::Published(seq) => {
            out.messages += 1;
            append_text_frame_with(out.buffer(), |text| {
                protocol::encode_publish_ack(text, request_id, topic, seq, SystemTime::now())
            });
        }
        Outcome::NoTopic => reply_topic_not_found(out, topic, request_id),
        Outcome::Unavailable(why) => {
            reply_error(out, ErrorCode::Unavailable, why, request_id, Some(topic))
        }
        other => {
            log::error!(topic, outcome:? = other; "a publish had an outcome it cannot have");
            reply_error(
                out,
                ErrorCode::Internal,
                "unexpected outcome",
                request_id,
                Some(topic),
            )
        }
    }
}

pub(super) fn reply_topic_not_found(out: &mut Output, topic: &str, request_id: Option<&str>) {
    let message = format!("topic '{topic}' does not exist");
    reply_error(
        out,
        ErrorCode::TopicNotFound,
        &message,
        request_id,
        Some(topic),
    );
}

/// What a `FORBIDDEN` says: nothing of the topic, not even whether it
/// exists.
pub(super) const FORBIDDEN: &str = "your token does not grant this";

/// `FORBIDDEN`, counted.
pub(super) fn forbid(ctx: &WorkerCtx, out: &mut Output, topic: &str, request_id: Option<&str>) {
    ctx.metrics.record_auth_failure(AuthFailure::Forbidden);
    reply_error(
        out,
        ErrorCode::Forbidden,
        FORBIDDEN,
        request_id,
        Some(topic),
    );
}
