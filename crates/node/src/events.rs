//! Live updates for consoles: a bounded broadcast of what changed ("inbox", "outbox",
//! "hotlines", "escalations", "agreements"). Slow listeners miss updates, never block.

use liaison_store::Store;

use crate::node::Node;

/// Updates buffered per listener before the oldest are dropped.
pub const EVENTS_BUFFER_MAX: usize = 256;

pub fn publish<S: Store>(node: &Node<S>, what: &str) {
    let _ = node.events.send(what.to_owned());
}
