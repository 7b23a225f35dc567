//! How a single broker carries out a change at once, on its own topics
//! (cluster mode asks the backplane instead).

use super::change::{Change, Outcome};
use super::{Broker, CreateError, Topic};
use crate::protocol::RawJson;

impl Broker {
    /// Carries out `change` on this broker alone.
    pub fn carry_out(&self, change: &Change) -> Outcome {
        match change {
            Change::Create { name } => match self.create_topic(name) {
                Ok(_) => Outcome::Created,
                Err(CreateError::Exists) => Outcome::Exists,
                Err(CreateError::InvalidName(why)) => Outcome::InvalidName(why),
            },
            Change::Delete { name } => match self.delete_topic(name) {
                true => Outcome::Deleted,
                false => Outcome::NoTopic,
            },
            Change::Publish { topic, message } => {
                publish_to(self.topic(topic).as_deref(), (&**message).into())
            }
            Change::ReadLastSeq { topic } => self
                .topic(topic)
                .map_or(Outcome::NoTopic, |t| Outcome::LastSeq(t.next_seq() - 1)),
            Change::Disconnect { sub } => {
                self.users.disconnect(sub);
                Outcome::Disconnected
            }
        }
    }
}

/// Publishes `message` to `topic`, if there is one, as an outcome.
pub fn publish_to(topic: Option<&Topic>, message: RawJson<'_>) -> Outcome {
    match topic {
        Some(topic) => topic
            .publish(message)
            .map_or(Outcome::NoTopic, Outcome::Published),
        None => Outcome::NoTopic,
    }
}
