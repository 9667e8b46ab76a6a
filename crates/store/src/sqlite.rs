//! SQLite implementation of [`Store`].
//!
//! # Connections
//!
//! SQLite allows one writer at a time per database file. The store therefore
//! keeps two pools:
//!
//! * a **writer pool of exactly one connection**, so writes from this
//!   process queue in the pool (in order, with a timeout) instead of racing
//!   for the file lock and failing with `SQLITE_BUSY`; write transactions
//!   start with `BEGIN IMMEDIATE`, so a read-then-write transaction never has
//!   to upgrade its lock half-way;
//! * a **reader pool of up to [`READERS`] connections** with
//!   `query_only = ON`. In WAL mode readers never block the writer nor each
//!   other, so listing an inbox does not wait behind a large batch insert.
//!
//! A reader sees every transaction committed before its query starts, so a
//! read after a successful write always observes that write.
//!
//! The in-memory store ([`SqliteStore::open_in_memory`]) has a single
//! connection shared by both roles, because each SQLite connection to
//! `:memory:` is its own database.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liaison_core::merkle::{Frontier, Hash, STORED_LEVEL_STRIDE, SubtreeId, root_from_leaves};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::batch::{Batch, BatchError, is_audit_index_conflict, is_stored_level};
use crate::error::classify;
use crate::types::{
    AckOutboxRow, AckOutcome, AgreementPut, AgreementRow, EscalationRow, InboxCursor, InboxRow,
    OutboxCommitted, OutboxDepth, OutboxRow, OutboxState, SessionRow, TokenRow, UserRow,
    check_outbox_row,
};
use crate::{Store, StoreError, StoreResult};

/// Number of read-only connections of a file-backed store.
pub const READERS: u32 = 3;

/// How long a statement waits for another process's lock before failing with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation waits for a free connection of its pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages after which a commit checkpoints by itself: only a backstop, should the
/// checkpointer fall behind (SQLite's default is 1,000, which at a few thousand
/// messages a second put a multi-megabyte copy and an extra fsync inside a commit
/// several times a second).
const WAL_AUTOCHECKPOINT_PAGES: &str = "16384";

/// An outbox row's columns, its envelope and receipt (kept in `outbox_envelope` and
/// `outbox_receipt`, see migration 0006) among them; for queries `FROM outbox`.
macro_rules! outbox_cols {
    () => {
        "seq, envelope_id, peer, from_desk, to_desk, precedence, created_ms, \
         (SELECT e.envelope_json FROM outbox_envelope AS e WHERE e.seq = outbox.seq) \
         AS envelope_json, \
         state, attempts, next_attempt_ms, last_error, \
         (SELECT r.receipt_json FROM outbox_receipt AS r WHERE r.seq = outbox.seq) AS receipt_json, \
         bounce_reason, delivered_ms, bounced_ms, acked_receipt_json, acked_ms"
    };
}
const OUTBOX_COLS: &str = outbox_cols!();

const INBOX_COLS: &str = "seq, envelope_id, from_desk, to_desk, sender_party, precedence, \
    received_ms, envelope_json, receiver_label, body, acked_ms, acked_by, ack_receipt_json, \
    escalated_ms";

const OUTBOX_INSERT_HEAD: &str = "INSERT INTO outbox (envelope_id, peer, from_desk, to_desk, \
    precedence, created_ms, state, attempts, next_attempt_ms, last_error, \
    bounce_reason, delivered_ms, bounced_ms, acked_receipt_json, acked_ms) VALUES ";
const OUTBOX_INSERT_COLS: usize = 15;

const INBOX_INSERT_HEAD: &str = "INSERT INTO inbox (envelope_id, from_desk, to_desk, \
    sender_party, precedence, received_ms, envelope_json, receiver_label, body, acked_ms, \
    acked_by, ack_receipt_json, escalated_ms) VALUES ";
const INBOX_INSERT_COLS: usize = 13;

/// Rows per multi-row statement. Each statement is a round trip to the
/// connection's worker thread, which costs far more than SQLite's own work
/// per row, so batches are sent as few statements as possible while staying
/// well under SQLite's limit of 32,766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// Per input row, whether it was new: its id came back from the insert and
/// it is the first occurrence of that id in the batch (SQLite inserts VALUES
/// rows in order, so a later duplicate hits the conflict clause).
fn fresh_flags<'a>(ids: impl Iterator<Item = &'a str>, mut inserted: HashSet<String>) -> Vec<bool> {
    ids.map(|id| inserted.remove(id)).collect()
}

/// The delivery scheduler's query. `INDEXED BY` makes SQLite fail loudly
/// rather than silently fall back to a sort if the index ever stops
/// matching; the index order equals the ORDER BY, so no sort is needed and
/// the scan stops after `limit` due rows.
const OUTBOX_DUE: &str = concat!(
    "SELECT ",
    outbox_cols!(),
    " FROM outbox INDEXED BY outbox_due_idx \
    WHERE peer = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 \
    ORDER BY precedence DESC, created_ms ASC, seq ASC \
    LIMIT ?3"
);

/// [`OUTBOX_DUE`] within a precedence range.
const OUTBOX_DUE_RANGE_EXCLUDING: &str = concat!(
    "SELECT ",
    outbox_cols!(),
    " FROM outbox INDEXED BY outbox_due_idx \
    WHERE peer = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 \
      AND precedence BETWEEN ?4 AND ?5 \
      AND seq NOT IN (SELECT value FROM json_each(?6)) \
    ORDER BY precedence DESC, created_ms ASC, seq ASC \
    LIMIT ?3"
);

const OUTBOX_DUE_RANGE: &str = concat!(
    "SELECT ",
    outbox_cols!(),
    " FROM outbox INDEXED BY outbox_due_idx \
    WHERE peer = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 \
      AND precedence BETWEEN ?4 AND ?5 \
    ORDER BY precedence DESC, created_ms ASC, seq ASC \
    LIMIT ?3"
);

/// Distinct peers with queued work, found by skipping from peer to peer in
/// `outbox_next_due_idx` (one probe per peer rather than a scan of every
/// queued row), keeping those whose earliest attempt is due.
const OUTBOX_PEERS_WITH_DUE: &str = "WITH RECURSIVE peers(peer) AS ( \
        SELECT (SELECT MIN(peer) FROM outbox WHERE state = 'queued') \
        UNION ALL \
        SELECT (SELECT MIN(o.peer) FROM outbox AS o \
                WHERE o.state = 'queued' AND o.peer > peers.peer) \
        FROM peers WHERE peers.peer IS NOT NULL \
    ) \
    SELECT peer FROM peers \
    WHERE peer IS NOT NULL \
      AND (SELECT MIN(o.next_attempt_ms) FROM outbox AS o \
           WHERE o.state = 'queued' AND o.peer = peers.peer) <= ?1 \
    ORDER BY peer";

/// SQLite-backed [`Store`]. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Runs WAL checkpoints (file-backed stores only); see [`checkpoint_while_open`].
    checkpointer: Option<SqlitePool>,
    /// Where the database lives, for error messages.
    path: Arc<str>,
    /// The audit log's frontier as committed. INVARIANT: equals the frontier stored in
    /// `meta` under `audit_frontier`; held locked from before a write transaction that
    /// appends audit entries until after it commits.
    frontier: Arc<tokio::sync::Mutex<Frontier>>,
}

const AUDIT_FRONTIER_KEY: &str = "audit_frontier";
/// Set in `meta` once `audit_subtree` holds the stored-level subtrees of the whole log.
const AUDIT_SUBTREES_KEY: &str = "audit_subtrees";
/// Leaves read per query while filling in `audit_subtree` for an older log.
const FILL_CHUNK: u64 = 65_536;

/// One row of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub index: u64,
    pub entry: Vec<u8>,
    pub leaf: Hash,
    pub root_after: Hash,
}

/// Whether a released writer connection may go back to the pool.
///
/// When a write fails with a full disk or an I/O error, SQLite may roll the transaction
/// back by itself, even at COMMIT. sqlx's rollback on drop then fails ("no transaction
/// is active") and sqlx goes on counting the transaction as open, so every later
/// `BEGIN IMMEDIATE` on the one writer connection fails and the node could never write
/// again, not even once space is freed. The ping lets the queued rollback run first; a
/// connection still counted as in a transaction is closed and the pool opens a new one.
/// A connection counted as in no transaction goes straight back: no trip to its
/// thread on the path of every write. (The hot writes' transactions, which sqlx does
/// not count, end in their own query strings: see `Batch::run_as_transaction`.)
async fn drop_if_stuck_in_transaction(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<bool> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    Ok(!conn.is_in_transaction())
}

/// What every pool of the store shares. No ping before each acquire (sqlx's default):
/// an embedded connection cannot drop the way a server's can, and on a busy machine
/// every ping is one more wait for the connection's thread to be scheduled, on the
/// path of every read and every commit.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the pool is closed. A failed
/// checkpoint (a full disk, say) is only logged: the frames stay in the WAL, durable,
/// and the next checkpoint (or a commit past the backstop) copies them.
async fn checkpoint_while_open(pool: SqlitePool) {
    while !pool.is_closed() {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::warn!("WAL checkpoint failed, will retry: {e}");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date.
    ///
    /// The connections use WAL journaling, `synchronous = FULL` (a commit is
    /// fsynced before it returns), foreign keys and a busy timeout.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let shown: Arc<str> = Arc::from(path.display().to_string());
        let base = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let writer = pool_options()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_release(|conn, _| Box::pin(drop_if_stuck_in_transaction(conn)))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
            )
            .await
            .map_err(|e| open_error(&shown, e))?;

        migrate(&writer, &shown).await?;

        // Checkpoints off the commit path: a connection of its own copies committed WAL
        // frames into the database file (PASSIVE: never waits for, nor blocks, the
        // writer or readers), so a commit only appends to the WAL and fsyncs it.
        let checkpointer = pool_options()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(base.clone())
            .await
            .map_err(|e| open_error(&shown, e))?;
        tokio::spawn(checkpoint_while_open(checkpointer.clone()));

        // Readers are opened after the writer so that the file exists and is
        // already in WAL mode (which is persistent).
        let reader = pool_options()
            .max_connections(READERS)
            .min_connections(0)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(|e| open_error(&shown, e))?;

        let store = Self {
            writer,
            reader,
            checkpointer: Some(checkpointer),
            path: shown,
            frontier: Arc::new(tokio::sync::Mutex::new(Frontier::new())),
        };
        store.fill_audit_subtrees().await?;
        store.load_frontier().await?;
        Ok(store)
    }

    /// Opens an existing database without write access (`mode=ro` and
    /// `query_only`): every write fails with [`StoreError::ReadOnly`]. For
    /// inspecting a node's state, and for simulating a read-only volume in
    /// tests. Migrations are not run.
    pub async fn open_read_only(path: &Path) -> StoreResult<Self> {
        let shown: Arc<str> = Arc::from(path.display().to_string());
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("query_only", "ON");
        let pool = pool_options()
            .max_connections(READERS)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| open_error(&shown, e))?;
        let store = Self {
            writer: pool.clone(),
            reader: pool,
            checkpointer: None,
            path: shown,
            frontier: Arc::new(tokio::sync::Mutex::new(Frontier::new())),
        };
        store.load_frontier().await?;
        Ok(store)
    }

    /// A fresh, empty, migrated in-memory store (for tests). One connection.
    pub async fn open_in_memory() -> StoreResult<Self> {
        let shown: Arc<str> = Arc::from(":memory:");
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // The connection must never be closed: that would drop the database.
        let pool = pool_options()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| open_error(&shown, e))?;
        migrate(&pool, &shown).await?;
        let store = Self {
            writer: pool.clone(),
            reader: pool,
            checkpointer: None,
            path: shown,
            frontier: Arc::new(tokio::sync::Mutex::new(Frontier::new())),
        };
        store.fill_audit_subtrees().await?;
        store.load_frontier().await?;
        Ok(store)
    }

    /// Closes all connections, waiting for running operations to finish.
    /// The WAL is checkpointed when the last connection closes.
    pub async fn close(&self) {
        if let Some(c) = &self.checkpointer {
            c.close().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    /// The database location as shown in error messages.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| classify(&self.path, op, e)
    }

    /// One `meta` value, read through `on`: a pool, or a connection (a transaction's,
    /// to read what that transaction sees).
    async fn meta_value<'e, E>(
        &self,
        op: &'static str,
        on: E,
        key: &'e str,
    ) -> StoreResult<Option<String>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
    {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(on)
            .await
            .map_err(self.err(op))
    }

    /// The audit log (or what is stored beside it) is not what this store wrote.
    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_string(),
            op: "audit",
            detail,
        }
    }

    async fn load_frontier(&self) -> StoreResult<()> {
        let mut conn = self
            .reader
            .acquire()
            .await
            .map_err(self.err("load_frontier"))?;
        let frontier = self.stored_frontier("load_frontier", &mut conn).await?;
        *self.frontier.lock().await = frontier;
        Ok(())
    }

    /// The audit frontier as committed, read through `conn`: the one saved in `meta`,
    /// or, for a log from before it was kept, rebuilt from the leaves.
    async fn stored_frontier(
        &self,
        op: &'static str,
        conn: &mut sqlx::SqliteConnection,
    ) -> StoreResult<Frontier> {
        let stored = self.meta_value(op, &mut *conn, AUDIT_FRONTIER_KEY).await?;
        if let Some(f) = stored.and_then(|j| serde_json::from_str::<Frontier>(&j).ok()) {
            return Ok(f);
        }
        let leaves = self.leaves_in(op, conn, 0, u64::MAX).await?;
        Frontier::from_leaves(&leaves).map_err(|e| self.corrupt(format!("audit log: {e}")))
    }

    async fn audit_leaves(&self, start: u64, end: u64) -> StoreResult<Vec<Hash>> {
        const OP: &str = "audit_leaf_hashes";
        let mut conn = self.reader.acquire().await.map_err(self.err(OP))?;
        self.leaves_in(OP, &mut conn, start, end).await
    }

    /// Fills `audit_subtree` for a log written before the table existed: one pass over
    /// its leaves, on the first writable open by a build that keeps the table; from
    /// then on each append writes the subtrees it completes. One write transaction, so
    /// a crash part-way leaves the key unset and the next open starts again.
    async fn fill_audit_subtrees(&self) -> StoreResult<()> {
        const OP: &str = "fill_audit_subtrees";
        // Filled already (every open after the first): no write lock at start-up.
        if self.meta_get(AUDIT_SUBTREES_KEY).await?.is_some() {
            return Ok(());
        }
        let mut tx = self.begin_write(OP).await?;
        // Asked again under the lock: another process may have filled it meanwhile.
        if self
            .meta_value(OP, &mut *tx, AUDIT_SUBTREES_KEY)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut frontier = Frontier::new();
        loop {
            let from = frontier.size();
            let leaves = self
                .leaves_in(OP, &mut tx, from, from.saturating_add(FILL_CHUNK))
                .await?;
            let mut subtrees: Vec<(SubtreeId, Hash)> = Vec::new();
            for leaf in &leaves {
                frontier
                    .push_reporting(*leaf, |id, hash| {
                        if is_stored_level(id.0) {
                            subtrees.push((id, *hash));
                        }
                    })
                    .map_err(|e| self.corrupt(format!("audit log: {e}")))?;
            }
            let mut batch = Batch::new();
            batch
                .subtrees(&subtrees)
                .map_err(|e| self.batch_err(OP, e))?;
            batch
                .run(&mut tx)
                .await
                .map_err(|e| self.batch_err(OP, e))?;
            if (leaves.len() as u64) < FILL_CHUNK {
                break;
            }
        }
        // A gap in the indexes ends the pass early; the log's last index tells.
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(idx) FROM audit")
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err(OP))?;
        let logged = last.map_or(0, |i| u64::try_from(i).map_or(0, |i| i + 1));
        if logged != frontier.size() {
            return Err(self.corrupt(format!(
                "audit log has entry {} where {} was expected",
                logged.saturating_sub(1),
                frontier.size()
            )));
        }
        if frontier.size() > 0 {
            tracing::info!(
                entries = frontier.size(),
                "audit log: stored its subtree roots (once, for a log from an older version)"
            );
        }
        sqlx::query("INSERT INTO meta (key, value) VALUES (?1, ?2)")
            .bind(AUDIT_SUBTREES_KEY)
            .bind(frontier.size().to_string())
            .execute(&mut *tx)
            .await
            .map_err(self.err(OP))?;
        tx.commit().await.map_err(self.err(OP))
    }

    /// Root of the perfect subtree `(level, index)`, from the rows of the stored level
    /// at or below it (at most `2^(STRIDE-1)` of them), or from its leaves where those
    /// rows are missing (a store opened read-only before they were filled in). `None`
    /// when the log does not cover it yet.
    async fn subtree_in(
        &self,
        op: &'static str,
        conn: &mut sqlx::SqliteConnection,
        (level, index): SubtreeId,
    ) -> StoreResult<Option<Hash>> {
        let base = level - level % STORED_LEVEL_STRIDE;
        let fold = |hashes: Vec<Vec<u8>>| -> StoreResult<Hash> {
            let hashes = hashes
                .into_iter()
                .map(|h| {
                    h.try_into()
                        .map_err(|_| self.corrupt("audit subtree hash is not 32 bytes".to_owned()))
                })
                .collect::<StoreResult<Vec<Hash>>>()?;
            // Equal perfect subtrees side by side fold like leaves of a perfect tree.
            Ok(root_from_leaves(&hashes))
        };
        let span = |shift: u32| -> Option<(i64, i64, u64)> {
            let width = 1u64.checked_shl(shift)?;
            let start = index.checked_mul(width)?;
            let end = start.checked_add(width)?;
            Some((i64::try_from(start).ok()?, i64::try_from(end).ok()?, width))
        };
        if base > 0
            && let Some((start, end, width)) = span(level - base)
        {
            let rows: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT hash FROM audit_subtree WHERE level = ?1 AND idx >= ?2 AND idx < ?3 \
                 ORDER BY idx",
            )
            .bind(i64::from(base))
            .bind(start)
            .bind(end)
            .fetch_all(&mut *conn)
            .await
            .map_err(self.err(op))?;
            if rows.len() as u64 == width {
                return fold(rows).map(Some);
            }
        }
        let Some((start, end, width)) = span(level) else {
            return Ok(None);
        };
        let leaves = self.leaves_in(op, conn, start as u64, end as u64).await?;
        Ok((leaves.len() as u64 == width).then(|| root_from_leaves(&leaves)))
    }

    /// Leaf hashes of entries `start..end`, read through `conn`.
    async fn leaves_in(
        &self,
        op: &'static str,
        conn: &mut sqlx::SqliteConnection,
        start: u64,
        end: u64,
    ) -> StoreResult<Vec<Hash>> {
        let end = i64::try_from(end).unwrap_or(i64::MAX);
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf FROM audit WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")
                .bind(start)
                .bind(end)
                .fetch_all(&mut *conn)
                .await
                .map_err(self.err(op))?;
        rows.into_iter()
            .map(|b| {
                b.try_into()
                    .map_err(|_| self.corrupt("audit leaf is not 32 bytes".to_owned()))
            })
            .collect()
    }

    /// Appends audit entries inside `tx`; returns the frontier to install once `tx`
    /// commits.
    async fn append_audit(
        &self,
        op: &'static str,
        tx: &mut Transaction<'static, Sqlite>,
        frontier: &Frontier,
        entries: &[Vec<u8>],
    ) -> StoreResult<Frontier> {
        let mut next = frontier.clone();
        if entries.is_empty() {
            return Ok(next);
        }
        // The frontier in memory can be behind the log. Another process may have
        // appended (`liaison agreement install` or `liaison user add` on a running
        // node, both supported), or a caller was dropped while its commit was under
        // way (an HTTP handler whose client went away), leaving the commit done and
        // the frontier unmoved. Appending from it would reuse an index and fail every
        // write from then on, so the log itself is asked, inside the transaction; a
        // flag set around the commit would miss the other process.
        let size: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit")
            .fetch_one(&mut **tx)
            .await
            .map_err(self.err(op))?;
        if u64::try_from(size).ok() != Some(next.size()) {
            tracing::warn!(
                memory = next.size(),
                stored = size,
                "audit frontier in memory is behind the log; reloading it"
            );
            next = self.stored_frontier(op, tx).await?;
        }
        // The entries and the frontier after them, as one query.
        let mut batch = Batch::new();
        let next = batch
            .audit(&next, entries, AUDIT_FRONTIER_KEY)
            .map_err(|e| self.batch_err(op, e))?;
        batch.run(tx).await.map_err(|e| self.batch_err(op, e))?;
        Ok(next)
    }

    /// Appends `entries` to the audit log inside `tx`, commits, and only then moves
    /// the in-memory frontier: a failed commit leaves both as they were.
    async fn commit_audited(
        &self,
        op: &'static str,
        mut tx: Transaction<'static, Sqlite>,
        frontier: &mut Frontier,
        entries: &[Vec<u8>],
    ) -> StoreResult<()> {
        let next = self.append_audit(op, &mut tx, frontier, entries).await?;
        tx.commit().await.map_err(self.err(op))?;
        *frontier = next;
        Ok(())
    }

    async fn begin_write(&self, op: &'static str) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.err(op))
    }

    async fn fetch_outbox<'q>(
        &self,
        op: &'static str,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = query.fetch_all(&self.reader).await.map_err(self.err(op))?;
        rows.iter()
            .map(|r| outbox_from_row(r).map_err(self.err(op)))
            .collect()
    }

    async fn fetch_inbox<'q>(
        &self,
        op: &'static str,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> StoreResult<Vec<InboxRow>> {
        let rows = query.fetch_all(&self.reader).await.map_err(self.err(op))?;
        rows.iter()
            .map(|r| inbox_from_row(r).map_err(self.err(op)))
            .collect()
    }

    fn batch_err(&self, op: &'static str, e: BatchError) -> StoreError {
        match e {
            BatchError::Sql(e) => classify(&self.path, op, e),
            BatchError::Audit(detail) => self.corrupt(detail),
        }
    }

    /// Runs one hot write: `build` gathers its statements into one [`Batch`], the
    /// audit entries follow, and the whole runs as one transaction in one trip to the
    /// writer ([`Batch::run_as_transaction`]), on a task of its own: once started it
    /// finishes, commits and moves the frontier even if the caller goes away, so the
    /// frontier in memory never falls behind a commit. A frontier found behind the log
    /// anyway (another process appended: the insert hits an audit index the log holds)
    /// is reloaded from the log, inside the write transaction, and the write built once
    /// more.
    async fn write_batch(
        &self,
        op: &'static str,
        audit: &[Vec<u8>],
        build: impl Fn(&mut Batch) -> Result<(), BatchError>,
    ) -> StoreResult<Vec<SqliteRow>> {
        // The write's statements and the audit entries after them, from `frontier`;
        // with the frontier they leave, to install once the transaction commits.
        let fill = |frontier: &Frontier| -> Result<(Batch, Frontier), BatchError> {
            let mut batch = Batch::new();
            build(&mut batch)?;
            let next = batch.audit(frontier, audit, AUDIT_FRONTIER_KEY)?;
            Ok((batch, next))
        };
        let mut frontier = self.frontier.clone().lock_owned().await;
        let (batch, next) = fill(&frontier).map_err(|e| self.batch_err(op, e))?;
        let writer = self.writer.clone();
        let (returned, ran) = tokio::spawn(async move {
            let ran = batch.run_as_transaction(&writer).await;
            if ran.is_ok() {
                *frontier = next;
            }
            (frontier, ran)
        })
        .await
        .map_err(|_| self.err(op)(sqlx::Error::WorkerCrashed))?;
        match ran {
            Ok(rows) => Ok(rows),
            Err(e) if is_audit_index_conflict(&e) => {
                let mut frontier = returned;
                tracing::warn!(
                    memory = frontier.size(),
                    "audit frontier in memory is behind the log; reloading it"
                );
                let mut tx = self.begin_write(op).await?;
                *frontier = self.stored_frontier(op, &mut tx).await?;
                let ran = async {
                    let (batch, next) = fill(&frontier)?;
                    Ok::<_, BatchError>((next, batch.run(&mut tx).await?))
                }
                .await;
                let (next, rows) = ran.map_err(|e| self.batch_err(op, e))?;
                tx.commit().await.map_err(self.err(op))?;
                *frontier = next;
                Ok(rows)
            }
            Err(e) => Err(self.batch_err(op, e)),
        }
    }
}

/// The ids a batch's RETURNING clauses named, as (kind, id): see [`returned_ids`].
fn returned_ids(rows: &[SqliteRow], kind: i64) -> HashSet<String> {
    rows.iter()
        .filter(|r| r.try_get::<i64, _>(1).is_ok_and(|k| k == kind))
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect()
}

/// RETURNING kinds of the outbox commit's statements.
const RETURNED_INSERTED: i64 = 0;
const RETURNED_DELIVERED: i64 = 1;

fn bind_outbox(b: &mut Batch, row: &OutboxRow) -> Result<(), BatchError> {
    b.text(&row.envelope_id)?;
    b.text(&row.peer)?;
    b.text(&row.from_desk)?;
    b.text(&row.to_desk)?;
    b.int(i64::from(row.precedence))?;
    b.int(row.created_ms)?;
    b.text(row.state.as_str())?;
    b.int(i64::from(row.attempts))?;
    b.int(row.next_attempt_ms)?;
    b.opt_text(&row.last_error)?;
    b.opt_text(&row.bounce_reason)?;
    b.opt_int(row.delivered_ms)?;
    b.opt_int(row.bounced_ms)?;
    b.opt_text(&row.acked_receipt_json)?;
    b.opt_int(row.acked_ms)
}

/// Appends an insert of `(envelope id, text)` pairs into `table` (`outbox_envelope`
/// or `outbox_receipt`), keyed by the `seq` of the outbox row of each id that meets
/// `condition` (which may end in a conflict clause).
fn insert_beside_outbox(
    b: &mut Batch,
    table: &str,
    column: &str,
    pairs: &[(&str, &str)],
    condition: &str,
) -> Result<(), BatchError> {
    b.insert(
        &format!("INSERT INTO {table} (seq, {column}) SELECT outbox.seq, v.column2 FROM (VALUES "),
        2,
        &format!(") AS v JOIN outbox ON outbox.envelope_id = v.column1 WHERE {condition}"),
        pairs,
        |b, (id, text)| {
            b.text(id)?;
            b.text(text)
        },
    )
}

fn bind_inbox(b: &mut Batch, row: &InboxRow) -> Result<(), BatchError> {
    b.text(&row.envelope_id)?;
    b.text(&row.from_desk)?;
    b.text(&row.to_desk)?;
    b.text(&row.sender_party)?;
    b.int(i64::from(row.precedence))?;
    b.int(row.received_ms)?;
    b.text(&row.envelope_json)?;
    b.text(&row.receiver_label)?;
    b.text(&row.body)?;
    b.opt_int(row.acked_ms)?;
    b.opt_text(&row.acked_by)?;
    b.opt_text(&row.ack_receipt_json)?;
    b.opt_int(row.escalated_ms)
}

async fn migrate(pool: &SqlitePool, path: &str) -> StoreResult<()> {
    let migrator = sqlx::migrate!();
    // A store that already holds data and lacks migrations may take a while (0006
    // rebuilds the outbox: about a minute for a million messages): say so, rather
    // than start silently slow. A new store (no migrations table yet) is quick.
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .ok();
    if let Some(applied) = applied {
        let known = migrator.migrations.len();
        if applied > 0 && usize::try_from(applied).is_ok_and(|a| a < known) {
            tracing::info!(
                store = path,
                applied,
                known,
                "bringing the store's schema up to date; a large store may take a minute"
            );
        }
    }
    migrator.run(pool).await.map_err(|e| match e {
        sqlx::migrate::MigrateError::Execute(inner) => match classify(path, "migrate", inner) {
            StoreError::Database { detail, .. } => StoreError::Migrate {
                path: path.to_owned(),
                detail,
            },
            storage => storage,
        },
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Migrate {
            path: path.to_owned(),
            detail: format!(
                "the database has migration {v} applied, which this build does not know; \
                     it was written by a newer version of Liaison"
            ),
        },
        other => StoreError::Migrate {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

fn open_error(path: &str, e: sqlx::Error) -> StoreError {
    match classify(path, "open", e) {
        StoreError::Database { detail, .. } => StoreError::Open {
            path: path.to_owned(),
            detail,
        },
        other => other,
    }
}

fn limit_of(limit: u32) -> i64 {
    i64::from(limit.max(1))
}

fn decode_err(column: &str, what: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: what.into(),
    }
}

fn get_u8(row: &SqliteRow, column: &str) -> Result<u8, sqlx::Error> {
    let v: i64 = row.try_get(column)?;
    u8::try_from(v).map_err(|_| decode_err(column, format!("{v} does not fit in u8")))
}

fn get_u32(row: &SqliteRow, column: &str) -> Result<u32, sqlx::Error> {
    let v: i64 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| decode_err(column, format!("{v} does not fit in u32")))
}

fn outbox_from_row(row: &SqliteRow) -> Result<OutboxRow, sqlx::Error> {
    let state: String = row.try_get("state")?;
    let state = OutboxState::from_str_opt(&state)
        .ok_or_else(|| decode_err("state", format!("unknown outbox state `{state}`")))?;
    Ok(OutboxRow {
        seq: row.try_get("seq")?,
        envelope_id: row.try_get("envelope_id")?,
        peer: row.try_get("peer")?,
        from_desk: row.try_get("from_desk")?,
        to_desk: row.try_get("to_desk")?,
        precedence: get_u8(row, "precedence")?,
        created_ms: row.try_get("created_ms")?,
        envelope_json: row.try_get("envelope_json")?,
        state,
        attempts: get_u32(row, "attempts")?,
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        last_error: row.try_get("last_error")?,
        receipt_json: row.try_get("receipt_json")?,
        bounce_reason: row.try_get("bounce_reason")?,
        delivered_ms: row.try_get("delivered_ms")?,
        bounced_ms: row.try_get("bounced_ms")?,
        acked_receipt_json: row.try_get("acked_receipt_json")?,
        acked_ms: row.try_get("acked_ms")?,
    })
}

fn inbox_from_row(row: &SqliteRow) -> Result<InboxRow, sqlx::Error> {
    Ok(InboxRow {
        seq: row.try_get("seq")?,
        envelope_id: row.try_get("envelope_id")?,
        from_desk: row.try_get("from_desk")?,
        to_desk: row.try_get("to_desk")?,
        sender_party: row.try_get("sender_party")?,
        precedence: get_u8(row, "precedence")?,
        received_ms: row.try_get("received_ms")?,
        envelope_json: row.try_get("envelope_json")?,
        receiver_label: row.try_get("receiver_label")?,
        body: row.try_get("body")?,
        acked_ms: row.try_get("acked_ms")?,
        acked_by: row.try_get("acked_by")?,
        ack_receipt_json: row.try_get("ack_receipt_json")?,
        escalated_ms: row.try_get("escalated_ms")?,
    })
}

fn user_from_row(r: &SqliteRow) -> Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        name: r.try_get("name")?,
        display_name: r.try_get("display_name")?,
        password_hash: r.try_get("password_hash")?,
        roles: r.try_get("roles")?,
        desks: r.try_get("desks")?,
        clearance: r.try_get("clearance")?,
        language: r.try_get("language")?,
        time_zone: r.try_get("time_zone")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn agreement_from_row(row: &SqliteRow) -> Result<AgreementRow, sqlx::Error> {
    Ok(AgreementRow {
        id: row.try_get("id")?,
        version: get_u32(row, "version")?,
        text: row.try_get("text")?,
        digest_hex: row.try_get("digest_hex")?,
        installed_ms: row.try_get("installed_ms")?,
    })
}

impl Store for SqliteStore {
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
        // The first receipt for an id wins, also within this call.
        let mut seen = HashSet::new();
        let firsts: Vec<(&str, &str)> = receipts
            .iter()
            .filter(|(id, _)| seen.insert(id.as_str()))
            .map(|(id, receipt)| (id.as_str(), receipt.as_str()))
            .collect();
        // A CHECK cannot see `outbox_receipt`, so rows are checked here, by the same
        // rules (and in the same order) as the in-memory model checks them.
        for r in accepted {
            check_outbox_row(OP, r)?;
        }
        let envelopes: Vec<(&str, &str)> = accepted
            .iter()
            .map(|r| (r.envelope_id.as_str(), r.envelope_json.as_str()))
            .collect();
        // Rows that arrive delivered bring their receipt (the store's tests write such
        // rows; the node only ever accepts queued ones).
        let with_receipt: Vec<(&str, &str)> = accepted
            .iter()
            .filter(|r| r.state == OutboxState::Delivered)
            .filter_map(|r| Some((r.envelope_id.as_str(), r.receipt_json.as_deref()?)))
            .collect();
        let rows = self
            .write_batch(OP, audit, |b| {
                b.insert(
                    OUTBOX_INSERT_HEAD,
                    OUTBOX_INSERT_COLS,
                    " ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id, 0",
                    accepted,
                    bind_outbox,
                )?;
                // An id that was already held keeps the envelope and receipt it had, and
                // the first of an id repeated in this call wins (VALUES rows go in order).
                insert_beside_outbox(
                    b,
                    "outbox_envelope",
                    "envelope_json",
                    &envelopes,
                    "true ON CONFLICT (seq) DO NOTHING",
                )?;
                insert_beside_outbox(
                    b,
                    "outbox_receipt",
                    "receipt_json",
                    &with_receipt,
                    "outbox.state = 'delivered' ON CONFLICT (seq) DO NOTHING",
                )?;
                // The receipt first, while the row is not yet delivered: the first
                // receipt for an id wins.
                insert_beside_outbox(
                    b,
                    "outbox_receipt",
                    "receipt_json",
                    &firsts,
                    "outbox.state <> 'delivered'",
                )?;
                // `now_ms` is a number written into the text, not a placeholder: the
                // placeholders of a statement are bound row by row.
                b.insert(
                    &format!(
                        "UPDATE outbox SET state = 'delivered', delivered_ms = {now_ms} \
                         FROM (VALUES "
                    ),
                    1,
                    ") AS v WHERE outbox.envelope_id = v.column1 \
                     AND outbox.state <> 'delivered' RETURNING envelope_id, 1",
                    &firsts,
                    |b, (id, _)| b.text(id),
                )
            })
            .await?;
        Ok(OutboxCommitted {
            inserted: fresh_flags(
                accepted.iter().map(|r| r.envelope_id.as_str()),
                returned_ids(&rows, RETURNED_INSERTED),
            ),
            delivered: fresh_flags(
                receipts.iter().map(|(id, _)| id.as_str()),
                returned_ids(&rows, RETURNED_DELIVERED),
            ),
        })
    }

    async fn outbox_due(&self, peer: &str, now_ms: i64, limit: u32) -> StoreResult<Vec<OutboxRow>> {
        let q = sqlx::query(OUTBOX_DUE)
            .bind(peer)
            .bind(now_ms)
            .bind(limit_of(limit));
        self.fetch_outbox("outbox_due", q).await
    }

    async fn outbox_due_range(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
    ) -> StoreResult<Vec<OutboxRow>> {
        let q = sqlx::query(OUTBOX_DUE_RANGE)
            .bind(peer)
            .bind(now_ms)
            .bind(limit_of(limit))
            .bind(i64::from(precedence_min))
            .bind(i64::from(precedence_max));
        self.fetch_outbox("outbox_due_range", q).await
    }

    async fn outbox_due_range_excluding(
        &self,
        peer: &str,
        now_ms: i64,
        limit: u32,
        precedence_min: u8,
        precedence_max: u8,
        exclude: &[i64],
    ) -> StoreResult<Vec<OutboxRow>> {
        if exclude.is_empty() {
            return self
                .outbox_due_range(peer, now_ms, limit, precedence_min, precedence_max)
                .await;
        }
        // One JSON array parameter however many rows are excluded; SQLite builds the
        // set once and the index scan skips its members.
        let list = format!(
            "[{}]",
            exclude
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let q = sqlx::query(OUTBOX_DUE_RANGE_EXCLUDING)
            .bind(peer)
            .bind(now_ms)
            .bind(limit_of(limit))
            .bind(i64::from(precedence_min))
            .bind(i64::from(precedence_max))
            .bind(list);
        self.fetch_outbox("outbox_due_range_excluding", q).await
    }

    async fn outbox_lease(&self, envelope_ids: &[String], until_ms: i64) -> StoreResult<u64> {
        const OP: &str = "outbox_lease";
        if envelope_ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write(OP).await?;
        let mut changed = 0;
        for chunk in envelope_ids.chunks(ROWS_PER_STATEMENT) {
            let marks: Vec<String> = (0..chunk.len()).map(|k| format!("?{}", k + 2)).collect();
            let sql = format!(
                "UPDATE outbox SET next_attempt_ms = ?1 WHERE state = 'queued' AND envelope_id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(until_ms);
            for id in chunk {
                q = q.bind(id);
            }
            changed += q
                .execute(&mut *tx)
                .await
                .map_err(self.err(OP))?
                .rows_affected();
        }
        tx.commit().await.map_err(self.err(OP))?;
        Ok(changed)
    }

    async fn outbox_retry(
        &self,
        envelope_id: &str,
        attempts: u32,
        next_attempt_ms: i64,
        last_error: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = ?1, next_attempt_ms = ?2, last_error = ?3 \
             WHERE envelope_id = ?4 AND state = 'queued'",
        )
        .bind(i64::from(attempts))
        .bind(next_attempt_ms)
        .bind(last_error)
        .bind(envelope_id)
        .execute(&self.writer)
        .await
        .map_err(self.err("outbox_retry"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn outbox_retry_batch(
        &self,
        retries: &[(String, u32, i64)],
        last_error: &str,
    ) -> StoreResult<u64> {
        const OP: &str = "outbox_retry_batch";
        if retries.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write(OP).await?;
        let mut changed = 0;
        for chunk in retries.chunks(ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|k| format!("(?{}, ?{}, ?{})", 2 + 3 * k, 3 + 3 * k, 4 + 3 * k))
                .collect();
            let sql = format!(
                "UPDATE outbox SET attempts = v.column2, next_attempt_ms = v.column3, \
                 last_error = ?1 \
                 FROM (VALUES {}) AS v \
                 WHERE outbox.envelope_id = v.column1 AND outbox.state = 'queued'",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(last_error);
            for (id, attempts, next) in chunk {
                q = q.bind(id).bind(i64::from(*attempts)).bind(*next);
            }
            changed += q
                .execute(&mut *tx)
                .await
                .map_err(self.err(OP))?
                .rows_affected();
        }
        tx.commit().await.map_err(self.err(OP))?;
        Ok(changed)
    }

    async fn outbox_bounce(
        &self,
        envelope_id: &str,
        reason: &str,
        now_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<bool> {
        const OP: &str = "outbox_bounce";
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'bounced', bounce_reason = ?1, bounced_ms = ?2 \
             WHERE envelope_id = ?3 AND state = 'queued'",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(envelope_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        // The audit records a bounce only if one happened.
        let changed = done.rows_affected() == 1;
        self.commit_audited(OP, tx, &mut frontier, if changed { audit } else { &[] })
            .await?;
        Ok(changed)
    }

    async fn outbox_set_acked(
        &self,
        envelope_id: &str,
        ack_receipt_json: &str,
        at_ms: i64,
        audit: &[Vec<u8>],
    ) -> StoreResult<bool> {
        const OP: &str = "outbox_set_acked";
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let done = sqlx::query(
            "UPDATE outbox SET acked_receipt_json = ?1, acked_ms = ?2 \
             WHERE envelope_id = ?3 AND acked_ms IS NULL",
        )
        .bind(ack_receipt_json)
        .bind(at_ms)
        .bind(envelope_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        let changed = done.rows_affected() == 1;
        self.commit_audited(OP, tx, &mut frontier, if changed { audit } else { &[] })
            .await?;
        Ok(changed)
    }

    async fn outbox_get(&self, envelope_id: &str) -> StoreResult<Option<OutboxRow>> {
        let sql = format!("SELECT {OUTBOX_COLS} FROM outbox WHERE envelope_id = ?1");
        let rows = self
            .fetch_outbox("outbox_get", sqlx::query(&sql).bind(envelope_id))
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn outbox_list(
        &self,
        from_desk: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> StoreResult<Vec<OutboxRow>> {
        let before = before_seq.unwrap_or(i64::MAX);
        match from_desk {
            Some(desk) => {
                let sql = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE from_desk = ?1 AND seq < ?2 \
                     ORDER BY seq DESC LIMIT ?3"
                );
                let q = sqlx::query(&sql)
                    .bind(desk)
                    .bind(before)
                    .bind(limit_of(limit));
                self.fetch_outbox("outbox_list", q).await
            }
            None => {
                let sql = format!(
                    "SELECT {OUTBOX_COLS} FROM outbox WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
                );
                let q = sqlx::query(&sql).bind(before).bind(limit_of(limit));
                self.fetch_outbox("outbox_list", q).await
            }
        }
    }

    async fn outbox_depth(&self) -> StoreResult<Vec<OutboxDepth>> {
        const OP: &str = "outbox_depth";
        let rows = sqlx::query(
            "SELECT peer, precedence, COUNT(*) AS n FROM outbox INDEXED BY outbox_due_idx \
             WHERE state = 'queued' GROUP BY peer, precedence ORDER BY peer, precedence DESC",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(self.err(OP))?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok(OutboxDepth {
                    peer: r.try_get("peer")?,
                    precedence: get_u8(r, "precedence")?,
                    count: u64::try_from(n).map_err(|_| decode_err("n", format!("count {n}")))?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err(OP))
    }

    async fn outbox_peers_with_due(&self, now_ms: i64) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(OUTBOX_PEERS_WITH_DUE)
            .bind(now_ms)
            .fetch_all(&self.reader)
            .await
            .map_err(self.err("outbox_peers_with_due"))
    }

    async fn outbox_next_due_ms(&self, peer: &str) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE peer = ?1 AND state = 'queued'",
        )
        .bind(peer)
        .fetch_one(&self.reader)
        .await
        .map_err(self.err("outbox_next_due_ms"))
    }

    async fn inbox_insert_batch(
        &self,
        rows: &[InboxRow],
        audit: &[Vec<u8>],
    ) -> StoreResult<Vec<bool>> {
        const OP: &str = "inbox_insert_batch";
        if rows.is_empty() && audit.is_empty() {
            return Ok(Vec::new());
        }
        // A duplicate delivery is not received twice: it is not inserted again.
        let returned = self
            .write_batch(OP, audit, |b| {
                b.insert(
                    INBOX_INSERT_HEAD,
                    INBOX_INSERT_COLS,
                    " ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id, 0",
                    rows,
                    bind_inbox,
                )
            })
            .await?;
        Ok(fresh_flags(
            rows.iter().map(|r| r.envelope_id.as_str()),
            returned_ids(&returned, RETURNED_INSERTED),
        ))
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
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let sql = format!("SELECT {INBOX_COLS} FROM inbox WHERE envelope_id = ?1");
        let mut answers = Vec::with_capacity(envelope_ids.len());
        for id in envelope_ids {
            let held = sqlx::query(&sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.err(OP))?;
            let answer = match held {
                Some(r) => {
                    let row = inbox_from_row(&r).map_err(self.err(OP))?;
                    (row.sender_party == sender_party).then_some(row)
                }
                None => {
                    // Refused for good; asking again changes nothing.
                    sqlx::query(
                        "INSERT INTO inbox_refused (envelope_id, sender_party, refused_ms, reason) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (envelope_id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(sender_party)
                    .bind(at_ms)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err(OP))?;
                    None
                }
            };
            answers.push(answer);
        }
        self.commit_audited(OP, tx, &mut frontier, audit).await?;
        Ok(answers)
    }

    async fn inbox_list(
        &self,
        to_desk: &str,
        limit: u32,
        after: Option<InboxCursor>,
    ) -> StoreResult<Vec<InboxRow>> {
        match after {
            None => {
                let sql = format!(
                    "SELECT {INBOX_COLS} FROM inbox WHERE to_desk = ?1 \
                     ORDER BY precedence DESC, received_ms DESC, seq DESC LIMIT ?2"
                );
                let q = sqlx::query(&sql).bind(to_desk).bind(limit_of(limit));
                self.fetch_inbox("inbox_list", q).await
            }
            Some(c) => {
                let sql = format!(
                    "SELECT {INBOX_COLS} FROM inbox WHERE to_desk = ?1 \
                     AND (precedence, received_ms, seq) < (?2, ?3, ?4) \
                     ORDER BY precedence DESC, received_ms DESC, seq DESC LIMIT ?5"
                );
                let q = sqlx::query(&sql)
                    .bind(to_desk)
                    .bind(i64::from(c.precedence))
                    .bind(c.received_ms)
                    .bind(c.seq)
                    .bind(limit_of(limit));
                self.fetch_inbox("inbox_list", q).await
            }
        }
    }

    async fn inbox_get(&self, envelope_id: &str) -> StoreResult<Option<InboxRow>> {
        let sql = format!("SELECT {INBOX_COLS} FROM inbox WHERE envelope_id = ?1");
        let rows = self
            .fetch_inbox("inbox_get", sqlx::query(&sql).bind(envelope_id))
            .await?;
        Ok(rows.into_iter().next())
    }

    async fn inbox_ack(
        &self,
        envelope_id: &str,
        by_user: &str,
        at_ms: i64,
        ack_receipt_json: &str,
        audit: &[Vec<u8>],
    ) -> StoreResult<AckOutcome> {
        const OP: &str = "inbox_ack";
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let current = sqlx::query(
            "SELECT sender_party, acked_ms, acked_by, ack_receipt_json FROM inbox \
             WHERE envelope_id = ?1",
        )
        .bind(envelope_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        let Some(current) = current else {
            return Err(StoreError::NotFound {
                what: "inbox message",
                id: envelope_id.to_owned(),
            });
        };
        let earlier = (|| -> Result<_, sqlx::Error> {
            let acked_ms: Option<i64> = current.try_get("acked_ms")?;
            let acked_by: Option<String> = current.try_get("acked_by")?;
            let receipt: Option<String> = current.try_get("ack_receipt_json")?;
            let sender: String = current.try_get("sender_party")?;
            Ok((acked_ms, acked_by, receipt, sender))
        })()
        .map_err(self.err(OP))?;
        if let (Some(acked_ms), Some(acked_by), Some(ack_receipt_json), _) = earlier {
            return Ok(AckOutcome::AlreadyAcked {
                acked_ms,
                acked_by,
                ack_receipt_json,
            });
        }
        let sender = earlier.3;
        sqlx::query(
            "UPDATE inbox SET acked_ms = ?1, acked_by = ?2, ack_receipt_json = ?3 \
             WHERE envelope_id = ?4 AND acked_ms IS NULL",
        )
        .bind(at_ms)
        .bind(by_user)
        .bind(ack_receipt_json)
        .bind(envelope_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        sqlx::query(
            "INSERT INTO ack_outbox (envelope_id, peer, ack_receipt_json) VALUES (?1, ?2, ?3) \
             ON CONFLICT (envelope_id) DO NOTHING",
        )
        .bind(envelope_id)
        .bind(&sender)
        .bind(ack_receipt_json)
        .execute(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        self.commit_audited(OP, tx, &mut frontier, audit).await?;
        Ok(AckOutcome::Acked)
    }

    async fn inbox_unacked(&self, precedence_min: u8) -> StoreResult<Vec<InboxRow>> {
        let sql = format!(
            "SELECT {INBOX_COLS} FROM inbox WHERE acked_ms IS NULL AND precedence >= ?1 \
             ORDER BY precedence DESC, received_ms ASC, seq ASC"
        );
        let q = sqlx::query(&sql).bind(i64::from(precedence_min));
        self.fetch_inbox("inbox_unacked", q).await
    }

    async fn inbox_count(&self) -> StoreResult<u64> {
        const OP: &str = "inbox_count";
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
            .fetch_one(&self.reader)
            .await
            .map_err(self.err(OP))?;
        u64::try_from(n).map_err(|_| self.err(OP)(decode_err("COUNT(*)", format!("count {n}"))))
    }

    async fn inbox_mark_escalated(&self, envelope_id: &str, at_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE inbox SET escalated_ms = ?1 WHERE envelope_id = ?2 AND escalated_ms IS NULL",
        )
        .bind(at_ms)
        .bind(envelope_id)
        .execute(&self.writer)
        .await
        .map_err(self.err("inbox_mark_escalated"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ack_outbox_insert(
        &self,
        envelope_id: &str,
        peer: &str,
        ack_receipt_json: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO ack_outbox (envelope_id, peer, ack_receipt_json) VALUES (?1, ?2, ?3) \
             ON CONFLICT (envelope_id) DO NOTHING",
        )
        .bind(envelope_id)
        .bind(peer)
        .bind(ack_receipt_json)
        .execute(&self.writer)
        .await
        .map_err(self.err("ack_outbox_insert"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ack_outbox_due(&self, peer: &str, limit: u32) -> StoreResult<Vec<AckOutboxRow>> {
        const OP: &str = "ack_outbox_due";
        let rows = sqlx::query(
            "SELECT seq, envelope_id, peer, ack_receipt_json FROM ack_outbox \
             WHERE peer = ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(peer)
        .bind(limit_of(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(self.err(OP))?;
        rows.iter()
            .map(|r| {
                Ok(AckOutboxRow {
                    seq: r.try_get("seq")?,
                    envelope_id: r.try_get("envelope_id")?,
                    peer: r.try_get("peer")?,
                    ack_receipt_json: r.try_get("ack_receipt_json")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err(OP))
    }

    async fn ack_outbox_done(&self, envelope_ids: &[String]) -> StoreResult<u64> {
        const OP: &str = "ack_outbox_done";
        if envelope_ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write(OP).await?;
        let mut removed = 0;
        for chunk in envelope_ids.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM ack_outbox WHERE envelope_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            removed += q
                .execute(&mut *tx)
                .await
                .map_err(self.err(OP))?
                .rows_affected();
        }
        tx.commit().await.map_err(self.err(OP))?;
        Ok(removed)
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
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let current = sqlx::query("SELECT version, digest_hex, text FROM agreements WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.err(OP))?;
        let current = current
            .map(|r| -> Result<(u32, String, String), sqlx::Error> {
                Ok((
                    get_u32(&r, "version")?,
                    r.try_get("digest_hex")?,
                    r.try_get("text")?,
                ))
            })
            .transpose()
            .map_err(self.err(OP))?;
        let outcome = match current {
            None => AgreementPut::Installed,
            Some((v, _, _)) if v > version => {
                return Ok(AgreementPut::KeptNewer {
                    installed_version: v,
                });
            }
            Some((v, ref digest, ref old_text)) if v == version => {
                if digest == digest_hex && old_text == text {
                    return Ok(AgreementPut::Unchanged);
                }
                if digest == digest_hex {
                    // Same signed text, new lifecycle events (or signatures): the
                    // caller verified them; keep the fuller document.
                    AgreementPut::EventsUpdated
                } else {
                    return Err(StoreError::Conflict {
                        op: OP,
                        detail: format!(
                            "agreement `{id}` version {version} is installed with digest {digest}, \
                         refusing a different text with digest {digest_hex} under the same \
                         version; publish it as a new version"
                        ),
                    });
                }
            }
            Some((v, _, _)) => AgreementPut::Replaced {
                previous_version: v,
            },
        };
        sqlx::query(
            "INSERT INTO agreements (id, version, text, digest_hex, installed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, text = excluded.text, \
             digest_hex = excluded.digest_hex, installed_ms = excluded.installed_ms",
        )
        .bind(id)
        .bind(i64::from(version))
        .bind(text)
        .bind(digest_hex)
        .bind(installed_ms)
        .execute(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        self.commit_audited(OP, tx, &mut frontier, audit).await?;
        Ok(outcome)
    }

    async fn agreement_get(&self, id: &str) -> StoreResult<Option<AgreementRow>> {
        const OP: &str = "agreement_get";
        let row = sqlx::query(
            "SELECT id, version, text, digest_hex, installed_ms FROM agreements WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(self.err(OP))?;
        row.as_ref()
            .map(agreement_from_row)
            .transpose()
            .map_err(self.err(OP))
    }

    async fn agreement_list(&self) -> StoreResult<Vec<AgreementRow>> {
        const OP: &str = "agreement_list";
        let rows = sqlx::query(
            "SELECT id, version, text, digest_hex, installed_ms FROM agreements ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(self.err(OP))?;
        rows.iter()
            .map(agreement_from_row)
            .collect::<Result<_, _>>()
            .map_err(self.err(OP))
    }

    async fn peer_put(&self, party: &str, json: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO peers (party, state_json) VALUES (?1, ?2) \
             ON CONFLICT (party) DO UPDATE SET state_json = excluded.state_json",
        )
        .bind(party)
        .bind(json)
        .execute(&self.writer)
        .await
        .map_err(self.err("peer_put"))?;
        Ok(())
    }

    async fn peer_get(&self, party: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT state_json FROM peers WHERE party = ?1")
            .bind(party)
            .fetch_optional(&self.reader)
            .await
            .map_err(self.err("peer_get"))
    }

    async fn peer_list(&self) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as("SELECT party, state_json FROM peers ORDER BY party")
            .fetch_all(&self.reader)
            .await
            .map_err(self.err("peer_list"))
    }

    async fn escalation_insert(
        &self,
        envelope_id: &str,
        raised_ms: i64,
        reason: &str,
        audit: &[Vec<u8>],
    ) -> StoreResult<i64> {
        const OP: &str = "escalation_insert";
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let seq = sqlx::query_scalar(
            "INSERT INTO escalations (envelope_id, raised_ms, reason) VALUES (?1, ?2, ?3) \
             RETURNING seq",
        )
        .bind(envelope_id)
        .bind(raised_ms)
        .bind(reason)
        .fetch_one(&mut *tx)
        .await
        .map_err(self.err(OP))?;
        self.commit_audited(OP, tx, &mut frontier, audit).await?;
        Ok(seq)
    }

    async fn escalation_list(&self) -> StoreResult<Vec<EscalationRow>> {
        const OP: &str = "escalation_list";
        let rows =
            sqlx::query("SELECT seq, envelope_id, raised_ms, reason FROM escalations ORDER BY seq")
                .fetch_all(&self.reader)
                .await
                .map_err(self.err(OP))?;
        rows.iter()
            .map(|r| {
                Ok(EscalationRow {
                    seq: r.try_get("seq")?,
                    envelope_id: r.try_get("envelope_id")?,
                    raised_ms: r.try_get("raised_ms")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err(OP))
    }

    async fn audit_append(&self, entries: &[Vec<u8>]) -> StoreResult<u64> {
        const OP: &str = "audit_append";
        let mut frontier = self.frontier.lock().await;
        if entries.is_empty() {
            return Ok(frontier.size());
        }
        let tx = self.begin_write(OP).await?;
        self.commit_audited(OP, tx, &mut frontier, entries).await?;
        Ok(frontier.size())
    }

    async fn audit_head(&self) -> StoreResult<(u64, Hash)> {
        let f = self.frontier.lock().await;
        Ok((f.size(), f.root()))
    }

    async fn audit_rows(&self, start: u64, limit: u32) -> StoreResult<Vec<AuditRow>> {
        const OP: &str = "audit_rows";
        let rows = sqlx::query(
            "SELECT idx, entry, leaf, root_after FROM audit WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
        )
        .bind(i64::try_from(start).unwrap_or(i64::MAX))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.reader)
        .await
        .map_err(self.err(OP))?;
        let corrupt = |what: &str| self.corrupt(format!("audit row: {what}"));
        rows.iter()
            .map(|r| {
                let idx: i64 = r.try_get("idx").map_err(self.err(OP))?;
                let entry: Vec<u8> = r.try_get("entry").map_err(self.err(OP))?;
                let leaf: Vec<u8> = r.try_get("leaf").map_err(self.err(OP))?;
                let root: Vec<u8> = r.try_get("root_after").map_err(self.err(OP))?;
                Ok(AuditRow {
                    index: u64::try_from(idx).map_err(|_| corrupt("negative index"))?,
                    entry,
                    leaf: leaf
                        .try_into()
                        .map_err(|_| corrupt("leaf is not 32 bytes"))?,
                    root_after: root
                        .try_into()
                        .map_err(|_| corrupt("root is not 32 bytes"))?,
                })
            })
            .collect()
    }

    async fn audit_leaf_hashes(&self, start: u64, end: u64) -> StoreResult<Vec<Hash>> {
        self.audit_leaves(start, end).await
    }

    async fn audit_subtrees(&self, wanted: &[SubtreeId]) -> StoreResult<Vec<(SubtreeId, Hash)>> {
        const OP: &str = "audit_subtrees";
        // One read transaction: every subtree from the same committed log.
        let mut tx = self.reader.begin().await.map_err(self.err(OP))?;
        let mut found = Vec::with_capacity(wanted.len());
        for &id in wanted {
            if let Some(hash) = self.subtree_in(OP, &mut tx, id).await? {
                found.push((id, hash));
            }
        }
        tx.commit().await.map_err(self.err(OP))?;
        Ok(found)
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        self.meta_value("meta_get", &self.reader, key).await
    }

    async fn meta_put(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.writer)
        .await
        .map_err(self.err("meta_put"))?;
        Ok(())
    }

    async fn user_put(&self, row: &UserRow, create: bool, audit: &[Vec<u8>]) -> StoreResult<bool> {
        const OP: &str = "user_put";
        let mut frontier = self.frontier.lock().await;
        let mut tx = self.begin_write(OP).await?;
        let sql = if create {
            "INSERT INTO users (name, display_name, password_hash, roles, desks, clearance, \
             language, time_zone, disabled, created_ms, updated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT (name) DO NOTHING"
        } else {
            "UPDATE users SET display_name = ?2, password_hash = ?3, roles = ?4, desks = ?5, \
             clearance = ?6, language = ?7, time_zone = ?8, disabled = ?9, updated_ms = ?11 \
             WHERE name = ?1"
        };
        let changed = sqlx::query(sql)
            .bind(&row.name)
            .bind(&row.display_name)
            .bind(&row.password_hash)
            .bind(&row.roles)
            .bind(&row.desks)
            .bind(&row.clearance)
            .bind(&row.language)
            .bind(&row.time_zone)
            .bind(i64::from(row.disabled))
            .bind(row.created_ms)
            .bind(row.updated_ms)
            .execute(&mut *tx)
            .await
            .map_err(self.err(OP))?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        self.commit_audited(OP, tx, &mut frontier, audit).await?;
        Ok(true)
    }

    async fn user_get(&self, name: &str) -> StoreResult<Option<UserRow>> {
        const OP: &str = "user_get";
        let row = sqlx::query("SELECT * FROM users WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(self.err(OP))?;
        row.map(|r| user_from_row(&r))
            .transpose()
            .map_err(self.err(OP))
    }

    async fn user_list(&self) -> StoreResult<Vec<UserRow>> {
        const OP: &str = "user_list";
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(self.err(OP))?;
        rows.iter()
            .map(user_from_row)
            .collect::<Result<_, _>>()
            .map_err(self.err(OP))
    }

    async fn session_put(&self, row: &SessionRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_name, csrf, created_ms, last_seen_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id_hash) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
        )
        .bind(&row.id_hash)
        .bind(&row.user_name)
        .bind(&row.csrf)
        .bind(row.created_ms)
        .bind(row.last_seen_ms)
        .execute(&self.writer)
        .await
        .map_err(self.err("session_put"))?;
        Ok(())
    }

    async fn session_get(&self, id_hash: &str) -> StoreResult<Option<SessionRow>> {
        const OP: &str = "session_get";
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = ?1")
            .bind(id_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(self.err(OP))?;
        row.map(|r| -> Result<SessionRow, sqlx::Error> {
            Ok(SessionRow {
                id_hash: r.try_get("id_hash")?,
                user_name: r.try_get("user_name")?,
                csrf: r.try_get("csrf")?,
                created_ms: r.try_get("created_ms")?,
                last_seen_ms: r.try_get("last_seen_ms")?,
            })
        })
        .transpose()
        .map_err(self.err(OP))
    }

    async fn session_delete(&self, id_hash: Option<&str>, user_name: &str) -> StoreResult<u64> {
        let q = match id_hash {
            Some(h) => sqlx::query("DELETE FROM sessions WHERE id_hash = ?1 AND user_name = ?2")
                .bind(h)
                .bind(user_name),
            None => sqlx::query("DELETE FROM sessions WHERE user_name = ?1").bind(user_name),
        };
        Ok(q.execute(&self.writer)
            .await
            .map_err(self.err("session_delete"))?
            .rows_affected())
    }

    async fn token_put(&self, row: &TokenRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id_hash, user_name, label, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&row.id_hash)
        .bind(&row.user_name)
        .bind(&row.label)
        .bind(row.created_ms)
        .execute(&self.writer)
        .await
        .map_err(self.err("token_put"))?;
        Ok(())
    }

    async fn token_get(&self, id_hash: &str) -> StoreResult<Option<TokenRow>> {
        const OP: &str = "token_get";
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id_hash = ?1")
            .bind(id_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(self.err(OP))?;
        row.map(|r| -> Result<TokenRow, sqlx::Error> {
            Ok(TokenRow {
                id_hash: r.try_get("id_hash")?,
                user_name: r.try_get("user_name")?,
                label: r.try_get("label")?,
                created_ms: r.try_get("created_ms")?,
            })
        })
        .transpose()
        .map_err(self.err(OP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, peer: &str, precedence: u8, created_ms: i64) -> OutboxRow {
        OutboxRow::new_queued(id, peer, "desk-a", "desk-b", precedence, created_ms, "{}")
    }

    async fn plan(
        store: &SqliteStore,
        sql: &str,
        binds: &[i64],
        text: Option<&str>,
    ) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        if let Some(t) = text {
            q = q.bind(t.to_owned());
        }
        for b in binds {
            q = q.bind(*b);
        }
        let rows = q.fetch_all(&store.reader).await.unwrap();
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect()
    }

    async fn filled() -> SqliteStore {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let rows: Vec<OutboxRow> = (0..2000)
            .map(|i| row(&format!("e{i}"), &format!("p{}", i % 7), (i % 4) as u8, i))
            .collect();
        store.outbox_insert_batch(&rows, &[]).await.unwrap();
        store
    }

    #[tokio::test]
    async fn outbox_due_uses_index_without_sorting() {
        let store = filled().await;
        let details = plan(&store, OUTBOX_DUE, &[1000, 50], Some("p1")).await;
        assert!(
            details
                .iter()
                .any(|d| d.contains("USING INDEX outbox_due_idx")),
            "{details:?}"
        );
        assert!(
            !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "{details:?}"
        );
        // And it is correct on the same data.
        let due = store.outbox_due("p1", 1000, 50).await.unwrap();
        assert_eq!(due.len(), 50);
        assert!(
            due.iter()
                .all(|r| r.peer == "p1" && r.next_attempt_ms <= 1000)
        );
        let keys: Vec<_> = due
            .iter()
            .map(|r| (std::cmp::Reverse(r.precedence), r.created_ms, r.seq))
            .collect();
        assert!(keys.is_sorted(), "{keys:?}");
        // i = 15 (mod 28) below 1000: p1's FLASH rows, all before anything else.
        assert_eq!(due.iter().filter(|r| r.precedence == 3).count(), 36);
        assert_eq!(
            due.iter().take(36).filter(|r| r.precedence == 3).count(),
            36
        );
    }

    #[tokio::test]
    async fn other_hot_queries_use_indexes() {
        let store = filled().await;
        let d = plan(&store, OUTBOX_PEERS_WITH_DUE, &[1000], None).await;
        // Every access to outbox is an index probe, never a scan.
        assert!(
            d.iter()
                .filter(|x| x.contains(" outbox") || x.contains(" o "))
                .all(|x| x.starts_with("SEARCH") && x.contains("outbox_next_due_idx")),
            "{d:?}"
        );
        let d = plan(
            &store,
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE peer = ?1 AND state = 'queued'",
            &[],
            Some("p1"),
        )
        .await;
        assert!(d.iter().any(|x| x.contains("outbox_next_due_idx")), "{d:?}");
        let sql = format!(
            "SELECT {OUTBOX_COLS} FROM outbox WHERE from_desk = ?1 AND seq < ?2 \
             ORDER BY seq DESC LIMIT ?3"
        );
        let d = plan(&store, &sql, &[i64::MAX, 10], Some("desk-a")).await;
        assert!(!d.iter().any(|x| x.contains("TEMP B-TREE")), "{d:?}");
        let sql = format!(
            "SELECT {INBOX_COLS} FROM inbox WHERE to_desk = ?1 \
             AND (precedence, received_ms, seq) < (?2, ?3, ?4) \
             ORDER BY precedence DESC, received_ms DESC, seq DESC LIMIT ?5"
        );
        let d = plan(&store, &sql, &[3, 0, 0, 10], Some("desk-b")).await;
        assert!(d.iter().any(|x| x.contains("inbox_desk_idx")), "{d:?}");
        assert!(!d.iter().any(|x| x.contains("TEMP B-TREE")), "{d:?}");
    }

    #[tokio::test]
    async fn writes_to_a_query_only_store_fail_as_read_only() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        assert!(store.outbox_insert(&row("keep", "p", 1, 1)).await.unwrap());
        sqlx::query("PRAGMA query_only = ON")
            .execute(&store.writer)
            .await
            .unwrap();
        let err = store
            .outbox_insert(&row("new", "p", 1, 2))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
        assert!(err.is_storage_unavailable());
        assert!(
            err.to_string()
                .starts_with("store at `:memory:` is read-only: "),
            "{err}"
        );
        let err = store.meta_put("k", "v").await.unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
        assert!(store.outbox_get("keep").await.unwrap().is_some());
        assert!(store.outbox_get("new").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn connection_settings_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("node.db"))
            .await
            .unwrap();
        for pool in [&store.writer, &store.reader] {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(sync, 2, "synchronous must be FULL");
            let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .unwrap();
            assert_eq!(fk, 1);
        }
        let err = sqlx::query("INSERT INTO meta (key, value) VALUES ('a', 'b')")
            .execute(&store.reader)
            .await
            .unwrap_err();
        assert!(matches!(
            classify("x", "t", err),
            StoreError::ReadOnly { .. }
        ));
        store.close().await;

        // Reopening does not re-apply or duplicate migrations.
        for _ in 0..2 {
            let store = SqliteStore::open(&dir.path().join("node.db"))
                .await
                .unwrap();
            let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(&store.reader)
                .await
                .unwrap();
            let embedded = sqlx::migrate!().migrations.len() as i64;
            assert_eq!(applied, embedded);
            store.close().await;
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_reported_as_such_and_loses_nothing() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        store.outbox_insert(&row("keep", "p", 1, 1)).await.unwrap();
        // Cap the database at its current size: the next page allocation
        // fails with SQLITE_FULL, exactly as on a full volume.
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
            .execute(&store.writer)
            .await
            .unwrap();
        let big: Vec<OutboxRow> = (0..50)
            .map(|i| {
                let mut r = row(&format!("big{i}"), "p", 1, i);
                r.envelope_json = "x".repeat(64 * 1024);
                r
            })
            .collect();
        let err = store.outbox_insert_batch(&big, &[]).await.unwrap_err();
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
        assert!(err.is_storage_unavailable());
        assert!(
            err.to_string()
                .starts_with("disk full while writing to store at `:memory:` during outbox_commit"),
            "{err}"
        );
        assert!(store.outbox_get("keep").await.unwrap().is_some());
        assert!(store.outbox_get("big0").await.unwrap().is_none());
        // Once there is room again, the same write goes through: the failed one left
        // no transaction open on the one writer connection.
        sqlx::query("PRAGMA max_page_count = 1000000")
            .execute(&store.writer)
            .await
            .unwrap();
        let done = store.outbox_insert_batch(&big, &[]).await.unwrap();
        assert_eq!(done.iter().filter(|f| **f).count(), 50);
        assert!(store.outbox_get("big49").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_write_whose_caller_goes_away_still_commits_and_moves_the_frontier() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let (gone, one) = ([row("gone", "p", 1, 1)], [b"one".to_vec()]);
        let first = store.outbox_commit(&gone, &[], 0, &one);
        // Polled once (the write is under way on its own task), then dropped, as an
        // HTTP handler is when its client goes away.
        let _ = tokio::time::timeout(std::time::Duration::from_micros(1), first).await;
        store
            .outbox_commit(&[row("next", "p", 1, 2)], &[], 0, &[b"two".to_vec()])
            .await
            .unwrap();
        assert!(store.outbox_get("gone").await.unwrap().is_some());
        assert!(store.outbox_get("next").await.unwrap().is_some());
        let (size, _) = store.audit_head().await.unwrap();
        assert_eq!(size, 2);
        assert_eq!(store.frontier.lock().await.size(), 2);
    }

    #[tokio::test]
    async fn a_database_locked_by_another_process_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let holder = SqliteStore::open(&path).await.unwrap();
        let other = SqliteStore::open(&path).await.unwrap();
        sqlx::query("PRAGMA busy_timeout = 50")
            .execute(&other.writer)
            .await
            .unwrap();
        let tx = holder.begin_write("test").await.unwrap();
        let err = other.meta_put("k", "v").await.unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        assert!(err.is_storage_unavailable());
        // The same for a hot write, whose transaction is begun in its own query string.
        let (hot, entry) = ([row("hot", "p", 1, 1)], [b"entry".to_vec()]);
        let err = other.outbox_commit(&hot, &[], 0, &entry).await.unwrap_err();
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        // Readers are not blocked by the writer in WAL mode.
        assert_eq!(other.meta_get("k").await.unwrap(), None);
        tx.rollback().await.unwrap();
        other.meta_put("k", "v").await.unwrap();
        assert_eq!(holder.meta_get("k").await.unwrap().as_deref(), Some("v"));
        // Neither failed write left the writer inside a transaction.
        other.outbox_commit(&hot, &[], 0, &entry).await.unwrap();
        assert!(holder.outbox_get("hot").await.unwrap().is_some());
    }

    /// Every perfect subtree the log covers, at every level, as the store gives it
    /// and as its leaves make it; ones the log does not cover are left out.
    async fn subtrees_match_the_leaves(store: &SqliteStore) {
        use liaison_core::merkle::LeafHashes as _;
        let (size, _) = store.audit_head().await.unwrap();
        let leaves = store.audit_leaf_hashes(0, size).await.unwrap();
        let mut wanted = Vec::new();
        for level in 0..=12u32 {
            for index in 0..=(size >> level) {
                wanted.push((level, index));
            }
        }
        let got: std::collections::HashMap<SubtreeId, Hash> = store
            .audit_subtrees(&wanted)
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (level, index) in wanted {
            let covered = (index + 1) << level <= size;
            match got.get(&(level, index)) {
                Some(h) => {
                    assert!(covered, "({level}, {index}) beyond {size}");
                    assert_eq!(*h, leaves.perfect_subtree_hash(level, index).unwrap());
                }
                None => assert!(!covered, "({level}, {index}) missing at {size}"),
            }
        }
    }

    /// Appends of every shape, then a consistency proof for a peer made from the
    /// stored subtrees alone, checked against the log's own roots.
    #[tokio::test]
    async fn audit_subtrees_are_the_roots_of_the_leaves_below_them() {
        use liaison_core::merkle::{
            KnownSubtrees, consistency_proof, consistency_proof_subtrees, verify_consistency,
        };
        let store = SqliteStore::open_in_memory().await.unwrap();
        let mut n = 0u32;
        let mut heads = vec![store.audit_head().await.unwrap()];
        for batch in [1usize, 15, 16, 17, 200, 771, 2_000, 3] {
            let entries: Vec<Vec<u8>> = (0..batch)
                .map(|_| {
                    n += 1;
                    format!("entry {n}").into_bytes()
                })
                .collect();
            store.audit_append(&entries).await.unwrap();
            heads.push(store.audit_head().await.unwrap());
            subtrees_match_the_leaves(&store).await;
        }
        let (new_size, new_root) = *heads.last().unwrap();
        for &(old_size, old_root) in &heads {
            let wanted = consistency_proof_subtrees(old_size, new_size).unwrap();
            let known: KnownSubtrees = store
                .audit_subtrees(&wanted)
                .await
                .unwrap()
                .into_iter()
                .collect();
            let proof = consistency_proof(&known, old_size, new_size).unwrap();
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof).unwrap();
        }
        // Beyond the log: the last leaf is missing, so no proof.
        let wanted = consistency_proof_subtrees(10, new_size + 1).unwrap();
        let known: KnownSubtrees = store
            .audit_subtrees(&wanted)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert!(consistency_proof(&known, 10, new_size + 1).is_err());
    }

    async fn subtree_rows(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_subtree")
            .fetch_one(&store.reader)
            .await
            .unwrap()
    }

    /// A log written before `audit_subtree` existed: read-only, the subtrees come from
    /// the leaves; the first writable open stores them, once, and appends go on.
    #[tokio::test]
    async fn an_older_log_gets_its_subtrees_on_the_first_writable_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let entries: Vec<Vec<u8>> = (0..1_000)
            .map(|i| format!("old {i}").into_bytes())
            .collect();
        store.audit_append(&entries).await.unwrap();
        // As a build before the table left it.
        sqlx::query("DELETE FROM audit_subtree")
            .execute(&store.writer)
            .await
            .unwrap();
        sqlx::query("DELETE FROM meta WHERE key = 'audit_subtrees'")
            .execute(&store.writer)
            .await
            .unwrap();
        store.close().await;

        let read_only = SqliteStore::open_read_only(&path).await.unwrap();
        subtrees_match_the_leaves(&read_only).await;
        read_only.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(subtree_rows(&store).await, 1_000 / 16 + 1_000 / 256);
        assert_eq!(
            store.meta_get(AUDIT_SUBTREES_KEY).await.unwrap().as_deref(),
            Some("1000")
        );
        store.audit_append(&entries).await.unwrap();
        subtrees_match_the_leaves(&store).await;
        store.close().await;

        // Filled once: a later open leaves the table as the appends made it.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(subtree_rows(&store).await, 2_000 / 16 + 2_000 / 256);
        store.close().await;
    }

    /// A store written before migration 0006 kept each envelope and receipt in its
    /// outbox row; the migration moves them to their own tables and keeps every row as
    /// it was.
    #[tokio::test]
    async fn envelopes_and_receipts_kept_in_outbox_rows_move_to_their_own_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let old = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .unwrap();
        let mut before = sqlx::migrate!();
        let at_0005 = before
            .migrations
            .iter()
            .position(|m| m.version == 6)
            .unwrap();
        before.migrations = std::borrow::Cow::Owned(before.migrations[..at_0005].to_vec());
        before.run(&old).await.unwrap();
        for (id, state, receipt, delivered) in [
            ("queued-1", "queued", None, None),
            (
                "delivered-1",
                "delivered",
                Some("receipt of delivered-1"),
                Some(20),
            ),
            ("queued-2", "queued", None, None),
            (
                "delivered-2",
                "delivered",
                Some("receipt of delivered-2"),
                Some(30),
            ),
        ] {
            sqlx::query(
                "INSERT INTO outbox (envelope_id, peer, from_desk, to_desk, precedence, \
                 created_ms, envelope_json, state, next_attempt_ms, receipt_json, delivered_ms) \
                 VALUES (?1, 'ROK', 'USA.intel', 'ROK.intel', 0, 1, 'envelope of ' || ?1, ?2, 5, \
                 ?3, ?4)",
            )
            .bind(id)
            .bind(state)
            .bind(receipt)
            .bind(delivered)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let listed = store.outbox_list(None, 10, None).await.unwrap();
        let seen: Vec<(i64, &str, OutboxState, Option<&str>)> = listed
            .iter()
            .map(|r| {
                (
                    r.seq,
                    r.envelope_id.as_str(),
                    r.state,
                    r.receipt_json.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    4,
                    "delivered-2",
                    OutboxState::Delivered,
                    Some("receipt of delivered-2")
                ),
                (3, "queued-2", OutboxState::Queued, None),
                (
                    2,
                    "delivered-1",
                    OutboxState::Delivered,
                    Some("receipt of delivered-1")
                ),
                (1, "queued-1", OutboxState::Queued, None),
            ]
        );
        let due: Vec<String> = store
            .outbox_due("ROK", 10, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.envelope_id)
            .collect();
        assert_eq!(due, ["queued-1", "queued-2"]);
        for r in &listed {
            assert_eq!(r.envelope_json, format!("envelope of {}", r.envelope_id));
        }
        // Delivery after the migration: the receipt lands in its table, the sequence
        // goes on where it was.
        store
            .outbox_insert(&row("queued-3", "ROK", 0, 2))
            .await
            .unwrap();
        let done = store
            .outbox_commit(
                &[],
                &[("queued-1".into(), "receipt of queued-1".into())],
                40,
                &[],
            )
            .await
            .unwrap();
        assert_eq!(done.delivered, [true]);
        let q1 = store.outbox_get("queued-1").await.unwrap().unwrap();
        assert_eq!(q1.receipt_json.as_deref(), Some("receipt of queued-1"));
        assert_eq!(q1.delivered_ms, Some(40));
        assert_eq!(store.outbox_get("queued-3").await.unwrap().unwrap().seq, 5);
        store.close().await;
    }
}
