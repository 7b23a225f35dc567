//! A worker's own map from topic names to topics, so that publishing and
//! subscribing do not take the broker's map lock, which every worker
//! shares. The broker's map stays the truth: an entry is used only while
//! its topic is not deleted, and looked up again otherwise.

use crate::broker::{Broker, Topic};
use std::collections::HashMap;
use std::sync::Arc;

/// Entries of deleted topics are dropped when the map has doubled since the
/// last sweep, so it stays within twice the live topics this worker uses.
const MIN_SWEEP_LEN: usize = 1024;

pub struct TopicCache {
    topics: HashMap<String, Arc<Topic>>,
    sweep_at: usize,
}

impl Default for TopicCache {
    fn default() -> Self {
        TopicCache {
            topics: HashMap::new(),
            sweep_at: MIN_SWEEP_LEN,
        }
    }
}

impl TopicCache {
    /// The live topic named `name`, if there is one.
    pub fn get(&mut self, broker: &Broker, name: &str) -> Option<&Arc<Topic>> {
        let fresh = self.topics.get(name).is_some_and(|t| !t.is_deleted());
        if !fresh {
            match broker.topic(name) {
                Some(topic) => {
                    self.topics.insert(name.to_string(), topic);
                }
                None => {
                    self.topics.remove(name);
                    return None;
                }
            }
            if self.topics.len() > self.sweep_at {
                self.topics.retain(|_, t| !t.is_deleted());
                self.sweep_at = (self.topics.len() * 2).max(MIN_SWEEP_LEN);
            }
        }
        self.topics.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn follows_deletion_and_recreation() {
        let broker = Broker::new(4);
        let mut cache = TopicCache::default();
        assert!(cache.get(&broker, "t").is_none());
        let first = broker.create_topic("t").unwrap();
        assert!(Arc::ptr_eq(cache.get(&broker, "t").unwrap(), &first));
        broker.delete_topic("t");
        assert!(
            cache.get(&broker, "t").is_none(),
            "a deleted topic is not served from the cache"
        );
        let second = broker.create_topic("t").unwrap();
        let got = cache.get(&broker, "t").unwrap();
        assert!(Arc::ptr_eq(got, &second));
        let message = RawValue::from_string(r#"{"id":"m","payload":1}"#.into()).unwrap();
        assert_eq!(got.publish(message.as_ref().into()), Ok(1));
    }

    #[test]
    fn sweeps_deleted_topics() {
        let broker = Broker::new(4);
        let mut cache = TopicCache::default();
        for i in 0..5 * MIN_SWEEP_LEN {
            let name = format!("t{i}");
            broker.create_topic(&name).unwrap();
            cache.get(&broker, &name).unwrap();
            broker.delete_topic(&name);
        }
        assert!(
            cache.topics.len() <= 2 * MIN_SWEEP_LEN + 1,
            "{}",
            cache.topics.len()
        );
    }
}
