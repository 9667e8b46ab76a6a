//! In-memory implementation of [`Store`], for deterministic fault simulation.
//!
//! # What it models
//!
//! [`MemoryStore`] keeps every table in plain ordered maps behind one mutex.
//! The state behind that mutex is exactly what SQLite would have on disk after
//! its last commit: each write method takes the lock, checks its input, and
//! applies its whole change (rows and audit entries together) before it
//! releases the lock, or changes nothing and returns an error. There is no
//! page cache, no WAL and no partially written transaction to model, so a
//! "crash" at any instant between two calls loses nothing that a call reported
//! as done; [`MemoryStore::fork`] takes such a crash image and opens it as a
//! fresh store, as a restarted node would.
//!
//! Observable behaviour follows [`crate::SqliteStore`]: sequence numbers
//! (`AUTOINCREMENT`: never reused, used up by a duplicate that the conflict clause
//! drops, given back by a rolled-back write), the ordering of every listing, idempotency, first-wins rules, which
//! calls append their audit entries when nothing changed, and the schema rules
//! the SQLite `CHECK`, `UNIQUE` and foreign-key constraints enforce (reported
//! as [`StoreError::InvalidInput`] with the same rule text).
//!
//! For the simulation it adds, deterministically (no clock, no randomness):
//!
//! * write faults ([`MemoryStore::set_fail_writes`],
//!   [`MemoryStore::fail_writes_after`]): while one is active every write
//!   method fails with the chosen [`WriteFault`] and changes nothing; reads
//!   keep working, as they do on a full or read-only volume;
//! * operation counts ([`MemoryStore::counts`]).
//!
//! # What it does not model
//!
//! * Torn or reordered writes, bit rot, or a lost fsync: SQLite with
//!   `synchronous = FULL` promises none of these happen, and the node relies
//!   on that promise rather than detecting its breach.
//! * Concurrency: every call is serialised by the mutex. SQLite readers run
//!   beside the single writer but see only committed data, so the observable
//!   results are the same; timing (busy timeouts, pool waits) is not modelled
//!   except as an injected [`WriteFault::Busy`].
//! * Capacity: nothing ever fills up on its own; a full disk is an injected
//!   fault, and it fails writes that SQLite could still complete because they
//!   change nothing (an empty batch, an unchanged agreement).
//! * Migrations, files and permissions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use liaison_core::merkle::{Frontier, Hash, LeafHashes, SubtreeId, leaf_hash};

use crate::error::{check_failed, violated};
use crate::types::{
    AckOutboxRow, AckOutcome, AgreementPut, AgreementRow, EscalationRow, InboxCursor, InboxRow,
    OutboxCommitted, OutboxDepth, OutboxRow, OutboxState, SessionRow, TokenRow, UserRow,
    check_outbox_row,
};
use crate::{AuditRow, Store, StoreError, StoreResult};

/// The "path" in error messages, so an operator-facing message never claims a file.
const PATH: &str = ":memory-model:";

/// SQLite keeps the audit frontier in `meta` under this key; so does this model, so
/// `meta_get` answers the same.
const AUDIT_FRONTIER_KEY: &str = "audit_frontier";

/// SQLite's statement size for `IN (...)` lists: duplicates of an id in different
/// statements of one call are counted once per statement there, so here too.
const ROWS_PER_STATEMENT: usize = 500;

/// A storage failure to inject into every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// As [`StoreError::DiskFull`]: the volume is full.
    DiskFull,
    /// As [`StoreError::ReadOnly`]: the file or volume became read-only.
    ReadOnly,
    /// As [`StoreError::Busy`]: another process holds the lock.
    Busy,
}

impl WriteFault {
    fn error(self, op: &'static str) -> StoreError {
        let path = PATH.to_owned();
        match self {
            Self::DiskFull => StoreError::DiskFull {
                path,
                op,
                detail: "injected fault: database or disk is full".to_owned(),
            },
            Self::ReadOnly => StoreError::ReadOnly {
                path,
                op,
                detail: "injected fault: attempt to write a readonly database".to_owned(),
            },
            Self::Busy => StoreError::Busy {
                path,
                op,
                detail: "injected fault: database is locked".to_owned(),
            },
        }
    }
}

/// Operations seen by a [`MemoryStore`] (shared by its clones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Read calls.
    pub reads: u64,
    /// Write calls that returned `Ok` (including those that found nothing to change).
    pub commits: u64,
    /// Write calls refused for their input ([`StoreError::InvalidInput`],
    /// [`StoreError::Conflict`], [`StoreError::NotFound`]); they changed nothing.
    pub rejected: u64,
    /// Write calls failed by an injected [`WriteFault`]; they changed nothing.
    pub faulted: u64,
    /// Calls per store operation, by method name.
    pub calls: BTreeMap<&'static str, u64>,
}

/// The durable tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    /// By `seq`.
    outbox: BTreeMap<i64, OutboxRow>,
    outbox_ids: BTreeMap<String, i64>,
    outbox_seq: i64,
    inbox: BTreeMap<i64, InboxRow>,
    inbox_ids: BTreeMap<String, i64>,
    inbox_seq: i64,
    /// Ids refused for good by `inbox_settle`: id → (sender party, at, reason).
    inbox_refused: BTreeMap<String, (String, i64, String)>,
    ack_outbox: BTreeMap<i64, AckOutboxRow>,
    ack_ids: BTreeMap<String, i64>,
    ack_seq: i64,
    agreements: BTreeMap<String, AgreementRow>,
    peers: BTreeMap<String, String>,
    escalations: Vec<EscalationRow>,
    escalation_seq: i64,
    meta: BTreeMap<String, String>,
    audit: Vec<AuditRow>,
    frontier: Frontier,
    users: BTreeMap<String, UserRow>,
    sessions: BTreeMap<String, SessionRow>,
    tokens: BTreeMap<String, TokenRow>,
}

#[derive(Debug, Default)]
struct Inner {
    durable: State,
    /// The fault to inject and how many writes may still pass before it does.
    fault: Option<(WriteFault, u64)>,
    counts: OpCounts,
    closed: bool,
}

/// In-memory [`Store`]; see the [module docs](self). Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

/// Audit rows to append and the frontier and `meta` value they lead to, computed
/// before anything is changed so that applying them cannot fail.
struct AuditPlan {
    rows: Vec<AuditRow>,
    frontier: Frontier,
    frontier_json: String,
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        path: PATH.to_owned(),
        op: "audit",
        detail,
    }
}

fn take_of(limit: u32) -> usize {
    usize::try_from(limit.max(1)).unwrap_or(usize::MAX)
}

fn check_inbox_row(op: &'static str, r: &InboxRow) -> StoreResult<()> {
    let broken = if r.envelope_id.is_empty() {
        Some("inbox_envelope_id_nonempty")
    } else if r.sender_party.is_empty() {
        Some("inbox_sender_party_nonempty")
    } else if r.precedence > 3 {
        Some("inbox_precedence_range")
    } else if r.acked_ms.is_none() != r.acked_by.is_none()
        || r.acked_ms.is_none() != r.ack_receipt_json.is_none()
    {
        Some("inbox_ack_complete")
    } else {
        None
    };
    broken.map_or(Ok(()), |c| Err(check_failed(op, c)))
}

/// Per input id, whether it was changed: true only for its first occurrence.
fn first_flags<'a>(ids: impl Iterator<Item = &'a str>, mut changed: BTreeSet<String>) -> Vec<bool> {
    ids.map(|id| changed.remove(id)).collect()
}

impl State {
    fn plan_audit(&self, entries: &[Vec<u8>]) -> StoreResult<Option<AuditPlan>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut frontier = self.frontier.clone();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            let leaf = leaf_hash(entry);
            let index = frontier
                .push(leaf)
                .map_err(|e| corrupt(format!("audit log: {e}")))?;
            if i64::try_from(index).is_err() {
                return Err(corrupt("audit log is full".to_owned()));
            }
            rows.push(AuditRow {
                index,
                entry: entry.clone(),
                leaf,
                root_after: frontier.root(),
            });
        }
        let frontier_json = serde_json::to_string(&frontier).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(AuditPlan {
            rows,
            frontier,
            frontier_json,
        }))
    }

    fn apply_audit(&mut self, plan: Option<AuditPlan>) {
        if let Some(plan) = plan {
            self.audit.extend(plan.rows);
            self.frontier = plan.frontier;
            self.meta
                .insert(AUDIT_FRONTIER_KEY.to_owned(), plan.frontier_json);
        }
    }

    fn outbox_by_id(&self, id: &str) -> Option<&OutboxRow> {
        self.outbox_ids.get(id).and_then(|seq| self.outbox.get(seq))
    }

    fn outbox_by_id_mut(&mut self, id: &str) -> Option<&mut OutboxRow> {
        let seq = *self.outbox_ids.get(id)?;
        self.outbox.get_mut(&seq)
    }

    fn inbox_by_id(&self, id: &str) -> Option<&InboxRow> {
        self.inbox_ids.get(id).and_then(|seq| self.inbox.get(seq))
    }

    fn inbox_by_id_mut(&mut self, id: &str) -> Option<&mut InboxRow> {
        let seq = *self.inbox_ids.get(id)?;
        self.inbox.get_mut(&seq)
    }

    /// Inserts checked rows (the caller has planned the audit entries, so nothing
    /// here can fail half-way); one flag per row, `true` if stored now.
    fn insert_outbox(&mut self, rows: &[OutboxRow]) -> Vec<bool> {
        rows.iter()
            .map(|r| {
                // SQLite allocates the AUTOINCREMENT number before the conflict
                // clause drops a duplicate, so a duplicate uses one up.
                self.outbox_seq += 1;
                if self.outbox_ids.contains_key(&r.envelope_id) {
                    return false;
                }
                let mut row = r.clone();
                row.seq = self.outbox_seq;
                self.outbox_ids.insert(row.envelope_id.clone(), row.seq);
                self.outbox.insert(row.seq, row);
                true
            })
            .collect()
    }

    fn queued(&self) -> impl Iterator<Item = &OutboxRow> {
        self.outbox
            .values()
            .filter(|r| r.state == OutboxState::Queued)
    }

    fn due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedences: std::ops::RangeInclusive<u8>,
        exclude: &[i64],
    ) -> Vec<OutboxRow> {
        let mut due: Vec<&OutboxRow> = self
            .queued()
            .filter(|r| {
                r.peer == peer
                    && r.next_attempt_ms <= now_ms
                    && precedences.contains(&r.precedence)
                    && !exclude.contains(&r.seq)
            })
            .collect();
        due.sort_by_key(|r| (std::cmp::Reverse(r.precedence), r.created_ms, r.seq));
        due.into_iter().take(take_of(limit)).cloned().collect()
    }

    /// One `outbox_retry` inside a transaction: whether a queued row matched.
    fn retry(
        &mut self,
        envelope_id: &str,
        attempts: u32,
        next_attempt_ms: i64,
        last_error: &str,
    ) -> bool {
        match self.outbox_by_id_mut(envelope_id) {
            Some(r) if r.state == OutboxState::Queued => {
                r.attempts = attempts;
                r.next_attempt_ms = next_attempt_ms;
                r.last_error = Some(last_error.to_owned());
                true
            }
            _ => false,
        }
    }
}

impl MemoryStore {
    /// A fresh, empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self, op: &'static str) -> StoreResult<MutexGuard<'_, Inner>> {
        // A panic while the lock was held may have left a half-applied change:
        // refuse to serve it rather than pretend it is durable state.
        let inner = self.inner.lock().map_err(|_| StoreError::Database {
            path: PATH.to_owned(),
            op,
            detail: "the in-memory state was left inconsistent by a panic".to_owned(),
        })?;
        if inner.closed {
            return Err(StoreError::Database {
                path: PATH.to_owned(),
                op,
                detail: "the store is closed".to_owned(),
            });
        }
        Ok(inner)
    }

    fn read<T>(&self, op: &'static str, f: impl FnOnce(&State) -> T) -> StoreResult<T> {
        let mut guard = self.lock(op)?;
        let inner = &mut *guard;
        inner.counts.reads += 1;
        *inner.counts.calls.entry(op).or_default() += 1;
        Ok(f(&inner.durable))
    }

    /// Runs one write transaction. INVARIANT: `f` returns an error only before it
    /// has changed anything, so an `Err` leaves the durable state as it was.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut State) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut guard = self.lock(op)?;
        let inner = &mut *guard;
        *inner.counts.calls.entry(op).or_default() += 1;
        if let Some((fault, allowed)) = &mut inner.fault {
            if *allowed == 0 {
                inner.counts.faulted += 1;
                return Err(fault.error(op));
            }
            *allowed -= 1;
        }
        let result = f(&mut inner.durable);
        if result.is_ok() {
            inner.counts.commits += 1;
        } else {
            inner.counts.rejected += 1;
        }
        result
    }

    /// Makes every write fail with `fault` (changing nothing) until called with
    /// `None`. Reads keep working.
    pub fn set_fail_writes(&self, fault: Option<WriteFault>) -> StoreResult<()> {
        self.lock("set_fail_writes")?.fault = fault.map(|f| (f, 0));
        Ok(())
    }

    /// Lets the next `writes` write calls through, then fails every later one
    /// with `fault` until [`MemoryStore::set_fail_writes`] clears it: the disk
    /// fills up at a chosen point of a run.
    pub fn fail_writes_after(&self, writes: u64, fault: WriteFault) -> StoreResult<()> {
        self.lock("fail_writes_after")?.fault = Some((fault, writes));
        Ok(())
    }

    /// Operations seen so far by this store and its clones.
    pub fn counts(&self) -> StoreResult<OpCounts> {
        Ok(self.lock("counts")?.counts.clone())
    }

    /// A new, independent store holding a copy of what is durable now, with no
    /// fault and zero counts: the node's state after a crash and restart at
    /// this instant. Works on a closed store too (the data outlives the process).
    pub fn fork(&self) -> StoreResult<Self> {
        let inner = self.inner.lock().map_err(|_| StoreError::Database {
            path: PATH.to_owned(),
            op: "fork",
            detail: "the in-memory state was left inconsistent by a panic".to_owned(),
        })?;
        let durable = inner.durable.clone();
        drop(inner);
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                durable,
                ..Inner::default()
            })),
        })
    }

    /// Whether both stores hold the same durable data (ignoring faults and counts).
    pub fn same_durable_state(&self, other: &Self) -> StoreResult<bool> {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return Ok(true);
        }
        let mine = self.lock("same_durable_state")?.durable.clone();
        let theirs = other.lock("same_durable_state")?;
        Ok(mine == theirs.durable)
    }
}

impl Store for MemoryStore {
    async fn outbox_due_range_excluding(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
        exclude: &[i64],
    ) -> StoreResult<Vec<OutboxRow>> {
        self.read("outbox_due_range_excluding", |s| {
            s.due(
                peer,
                now_ms,
                limit,
                precedence_min..=precedence_max,
                exclude,
            )
        })
    }

    async fn outbox_retry_batch(
        &self,
        retries: &[(String, u32, i64)],
        last_error: &str,
    ) -> StoreResult<u64> {
        self.write("outbox_retry_batch", |s| {
            // As a loop of single-row retries: an id listed twice counts twice.
            let mut changed = 0;
            for (id, attempts, next_attempt_ms) in retries {
                if s.retry(id, *attempts, *next_attempt_ms, last_error) {
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }

    async fn outbox_insert(&self, row: &OutboxRow) -> StoreResult<bool> {
        let done = self
            .outbox_commit(std::slice::from_ref(row), &[], 0, &[])
            .await?;
        Ok(done.inserted.first().copied().unwrap_or(false))
    }

    async fn outbox_commit(
        &self,
        accepted: &[OutboxRow],
        receipts: &[(String, String)],
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<OutboxCommitted> {
        const OP: &str = "outbox_commit";
        if accepted.is_empty() && receipts.is_empty() && audit.is_empty() {
            return Ok(OutboxCommitted::default());
        }
        self.write(OP, |s| {
            for r in accepted {
                check_outbox_row(OP, r)?;
            }
            let plan = s.plan_audit(audit)?;
            let inserted = s.insert_outbox(accepted);
            let mut updated = BTreeSet::new();
            for (id, receipt) in receipts {
                if updated.contains(id) {
                    continue;
                }
                if let Some(r) = s.outbox_by_id_mut(id)
                    && r.state != OutboxState::Delivered
                {
                    r.state = OutboxState::Delivered;
                    r.receipt_json = Some(receipt.clone());
                    r.delivered_ms = Some(now_ms);
                    updated.insert(id.clone());
                }
            }
            s.apply_audit(plan);
            Ok(OutboxCommitted {
                inserted,
                delivered: first_flags(receipts.iter().map(|(id, _)| id.as_str()), updated),
            })
        })
    }

    async fn outbox_due(&self, peer: &str, now_ms: i64, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        self.read("outbox_due", |s| {
            s.due(peer, now_ms, limit, 0..=u8::MAX, &[])
        })
    }

    async fn outbox_due_range(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.read("outbox_due_range", |s| {
            s.due(peer, now_ms, limit, precedence_min..=precedence_max, &[])
        })
    }

    async fn outbox_lease(&self, envelope_ids: &[String], until_ms: i64) -> StoreResult<u64> {
        self.write("outbox_lease", |s| {
            let mut changed = 0;
            for chunk in envelope_ids.chunks(ROWS_PER_STATEMENT) {
                let ids: BTreeSet<&str> = chunk.iter().map(String::as_str).collect();
                for id in ids {
                    if let Some(r) = s.outbox_by_id_mut(id)
                        && r.state == OutboxState::Queued
                    {
                        r.next_attempt_ms = until_ms;
                        changed += 1;
                    }
                }
            }
            Ok(changed)
        })
    }

    async fn outbox_retry(
        &self,
        envelope_id: &str,
        attempts: u32,
        next_attempt_ms: i64,
        last_error: &str,
    ) -> StoreResult<bool> {
        self.write("outbox_retry", |s| {
            Ok(s.retry(envelope_id, attempts, next_attempt_ms, last_error))
        })
    }

    async fn outbox_bounce(
        &self,
        envelope_id: &str,
        reason: &str,
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.write("outbox_bounce", |s| {
            if s.outbox_by_id(envelope_id)
                .is_none_or(|r| r.state != OutboxState::Queued)
            {
                // The audit records a bounce only if one happened.
                return Ok(false);
            }
            let plan = s.plan_audit(audit)?;
            let Some(r) = s.outbox_by_id_mut(envelope_id) else {
                return Ok(false);
            };
            r.state = OutboxState::Bounced;
            r.bounce_reason = Some(reason.to_owned());
            r.bounced_ms = Some(now_ms);
            s.apply_audit(plan);
            Ok(true)
        })
    }

    async fn outbox_set_acked(
        &self,
        envelope_id: &str,
        ack_receipt_json: &str,
        at_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<bool> {
        self.write("outbox_set_acked", |s| {
            if s.outbox_by_id(envelope_id)
                .is_none_or(|r| r.acked_ms.is_some())
            {
                return Ok(false);
            }
            let plan = s.plan_audit(audit)?;
            let Some(r) = s.outbox_by_id_mut(envelope_id) else {
                return Ok(false);
            };
            r.acked_receipt_json = Some(ack_receipt_json.to_owned());
            r.acked_ms = Some(at_ms);
            s.apply_audit(plan);
            Ok(true)
        })
    }

    async fn outbox_get(&self, envelope_id: &str) -> StoreResult<Option<OutboxRow>> {
        self.read("outbox_get", |s| s.outbox_by_id(envelope_id).cloned())
    }

    async fn outbox_list(
        &self,
        from_desk: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let before = before_seq.unwrap_or(i64::MAX);
        self.read("outbox_list", |s| {
            s.outbox
                .range(..before)
                .rev()
                .map(|(_, r)| r)
                .filter(|r| from_desk.is_none_or(|d| r.from_desk == d))
                .take(take_of(limit))
                .cloned()
                .collect()
        })
    }

    async fn outbox_depth(&self) -> StoreResult<Vec<OutboxDepth>> {
        self.read("outbox_depth", |s| {
            let mut depth: BTreeMap<(&str, std::cmp::Reverse<u8>), u64> = BTreeMap::new();
            for r in s.queued() {
                *depth
                    .entry((r.peer.as_str(), std::cmp::Reverse(r.precedence)))
                    .or_default() += 1;
            }
            depth
                .into_iter()
                .map(|((peer, p), count)| OutboxDepth {
                    peer: peer.to_owned(),
                    precedence: p.0,
                    count,
                })
                .collect()
        })
    }

    async fn outbox_peers_with_due(&self, now_ms: i64) -> StoreResult<Vec<String>> {
        self.read("outbox_peers_with_due", |s| {
            let peers: BTreeSet<&str> = s
                .queued()
                .filter(|r| r.next_attempt_ms <= now_ms)
                .map(|r| r.peer.as_str())
                .collect();
            peers.into_iter().map(str::to_owned).collect()
        })
    }

    async fn outbox_next_due_ms(&self, peer: &str) -> StoreResult<Option<i64>> {
        self.read("outbox_next_due_ms", |s| {
            s.queued()
                .filter(|r| r.peer == peer)
                .map(|r| r.next_attempt_ms)
                .min()
        })
    }

    async fn inbox_insert_batch(
        &self,
        rows: &[InboxRow],
        audit: &[Vec<u8>],
    ) -> StoreResult<Vec<bool>> {
        const OP: &str = "inbox_insert_batch";
        self.write(OP, |s| {
            // SQLite's trigger drops a refused id before any CHECK looks at the row.
            for r in rows
                .iter()
                .filter(|r| !s.inbox_refused.contains_key(&r.envelope_id))
            {
                check_inbox_row(OP, r)?;
            }
            let plan = s.plan_audit(audit)?;
            let fresh = rows
                .iter()
                .map(|r| {
                    // SQLite's trigger skips a refused id before it takes a number.
                    if s.inbox_refused.contains_key(&r.envelope_id) {
                        return false;
                    }
                    // As in the outbox, a duplicate uses a sequence number up.
                    s.inbox_seq += 1;
                    if s.inbox_ids.contains_key(&r.envelope_id) {
                        return false;
                    }
                    let mut row = r.clone();
                    row.seq = s.inbox_seq;
                    s.inbox_ids.insert(row.envelope_id.clone(), row.seq);
                    s.inbox.insert(row.seq, row);
                    true
                })
                .collect();
            s.apply_audit(plan);
            Ok(fresh)
        })
    }

    async fn inbox_settle(
        &self,
        sender_party: &str,
        envelope_ids: &[String],
        at_ms: i64,
        reason: &str,
        audit: &[Vec<u8>],
    ) -> StoreResult<Vec<Option<InboxRow>>> {
        const OP: &str = "inbox_settle";
        if envelope_ids.is_empty() && audit.is_empty() {
            return Ok(Vec::new());
        }
        self.write(OP, |s| {
            // An empty id is never held, so SQLite's insert of it always fails.
            if envelope_ids.iter().any(String::is_empty) {
                return Err(check_failed(OP, "inbox_refused_envelope_id_nonempty"));
            }
            let plan = s.plan_audit(audit)?;
            let answers = envelope_ids
                .iter()
                .map(|id| match s.inbox_by_id(id) {
                    Some(row) => (row.sender_party == sender_party).then(|| row.clone()),
                    None => {
                        s.inbox_refused
                            .entry(id.clone())
                            .or_insert_with(|| (sender_party.to_owned(), at_ms, reason.to_owned()));
                        None
                    }
                })
                .collect();
            s.apply_audit(plan);
            Ok(answers)
        })
    }

    async fn inbox_list(
        &self,
        to_desk: &str,
        limit: u32,
        after: Option<InboxCursor>,
    ) -> StoreResult<Vec<InboxRow>> {
        self.read("inbox_list", |s| {
            let after = after.map(|c| (c.precedence, c.received_ms, c.seq));
            let mut rows: Vec<&InboxRow> = s
                .inbox
                .values()
                .filter(|r| {
                    r.to_desk == to_desk
                        && after.is_none_or(|a| (r.precedence, r.received_ms, r.seq) < a)
                })
                .collect();
            rows.sort_by_key(|r| std::cmp::Reverse((r.precedence, r.received_ms, r.seq)));
            rows.into_iter().take(take_of(limit)).cloned().collect()
        })
    }

    async fn inbox_get(&self, envelope_id: &str) -> StoreResult<Option<InboxRow>> {
        self.read("inbox_get", |s| s.inbox_by_id(envelope_id).cloned())
    }

    async fn inbox_ack(
        &self,
        envelope_id: &str,
        by_user: &str,
        at_ms: i64,
        ack_receipt_json: &str,
        audit: &[Vec<u8>],
    ) -> StoreResult<AckOutcome> {
        self.write("inbox_ack", |s| {
            let Some(current) = s.inbox_by_id(envelope_id) else {
                return Err(StoreError::NotFound {
                    what: "inbox message",
                    id: envelope_id.to_owned(),
                });
            };
            if let (Some(acked_ms), Some(acked_by), Some(receipt)) = (
                current.acked_ms,
                &current.acked_by,
                &current.ack_receipt_json,
            ) {
                return Ok(AckOutcome::AlreadyAcked {
                    acked_ms,
                    acked_by: acked_by.clone(),
                    ack_receipt_json: receipt.clone(),
                });
            }
            let sender = current.sender_party.clone();
            let plan = s.plan_audit(audit)?;
            if let Some(r) = s.inbox_by_id_mut(envelope_id) {
                r.acked_ms = Some(at_ms);
                r.acked_by = Some(by_user.to_owned());
                r.ack_receipt_json = Some(ack_receipt_json.to_owned());
            }
            s.ack_seq += 1;
            if !s.ack_ids.contains_key(envelope_id) {
                s.ack_ids.insert(envelope_id.to_owned(), s.ack_seq);
                s.ack_outbox.insert(
                    s.ack_seq,
                    AckOutboxRow {
                        seq: s.ack_seq,
                        envelope_id: envelope_id.to_owned(),
                        peer: sender,
                        ack_receipt_json: ack_receipt_json.to_owned(),
                    },
                );
            }
            s.apply_audit(plan);
            Ok(AckOutcome::Acked)
        })
    }

    async fn inbox_unacked(&self, precedence_min: u8) -> StoreResult<Vec<InboxRow>> {
        self.read("inbox_unacked", |s| {
            let mut rows: Vec<&InboxRow> = s
                .inbox
                .values()
                .filter(|r| r.acked_ms.is_none() && r.precedence >= precedence_min)
                .collect();
            rows.sort_by_key(|r| (std::cmp::Reverse(r.precedence), r.received_ms, r.seq));
            rows.into_iter().cloned().collect()
        })
    }

    async fn inbox_count(&self) -> StoreResult<u64> {
        self.read("inbox_count", |s| {
            u64::try_from(s.inbox.len()).unwrap_or(u64::MAX)
        })
    }

    async fn inbox_mark_escalated(&self, envelope_id: &str, at_ms: i64) -> StoreResult<bool> {
        self.write("inbox_mark_escalated", |s| {
            Ok(match s.inbox_by_id_mut(envelope_id) {
                Some(r) if r.escalated_ms.is_none() => {
                    r.escalated_ms = Some(at_ms);
                    true
                }
                _ => false,
            })
        })
    }

    async fn ack_outbox_insert(
        &self,
        envelope_id: &str,
        peer: &str,
        ack_receipt_json: &str,
    ) -> StoreResult<bool> {
        const OP: &str = "ack_outbox_insert";
        self.write(OP, |s| {
            // SQLite checks CHECK constraints, then the conflict clause, then the
            // foreign key.
            if peer.is_empty() {
                return Err(check_failed(OP, "ack_outbox_peer_nonempty"));
            }
            if s.ack_ids.contains_key(envelope_id) {
                s.ack_seq += 1;
                return Ok(false);
            }
            if !s.inbox_ids.contains_key(envelope_id) {
                return Err(violated(OP, "FOREIGN KEY constraint failed".to_owned()));
            }
            s.ack_seq += 1;
            s.ack_ids.insert(envelope_id.to_owned(), s.ack_seq);
            s.ack_outbox.insert(
                s.ack_seq,
                AckOutboxRow {
                    seq: s.ack_seq,
                    envelope_id: envelope_id.to_owned(),
                    peer: peer.to_owned(),
                    ack_receipt_json: ack_receipt_json.to_owned(),
                },
            );
            Ok(true)
        })
    }

    async fn ack_outbox_due(&self, peer: &str, limit: u32) -> StoreResult<Vec<AckOutboxRow>> {
        self.read("ack_outbox_due", |s| {
            s.ack_outbox
                .values()
                .filter(|r| r.peer == peer)
                .take(take_of(limit))
                .cloned()
                .collect()
        })
    }

    async fn ack_outbox_done(&self, envelope_ids: &[String]) -> StoreResult<u64> {
        self.write("ack_outbox_done", |s| {
            let mut removed = 0;
            for id in envelope_ids {
                if let Some(seq) = s.ack_ids.remove(id.as_str()) {
                    s.ack_outbox.remove(&seq);
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }

    async fn agreement_put(
        &self,
        id: &str,
        version: u32,
        text: &str,
        digest_hex: &str,
        installed_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<AgreementPut> {
        const OP: &str = "agreement_put";
        self.write(OP, |s| {
            let outcome = match s.agreements.get(id) {
                None => AgreementPut::Installed,
                Some(a) if a.version > version => {
                    return Ok(AgreementPut::KeptNewer {
                        installed_version: a.version,
                    });
                }
                Some(a) if a.version == version => {
                    if a.digest_hex == digest_hex && a.text == text {
                        return Ok(AgreementPut::Unchanged);
                    }
                    if a.digest_hex != digest_hex {
                        return Err(StoreError::Conflict {
                            op: OP,
                            detail: format!(
                                "agreement `{id}` version {version} is installed with digest {}, \
                                 refusing a different text with digest {digest_hex} under the same \
                                 version; publish it as a new version",
                                a.digest_hex
                            ),
                        });
                    }
                    // Same signed text, new lifecycle events (or signatures): the
                    // caller verified them; keep the fuller document.
                    AgreementPut::EventsUpdated
                }
                Some(a) => AgreementPut::Replaced {
                    previous_version: a.version,
                },
            };
            // As in SQLite, the schema rules are checked by the write itself, after
            // the version rules above have decided there is one.
            if id.is_empty() {
                return Err(check_failed(OP, "agreements_id_nonempty"));
            }
            if digest_hex.is_empty() {
                return Err(check_failed(OP, "agreements_digest_nonempty"));
            }
            let plan = s.plan_audit(audit)?;
            s.agreements.insert(
                id.to_owned(),
                AgreementRow {
                    id: id.to_owned(),
                    version,
                    text: text.to_owned(),
                    digest_hex: digest_hex.to_owned(),
                    installed_ms,
                },
            );
            s.apply_audit(plan);
            Ok(outcome)
        })
    }

    async fn agreement_get(&self, id: &str) -> StoreResult<Option<AgreementRow>> {
        self.read("agreement_get", |s| s.agreements.get(id).cloned())
    }

    async fn agreement_list(&self) -> StoreResult<Vec<AgreementRow>> {
        self.read("agreement_list", |s| {
            s.agreements.values().cloned().collect()
        })
    }

    async fn peer_put(&self, party: &str, json: &str) -> StoreResult<()> {
        const OP: &str = "peer_put";
        self.write(OP, |s| {
            if party.is_empty() {
                return Err(check_failed(OP, "peers_party_nonempty"));
            }
            s.peers.insert(party.to_owned(), json.to_owned());
            Ok(())
        })
    }

    async fn peer_get(&self, party: &str) -> StoreResult<Option<String>> {
        self.read("peer_get", |s| s.peers.get(party).cloned())
    }

    async fn peer_list(&self) -> StoreResult<Vec<(String, String)>> {
        self.read("peer_list", |s| {
            s.peers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    async fn escalation_insert(
        &self,
        envelope_id: &str,
        raised_ms: i64,
        reason: &str,
        audit: &[Vec<u8>],
    ) -> StoreResult<i64> {
        const OP: &str = "escalation_insert";
        self.write(OP, |s| {
            if envelope_id.is_empty() {
                return Err(check_failed(OP, "escalations_envelope_id_nonempty"));
            }
            let plan = s.plan_audit(audit)?;
            s.escalation_seq += 1;
            s.escalations.push(EscalationRow {
                seq: s.escalation_seq,
                envelope_id: envelope_id.to_owned(),
                raised_ms,
                reason: reason.to_owned(),
            });
            s.apply_audit(plan);
            Ok(s.escalation_seq)
        })
    }

    async fn escalation_list(&self) -> StoreResult<Vec<EscalationRow>> {
        self.read("escalation_list", |s| s.escalations.clone())
    }

    async fn audit_append(&self, entries: &[Vec<u8>]) -> StoreResult<u64> {
        self.write("audit_append", |s| {
            let plan = s.plan_audit(entries)?;
            s.apply_audit(plan);
            Ok(s.frontier.size())
        })
    }

    async fn audit_head(&self) -> StoreResult<(u64, Hash)> {
        self.read("audit_head", |s| (s.frontier.size(), s.frontier.root()))
    }

    async fn audit_rows(&self, start: u64, limit: u32) -> StoreResult<Vec<AuditRow>> {
        self.read("audit_rows", |s| {
            s.audit
                .iter()
                .filter(|r| r.index >= start)
                .take(take_of(limit))
                .cloned()
                .collect()
        })
    }

    async fn audit_leaf_hashes(&self, start: u64, end: u64) -> StoreResult<Vec<Hash>> {
        self.read("audit_leaf_hashes", |s| {
            s.audit
                .iter()
                .filter(|r| r.index >= start && r.index < end)
                .map(|r| r.leaf)
                .collect()
        })
    }

    async fn audit_subtrees(&self, wanted: &[SubtreeId]) -> StoreResult<Vec<(SubtreeId, Hash)>> {
        // Recomputed from the leaves: a simulated log is small, and the answer is the
        // one SQLite gives from its stored levels.
        self.read("audit_subtrees", |s| {
            let leaves: Vec<Hash> = s.audit.iter().map(|r| r.leaf).collect();
            wanted
                .iter()
                .filter(|(level, index)| {
                    1u64.checked_shl(*level)
                        .and_then(|w| index.checked_add(1)?.checked_mul(w))
                        .is_some_and(|end| end <= s.frontier.size())
                })
                .filter_map(|&(level, index)| {
                    leaves
                        .perfect_subtree_hash(level, index)
                        .ok()
                        .map(|h| ((level, index), h))
                })
                .collect()
        })
    }

    async fn close(&self) {
        // As with SQLite, later calls on this store (and its clones) fail.
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
        }
    }

    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.read("meta_get", |s| s.meta.get(key).cloned())
    }

    async fn meta_put(&self, key: &str, value: &str) -> StoreResult<()> {
        const OP: &str = "meta_put";
        self.write(OP, |s| {
            if key.is_empty() {
                return Err(check_failed(OP, "meta_key_nonempty"));
            }
            s.meta.insert(key.to_owned(), value.to_owned());
            Ok(())
        })
    }

    async fn user_put(&self, row: &UserRow, create: bool, audit: &[Vec<u8>]) -> StoreResult<bool> {
        const OP: &str = "user_put";
        self.write(OP, |s| {
            if create {
                if !(1..=64).contains(&row.name.chars().count()) {
                    return Err(check_failed(OP, "length(name) BETWEEN 1 AND 64"));
                }
                if s.users.contains_key(&row.name) {
                    return Ok(false);
                }
                let plan = s.plan_audit(audit)?;
                s.users.insert(row.name.clone(), row.clone());
                s.apply_audit(plan);
                return Ok(true);
            }
            if !s.users.contains_key(&row.name) {
                return Ok(false);
            }
            let plan = s.plan_audit(audit)?;
            if let Some(u) = s.users.get_mut(&row.name) {
                // An update keeps the account's creation time.
                *u = UserRow {
                    created_ms: u.created_ms,
                    ..row.clone()
                };
            }
            s.apply_audit(plan);
            Ok(true)
        })
    }

    async fn user_get(&self, name: &str) -> StoreResult<Option<UserRow>> {
        self.read("user_get", |s| s.users.get(name).cloned())
    }

    async fn user_list(&self) -> StoreResult<Vec<UserRow>> {
        self.read("user_list", |s| s.users.values().cloned().collect())
    }

    async fn session_put(&self, row: &SessionRow) -> StoreResult<()> {
        const OP: &str = "session_put";
        self.write(OP, |s| {
            if let Some(existing) = s.sessions.get_mut(&row.id_hash) {
                existing.last_seen_ms = row.last_seen_ms;
                return Ok(());
            }
            if !s.users.contains_key(&row.user_name) {
                return Err(violated(OP, "FOREIGN KEY constraint failed".to_owned()));
            }
            s.sessions.insert(row.id_hash.clone(), row.clone());
            Ok(())
        })
    }

    async fn session_get(&self, id_hash: &str) -> StoreResult<Option<SessionRow>> {
        self.read("session_get", |s| s.sessions.get(id_hash).cloned())
    }

    async fn session_delete(&self, id_hash: Option<&str>, user_name: &str) -> StoreResult<u64> {
        self.write("session_delete", |s| {
            let before = s.sessions.len();
            s.sessions
                .retain(|k, v| !(v.user_name == user_name && id_hash.is_none_or(|h| h == k)));
            Ok(u64::try_from(before - s.sessions.len()).unwrap_or(u64::MAX))
        })
    }

    async fn token_put(&self, row: &TokenRow) -> StoreResult<()> {
        const OP: &str = "token_put";
        self.write(OP, |s| {
            if s.tokens.contains_key(&row.id_hash) {
                return Err(violated(
                    OP,
                    "UNIQUE constraint failed: api_tokens.id_hash".to_owned(),
                ));
            }
            if !s.users.contains_key(&row.user_name) {
                return Err(violated(OP, "FOREIGN KEY constraint failed".to_owned()));
            }
            s.tokens.insert(row.id_hash.clone(), row.clone());
            Ok(())
        })
    }

    async fn token_get(&self, id_hash: &str) -> StoreResult<Option<TokenRow>> {
        self.read("token_get", |s| s.tokens.get(id_hash).cloned())
    }
}
