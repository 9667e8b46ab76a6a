//! Real processes, real SQLite, real TLS on loopback: SIGKILL a receiver in the middle
//! of a stream, and a sender right after it accepted; nothing is lost or duplicated.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::collections::BTreeSet;

use support::*;

#[test]
fn receiver_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut pair = Pair::new();
    let mut sent = BTreeSet::new();
    for n in 0..300 {
        if n == 120 {
            pair.kill(1);
        }
        if n == 240 {
            pair.start(1);
        }
        sent.insert(pair.send(n));
    }
    pair.wait_for(&sent);
    // Once more after a second kill, for receipts that were lost in flight.
    pair.kill(1);
    pair.start(1);
    pair.wait_for(&sent);
}

#[test]
fn sender_killed_after_accepting_loses_nothing() {
    let mut pair = Pair::new();
    pair.kill(1);
    let mut sent = BTreeSet::new();
    for n in 0..200 {
        sent.insert(pair.send(n));
    }
    pair.kill(0);
    pair.start(1);
    pair.start(0);
    pair.wait_for(&sent);
}
