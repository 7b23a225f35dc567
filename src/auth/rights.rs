//! What a connection may do with topics: the topic patterns of a token,
//! compiled once, and the rights they make (subscribe, publish, admin).
//!
//! Matching a topic is on the path of every subscribe and publish, so it
//! never allocates. This module knows nothing of tokens' encoding or of
//! requests: it answers "may this topic be read or written".

use std::collections::HashSet;

/// A token's list of PATTERNs (`topics.subscribe` or `topics.publish`),
/// compiled: a pattern ending in `*` matches every topic that starts with
/// what comes before that last `*` (`"*"` alone matches every topic); any
/// other pattern is one exact topic name (no other character is special:
/// `"a*b"` is the topic `a*b`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPatterns {
    exact: HashSet<String>,
    prefixes: Vec<String>,
    /// A lone `*` was among the patterns.
    every_topic: bool,
}

impl TopicPatterns {
    /// Compiles `patterns`; none at all matches no topic.
    pub fn new<P: AsRef<str>>(patterns: impl IntoIterator<Item = P>) -> TopicPatterns {
        let mut compiled = TopicPatterns::default();
        for pattern in patterns {
            match pattern.as_ref().strip_suffix('*') {
                Some("") => compiled.every_topic = true,
                Some(prefix) => compiled.prefixes.push(prefix.to_string()),
                None => {
                    compiled.exact.insert(pattern.as_ref().to_string());
                }
            }
        }
        compiled
    }

    /// True if one of the patterns matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.every_topic
            || self.exact.contains(topic)
            || self
                .prefixes
                .iter()
                .any(|prefix| topic.starts_with(prefix.as_str()))
    }
}

/// The rights of one connection: every right (the API key, a token with
/// `admin`, or no authorization configured), or the topics a token's
/// patterns name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    admin: bool,
    subscribe: TopicPatterns,
    publish: TopicPatterns,
}

impl Rights {
    /// Every right: the API key, `"admin": true`, or authorization off.
    pub fn all() -> Rights {
        Rights {
            admin: true,
            subscribe: TopicPatterns::default(),
            publish: TopicPatterns::default(),
        }
    }

    /// The rights of a token without `admin`: subscribing (and reading a
    /// topic) where `subscribe` matches, publishing where `publish` does.
    pub fn topics(subscribe: TopicPatterns, publish: TopicPatterns) -> Rights {
        Rights {
            admin: false,
            subscribe,
            publish,
        }
    }

    /// Creating and deleting topics, `/stats`, `/metrics`, `POST /disconnect`.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Subscribing (with `last_n`, `since_seq`), unsubscribing, and
    /// `GET /topics/{name}` with its history. After a new token replaces
    /// the rights, a subscription this refuses ends.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.admin || self.subscribe.matches(topic)
    }

    /// Publishing over WebSocket and `POST /topics/{name}/messages`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.admin || self.publish.matches(topic)
    }

    /// Seeing the topic in `GET /topics`: either right.
    pub fn may_see(&self, topic: &str) -> bool {
        self.may_subscribe(topic) || self.may_publish(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_name_matches_only_itself() {
        let patterns = TopicPatterns::new(["orders", "a*b", "news.*x"]);
        assert!(patterns.matches("orders"));
        assert!(!patterns.matches("orders2"));
        assert!(!patterns.matches("order"));
        assert!(!patterns.matches("Orders"));
        assert!(patterns.matches("a*b"), "a star inside is no wildcard");
        assert!(!patterns.matches("axb"));
        assert!(!patterns.matches("ab"));
        assert!(patterns.matches("news.*x"));
        assert!(!patterns.matches("news.1x"));
    }

    #[test]
    fn a_trailing_star_matches_the_prefix() {
        let patterns = TopicPatterns::new(["user.42.*", "news*", "a**"]);
        assert!(patterns.matches("user.42.inbox"));
        assert!(patterns.matches("user.42."));
        assert!(!patterns.matches("user.42"));
        assert!(!patterns.matches("user.421.inbox"));
        assert!(patterns.matches("news"));
        assert!(patterns.matches("newsletter"));
        assert!(!patterns.matches("new"));
        assert!(patterns.matches("a*"), "only the last star is the wildcard");
        assert!(patterns.matches("a*z"));
        assert!(!patterns.matches("az"));
    }

    #[test]
    fn a_lone_star_matches_every_topic() {
        let patterns = TopicPatterns::new(["*"]);
        for topic in ["orders", "a", "*", "user.42.inbox"] {
            assert!(patterns.matches(topic), "{topic}");
        }
    }

    #[test]
    fn no_patterns_deny_everything() {
        let none = TopicPatterns::new(Vec::<String>::new());
        assert!(!none.matches("orders"));
        assert!(!none.matches(""));
        let rights = Rights::topics(none.clone(), none);
        assert!(!rights.is_admin());
        assert!(!rights.may_subscribe("orders"));
        assert!(!rights.may_publish("orders"));
        assert!(!rights.may_see("orders"));
    }

    #[test]
    fn rights_keep_subscribe_and_publish_apart() {
        let rights = Rights::topics(
            TopicPatterns::new(["news.*", "orders"]),
            TopicPatterns::new(["orders", "chat"]),
        );
        assert!(rights.may_subscribe("news.today"));
        assert!(!rights.may_publish("news.today"));
        assert!(rights.may_publish("chat"));
        assert!(!rights.may_subscribe("chat"));
        assert!(rights.may_subscribe("orders") && rights.may_publish("orders"));
        assert!(rights.may_see("chat") && rights.may_see("news.x"));
        assert!(!rights.may_see("other"));
        assert!(!rights.is_admin());
    }

    #[test]
    fn all_rights_cover_every_topic() {
        let all = Rights::all();
        assert!(all.is_admin());
        assert!(all.may_subscribe("anything") && all.may_publish("anything"));
        assert!(all.may_see("anything"));
    }
}
