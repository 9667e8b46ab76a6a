//! Model-based property test: random sequences of outbox operations, checked
//! after every step against a plain model of the outbox, for both stores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cmp::Reverse;
use std::collections::BTreeMap;

use liaison_store::{MemoryStore, OutboxRow, SqliteStore, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        id: u8,
        peer: u8,
        precedence: u8,
        created_ms: i64,
    },
    InsertBatch {
        rows: Vec<(u8, u8, u8, i64)>,
    },
    Retry {
        id: u8,
        next_attempt_ms: i64,
    },
    Deliver {
        ids: Vec<u8>,
    },
    Bounce {
        id: u8,
    },
    Due {
        peer: u8,
        now_ms: i64,
        limit: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..16u8, 0..3u8, 0..=3u8, 0..100i64).prop_map(|(id, peer, precedence, created_ms)| {
            Op::Insert { id, peer, precedence, created_ms }
        }),
        1 => prop::collection::vec((0..16u8, 0..3u8, 0..=3u8, 0..100i64), 0..5)
            .prop_map(|rows| Op::InsertBatch { rows }),
        2 => (0..16u8, 0..200i64).prop_map(|(id, next_attempt_ms)| Op::Retry { id, next_attempt_ms }),
        1 => prop::collection::vec(0..16u8, 0..4).prop_map(|ids| Op::Deliver { ids }),
        1 => (0..16u8).prop_map(|id| Op::Bounce { id }),
        3 => (0..3u8, 0..200i64, 1..20u32).prop_map(|(peer, now_ms, limit)| Op::Due { peer, now_ms, limit }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Delivered,
    Bounced,
}

#[derive(Debug)]
struct Msg {
    peer: u8,
    precedence: u8,
    created_ms: i64,
    order: u64,
    state: State,
    next_attempt_ms: i64,
}

#[derive(Debug, Default)]
struct Model {
    msgs: BTreeMap<u8, Msg>,
    next_order: u64,
}

impl Model {
    fn due(&self, peer: u8, now_ms: i64, limit: u32) -> Vec<String> {
        let mut rows: Vec<(&u8, &Msg)> = self
            .msgs
            .iter()
            .filter(|(_, m)| {
                m.peer == peer && m.state == State::Queued && m.next_attempt_ms <= now_ms
            })
            .collect();
        rows.sort_by_key(|(_, m)| (Reverse(m.precedence), m.created_ms, m.order));
        rows.into_iter()
            .take(limit as usize)
            .map(|(id, _)| name(*id))
            .collect()
    }
}

fn name(id: u8) -> String {
    format!("env-{id}")
}

fn peer_name(peer: u8) -> String {
    format!("peer-{peer}")
}

async fn run<S: Store>(store: S, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Insert {
                id,
                peer,
                precedence,
                created_ms,
            } => {
                let row = OutboxRow::new_queued(
                    name(id),
                    peer_name(peer),
                    "a",
                    "b",
                    precedence,
                    created_ms,
                    "{}",
                );
                let fresh = store.outbox_insert(&row).await.unwrap();
                let expected = !model.msgs.contains_key(&id);
                prop_assert_eq!(fresh, expected);
                if expected {
                    model.msgs.insert(
                        id,
                        Msg {
                            peer,
                            precedence,
                            created_ms,
                            order: model.next_order,
                            state: State::Queued,
                            next_attempt_ms: created_ms,
                        },
                    );
                    model.next_order += 1;
                }
            }
            Op::InsertBatch { rows } => {
                let batch: Vec<OutboxRow> = rows
                    .iter()
                    .map(|(id, peer, precedence, created_ms)| {
                        OutboxRow::new_queued(
                            name(*id),
                            peer_name(*peer),
                            "a",
                            "b",
                            *precedence,
                            *created_ms,
                            "{}",
                        )
                    })
                    .collect();
                let fresh = store.outbox_insert_batch(&batch, &[]).await.unwrap();
                let expected: Vec<bool> = rows
                    .iter()
                    .map(|(id, peer, precedence, created_ms)| {
                        if model.msgs.contains_key(id) {
                            return false;
                        }
                        model.msgs.insert(
                            *id,
                            Msg {
                                peer: *peer,
                                precedence: *precedence,
                                created_ms: *created_ms,
                                order: model.next_order,
                                state: State::Queued,
                                next_attempt_ms: *created_ms,
                            },
                        );
                        model.next_order += 1;
                        true
                    })
                    .collect();
                prop_assert_eq!(fresh, expected);
            }
            Op::Retry {
                id,
                next_attempt_ms,
            } => {
                let applied = store
                    .outbox_retry(&name(id), 1, next_attempt_ms, "failed")
                    .await
                    .unwrap();
                let expected = match model.msgs.get_mut(&id) {
                    Some(m) if m.state == State::Queued => {
                        m.next_attempt_ms = next_attempt_ms;
                        true
                    }
                    _ => false,
                };
                prop_assert_eq!(applied, expected);
            }
            Op::Deliver { ids } => {
                let pairs: Vec<(String, String)> = ids
                    .iter()
                    .map(|id| (name(*id), format!("receipt-{id}")))
                    .collect();
                let changed = store.outbox_delivered(&pairs, 1_000, &[]).await.unwrap();
                let expected: Vec<bool> = ids
                    .iter()
                    .map(|id| match model.msgs.get_mut(id) {
                        Some(m) if m.state != State::Delivered => {
                            m.state = State::Delivered;
                            true
                        }
                        _ => false,
                    })
                    .collect();
                prop_assert_eq!(changed, expected);
            }
            Op::Bounce { id } => {
                let applied = store
                    .outbox_bounce(&name(id), "gave up", 1_000, &[])
                    .await
                    .unwrap();
                let expected = match model.msgs.get_mut(&id) {
                    Some(m) if m.state == State::Queued => {
                        m.state = State::Bounced;
                        true
                    }
                    _ => false,
                };
                prop_assert_eq!(applied, expected);
            }
            Op::Due {
                peer,
                now_ms,
                limit,
            } => {
                let got: Vec<String> = store
                    .outbox_due(&peer_name(peer), now_ms, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.envelope_id)
                    .collect();
                prop_assert_eq!(got, model.due(peer, now_ms, limit));

                let expected_next = model
                    .msgs
                    .values()
                    .filter(|m| m.peer == peer && m.state == State::Queued)
                    .map(|m| m.next_attempt_ms)
                    .min();
                prop_assert_eq!(
                    store.outbox_next_due_ms(&peer_name(peer)).await.unwrap(),
                    expected_next
                );
                let expected_peers: Vec<String> = (0..3u8)
                    .filter(|p| !model.due(*p, now_ms, 1).is_empty())
                    .map(peer_name)
                    .collect();
                prop_assert_eq!(
                    store.outbox_peers_with_due(now_ms).await.unwrap(),
                    expected_peers
                );
            }
        }
    }
    // Final full check for every peer at the end of time.
    for peer in 0..3u8 {
        let got: Vec<String> = store
            .outbox_due(&peer_name(peer), i64::MAX, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.envelope_id)
            .collect();
        prop_assert_eq!(got, model.due(peer, i64::MAX, 100));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn outbox_due_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { run(SqliteStore::open_in_memory().await.unwrap(), ops).await })?;
    }

    #[test]
    fn memory_outbox_due_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(MemoryStore::new(), ops))?;
    }
}
