//! The store's error type.
//!
//! Errors are classified so that the node can react to the *kind* of failure:
//! a full disk, a read-only file or a database held by another process mean
//! "refuse new work and tell the operator", while [`StoreError::InvalidInput`]
//! means the caller handed over something the schema does not allow and
//! nothing was written.

use std::borrow::Cow;

/// Everything that can go wrong in the store.
///
/// `path` is the database location as given to [`crate::SqliteStore::open`]
/// (or `:memory:`), `op` the store operation that failed (e.g.
/// `outbox_insert`), `detail` the database engine's own message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database (or its directory) cannot be written. Nothing was
    /// changed; data stored before is intact.
    #[error(
        "store at `{path}` is read-only: {op} failed ({detail}); make the database file and its directory writable by the node, then retry"
    )]
    ReadOnly {
        path: String,
        op: &'static str,
        detail: String,
    },

    /// The volume holding the database is full. The failed write was rolled
    /// back; data stored before is intact.
    #[error(
        "disk full while writing to store at `{path}` during {op} ({detail}); free space on that volume, then retry"
    )]
    DiskFull {
        path: String,
        op: &'static str,
        detail: String,
    },

    /// Another connection or process held the database lock for longer than
    /// the busy timeout.
    #[error(
        "store at `{path}` is busy: {op} waited longer than the busy timeout ({detail}); check that no other process is using the database, then retry"
    )]
    Busy {
        path: String,
        op: &'static str,
        detail: String,
    },

    /// The caller's data violates a schema rule (a CHECK, NOT NULL or
    /// foreign-key constraint). Nothing was written.
    #[error("invalid input rejected by the store in {op}: {rule} ({detail})")]
    InvalidInput {
        op: &'static str,
        /// Human description of the rule that was broken.
        rule: Cow<'static, str>,
        detail: String,
    },

    /// A write contradicts what is already stored (e.g. an agreement with the
    /// same id and version but a different digest). Nothing was written.
    #[error("conflict in {op}: {detail}")]
    Conflict { op: &'static str, detail: String },

    /// The named record does not exist.
    #[error("{what} `{id}` not found in store")]
    NotFound { what: &'static str, id: String },

    /// Stored data could not be read back as the expected type: the file is
    /// damaged or was written by incompatible software.
    #[error(
        "store at `{path}` holds unreadable data in {op} ({detail}); restore the database from a backup"
    )]
    Corrupt {
        path: String,
        op: &'static str,
        detail: String,
    },

    /// The database could not be opened or created.
    #[error(
        "cannot open store at `{path}`: {detail}; check that the directory exists and is writable by the node"
    )]
    Open { path: String, detail: String },

    /// The schema migrations could not be applied.
    #[error("cannot migrate store at `{path}` to the current schema: {detail}")]
    Migrate { path: String, detail: String },

    /// Any other database failure.
    #[error("store at `{path}` failed during {op}: {detail}")]
    Database {
        path: String,
        op: &'static str,
        detail: String,
    },
}

impl StoreError {
    /// True for failures of the storage medium itself (read-only, full, busy,
    /// corrupt, unopenable): the node should stop accepting new work and
    /// alert an operator rather than retry the same input.
    #[must_use]
    pub fn is_storage_unavailable(&self) -> bool {
        matches!(
            self,
            Self::ReadOnly { .. }
                | Self::DiskFull { .. }
                | Self::Busy { .. }
                | Self::Corrupt { .. }
                | Self::Open { .. }
                | Self::Migrate { .. }
        )
    }
}

// SQLite primary result codes (https://www.sqlite.org/rescode.html).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_CONSTRAINT: i64 = 19;
const SQLITE_NOTADB: i64 = 26;
// Extended codes that matter on their own.
const SQLITE_IOERR_WRITE: i64 = 778;
const SQLITE_IOERR_FSYNC: i64 = 1034;

/// Turns a sqlx error into a [`StoreError`] for store `path` and operation `op`.
pub(crate) fn classify(path: &str, op: &'static str, err: sqlx::Error) -> StoreError {
    let path = path.to_owned();
    match err {
        sqlx::Error::Database(db) => {
            let extended: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            let detail = db.message().to_owned();
            match extended & 0xff {
                SQLITE_READONLY => StoreError::ReadOnly { path, op, detail },
                SQLITE_FULL => StoreError::DiskFull { path, op, detail },
                SQLITE_BUSY | SQLITE_LOCKED => StoreError::Busy { path, op, detail },
                SQLITE_CORRUPT | SQLITE_NOTADB => StoreError::Corrupt { path, op, detail },
                SQLITE_CANTOPEN => StoreError::Open { path, detail },
                SQLITE_CONSTRAINT => StoreError::InvalidInput {
                    op,
                    rule: describe_constraint(&detail),
                    detail,
                },
                // A failed write or fsync is almost always a full or failing
                // volume; report it as such rather than as a generic error.
                SQLITE_IOERR
                    if extended == SQLITE_IOERR_WRITE || extended == SQLITE_IOERR_FSYNC =>
                {
                    StoreError::DiskFull { path, op, detail }
                }
                _ => StoreError::Database { path, op, detail },
            }
        }
        sqlx::Error::PoolTimedOut => StoreError::Busy {
            path,
            op,
            detail: "timed out waiting for a database connection".to_owned(),
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt {
            path,
            op,
            detail: err.to_string(),
        },
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            StoreError::DiskFull {
                path,
                op,
                detail: io.to_string(),
            }
        }
        other => StoreError::Database {
            path,
            op,
            detail: other.to_string(),
        },
    }
}

/// The error SQLite reports for a violated constraint, with the same rule text.
pub(crate) fn violated(op: &'static str, detail: String) -> StoreError {
    StoreError::InvalidInput {
        op,
        rule: describe_constraint(&detail),
        detail,
    }
}

/// The error SQLite reports when the CHECK named `constraint` fails.
pub(crate) fn check_failed(op: &'static str, constraint: &str) -> StoreError {
    violated(op, format!("CHECK constraint failed: {constraint}"))
}

/// Maps a SQLite constraint message to the rule it enforces.
pub(crate) fn describe_constraint(message: &str) -> Cow<'static, str> {
    const RULES: &[(&str, &str)] = &[
        ("envelope_id_nonempty", "envelope id must not be empty"),
        ("peer_nonempty", "peer party id must not be empty"),
        ("sender_party_nonempty", "sender party id must not be empty"),
        (
            "precedence_range",
            "precedence must be 0 (ROUTINE) to 3 (FLASH)",
        ),
        ("outbox_state_known", "unknown outbox state"),
        ("attempts_nonnegative", "attempts must not be negative"),
        (
            "delivered_has_receipt",
            "a delivered message must carry its receipt and delivery time",
        ),
        (
            "bounced_has_reason",
            "a bounced message must carry a reason",
        ),
        (
            "ack_complete",
            "acknowledgement time, author and receipt must be set together",
        ),
        (
            "ack_outbox_envelope_id_known",
            "acknowledgement refers to a message not in the inbox",
        ),
        ("agreements_id_nonempty", "agreement id must not be empty"),
        ("agreements_version_range", "agreement version out of range"),
        ("digest_nonempty", "agreement digest must not be empty"),
        ("party_nonempty", "peer party id must not be empty"),
        ("meta_key_nonempty", "setting key must not be empty"),
        ("FOREIGN KEY", "record refers to a missing record"),
        ("NOT NULL", "a required value is missing"),
        ("UNIQUE", "a record with this id already exists"),
    ];
    RULES
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or_else(
            || Cow::Owned(format!("schema rule violated: {message}")),
            |(_, rule)| Cow::Borrowed(*rule),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_map_to_rules() {
        assert_eq!(
            describe_constraint("CHECK constraint failed: inbox_precedence_range"),
            "precedence must be 0 (ROUTINE) to 3 (FLASH)"
        );
        assert_eq!(
            describe_constraint("CHECK constraint failed: outbox_envelope_id_nonempty"),
            "envelope id must not be empty"
        );
        assert!(describe_constraint("something new").contains("something new"));
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let errors = [
            StoreError::ReadOnly {
                path: "/x/node.db".into(),
                op: "outbox_insert",
                detail: "attempt to write a readonly database".into(),
            },
            StoreError::DiskFull {
                path: "/x/node.db".into(),
                op: "outbox_insert",
                detail: "database or disk is full".into(),
            },
            StoreError::Busy {
                path: "/x/node.db".into(),
                op: "outbox_insert",
                detail: "database is locked".into(),
            },
            StoreError::NotFound {
                what: "inbox message",
                id: "e1".into(),
            },
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.chars().next().is_some_and(|c| !c.is_uppercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
        let s = StoreError::ReadOnly {
            path: "/x/node.db".into(),
            op: "outbox_insert",
            detail: "attempt to write a readonly database".into(),
        }
        .to_string();
        assert!(s.starts_with("store at `/x/node.db` is read-only: "), "{s}");
    }
}
