//! The servers under test: one broker, or the nodes of a cluster (`--url`
//! given several times, or `--spawn-cluster N`), and which node each
//! connection goes to. Subscribers are spread round-robin over the nodes
//! (subscriber `i` on node `i mod N`); publishers all on one chosen node,
//! or spread the same way; REST calls go to the first node; a resuming
//! subscriber resumes on the next node.

use crate::endpoint::{Endpoint, TargetKind};
use anyhow::{bail, Result};
use std::str::FromStr;

/// Where the publishers connect (`--publish-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOn {
    /// Every publisher on the node of this index (0: the first `--url`).
    Node(usize),
    /// Publisher `p` on node `p mod N`.
    Spread,
}

impl Default for PublishOn {
    fn default() -> PublishOn {
        PublishOn::Node(0)
    }
}

impl PublishOn {
    /// Refuses a node that is not among `nodes` nodes.
    pub fn check(self, nodes: usize) -> Result<()> {
        match self {
            PublishOn::Node(index) if index >= nodes => {
                bail!("--publish-on {index}: there are {nodes} nodes, numbered from 0")
            }
            _ => Ok(()),
        }
    }
}

/// `spread`, or a node's index.
impl FromStr for PublishOn {
    type Err = String;

    fn from_str(text: &str) -> Result<PublishOn, String> {
        if text == "spread" {
            return Ok(PublishOn::Spread);
        }
        text.parse().map(PublishOn::Node).map_err(|_| {
            format!("expected a node's index (0 is the first --url) or \"spread\", not {text:?}")
        })
    }
}

/// The nodes, in the order given, and where connections go. Never empty.
#[derive(Debug, Clone)]
pub struct Nodes {
    endpoints: Vec<Endpoint>,
    publish_on: PublishOn,
}

impl Nodes {
    /// Refuses an empty list, nodes of different kinds, and `--publish-on`
    /// a node that is not there.
    pub fn new(endpoints: Vec<Endpoint>, publish_on: PublishOn) -> Result<Nodes> {
        let Some(first) = endpoints.first() else {
            bail!("no server to test: give --url, --spawn or --spawn-cluster");
        };
        if endpoints.iter().any(|e| e.kind != first.kind) {
            bail!("every node must be of the same kind");
        }
        publish_on.check(endpoints.len())?;
        Ok(Nodes {
            endpoints,
            publish_on,
        })
    }

    /// One server: every connection goes to it.
    pub fn single(endpoint: Endpoint) -> Nodes {
        Nodes {
            endpoints: vec![endpoint],
            publish_on: PublishOn::Node(0),
        }
    }

    pub fn kind(&self) -> TargetKind {
        self.endpoints[0].kind
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// How many nodes.
    pub fn count(&self) -> usize {
        self.endpoints.len()
    }

    /// The node REST calls go to: the first.
    pub fn rest(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// The node of subscriber `i` (slow ones are numbered after the
    /// reading ones).
    pub fn subscriber_node(&self, i: usize) -> usize {
        i % self.count()
    }

    /// The node of publisher `id`.
    pub fn publisher_node(&self, id: usize) -> usize {
        match self.publish_on {
            PublishOn::Node(index) => index,
            PublishOn::Spread => id % self.count(),
        }
    }

    /// Where a subscriber on `node` resumes after a drop: the next node.
    pub fn next_node(&self, node: usize) -> usize {
        (node + 1) % self.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                let addr = ([127, 0, 0, 1], 9000 + i).into();
                Endpoint::local(TargetKind::Pubsub, addr, "/ws").unwrap()
            })
            .collect()
    }

    #[test]
    fn subscribers_are_spread_round_robin_and_rest_goes_to_the_first_node() {
        let nodes = Nodes::new(endpoints(3), PublishOn::default()).unwrap();
        let placed: Vec<usize> = (0..7).map(|i| nodes.subscriber_node(i)).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(nodes.rest().addr.port(), 9000);
        assert_eq!(nodes.count(), 3);
    }

    #[test]
    fn publishers_go_to_the_chosen_node_or_are_spread() {
        let nodes = Nodes::new(endpoints(3), PublishOn::Node(2)).unwrap();
        assert!((0..5).all(|id| nodes.publisher_node(id) == 2));
        let nodes = Nodes::new(endpoints(3), PublishOn::Spread).unwrap();
        let placed: Vec<usize> = (0..5).map(|id| nodes.publisher_node(id)).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1]);
    }

    #[test]
    fn a_resuming_subscriber_moves_to_the_next_node() {
        let nodes = Nodes::new(endpoints(3), PublishOn::default()).unwrap();
        assert_eq!([0, 1, 2].map(|node| nodes.next_node(node)), [1, 2, 0]);
        let single = Nodes::single(endpoints(1).remove(0));
        assert_eq!(single.next_node(0), 0);
        assert_eq!(single.subscriber_node(5), 0);
        assert_eq!(single.publisher_node(5), 0);
    }

    #[test]
    fn a_node_that_is_not_there_is_refused() {
        let error = Nodes::new(endpoints(2), PublishOn::Node(2)).unwrap_err();
        assert!(error.to_string().contains("there are 2 nodes"), "{error}");
        assert!(Nodes::new(Vec::new(), PublishOn::Spread).is_err());
        let mut mixed = endpoints(2);
        mixed[1].kind = TargetKind::Nats;
        assert!(Nodes::new(mixed, PublishOn::Spread).is_err());
    }

    #[test]
    fn publish_on_parses_an_index_or_spread() {
        assert_eq!("spread".parse(), Ok(PublishOn::Spread));
        assert_eq!("1".parse(), Ok(PublishOn::Node(1)));
        for bad in ["-1", "first", "", "Spread"] {
            assert!(bad.parse::<PublishOn>().is_err(), "{bad}");
        }
    }
}
