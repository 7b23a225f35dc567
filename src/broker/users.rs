//! Who is connected as whom: every connection a token authenticated, by
//! the token's `sub`, so that a user can be disconnected
//! (`POST /disconnect`) wherever its connections live. Written when a
//! connection authenticates or closes, read when a user is disconnected;
//! never on the publish or delivery path.
//!
//! It only posts [`Notice::Disconnect`] to the connections' workers; each
//! worker closes its own connection.

use super::delivery::{ConnectionKey, Notice, WorkerMailbox};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One authenticated connection: its worker's mailbox and its key there.
struct Member {
    mailbox: Arc<WorkerMailbox>,
    key: ConnectionKey,
}

impl Member {
    fn is(&self, mailbox: &Arc<WorkerMailbox>, key: ConnectionKey) -> bool {
        self.key == key && Arc::ptr_eq(&self.mailbox, mailbox)
    }
}

#[derive(Default)]
pub struct Users {
    by_sub: Mutex<HashMap<String, Vec<Member>>>,
}

impl Users {
    /// The connection `key` of the worker with `mailbox` is `sub`'s.
    pub fn join(&self, sub: &str, mailbox: &Arc<WorkerMailbox>, key: ConnectionKey) {
        let mut by_sub = self.lock();
        let members = by_sub.entry(sub.to_string()).or_default();
        if !members.iter().any(|m| m.is(mailbox, key)) {
            members.push(Member {
                mailbox: Arc::clone(mailbox),
                key,
            });
        }
    }

    /// The connection is gone (or no longer `sub`'s).
    pub fn leave(&self, sub: &str, mailbox: &Arc<WorkerMailbox>, key: ConnectionKey) {
        let mut by_sub = self.lock();
        if let Some(members) = by_sub.get_mut(sub) {
            members.retain(|m| !m.is(mailbox, key));
            if members.is_empty() {
                by_sub.remove(sub);
            }
        }
    }

    /// Tells the worker of every connection of `sub` on this node to close
    /// it; returns how many there are.
    pub fn disconnect(&self, sub: &str) -> usize {
        let by_sub = self.lock();
        let members = by_sub.get(sub).map_or(&[][..], Vec::as_slice);
        for member in members {
            member.mailbox.notify(member.key, Notice::Disconnect);
        }
        members.len()
    }

    /// Connections of `sub` on this node.
    #[cfg(test)]
    fn count(&self, sub: &str) -> usize {
        self.lock().get(sub).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Member>>> {
        self.by_sub.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_disconnected_on_every_worker_and_only_that_user() {
        let (one, two) = (WorkerMailbox::unpolled(), WorkerMailbox::unpolled());
        let users = Users::default();
        let key = ConnectionKey::new(3, 1);
        users.join("alice", &one, key);
        users.join("alice", &two, key);
        users.join("alice", &two, key);
        users.join("bob", &one, ConnectionKey::new(4, 1));
        assert_eq!(users.count("alice"), 2, "joined twice counts once");
        assert_eq!(users.disconnect("alice"), 2);
        let (mut got_one, mut got_two) = (Vec::new(), Vec::new());
        one.drain_notices(&mut got_one);
        two.drain_notices(&mut got_two);
        assert_eq!(got_one, vec![(key, Notice::Disconnect)]);
        assert_eq!(got_two, vec![(key, Notice::Disconnect)]);
        users.leave("alice", &one, key);
        assert_eq!(users.count("alice"), 1);
        users.leave("alice", &two, key);
        assert_eq!(users.disconnect("alice"), 0);
        assert_eq!(users.count("bob"), 1);
    }
}
