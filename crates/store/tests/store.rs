//! Behaviour of the stores through the `Store` trait: the SQLite store, and the
//! in-memory store against the same expectations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;

use liaison_store::{
    AckOutcome, AgreementPut, InboxRow, OutboxRow, OutboxState, SqliteStore, Store, StoreError,
};

fn out(id: &str, peer: &str, precedence: u8, created_ms: i64) -> OutboxRow {
    OutboxRow::new_queued(
        id,
        peer,
        "desk-ops",
        "desk-cert",
        precedence,
        created_ms,
        format!(r#"{{"id":"{id}"}}"#),
    )
}

fn inb(id: &str, to_desk: &str, precedence: u8, received_ms: i64) -> InboxRow {
    InboxRow {
        seq: 0,
        envelope_id: id.to_owned(),
        from_desk: "desk-ops".to_owned(),
        to_desk: to_desk.to_owned(),
        sender_party: "mod".to_owned(),
        precedence,
        received_ms,
        envelope_json: format!(r#"{{"id":"{id}"}}"#),
        receiver_label: "RESTRICTED".to_owned(),
        body: format!("body of {id}"),
        acked_ms: None,
        acked_by: None,
        ack_receipt_json: None,
        escalated_ms: None,
    }
}

fn ids_out(rows: &[OutboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.envelope_id.as_str()).collect()
}

fn ids_in(rows: &[InboxRow]) -> Vec<&str> {
    rows.iter().map(|r| r.envelope_id.as_str()).collect()
}

async fn sqlite() -> SqliteStore {
    SqliteStore::open_in_memory().await.unwrap()
}

/// Runs each behaviour test, a generic `async fn(S)`, against both implementations:
/// the in-memory store is only useful to a simulation if it behaves as SQLite does.
macro_rules! against_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sqlite().await).await;
                }
            )*
        }
        mod memory_store {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(liaison_store::MemoryStore::new()).await;
                }
            )*
        }
    };
}

against_both!(
    outbox_insert_is_idempotent_by_envelope_id,
    outbox_batch_reports_duplicates_within_and_across_batches,
    large_batches_span_statements_and_keep_first_occurrence,
    inbox_batch_is_idempotent_including_inside_a_batch,
    settling_answers_what_is_held_and_refuses_the_rest_for_good,
    due_orders_flash_first_regardless_of_age_then_oldest_then_seq,
    retry_scheduling_excludes_rows_not_yet_due,
    due_rows_can_leave_out_what_is_on_the_wire,
    retries_of_a_batch_are_scheduled_together,
    bounced_and_delivered_rows_leave_the_due_set,
    outbox_list_pages_newest_first_and_filters_by_desk,
    outbox_ack_first_wins,
    inbox_ack_first_wins_and_queues_the_ack_back_to_the_sender,
    inbox_list_orders_by_precedence_then_newest_and_pages,
    inbox_unacked_and_escalation_marks,
    agreement_version_rules,
    peers_and_meta_replace_values,
    bad_input_is_rejected_with_a_clear_error_and_writes_nothing,
);

// ----- idempotency ------------------------------------------------------

async fn outbox_insert_is_idempotent_by_envelope_id<S: Store>(s: S) {
    assert!(s.outbox_insert(&out("e1", "cert", 1, 10)).await.unwrap());
    let first = s.outbox_get("e1").await.unwrap().unwrap();

    let mut again = out("e1", "other-peer", 3, 99);
    again.envelope_json = "different".to_owned();
    assert!(!s.outbox_insert(&again).await.unwrap());
    assert_eq!(s.outbox_get("e1").await.unwrap().unwrap(), first);
    assert_eq!(s.outbox_list(None, 100, None).await.unwrap().len(), 1);
}

async fn outbox_batch_reports_duplicates_within_and_across_batches<S: Store>(s: S) {
    let mut dup = out("a", "cert", 3, 3);
    dup.envelope_json = "second copy".to_owned();
    let fresh = s
        .outbox_insert_batch(&[out("a", "cert", 0, 1), out("b", "cert", 0, 2), dup], &[])
        .await
        .unwrap();
    assert_eq!(fresh, [true, true, false]);
    assert_eq!(s.outbox_get("a").await.unwrap().unwrap().precedence, 0);
    let fresh = s
        .outbox_insert_batch(&[out("b", "cert", 0, 2), out("c", "cert", 0, 4)], &[])
        .await
        .unwrap();
    assert_eq!(fresh, [false, true]);
    assert_eq!(
        s.outbox_insert_batch(&[], &[]).await.unwrap(),
        Vec::<bool>::new()
    );
}

async fn large_batches_span_statements_and_keep_first_occurrence<S: Store>(s: S) {
    // 1,200 rows: more than one multi-row statement; "e0" repeats at 700.
    let mut rows: Vec<OutboxRow> = (0..1_200)
        .map(|i| out(&format!("e{i}"), "cert", 0, i))
        .collect();
    rows[700] = out("e0", "cert", 3, 9_999);
    let fresh = s.outbox_insert_batch(&rows, &[]).await.unwrap();
    assert_eq!(fresh.iter().filter(|f| **f).count(), 1_199);
    assert!(!fresh[700]);
    assert_eq!(s.outbox_get("e0").await.unwrap().unwrap().precedence, 0);
    let receipts: Vec<(String, String)> = (0..1_100)
        .map(|i| (format!("e{}", i % 1_000), format!("r{i}")))
        .collect();
    let changed = s.outbox_delivered(&receipts, 5, &[]).await.unwrap();
    assert_eq!(
        changed.iter().filter(|c| **c).count(),
        999,
        "e700 was never inserted"
    );
    assert!(!changed[1_000], "repeat of e0 in the same call");
    assert_eq!(
        s.outbox_get("e0")
            .await
            .unwrap()
            .unwrap()
            .receipt_json
            .as_deref(),
        Some("r0")
    );
    assert_eq!(
        s.outbox_due("cert", i64::MAX, 1_000).await.unwrap().len(),
        200
    );
}

async fn inbox_batch_is_idempotent_including_inside_a_batch<S: Store>(s: S) {
    let mut dup = inb("x", "cert", 3, 50);
    dup.body = "tampered".to_owned();
    let fresh = s
        .inbox_insert_batch(
            &[inb("x", "cert", 1, 10), inb("y", "cert", 1, 11), dup],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(fresh, [true, true, false]);
    let fresh = s
        .inbox_insert_batch(&[inb("x", "cert", 1, 10), inb("z", "cert", 1, 12)], &[])
        .await
        .unwrap();
    assert_eq!(fresh, [false, true]);
    assert_eq!(s.inbox_count().await.unwrap(), 3);
    let x = s.inbox_get("x").await.unwrap().unwrap();
    assert_eq!(x.body, "body of x");
    assert_eq!(x.precedence, 1);
    assert!(s.inbox_get("nope").await.unwrap().is_none());
}

async fn settling_answers_what_is_held_and_refuses_the_rest_for_good<S: Store>(s: S) {
    s.inbox_insert_batch(&[inb("held", "cert", 1, 10)], &[])
        .await
        .unwrap();
    let ids: Vec<String> = ["held", "lost", "held"].map(String::from).to_vec();
    let answers = s
        .inbox_settle("mod", &ids, 20, "never arrived", &[])
        .await
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(
        answers[0].as_ref().map(|r| r.body.as_str()),
        Some("body of held")
    );
    assert!(answers[1].is_none());
    assert!(answers[2].is_some());
    // A copy of the refused envelope still in flight never lands, alone or in a batch;
    // it takes no sequence number (SQLite's trigger skips it before AUTOINCREMENT).
    let fresh = s
        .inbox_insert_batch(
            &[inb("lost", "cert", 3, 30), inb("next", "cert", 1, 31)],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(fresh, [false, true]);
    assert!(s.inbox_get("lost").await.unwrap().is_none());
    assert_eq!(s.inbox_get("next").await.unwrap().unwrap().seq, 2);
    // Asking again gives the same answers.
    let again = s
        .inbox_settle("mod", &ids, 40, "asked again", &[])
        .await
        .unwrap();
    assert_eq!(
        again.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false, true]
    );
    // Held from another sender: not answered as held, and not refused either.
    let other = s
        .inbox_settle("someone-else", &["next".to_owned()], 50, "x", &[])
        .await
        .unwrap();
    assert!(other[0].is_none());
    assert!(s.inbox_get("next").await.unwrap().is_some());
}

// ----- outbox scheduling -----------------------------------------------

async fn due_orders_flash_first_regardless_of_age_then_oldest_then_seq<S: Store>(s: S) {
    s.outbox_insert_batch(
        &[
            out("routine-old", "cert", 0, 1),
            out("priority", "cert", 1, 5),
            out("flash-new", "cert", 3, 100),
            out("immediate", "cert", 2, 50),
            out("flash-old", "cert", 3, 20),
            out("routine-new", "cert", 0, 60),
            // Same precedence and age: insertion order decides.
            out("tie-1", "cert", 1, 7),
            out("tie-2", "cert", 1, 7),
            out("other-peer", "mod", 3, 0),
        ],
        &[],
    )
    .await
    .unwrap();
    let due = s.outbox_due("cert", 1_000, 100).await.unwrap();
    assert_eq!(
        ids_out(&due),
        [
            "flash-old",
            "flash-new",
            "immediate",
            "priority",
            "tie-1",
            "tie-2",
            "routine-old",
            "routine-new"
        ]
    );
    let due = s.outbox_due("cert", 1_000, 2).await.unwrap();
    assert_eq!(ids_out(&due), ["flash-old", "flash-new"]);
    // A limit of 0 is treated as 1.
    assert_eq!(s.outbox_due("cert", 1_000, 0).await.unwrap().len(), 1);
    // Rows created in the future are not due yet.
    let due = s.outbox_due("cert", 10, 100).await.unwrap();
    assert_eq!(ids_out(&due), ["priority", "tie-1", "tie-2", "routine-old"]);
}

async fn retry_scheduling_excludes_rows_not_yet_due<S: Store>(s: S) {
    s.outbox_insert_batch(&[out("a", "cert", 3, 1), out("b", "cert", 0, 2)], &[])
        .await
        .unwrap();
    assert!(
        s.outbox_retry("a", 1, 500, "connection refused")
            .await
            .unwrap()
    );
    assert_eq!(
        ids_out(&s.outbox_due("cert", 100, 10).await.unwrap()),
        ["b"]
    );
    assert_eq!(s.outbox_next_due_ms("cert").await.unwrap(), Some(2));
    assert_eq!(
        ids_out(&s.outbox_due("cert", 500, 10).await.unwrap()),
        ["a", "b"]
    );
    let a = s.outbox_get("a").await.unwrap().unwrap();
    assert_eq!(a.attempts, 1);
    assert_eq!(a.next_attempt_ms, 500);
    assert_eq!(a.last_error.as_deref(), Some("connection refused"));
    assert_eq!(a.state, OutboxState::Queued);

    assert!(s.outbox_retry("b", 1, 700, "timeout").await.unwrap());
    assert_eq!(s.outbox_next_due_ms("cert").await.unwrap(), Some(500));
    assert!(s.outbox_due("cert", 499, 10).await.unwrap().is_empty());
    assert_eq!(
        s.outbox_peers_with_due(499).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(s.outbox_peers_with_due(500).await.unwrap(), ["cert"]);
    assert!(!s.outbox_retry("unknown", 1, 1, "x").await.unwrap());
    assert_eq!(s.outbox_next_due_ms("nobody").await.unwrap(), None);
}

async fn due_rows_can_leave_out_what_is_on_the_wire<S: Store>(s: S) {
    s.outbox_insert_batch(
        &[
            out("a", "cert", 3, 1),
            out("b", "cert", 0, 2),
            out("c", "cert", 0, 3),
            out("d", "cert", 2, 4),
        ],
        &[],
    )
    .await
    .unwrap();
    let all = s.outbox_due_range("cert", 100, 10, 0, 3).await.unwrap();
    assert_eq!(ids_out(&all), ["a", "d", "b", "c"]);
    let seq = |id: &str| all.iter().find(|r| r.envelope_id == id).unwrap().seq;
    let due = s
        .outbox_due_range_excluding("cert", 100, 10, 0, 3, &[seq("a"), seq("b")])
        .await
        .unwrap();
    assert_eq!(ids_out(&due), ["d", "c"]);
    let due = s
        .outbox_due_range_excluding("cert", 100, 1, 0, 1, &[seq("b")])
        .await
        .unwrap();
    assert_eq!(ids_out(&due), ["c"]);
    let due = s
        .outbox_due_range_excluding("cert", 100, 10, 0, 3, &[])
        .await
        .unwrap();
    assert_eq!(ids_out(&due), ["a", "d", "b", "c"]);
}

async fn retries_of_a_batch_are_scheduled_together<S: Store>(s: S) {
    s.outbox_insert_batch(
        &[
            out("a", "cert", 3, 1),
            out("b", "cert", 0, 2),
            out("c", "cert", 0, 3),
        ],
        &[],
    )
    .await
    .unwrap();
    s.outbox_bounce("c", "gone", 5, &[]).await.unwrap();
    let changed = s
        .outbox_retry_batch(
            &[
                ("a".to_owned(), 1, 500),
                ("b".to_owned(), 2, 700),
                ("c".to_owned(), 1, 1),
                ("unknown".to_owned(), 1, 1),
            ],
            "peer down",
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);
    assert!(s.outbox_due("cert", 499, 10).await.unwrap().is_empty());
    let a = s.outbox_get("a").await.unwrap().unwrap();
    assert_eq!((a.attempts, a.next_attempt_ms), (1, 500));
    assert_eq!(a.last_error.as_deref(), Some("peer down"));
    let b = s.outbox_get("b").await.unwrap().unwrap();
    assert_eq!((b.attempts, b.next_attempt_ms), (2, 700));
    let c = s.outbox_get("c").await.unwrap().unwrap();
    assert_eq!(c.state, OutboxState::Bounced);
    assert_eq!(s.outbox_retry_batch(&[], "x").await.unwrap(), 0);
}

async fn bounced_and_delivered_rows_leave_the_due_set<S: Store>(s: S) {
    s.outbox_insert_batch(
        &[
            out("a", "cert", 1, 1),
            out("b", "cert", 1, 2),
            out("c", "cert", 1, 3),
            out("d", "mod", 1, 4),
        ],
        &[],
    )
    .await
    .unwrap();
    assert!(
        s.outbox_bounce("a", "rejected by agreement", 10, &[])
            .await
            .unwrap()
    );
    let changed = s
        .outbox_delivered(
            &[
                ("b".to_owned(), "receipt-b".to_owned()),
                ("missing".to_owned(), "r".to_owned()),
                ("b".to_owned(), "receipt-b-2".to_owned()),
            ],
            20,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, [true, false, false]);
    assert_eq!(
        ids_out(&s.outbox_due("cert", 100, 10).await.unwrap()),
        ["c"]
    );
    assert_eq!(s.outbox_peers_with_due(100).await.unwrap(), ["cert", "mod"]);

    let a = s.outbox_get("a").await.unwrap().unwrap();
    assert_eq!(a.state, OutboxState::Bounced);
    assert_eq!(a.bounce_reason.as_deref(), Some("rejected by agreement"));
    assert_eq!(a.bounced_ms, Some(10));
    // Bounced and delivered rows cannot be retried or bounced again.
    assert!(!s.outbox_retry("a", 2, 0, "x").await.unwrap());
    assert!(!s.outbox_bounce("b", "late", 30, &[]).await.unwrap());

    let b = s.outbox_get("b").await.unwrap().unwrap();
    assert_eq!(b.state, OutboxState::Delivered);
    assert_eq!(
        b.receipt_json.as_deref(),
        Some("receipt-b"),
        "first receipt kept"
    );
    assert_eq!(b.delivered_ms, Some(20));

    // A late receipt for a bounced message is proof of delivery.
    assert_eq!(
        s.outbox_delivered(&[("a".to_owned(), "receipt-a".to_owned())], 40, &[])
            .await
            .unwrap(),
        [true]
    );
    let a = s.outbox_get("a").await.unwrap().unwrap();
    assert_eq!(a.state, OutboxState::Delivered);
    assert_eq!(a.bounce_reason.as_deref(), Some("rejected by agreement"));

    let depth = s.outbox_depth().await.unwrap();
    let depth: Vec<_> = depth
        .iter()
        .map(|d| (d.peer.as_str(), d.precedence, d.count))
        .collect();
    assert_eq!(depth, [("cert", 1, 1), ("mod", 1, 1)]);
}

async fn outbox_list_pages_newest_first_and_filters_by_desk<S: Store>(s: S) {
    let mut rows: Vec<OutboxRow> = (0..5)
        .map(|i| out(&format!("e{i}"), "cert", 0, i))
        .collect();
    if let Some(r) = rows.get_mut(2) {
        r.from_desk = "desk-legal".to_owned();
    }
    s.outbox_insert_batch(&rows, &[]).await.unwrap();
    let page = s.outbox_list(None, 2, None).await.unwrap();
    assert_eq!(ids_out(&page), ["e4", "e3"]);
    let page = s.outbox_list(None, 2, Some(page[1].seq)).await.unwrap();
    assert_eq!(ids_out(&page), ["e2", "e1"]);
    let page = s.outbox_list(Some("desk-ops"), 10, None).await.unwrap();
    assert_eq!(ids_out(&page), ["e4", "e3", "e1", "e0"]);
    let page = s.outbox_list(Some("desk-legal"), 10, None).await.unwrap();
    assert_eq!(ids_out(&page), ["e2"]);
}

async fn outbox_ack_first_wins<S: Store>(s: S) {
    s.outbox_insert(&out("a", "cert", 3, 1)).await.unwrap();
    assert!(s.outbox_set_acked("a", "ack-1", 5, &[]).await.unwrap());
    assert!(!s.outbox_set_acked("a", "ack-2", 6, &[]).await.unwrap());
    assert!(!s.outbox_set_acked("unknown", "ack", 6, &[]).await.unwrap());
    let a = s.outbox_get("a").await.unwrap().unwrap();
    assert_eq!(a.acked_receipt_json.as_deref(), Some("ack-1"));
    assert_eq!(a.acked_ms, Some(5));
}

// ----- inbox ------------------------------------------------------------

async fn inbox_ack_first_wins_and_queues_the_ack_back_to_the_sender<S: Store>(s: S) {
    s.inbox_insert_batch(&[inb("m1", "cert", 3, 10), inb("m2", "cert", 3, 11)], &[])
        .await
        .unwrap();
    assert_eq!(
        s.inbox_ack("m1", "alice", 100, "ack-by-alice", &[])
            .await
            .unwrap(),
        AckOutcome::Acked
    );
    assert_eq!(
        s.inbox_ack("m1", "bob", 200, "ack-by-bob", &[])
            .await
            .unwrap(),
        AckOutcome::AlreadyAcked {
            acked_ms: 100,
            acked_by: "alice".to_owned(),
            ack_receipt_json: "ack-by-alice".to_owned(),
        }
    );
    let m1 = s.inbox_get("m1").await.unwrap().unwrap();
    assert_eq!(m1.acked_by.as_deref(), Some("alice"));
    assert_eq!(m1.ack_receipt_json.as_deref(), Some("ack-by-alice"));

    let pending = s.ack_outbox_due("mod", 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].envelope_id, "m1");
    assert_eq!(pending[0].ack_receipt_json, "ack-by-alice");
    // Queuing again is a no-op; queuing for a message not in the inbox is refused.
    assert!(!s.ack_outbox_insert("m1", "mod", "x").await.unwrap());
    let err = s.ack_outbox_insert("ghost", "mod", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert_eq!(
        s.ack_outbox_done(&["m1".to_owned(), "m2".to_owned()])
            .await
            .unwrap(),
        1
    );
    assert!(s.ack_outbox_due("mod", 10).await.unwrap().is_empty());

    let err = s
        .inbox_ack("ghost", "alice", 1, "a", &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "inbox message `ghost` not found in store");
}

async fn inbox_list_orders_by_precedence_then_newest_and_pages<S: Store>(s: S) {
    s.inbox_insert_batch(
        &[
            inb("r-old", "cert", 0, 1),
            inb("f-old", "cert", 3, 2),
            inb("r-new", "cert", 0, 30),
            inb("f-new", "cert", 3, 20),
            inb("p", "cert", 1, 25),
            inb("elsewhere", "legal", 3, 99),
        ],
        &[],
    )
    .await
    .unwrap();
    let all = s.inbox_list("cert", 100, None).await.unwrap();
    assert_eq!(ids_in(&all), ["f-new", "f-old", "p", "r-new", "r-old"]);
    let first = s.inbox_list("cert", 2, None).await.unwrap();
    assert_eq!(ids_in(&first), ["f-new", "f-old"]);
    let next = s
        .inbox_list("cert", 2, Some(first[1].cursor()))
        .await
        .unwrap();
    assert_eq!(ids_in(&next), ["p", "r-new"]);
    let last = s
        .inbox_list("cert", 2, Some(next[1].cursor()))
        .await
        .unwrap();
    assert_eq!(ids_in(&last), ["r-old"]);
}

async fn inbox_unacked_and_escalation_marks<S: Store>(s: S) {
    s.inbox_insert_batch(
        &[
            inb("f1", "cert", 3, 5),
            inb("f2", "cert", 3, 1),
            inb("i1", "cert", 2, 0),
            inb("r1", "cert", 0, 0),
        ],
        &[],
    )
    .await
    .unwrap();
    s.inbox_ack("f2", "alice", 10, "ack", &[]).await.unwrap();
    assert_eq!(ids_in(&s.inbox_unacked(3).await.unwrap()), ["f1"]);
    assert_eq!(ids_in(&s.inbox_unacked(2).await.unwrap()), ["f1", "i1"]);
    assert_eq!(s.inbox_unacked(0).await.unwrap().len(), 3);
    assert!(s.inbox_mark_escalated("f1", 50).await.unwrap());
    assert!(!s.inbox_mark_escalated("f1", 60).await.unwrap());
    assert_eq!(
        s.inbox_get("f1").await.unwrap().unwrap().escalated_ms,
        Some(50)
    );
    let seq = s
        .escalation_insert("f1", 50, "FLASH not acknowledged within 10 min", &[])
        .await
        .unwrap();
    let list = s.escalation_list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].seq, seq);
    assert_eq!(list[0].reason, "FLASH not acknowledged within 10 min");
}

// ----- agreements, peers, meta -----------------------------------------

async fn agreement_version_rules<S: Store>(s: S) {
    assert_eq!(
        s.agreement_put("ag", 1, "v1", "d1", 10, &[]).await.unwrap(),
        AgreementPut::Installed
    );
    assert_eq!(
        s.agreement_put("ag", 1, "v1", "d1", 11, &[]).await.unwrap(),
        AgreementPut::Unchanged
    );
    let err = s
        .agreement_put("ag", 1, "v1 edited", "dX", 12, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("version 1"), "{err}");
    assert_eq!(
        s.agreement_put("ag", 2, "v2", "d2", 13, &[]).await.unwrap(),
        AgreementPut::Replaced {
            previous_version: 1
        }
    );
    assert_eq!(
        s.agreement_put("ag", 1, "v1", "d1", 14, &[]).await.unwrap(),
        AgreementPut::KeptNewer {
            installed_version: 2
        }
    );
    s.agreement_put("other", 7, "o", "do", 15, &[])
        .await
        .unwrap();
    let list = s.agreement_list().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].id.as_str(), list[0].version), ("ag", 2));
    assert_eq!(list[0].text, "v2");
    assert_eq!(list[0].installed_ms, 13);
    assert_eq!(s.agreement_get("other").await.unwrap().unwrap().version, 7);
    assert!(s.agreement_get("none").await.unwrap().is_none());
}

async fn peers_and_meta_replace_values<S: Store>(s: S) {
    s.peer_put("cert", r#"{"link":"up"}"#).await.unwrap();
    s.peer_put("cert", r#"{"link":"down"}"#).await.unwrap();
    s.peer_put("mod", "{}").await.unwrap();
    assert_eq!(
        s.peer_get("cert").await.unwrap().as_deref(),
        Some(r#"{"link":"down"}"#)
    );
    assert_eq!(s.peer_get("x").await.unwrap(), None);
    assert_eq!(
        s.peer_list().await.unwrap(),
        [
            ("cert".to_owned(), r#"{"link":"down"}"#.to_owned()),
            ("mod".to_owned(), "{}".to_owned())
        ]
    );
    assert_eq!(s.meta_get("k").await.unwrap(), None);
    s.meta_put("k", "1").await.unwrap();
    s.meta_put("k", "2").await.unwrap();
    assert_eq!(s.meta_get("k").await.unwrap().as_deref(), Some("2"));
}

// ----- bad input --------------------------------------------------------

async fn bad_input_is_rejected_with_a_clear_error_and_writes_nothing<S: Store>(s: S) {
    s.outbox_insert(&out("keep", "cert", 1, 1)).await.unwrap();

    let err = s.outbox_insert(&out("p9", "cert", 9, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("precedence must be 0 (ROUTINE) to 3 (FLASH)"),
        "{err}"
    );
    assert!(!err.is_storage_unavailable());

    let err = s.outbox_insert(&out("", "cert", 1, 1)).await.unwrap_err();
    assert!(
        err.to_string().contains("envelope id must not be empty"),
        "{err}"
    );

    // One bad row spoils the whole batch: nothing of it is stored.
    let err = s
        .outbox_insert_batch(&[out("good", "cert", 1, 1), out("bad", "cert", 4, 1)], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    assert!(s.outbox_get("good").await.unwrap().is_none());

    let err = s
        .inbox_insert_batch(&[inb("ok", "cert", 1, 1), inb("", "cert", 1, 1)], &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("envelope id must not be empty"),
        "{err}"
    );
    let err = s
        .inbox_insert_batch(&[inb("hi", "cert", 200, 1)], &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("precedence"), "{err}");
    assert_eq!(s.inbox_count().await.unwrap(), 0);

    // A row claiming to be delivered without a receipt is refused too.
    let mut liar = out("liar", "cert", 1, 1);
    liar.state = OutboxState::Delivered;
    assert!(matches!(
        s.outbox_insert(&liar).await.unwrap_err(),
        StoreError::InvalidInput { .. }
    ));

    let err = s.agreement_put("", 1, "t", "d", 1, &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");

    // What was there before is untouched.
    assert_eq!(s.outbox_list(None, 10, None).await.unwrap().len(), 1);
    assert!(s.outbox_get("keep").await.unwrap().is_some());
}

// ----- files: durability, migrations, read-only -------------------------

async fn write_everything<S: Store>(s: &S) {
    s.outbox_insert(&out("o1", "cert", 3, 1)).await.unwrap();
    s.outbox_delivered(&[("o1".to_owned(), "rcpt".to_owned())], 2, &[])
        .await
        .unwrap();
    s.outbox_insert(&out("o2", "cert", 0, 3)).await.unwrap();
    s.inbox_insert_batch(&[inb("i1", "cert", 2, 4)], &[])
        .await
        .unwrap();
    s.inbox_ack("i1", "alice", 5, "ack", &[]).await.unwrap();
    s.agreement_put("ag", 1, "text", "digest", 6, &[])
        .await
        .unwrap();
    s.peer_put("cert", "{}").await.unwrap();
    s.escalation_insert("i1", 7, "late", &[]).await.unwrap();
    s.meta_put("node", "mod").await.unwrap();
}

async fn check_everything<S: Store>(s: &S) {
    let o1 = s.outbox_get("o1").await.unwrap().unwrap();
    assert_eq!(o1.state, OutboxState::Delivered);
    assert_eq!(o1.receipt_json.as_deref(), Some("rcpt"));
    assert_eq!(
        ids_out(&s.outbox_due("cert", 100, 10).await.unwrap()),
        ["o2"]
    );
    assert_eq!(
        s.inbox_get("i1")
            .await
            .unwrap()
            .unwrap()
            .acked_by
            .as_deref(),
        Some("alice")
    );
    assert_eq!(s.ack_outbox_due("mod", 10).await.unwrap().len(), 1);
    assert_eq!(s.agreement_list().await.unwrap().len(), 1);
    assert_eq!(s.peer_get("cert").await.unwrap().as_deref(), Some("{}"));
    assert_eq!(s.escalation_list().await.unwrap().len(), 1);
    assert_eq!(s.meta_get("node").await.unwrap().as_deref(), Some("mod"));
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        write_everything(&s).await;
        // Dropped without close(): committed data must not depend on a clean shutdown.
    }
    for _ in 0..3 {
        let s = SqliteStore::open(&path).await.unwrap();
        check_everything(&s).await;
        s.close().await;
    }
    // Writing after a reopen still works and ids keep their uniqueness.
    let s = SqliteStore::open(&path).await.unwrap();
    assert!(!s.outbox_insert(&out("o2", "cert", 0, 3)).await.unwrap());
    assert!(s.outbox_insert(&out("o3", "cert", 0, 3)).await.unwrap());
    s.close().await;
}

#[tokio::test]
async fn open_creates_missing_file_but_reports_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    assert!(!path.exists());
    let s = SqliteStore::open(&path).await.unwrap();
    assert!(path.exists());
    s.close().await;

    let bad = dir.path().join("no/such/dir/node.db");
    let err = SqliteStore::open(&bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.is_storage_unavailable());
    assert!(err.to_string().contains("no/such/dir/node.db"), "{err}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn read_only_store_refuses_writes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("data");
    std::fs::create_dir(&db_dir).unwrap();
    let path = db_dir.join("node.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        write_everything(&s).await;
        s.close().await;
    }

    set_mode(&path, 0o444);
    set_mode(&db_dir, 0o555);
    // Root ignores permission bits; only then is the chmod half skipped.
    let privileged = std::fs::File::create(db_dir.join("probe")).is_ok();
    if privileged {
        eprintln!("running with privileges: chmod does not stop writes, using mode=ro only");
    } else {
        match SqliteStore::open(&path).await {
            Err(err) => assert!(err.is_storage_unavailable(), "{err:?}"),
            Ok(s) => {
                let err = s.meta_put("k", "v").await.unwrap_err();
                assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
            }
        }
    }

    match SqliteStore::open_read_only(&path).await {
        Ok(ro) => {
            check_everything(&ro).await;
            let err = ro
                .outbox_insert(&out("new", "cert", 1, 1))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
            assert!(err.is_storage_unavailable());
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("store at `{}` is read-only: ", path.display())),
                "{msg}"
            );
            let err = ro
                .inbox_insert_batch(&[inb("new", "cert", 1, 1)], &[])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
            let err = ro.inbox_ack("i1", "bob", 9, "x", &[]).await.unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
            let err = ro
                .outbox_delivered(&[("o2".to_owned(), "r".to_owned())], 9, &[])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
            check_everything(&ro).await;
            ro.close().await;
        }
        // Without privileges a WAL database in a read-only directory may not
        // even open read-only; that must still be a storage error.
        Err(err) => {
            assert!(!privileged, "{err:?}");
            assert!(err.is_storage_unavailable(), "{err:?}");
        }
    }

    set_mode(&db_dir, 0o755);
    set_mode(&path, 0o644);
    let s = SqliteStore::open(&path).await.unwrap();
    check_everything(&s).await;
    assert!(s.outbox_get("new").await.unwrap().is_none());
    assert!(s.outbox_insert(&out("new", "cert", 1, 1)).await.unwrap());
    s.close().await;
}

// ----- concurrency ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_do_not_trip_over_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("node.db"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let id = format!("t{t}-{i}");
                assert!(
                    s.outbox_insert(&out(&id, "cert", (i % 4) as u8, i))
                        .await
                        .unwrap()
                );
                s.outbox_due("cert", 1_000, 10).await.unwrap();
                s.inbox_insert_batch(&[inb(&id, "cert", 0, i)], &[])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.outbox_list(None, 1_000, None).await.unwrap().len(), 200);
    assert_eq!(s.inbox_count().await.unwrap(), 200);
    s.close().await;
}

// ----- the in-memory store's simulation hooks ----------------------------

#[tokio::test]
async fn memory_store_keeps_what_was_durable_across_a_crash() {
    use liaison_store::MemoryStore;
    let s = MemoryStore::new();
    write_everything(&s).await;
    // The crash image: everything reported done is in it.
    let restarted = s.fork().unwrap();
    check_everything(&restarted).await;
    assert!(restarted.same_durable_state(&s).unwrap());
    // The two go their own ways afterwards; ids keep their uniqueness.
    assert!(s.outbox_insert(&out("o3", "cert", 0, 3)).await.unwrap());
    assert!(restarted.outbox_get("o3").await.unwrap().is_none());
    assert!(
        !restarted
            .outbox_insert(&out("o2", "cert", 0, 3))
            .await
            .unwrap()
    );
    assert!(!restarted.same_durable_state(&s).unwrap());
    // A closed store refuses work, as SQLite's closed pools do; its data survives.
    s.close().await;
    assert!(s.outbox_get("o1").await.is_err());
    assert!(s.fork().unwrap().outbox_get("o3").await.unwrap().is_some());
}

#[tokio::test]
async fn an_injected_write_fault_changes_nothing_and_reads_go_on() {
    use liaison_store::{MemoryStore, WriteFault};
    let s = MemoryStore::new();
    write_everything(&s).await;
    s.audit_append(&[b"before".to_vec()]).await.unwrap();
    let before = s.fork().unwrap();
    let head = s.audit_head().await.unwrap();

    s.set_fail_writes(Some(WriteFault::DiskFull)).unwrap();
    let entry = vec![b"during".to_vec()];
    let results = [
        s.outbox_insert(&out("new", "cert", 1, 1)).await.err(),
        s.outbox_insert_batch(&[out("new", "cert", 1, 1)], &entry)
            .await
            .err(),
        s.outbox_delivered(&[("o2".to_owned(), "r".to_owned())], 9, &entry)
            .await
            .err(),
        s.outbox_bounce("o2", "no", 9, &entry).await.err(),
        s.outbox_lease(&["o2".to_owned()], 99).await.err(),
        s.outbox_retry("o2", 1, 99, "x").await.err(),
        s.inbox_insert_batch(&[inb("new", "cert", 1, 1)], &entry)
            .await
            .err(),
        s.inbox_ack("i1", "bob", 9, "x", &entry).await.err(),
        s.agreement_put("ag", 2, "newer", "d2", 9, &entry)
            .await
            .err(),
        s.escalation_insert("i1", 9, "again", &entry).await.err(),
        s.audit_append(&entry).await.err(),
        s.meta_put("node", "other").await.err(),
        s.peer_put("cert", "changed").await.err(),
        s.ack_outbox_done(&["i1".to_owned()]).await.err(),
    ];
    for err in &results {
        let err = err.as_ref().expect("every write fails");
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
        assert!(err.is_storage_unavailable());
    }
    // Reads still answer, from the state as it was.
    check_everything(&s).await;
    assert_eq!(s.audit_head().await.unwrap(), head);
    assert!(s.same_durable_state(&before).unwrap());
    let counts = s.counts().unwrap();
    assert_eq!(counts.faulted, results.len() as u64);

    // The volume is freed: writes work again, with their audit entries.
    s.set_fail_writes(None).unwrap();
    assert!(s.outbox_insert(&out("new", "cert", 1, 1)).await.unwrap());
    assert_eq!(s.audit_append(&entry).await.unwrap(), head.0 + 1);
}

#[tokio::test]
async fn a_write_fault_can_start_after_a_number_of_writes() {
    use liaison_store::{MemoryStore, WriteFault};
    let s = MemoryStore::new();
    s.fail_writes_after(2, WriteFault::ReadOnly).unwrap();
    assert!(s.outbox_insert(&out("a", "cert", 1, 1)).await.unwrap());
    s.meta_put("k", "v").await.unwrap();
    let err = s.outbox_insert(&out("b", "cert", 1, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(s.outbox_get("b").await.unwrap().is_none());
    let counts = s.counts().unwrap();
    assert_eq!((counts.commits, counts.faulted, counts.reads), (2, 1, 1));
    assert_eq!(counts.calls.get("outbox_commit"), Some(&2));
    // A rejected write counts as such, not as a commit.
    s.set_fail_writes(None).unwrap();
    assert!(s.outbox_insert(&out("", "cert", 1, 1)).await.is_err());
    assert_eq!(s.counts().unwrap().rejected, 1);
}

#[tokio::test]
async fn memory_store_lane_methods() {
    use liaison_store::MemoryStore;
    let s = MemoryStore::new();
    for (i, p) in [3u8, 0, 3, 1].into_iter().enumerate() {
        let i = i as i64;
        s.outbox_insert(&out(&format!("e{i}"), "cert", p, i))
            .await
            .unwrap();
    }
    let due = s.outbox_due_range("cert", 10, 10, 1, 3).await.unwrap();
    assert_eq!(ids_out(&due), ["e0", "e2", "e3"]);
    let skip: Vec<i64> = due.iter().take(1).map(|r| r.seq).collect();
    let rest = s
        .outbox_due_range_excluding("cert", 10, 10, 1, 3, &skip)
        .await
        .unwrap();
    assert_eq!(ids_out(&rest), ["e2", "e3"]);

    s.outbox_delivered(&[("e3".to_owned(), "r".to_owned())], 5, &[])
        .await
        .unwrap();
    let retries = [
        ("e0".to_owned(), 1, 50),
        ("e3".to_owned(), 1, 50), // delivered: unchanged
        ("nope".to_owned(), 1, 50),
        ("e1".to_owned(), 2, 60),
    ];
    assert_eq!(s.outbox_retry_batch(&retries, "timeout").await.unwrap(), 2);
    let e0 = s.outbox_get("e0").await.unwrap().unwrap();
    assert_eq!(
        (e0.attempts, e0.next_attempt_ms, e0.last_error.as_deref()),
        (1, 50, Some("timeout"))
    );
    assert_eq!(
        ids_out(&s.outbox_due("cert", 10, 10).await.unwrap()),
        ["e2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_serialises_concurrent_callers() {
    let s = liaison_store::MemoryStore::new();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let id = format!("t{t}-{i}");
                assert!(
                    s.outbox_insert(&out(&id, "cert", (i % 4) as u8, i))
                        .await
                        .unwrap()
                );
                s.outbox_due("cert", 1_000, 10).await.unwrap();
                s.inbox_insert_batch(&[inb(&id, "cert", 0, i)], &[b"in".to_vec()])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.outbox_list(None, 1_000, None).await.unwrap();
    assert_eq!(all.len(), 200);
    // Sequence numbers are dense and unique: every insert was one whole commit.
    let mut seqs: Vec<i64> = all.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());
    assert_eq!(s.inbox_count().await.unwrap(), 200);
    assert_eq!(s.audit_head().await.unwrap().0, 200);
}

/// Commits leave checkpointing to the store's checkpointer: shortly after a burst of
/// writes every WAL frame is in the database file, although no commit did it (the
/// backstop is far above what the burst wrote).
#[tokio::test]
async fn the_wal_is_checkpointed_off_the_commit_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = SqliteStore::open(&path).await.unwrap();
    for chunk in 0..20 {
        let rows: Vec<OutboxRow> = (0..100)
            .map(|i| out(&format!("m{chunk}-{i}"), "peer", 1, i))
            .collect();
        s.outbox_insert_batch(&rows, &[]).await.unwrap();
    }
    let wal = dir.path().join("store.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    // The checkpointer runs every 100 ms.
    let mut caught_up = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let reader = SqliteStore::open_read_only(&path).await.unwrap();
        let n = reader.outbox_list(None, 10_000, None).await.unwrap().len();
        reader.close().await;
        assert_eq!(n, 2_000);
        let db_len = std::fs::metadata(&path).unwrap().len();
        // 2,000 rows of ~200 bytes cannot fit in the pages the schema alone needs.
        if db_len > 300_000 {
            caught_up = true;
            break;
        }
    }
    assert!(
        caught_up,
        "the database file never received the WAL's frames"
    );
    s.close().await;
}

/// A write whose caller is dropped while its commit is under way (an HTTP handler
/// whose client went away) commits without moving the store's audit frontier in
/// memory. Two stores on one file put one store's frontier behind the log the same
/// way. The next audited write must notice, reload the frontier and append after the
/// last entry; reusing an index failed every write from then on (the crash loop found
/// it: a receiver refused all deliveries after a sender died mid-request).
#[tokio::test]
async fn an_audit_frontier_behind_the_log_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let behind = SqliteStore::open(&path).await.unwrap();
    behind.audit_append(&[b"first".to_vec()]).await.unwrap();
    let other = SqliteStore::open(&path).await.unwrap();
    other
        .inbox_insert_batch(
            &[inb("m1", "cert", 0, 1)],
            &[b"second".to_vec(), b"third".to_vec()],
        )
        .await
        .unwrap();
    other.close().await;
    // `behind` still counts one entry.
    behind
        .inbox_insert_batch(&[inb("m2", "cert", 0, 2)], &[b"fourth".to_vec()])
        .await
        .unwrap();
    let (size, root) = behind.audit_head().await.unwrap();
    assert_eq!(size, 4);
    let rows = behind.audit_rows(0, 10).await.unwrap();
    let entries: Vec<&[u8]> = rows.iter().map(|r| r.entry.as_slice()).collect();
    assert_eq!(
        entries,
        [
            b"first".as_slice(),
            b"second".as_slice(),
            b"third".as_slice(),
            b"fourth".as_slice()
        ]
    );
    let leaves: Vec<[u8; 32]> = rows.iter().map(|r| r.leaf).collect();
    assert_eq!(root, liaison_core::merkle::root_from_leaves(&leaves));
    assert_eq!(rows[3].root_after, root);
    // The same through the outbox writer's commit (accepts and receipts).
    let other = SqliteStore::open(&path).await.unwrap();
    other.audit_append(&[b"fifth".to_vec()]).await.unwrap();
    other.close().await;
    let done = behind
        .outbox_commit(&[out("o1", "cert", 0, 1)], &[], 7, &[b"sixth".to_vec()])
        .await
        .unwrap();
    assert_eq!(done.inserted, [true]);
    let (size, root) = behind.audit_head().await.unwrap();
    assert_eq!(size, 6);
    let rows = behind.audit_rows(0, 10).await.unwrap();
    let leaves: Vec<[u8; 32]> = rows.iter().map(|r| r.leaf).collect();
    assert_eq!(root, liaison_core::merkle::root_from_leaves(&leaves));
    assert_eq!(rows[5].entry, b"sixth");
    behind.close().await;
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.audit_head().await.unwrap(), (size, root));
    again.close().await;
}
