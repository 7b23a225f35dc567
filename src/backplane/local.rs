//! The backend of a single broker: this process is the whole broker, and
//! a change is carried out at once on its in-memory [`Broker`]. No thread,
//! no cluster, always up; it never queues a change or waits.

use super::backend::{Backend, ReplyTo};
use crate::broker::change::{Change, Outcome};
use crate::broker::Broker;
use crate::metrics::BackplaneFigures;

pub struct Local;

impl Backend for Local {
    fn carry_out(&self, broker: &Broker, change: &Change, _: ReplyTo<'_>) -> Option<Outcome> {
        Some(broker.carry_out(change))
    }

    fn carries_out_at_once(&self) -> bool {
        true
    }

    fn node(&self) -> Option<&str> {
        None
    }

    fn is_up(&self) -> bool {
        true
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn others_subscribers(&self, _: &str) -> u64 {
        0
    }

    fn figures(&self) -> Option<BackplaneFigures> {
        None
    }

    fn leave(&self) {}
}
