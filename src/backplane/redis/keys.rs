//! How the Redis backend lays out its state in Redis, the Lua scripts
//! that change it atomically, and the text of its events. Every key a
//! script touches is named in its `KEYS` (one `{name}` hash tag per topic),
//! so that Redis Cluster stays possible. Names and text only: nothing here
//! sends a command.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `pubsub:topics` | hash | topic name → its epoch |
//! | `pubsub:t:{name}:seq` | string | the topic's last `seq` |
//! | `pubsub:t:{name}:ring` | stream (`MAXLEN` = ring size, exact) | id `<seq>-0`: `m` the message, `ts` its time |
//! | `pubsub:ch:<k>` | channel, k = FNV-1a(name) mod 16 | every change of the topics that hash to k, in the order Redis ran them |
//! | `pubsub:incarnation` | string | set once per Redis data set: a different one means Redis lost its data |
//! | `pubsub:nodes` | sorted set | node → when it last said it was alive (ms) |
//! | `pubsub:n:<node>` | hash (expires) | topic name → that node's subscribers |
//! | `pubsub:users` | channel | users to disconnect on every node |
//! | `pubsub:renewals` | hash | a topic's epoch given after a failover lost messages → `<the epoch it replaced>\n<the seq then>` |
//!
//! Events on a channel are text, fields on lines (topic names hold no
//! control character; the message, last, may hold newlines):
//! `c\n<name>\n<epoch>`, `d\n<name>\n<epoch>`,
//! `p\n<name>\n<epoch>\n<seq>\n<ts>\n<message>`; and on `pubsub:users`,
//! `x\n<sub>` (the rest of the text is the `sub`). An [`Event`] is the
//! backend-neutral form the follower takes; its text form is this
//! backend's, so it is read here.

use crate::backplane::follower::Event;

pub const TOPICS: &str = "pubsub:topics";
pub const INCARNATION: &str = "pubsub:incarnation";
pub const NODES: &str = "pubsub:nodes";
/// Epochs given to topics whose messages a failover lost (see `RENEW`).
pub const RENEWALS: &str = "pubsub:renewals";
/// Every node publishes here once a second, so that a silent subscription
/// is known to be dead.
pub const HEARTBEAT: &str = "pubsub:heartbeat";
/// `POST /disconnect` on any node reaches every node here.
pub const USERS: &str = "pubsub:users";
/// Channels events are spread over.
pub const CHANNELS: u32 = 16;

pub fn seq_key(name: &str) -> String {
    format!("pubsub:t:{{{name}}}:seq")
}

pub fn ring_key(name: &str) -> String {
    format!("pubsub:t:{{{name}}}:ring")
}

pub fn node_key(node: &str) -> String {
    format!("pubsub:n:{node}")
}

pub fn channel_of(name: &str) -> String {
    channel(fnv1a(name.as_bytes()) % CHANNELS)
}

pub fn channel(k: u32) -> String {
    format!("pubsub:ch:{k}")
}

/// A hash every node computes the same way (std's is seeded per process).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// KEYS: topics, seq, ring. ARGV: name, message, ts, ring size, channel.
/// Returns the new `seq`, or nil if the topic does not exist.
pub const PUBLISH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return false end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], seq .. '-0', 'm', ARGV[2], 'ts', ARGV[3])
redis.call('PUBLISH', ARGV[5], 'p\n' .. ARGV[1] .. '\n' .. epoch .. '\n' .. seq .. '\n' .. ARGV[3] .. '\n' .. ARGV[2])
return seq
"#;

/// KEYS: topics, seq, ring. ARGV: name, epoch, channel. Returns 1 if
/// created, 0 if the topic exists. A new topic starts with no seq and no
/// ring (a deletion removed the last incarnation's).
pub const CREATE: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[3], 'c\n' .. ARGV[1] .. '\n' .. ARGV[2])
return 1
"#;

/// KEYS: topics, seq, ring. ARGV: name, channel. Returns 1 if deleted, 0
/// if there was no such topic.
pub const DELETE: &str = r#"
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], 'd\n' .. ARGV[1] .. '\n' .. epoch)
return 1
"#;

/// KEYS: topics, seq, renewals. ARGV: name, old epoch, new epoch.
/// Gives the topic the new epoch if it is still in the old one, and
/// records which it replaced and the topic's `seq` then; returns the
/// topic's epoch (nil: no such topic).
pub const RENEW: &str = r#"
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if epoch ~= ARGV[2] then return epoch end
local seq = redis.call('GET', KEYS[2]) or '0'
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2] .. '\n' .. seq)
return ARGV[3]
"#;

/// The event that disconnects `sub` everywhere.
pub fn disconnect_event(sub: &str) -> String {
    format!("x\n{sub}")
}

impl<'a> Event<'a> {
    /// The event a script wrote as `text`; `None` for text no script of
    /// ours writes.
    pub fn parse(text: &'a str) -> Option<Event<'a>> {
        let (kind, rest) = text.split_once('\n')?;
        match kind {
            "c" | "d" => {
                let (name, epoch) = rest.split_once('\n')?;
                Some(if kind == "c" {
                    Event::Created { name, epoch }
                } else {
                    Event::Deleted { name, epoch }
                })
            }
            "p" => {
                let mut fields = rest.splitn(5, '\n');
                let (name, epoch) = (fields.next()?, fields.next()?);
                let seq = fields.next()?.parse().ok()?;
                let (ts, message) = (fields.next()?, fields.next()?);
                Some(Event::Published {
                    name,
                    epoch,
                    seq,
                    ts,
                    message,
                })
            }
            "x" => Some(Event::Disconnected { sub: rest }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_as_the_scripts_write_them() {
        assert_eq!(
            Event::parse(
                "p\norders\nE1\n42\n2026-01-01T00:00:00.000Z\n{\"id\":\"m\",\n\"payload\":1}"
            ),
            Some(Event::Published {
                name: "orders",
                epoch: "E1",
                seq: 42,
                ts: "2026-01-01T00:00:00.000Z",
                message: "{\"id\":\"m\",\n\"payload\":1}",
            })
        );
        assert_eq!(
            Event::parse("c\na b\nE2"),
            Some(Event::Created {
                name: "a b",
                epoch: "E2"
            })
        );
        assert_eq!(
            Event::parse("d\nx\nE3"),
            Some(Event::Deleted {
                name: "x",
                epoch: "E3"
            })
        );
        assert_eq!(
            Event::parse(&disconnect_event("user\n42")),
            Some(Event::Disconnected { sub: "user\n42" })
        );
        for junk in [
            "",
            "p",
            "p\nx\nE\nnot-a-number\nts\n{}",
            "z\na\nb",
            "c\nonly",
        ] {
            assert_eq!(Event::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn channels_are_stable_and_spread() {
        assert_eq!(channel_of("orders"), channel_of("orders"));
        let used: std::collections::HashSet<String> =
            (0..200).map(|i| channel_of(&format!("t{i}"))).collect();
        assert_eq!(used.len(), CHANNELS as usize);
        assert_eq!(seq_key("a"), "pubsub:t:{a}:seq");
    }
}
