//! Persistence for a Liaison node: outbox, inbox, receipts, acknowledgements,
//! installed agreements, peer state, escalations and small settings.
//!
//! This crate knows nothing about envelopes or agreements: they are stored as
//! opaque text next to the columns the node queries on, which the caller
//! supplies. It depends on no other Liaison crate.
//!
//! [`Store`] is the interface the node programs against; [`SqliteStore`] is
//! the SQLite implementation (a PostgreSQL one can implement the same trait).
//! [`MemoryStore`] keeps the same observable behaviour in memory, with injectable
//! write faults, for deterministic simulation of a node and its failures.
//!
//! # Durability
//!
//! Every method that returns `Ok` after writing has committed its change, and
//! the SQLite implementation runs with `synchronous = FULL` in WAL mode, so
//! the commit has been fsynced: a message reported as accepted or received
//! survives a crash or power loss. Multi-row writes (`*_batch`,
//! [`Store::outbox_delivered`], [`Store::inbox_ack`]) are one transaction:
//! all or nothing.
//!
//! # Bad input
//!
//! Input that breaks a schema rule (precedence outside `0..=3`, an empty
//! envelope id, ...) is rejected with [`StoreError::InvalidInput`] and nothing
//! is written; in a batch, nothing of the batch is written.

mod batch;
mod error;
mod memory;
mod sqlite;
mod types;

use std::future::Future;

pub use error::StoreError;
pub use memory::{MemoryStore, OpCounts, WriteFault};
pub use sqlite::{AuditRow, SqliteStore};
pub use types::{
    AckOutboxRow, AckOutcome, AgreementPut, AgreementRow, EscalationRow, InboxCursor, InboxRow,
    OutboxCommitted, OutboxDepth, OutboxRow, OutboxState, PRECEDENCE_FLASH, PRECEDENCE_ROUTINE,
    SessionRow, TokenRow, UserRow,
};

/// Result type of every store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The node's persistent state.
///
/// Times are milliseconds since the Unix epoch, supplied by the caller (the
/// store never reads the clock, which keeps it deterministic under test).
/// Limits are clamped to at least 1 row.
pub trait Store: Send + Sync + Clone + 'static {
    // ----- outbox -------------------------------------------------------

    /// Stores a message accepted locally. Idempotent by `envelope_id`:
    /// returns `true` if the row is new, `false` (and changes nothing) if
    /// that id is already stored. `row.seq` is ignored; the store assigns it.
    fn outbox_insert(&self, row: &OutboxRow) -> impl Future<Output = StoreResult<bool>> + Send;

    /// [`Store::outbox_insert`] for many rows in one transaction; one flag per
    /// row, in order (a duplicate id later in the same batch reports `false`).
    fn outbox_insert_batch(
        &self,
        rows: &[OutboxRow],
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send {
        async move {
            if rows.is_empty() && audit.is_empty() {
                return Ok(Vec::new());
            }
            Ok(self.outbox_commit(rows, &[], 0, audit).await?.inserted)
        }
    }

    /// Newly accepted messages ([`Store::outbox_insert_batch`]) and peers' receipts
    /// ([`Store::outbox_delivered`], at `now_ms`) in one transaction, then `audit`:
    /// what a node's writer gathered while its previous commit ran, made durable by
    /// one commit. All or nothing.
    fn outbox_commit(
        &self,
        accepted: &[OutboxRow],
        receipts: &[(String, String)],
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<OutboxCommitted>> + Send;

    /// Queued messages for `peer` whose `next_attempt_ms <= now_ms`, FLASH
    /// first (precedence DESC), then oldest (`created_ms` ASC), then
    /// insertion order (`seq` ASC); at most `limit`.
    fn outbox_due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<OutboxRow>>> + Send;

    /// [`Store::outbox_due`] limited to precedences `min..=max`, so urgent traffic
    /// can travel in its own lane beside a bulk backlog.
    fn outbox_due_range(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
    ) -> impl Future<Output = StoreResult<Vec<OutboxRow>>> + Send;

    /// [`Store::outbox_due_range`] skipping the rows whose `seq` is in `exclude`: a
    /// delivery lane leaves out what it has on the wire without writing a lease.
    fn outbox_due_range_excluding(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
        exclude: &[i64],
    ) -> impl Future<Output = StoreResult<Vec<OutboxRow>>> + Send;

    /// Leases queued messages to one send attempt: they are not due again before
    /// `until_ms` (a failed attempt reschedules them sooner). Returns how many changed.
    fn outbox_lease(
        &self,
        envelope_ids: &[String],
        until_ms: i64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Records the peer's receipts `(envelope_id, receipt_json)` in one
    /// transaction. One flag per pair: `true` if that message became
    /// delivered now; `false` if it was already delivered (the first receipt
    /// is kept) or is unknown. A bounced message that turns out to have been
    /// delivered becomes delivered (its bounce reason is kept).
    fn outbox_delivered(
        &self,
        receipts: &[(String, String)],
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send {
        async move {
            if receipts.is_empty() && audit.is_empty() {
                return Ok(Vec::new());
            }
            Ok(self
                .outbox_commit(&[], receipts, now_ms, audit)
                .await?
                .delivered)
        }
    }

    /// Reschedules a queued message after a failed attempt. Returns `false`
    /// (changing nothing) if the message is unknown or no longer queued.
    fn outbox_retry(
        &self,
        envelope_id: &str,
        attempts: u32,
        next_attempt_ms: i64,
        last_error: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// [`Store::outbox_retry`] for many messages `(envelope_id, attempts,
    /// next_attempt_ms)` in one transaction. Returns how many changed.
    fn outbox_retry_batch(
        &self,
        retries: &[(String, u32, i64)],
        last_error: &str,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Gives up on a queued message. Returns `false` (changing nothing) if it
    /// is unknown or no longer queued.
    fn outbox_bounce(
        &self,
        envelope_id: &str,
        reason: &str,
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Stores the peer's "acknowledged by a person" receipt for a sent
    /// message. First one wins: returns `false` if already set or unknown.
    fn outbox_set_acked(
        &self,
        envelope_id: &str,
        ack_receipt_json: &str,
        at_ms: i64,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// One outbox message, in any state.
    fn outbox_get(
        &self,
        envelope_id: &str,
    ) -> impl Future<Output = StoreResult<Option<OutboxRow>>> + Send;

    /// Outbox messages in any state, newest first (`seq` DESC), optionally
    /// only those sent from `from_desk`, starting strictly before
    /// `before_seq` (pass the last row's `seq` to get the next page).
    fn outbox_list(
        &self,
        from_desk: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> impl Future<Output = StoreResult<Vec<OutboxRow>>> + Send;

    /// Number of queued messages per peer and precedence, for metrics.
    fn outbox_depth(&self) -> impl Future<Output = StoreResult<Vec<OutboxDepth>>> + Send;

    /// Peers (sorted) that have at least one queued message due at `now_ms`.
    fn outbox_peers_with_due(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;

    /// Earliest `next_attempt_ms` among `peer`'s queued messages, if any.
    fn outbox_next_due_ms(
        &self,
        peer: &str,
    ) -> impl Future<Output = StoreResult<Option<i64>>> + Send;

    // ----- inbox --------------------------------------------------------

    /// Stores received messages in one transaction. Idempotent by
    /// `envelope_id`: one flag per row, `true` if new, `false` for a
    /// duplicate delivery (also within the batch), which changes nothing, or
    /// for an id refused for good by [`Store::inbox_settle`], which is never
    /// stored.
    fn inbox_insert_batch(
        &self,
        rows: &[InboxRow],
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<Vec<bool>>> + Send;

    /// Answers a sender asking about envelopes it sent (`envelope_ids`, from
    /// `sender_party`), in one transaction, one answer per id: the inbox row if
    /// this node holds that envelope from that sender; otherwise `None`, and the
    /// id is refused for good (kept with `reason` and `at_ms`), so that a copy
    /// still in flight can never be stored after the answer. An id held from
    /// another party is answered `None` and not recorded. `audit` is appended in
    /// the same transaction.
    fn inbox_settle(
        &self,
        sender_party: &str,
        envelope_ids: &[String],
        at_ms: i64,
        reason: &str,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<Vec<Option<InboxRow>>>> + Send;

    /// Messages for `to_desk`, precedence DESC then newest first; the next
    /// page starts strictly after `after` (see [`InboxRow::cursor`]).
    fn inbox_list(
        &self,
        to_desk: &str,
        limit: u32,
        after: Option<InboxCursor>,
    ) -> impl Future<Output = StoreResult<Vec<InboxRow>>> + Send;

    /// One inbox message.
    fn inbox_get(
        &self,
        envelope_id: &str,
    ) -> impl Future<Output = StoreResult<Option<InboxRow>>> + Send;

    /// Records that a person acknowledged the message, and in the same
    /// transaction queues `ack_receipt_json` for delivery back to the
    /// message's `sender_party` (see [`Store::ack_outbox_due`]). First ack
    /// wins: a later call returns [`AckOutcome::AlreadyAcked`] with the first
    /// one's data and changes nothing. [`StoreError::NotFound`] if unknown.
    fn inbox_ack(
        &self,
        envelope_id: &str,
        by_user: &str,
        at_ms: i64,
        ack_receipt_json: &str,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<AckOutcome>> + Send;

    /// Unacknowledged messages with `precedence >= precedence_min`,
    /// precedence DESC then oldest first (for FLASH deadline checks).
    fn inbox_unacked(
        &self,
        precedence_min: u8,
    ) -> impl Future<Output = StoreResult<Vec<InboxRow>>> + Send;

    /// Number of inbox messages.
    fn inbox_count(&self) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Marks a message as escalated. First mark wins: returns `false` if
    /// already marked or unknown.
    fn inbox_mark_escalated(
        &self,
        envelope_id: &str,
        at_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    // ----- acknowledgements going back to senders -----------------------

    /// Queues an acknowledgement receipt for an inbox message back to `peer`.
    /// Idempotent by `envelope_id` (returns `false` if already queued). The
    /// message must be in the inbox.
    fn ack_outbox_insert(
        &self,
        envelope_id: &str,
        peer: &str,
        ack_receipt_json: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// Pending acknowledgements for `peer`, oldest first.
    fn ack_outbox_due(
        &self,
        peer: &str,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<AckOutboxRow>>> + Send;

    /// Removes delivered acknowledgements (in one transaction); returns how
    /// many were pending. The receipt stays on the inbox row.
    fn ack_outbox_done(
        &self,
        envelope_ids: &[String],
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    // ----- agreements ---------------------------------------------------

    /// Installs an agreement. A newer version replaces the installed one; the
    /// same version with the same digest is a no-op; an older version is kept
    /// out ([`AgreementPut::KeptNewer`]); the same version with a different
    /// digest is [`StoreError::Conflict`].
    fn agreement_put(
        &self,
        id: &str,
        version: u32,
        text: &str,
        digest_hex: &str,
        installed_ms: i64,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<AgreementPut>> + Send;

    /// One installed agreement.
    fn agreement_get(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<AgreementRow>>> + Send;

    /// All installed agreements, by id.
    fn agreement_list(&self) -> impl Future<Output = StoreResult<Vec<AgreementRow>>> + Send;

    // ----- peers --------------------------------------------------------

    /// Replaces the state blob of `party`.
    fn peer_put(&self, party: &str, json: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// The state blob of `party`.
    fn peer_get(&self, party: &str) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// All `(party, state blob)` pairs, by party.
    fn peer_list(&self) -> impl Future<Output = StoreResult<Vec<(String, String)>>> + Send;

    // ----- escalations --------------------------------------------------

    /// Records an escalation; returns its sequence number.
    fn escalation_insert(
        &self,
        envelope_id: &str,
        raised_ms: i64,
        reason: &str,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<i64>> + Send;

    /// All escalations, oldest first.
    fn escalation_list(&self) -> impl Future<Output = StoreResult<Vec<EscalationRow>>> + Send;

    // ----- settings -----------------------------------------------------

    // ----- audit log ------------------------------------------------------
    //
    // Write methods above take `audit`: entries appended to the log in the same
    // transaction as the change they record, so a change and its audit entry are
    // durable together or not at all.

    /// Appends entries on their own; returns the log's new size.
    fn audit_append(&self, entries: &[Vec<u8>]) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Size and root of the committed log.
    fn audit_head(&self) -> impl Future<Output = StoreResult<(u64, [u8; 32])>> + Send;

    /// Rows from `start`, at most `limit`, in order.
    fn audit_rows(
        &self,
        start: u64,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<AuditRow>>> + Send;

    /// Leaf hashes of entries `start..end`.
    fn audit_leaf_hashes(
        &self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = StoreResult<Vec<[u8; 32]>>> + Send;

    /// Roots of the committed log's perfect subtrees `wanted` (level 0: leaf hashes),
    /// each with its id; one the log does not cover yet is left out. What a consistency
    /// proof needs (`merkle::consistency_proof_subtrees`), in O(log n) reads.
    fn audit_subtrees(
        &self,
        wanted: &[liaison_core::merkle::SubtreeId],
    ) -> impl Future<Output = StoreResult<Vec<(liaison_core::merkle::SubtreeId, [u8; 32])>>> + Send;

    /// Closes the store, waiting for running operations.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// A small node setting.
    fn meta_get(&self, key: &str) -> impl Future<Output = StoreResult<Option<String>>> + Send;

    /// Sets a small node setting (replacing any previous value).
    fn meta_put(&self, key: &str, value: &str) -> impl Future<Output = StoreResult<()>> + Send;

    // ----- people -------------------------------------------------------

    /// Creates the account (`create`, returns `false` if the name is taken) or
    /// replaces an existing one (returns `false` if there is none), with `audit`.
    fn user_put(
        &self,
        row: &UserRow,
        create: bool,
        audit: &[Vec<u8>],
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    fn user_get(&self, name: &str) -> impl Future<Output = StoreResult<Option<UserRow>>> + Send;

    /// Every account, by name.
    fn user_list(&self) -> impl Future<Output = StoreResult<Vec<UserRow>>> + Send;

    /// Stores a session, or updates `last_seen_ms` of an existing one.
    fn session_put(&self, row: &SessionRow) -> impl Future<Output = StoreResult<()>> + Send;

    fn session_get(
        &self,
        id_hash: &str,
    ) -> impl Future<Output = StoreResult<Option<SessionRow>>> + Send;

    /// Ends one session (`Some`) or every session of `user_name`.
    fn session_delete(
        &self,
        id_hash: Option<&str>,
        user_name: &str,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    fn token_put(&self, row: &TokenRow) -> impl Future<Output = StoreResult<()>> + Send;

    fn token_get(
        &self,
        id_hash: &str,
    ) -> impl Future<Output = StoreResult<Option<TokenRow>>> + Send;
}
