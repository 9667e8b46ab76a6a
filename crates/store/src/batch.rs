//! A write transaction's statements sent to the writer connection together.
//!
//! sqlx runs each SQLite connection on a thread of its own: every statement is a
//! round trip between that thread and the runtime, and on a busy machine each trip
//! waits to be scheduled twice. The hot writes (accepts with receipts, arrivals)
//! therefore send all their statements as one query string, one trip instead of one
//! per statement, and [`Batch::run_as_transaction`] puts `BEGIN IMMEDIATE` and `COMMIT`
//! into that same string: one trip for the whole transaction rather than three.
//! Placeholders are plain `?`: sqlx binds the arguments of a multi-statement string in
//! order across its statements. A batch owns its arguments, so it can run on a task of
//! its own that finishes even if its caller goes away.

use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::{Arguments as _, Encode, Sqlite, Transaction, Type};

use liaison_core::merkle::{Frontier, Hash, STORED_LEVEL_STRIDE, SubtreeId, leaf_hash};

/// Whether the store keeps the audit subtrees of this level (leaves are level 0 and
/// live in `audit` itself).
pub(crate) fn is_stored_level(level: u32) -> bool {
    level > 0 && level.is_multiple_of(STORED_LEVEL_STRIDE)
}

/// Arguments one query string may carry (SQLite's limit is 32,766).
const ARGS_PER_QUERY_MAX: usize = 30_000;
/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 500;

/// Why a batch could not be built or run.
#[derive(Debug)]
pub(crate) enum BatchError {
    Sql(sqlx::Error),
    /// The audit log cannot take the entries (it is full, or an entry is refused).
    Audit(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

/// Statements and their arguments, run in order inside one transaction; the rows
/// they return (RETURNING clauses) are collected across flushes.
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments<'static>,
    count: usize,
    /// Query strings already full, to run before `sql`.
    full: Vec<(String, SqliteArguments<'static>)>,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self {
            sql: String::new(),
            args: SqliteArguments::default(),
            count: 0,
            full: Vec::new(),
        }
    }

    fn arg<T>(&mut self, value: T) -> Result<(), BatchError>
    where
        T: 'static + Encode<'static, Sqlite> + Type<Sqlite>,
    {
        self.args
            .add(value)
            .map_err(|e| BatchError::Sql(sqlx::Error::Encode(e)))?;
        self.count += 1;
        Ok(())
    }

    /// Starts a new query string if the next statement's `args` would not fit.
    fn room_for(&mut self, args: usize) {
        if self.count + args > ARGS_PER_QUERY_MAX && !self.sql.is_empty() {
            let sql = std::mem::take(&mut self.sql);
            let args = std::mem::take(&mut self.args);
            self.full.push((sql, args));
            self.count = 0;
        }
    }

    /// Appends an INSERT of `rows` tuples of `cols` placeholders after `head` (which
    /// ends with `VALUES `), followed by `tail`; `bind` binds one row's values.
    pub(crate) fn insert<'r, R>(
        &mut self,
        head: &str,
        cols: usize,
        tail: &str,
        rows: &'r [R],
        bind: impl Fn(&mut Self, &'r R) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let tuple = format!("({})", vec!["?"; cols].join(", "));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            self.room_for(chunk.len() * cols);
            self.sql.push_str(head);
            self.sql
                .push_str(&vec![tuple.as_str(); chunk.len()].join(", "));
            self.sql.push_str(tail);
            self.sql.push_str(";\n");
            for r in chunk {
                bind(self, r)?;
            }
        }
        Ok(())
    }

    pub(crate) fn text(&mut self, v: &str) -> Result<(), BatchError> {
        self.arg(v.to_owned())
    }
    pub(crate) fn opt_text(&mut self, v: &Option<String>) -> Result<(), BatchError> {
        self.arg(v.clone())
    }
    pub(crate) fn int(&mut self, v: i64) -> Result<(), BatchError> {
        self.arg(v)
    }
    pub(crate) fn opt_int(&mut self, v: Option<i64>) -> Result<(), BatchError> {
        self.arg(v)
    }
    pub(crate) fn blob(&mut self, v: Vec<u8>) -> Result<(), BatchError> {
        self.arg(v)
    }

    /// Appends the audit entries and the frontier after them (saved in `meta` under
    /// `frontier_key`); returns that frontier, to install once the transaction commits.
    /// A frontier behind the log makes the insert fail on `audit.idx` (see
    /// [`is_audit_index_conflict`]); nothing is appended over existing entries.
    pub(crate) fn audit(
        &mut self,
        frontier: &Frontier,
        entries: &[Vec<u8>],
        frontier_key: &str,
    ) -> Result<Frontier, BatchError> {
        let mut next = frontier.clone();
        if entries.is_empty() {
            return Ok(next);
        }
        let mut rows: Vec<(i64, &[u8], Hash, Hash)> = Vec::with_capacity(entries.len());
        let mut subtrees: Vec<(SubtreeId, Hash)> = Vec::new();
        for e in entries {
            let leaf = leaf_hash(e);
            let idx = next
                .push_reporting(leaf, |id, hash| {
                    if is_stored_level(id.0) {
                        subtrees.push((id, *hash));
                    }
                })
                .map_err(|err| BatchError::Audit(format!("audit log: {err}")))?;
            let idx =
                i64::try_from(idx).map_err(|_| BatchError::Audit("audit log is full".into()))?;
            rows.push((idx, e.as_slice(), leaf, next.root()));
        }
        self.insert(
            "INSERT INTO audit (idx, entry, leaf, root_after) VALUES ",
            4,
            "",
            &rows,
            |b, (idx, entry, leaf, root)| {
                b.int(*idx)?;
                b.blob(entry.to_vec())?;
                b.blob(leaf.to_vec())?;
                b.blob(root.to_vec())
            },
        )?;
        self.subtrees(&subtrees)?;
        let json = serde_json::to_string(&next).map_err(|e| BatchError::Audit(e.to_string()))?;
        self.room_for(2);
        self.sql.push_str(
            "INSERT INTO meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value;\n",
        );
        self.text(frontier_key)?;
        self.arg(json)?;
        Ok(next)
    }

    /// Appends the audit log's subtree roots at the stored levels.
    pub(crate) fn subtrees(&mut self, subtrees: &[(SubtreeId, Hash)]) -> Result<(), BatchError> {
        let mut rows = Vec::with_capacity(subtrees.len());
        for ((level, idx), hash) in subtrees {
            let idx =
                i64::try_from(*idx).map_err(|_| BatchError::Audit("audit log is full".into()))?;
            rows.push((i64::from(*level), idx, *hash));
        }
        self.insert(
            "INSERT INTO audit_subtree (level, idx, hash) VALUES ",
            3,
            "",
            &rows,
            |b, (level, idx, hash)| {
                b.int(*level)?;
                b.int(*idx)?;
                b.blob(hash.to_vec())
            },
        )
    }

    /// Runs the statements in order inside `tx`; returns every row they returned.
    pub(crate) async fn run(
        mut self,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<Vec<SqliteRow>, BatchError> {
        self.room_for(ARGS_PER_QUERY_MAX + 1);
        let mut rows = Vec::new();
        for (sql, args) in self.full {
            // Not kept in the statement cache: the text differs with every batch's shape.
            rows.extend(
                sqlx::query_with(&sql, args)
                    .persistent(false)
                    .fetch_all(&mut **tx)
                    .await?,
            );
        }
        Ok(rows)
    }

    /// Runs the statements as one transaction on a connection of `writer`, with
    /// `BEGIN IMMEDIATE` and `COMMIT` sent in the same query strings as the statements;
    /// returns every row they returned. On any failure the transaction is rolled back
    /// before the connection goes back to the pool, and a connection that cannot be
    /// rolled back is closed (the pool opens a new one): sqlx does not count this
    /// transaction as open, so nothing else would end it. The caller must not drop
    /// the future half-way (run it on a task of its own): the transaction would stay
    /// open on the pool's connection.
    pub(crate) async fn run_as_transaction(
        mut self,
        writer: &SqlitePool,
    ) -> Result<Vec<SqliteRow>, BatchError> {
        self.room_for(ARGS_PER_QUERY_MAX + 1);
        if self.full.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = writer.acquire().await?;
        let last = self.full.len() - 1;
        let mut rows = Vec::new();
        for (i, (sql, args)) in self.full.into_iter().enumerate() {
            let mut text = String::with_capacity(sql.len() + 32);
            if i == 0 {
                text.push_str("BEGIN IMMEDIATE;\n");
            }
            text.push_str(&sql);
            if i == last {
                text.push_str("COMMIT;\n");
            }
            // Not kept in the statement cache: the text differs with every batch's shape.
            match sqlx::query_with(&text, args)
                .persistent(false)
                .fetch_all(&mut *conn)
                .await
            {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    // SQLite may have rolled back already (a full disk at COMMIT does);
                    // then ROLLBACK answers "no transaction is active", which is fine.
                    if let Err(r) = sqlx::query("ROLLBACK").execute(&mut *conn).await
                        && !r.to_string().contains("no transaction is active")
                    {
                        tracing::warn!("closing the writer connection, ROLLBACK failed: {r}");
                        conn.close_on_drop();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(rows)
    }
}

/// Whether `e` is the audit log refusing an index it already holds: the frontier in
/// memory was behind the log (see `SqliteStore::append_audit` for how that happens).
pub(crate) fn is_audit_index_conflict(e: &BatchError) -> bool {
    matches!(e, BatchError::Sql(sqlx::Error::Database(d))
        if d.message().contains("UNIQUE constraint failed: audit.idx"))
}
