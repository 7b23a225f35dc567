//! The queue from the workers to a remote backend's request thread: each
//! change with the worker and connection to answer, and when it was
//! queued. Sending never blocks; a change the thread can no longer take is
//! answered `Unavailable` at once.
//!
//! It carries changes and answers them; it never carries one out.

use crate::broker::change::{Change, Outcome};
use crate::broker::delivery::{ConnectionKey, WorkerMailbox};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A change waiting for the request thread.
pub struct Request {
    pub change: Change,
    pub mailbox: Arc<WorkerMailbox>,
    pub key: ConnectionKey,
    pub queued: Instant,
}

impl Request {
    /// Tells the worker that asked what became of the change.
    pub fn answer(self, outcome: Outcome) {
        self.mailbox.answer(self.key, outcome);
    }
}

/// The workers' end of the request queue.
pub struct Requests {
    sender: Mutex<Sender<Request>>,
}

/// A new queue: the workers' end, and the request thread's.
pub fn requests() -> (Requests, Receiver<Request>) {
    let (sender, receiver) = mpsc::channel();
    let requests = Requests {
        sender: Mutex::new(sender),
    };
    (requests, receiver)
}

impl Requests {
    pub fn send(&self, request: Request) {
        let sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(mpsc::SendError(request)) = sender.send(request) {
            request.answer(Outcome::Unavailable("the backplane has stopped"));
        }
    }
}
