-- An outbox row's envelope and its receipt, each in a table of its own.
--
-- A receipt (about 1 KiB with its batch head and inclusion proof) written into the
-- outbox row it settles made that row outgrow its page, and even without it a row
-- carrying its envelope (about 1.5 KiB) shares a page with one other: every
-- delivery rewrote a page per message or more. Now the envelope and the receipt are
-- each written once, appended, and the outbox row itself (about 150 bytes: ids,
-- desks, precedence, times, state) is all a delivery, a retry or a bounce changes,
-- a few bytes of a page shared with dozens of neighbours.
--
-- SQLite cannot drop a column that a CHECK constraint names, so the outbox is
-- rebuilt (the documented twelve-step way: new table, copy, drop, rename); its
-- rows, sequence numbers and indexes are kept as they were. "A delivered message
-- carries its receipt" is now checked by the store before it writes a row, since a
-- CHECK cannot look into another table; the delivery time stays a CHECK here.
CREATE TABLE outbox_envelope (
    seq           INTEGER PRIMARY KEY,
    envelope_json TEXT    NOT NULL
) STRICT;

CREATE TABLE outbox_receipt (
    seq          INTEGER PRIMARY KEY,
    receipt_json TEXT    NOT NULL
) STRICT;

CREATE TABLE outbox_rebuilt (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id        TEXT    NOT NULL
        CONSTRAINT outbox_envelope_id_nonempty CHECK (length(envelope_id) > 0),
    peer               TEXT    NOT NULL
        CONSTRAINT outbox_peer_nonempty CHECK (length(peer) > 0),
    from_desk          TEXT    NOT NULL,
    to_desk            TEXT    NOT NULL,
    precedence         INTEGER NOT NULL
        CONSTRAINT outbox_precedence_range CHECK (precedence BETWEEN 0 AND 3),
    created_ms         INTEGER NOT NULL,
    state              TEXT    NOT NULL DEFAULT 'queued'
        CONSTRAINT outbox_state_known CHECK (state IN ('queued', 'delivered', 'bounced')),
    attempts           INTEGER NOT NULL DEFAULT 0
        CONSTRAINT outbox_attempts_nonnegative CHECK (attempts >= 0),
    next_attempt_ms    INTEGER NOT NULL,
    last_error         TEXT,
    bounce_reason      TEXT,
    delivered_ms       INTEGER,
    bounced_ms         INTEGER,
    acked_receipt_json TEXT,
    acked_ms           INTEGER,
    CONSTRAINT outbox_envelope_id_unique UNIQUE (envelope_id),
    CONSTRAINT outbox_delivered_has_receipt
        CHECK (state <> 'delivered' OR delivered_ms IS NOT NULL),
    CONSTRAINT outbox_bounced_has_reason
        CHECK (state <> 'bounced' OR (bounce_reason IS NOT NULL AND bounced_ms IS NOT NULL)),
    CONSTRAINT outbox_ack_complete
        CHECK ((acked_ms IS NULL) = (acked_receipt_json IS NULL))
) STRICT;

INSERT INTO outbox_receipt (seq, receipt_json)
    SELECT seq, receipt_json FROM outbox WHERE receipt_json IS NOT NULL ORDER BY seq;

INSERT INTO outbox_envelope (seq, envelope_json)
    SELECT seq, envelope_json FROM outbox ORDER BY seq;

INSERT INTO outbox_rebuilt (seq, envelope_id, peer, from_desk, to_desk, precedence,
        created_ms, state, attempts, next_attempt_ms, last_error,
        bounce_reason, delivered_ms, bounced_ms, acked_receipt_json, acked_ms)
    SELECT seq, envelope_id, peer, from_desk, to_desk, precedence,
        created_ms, state, attempts, next_attempt_ms, last_error,
        bounce_reason, delivered_ms, bounced_ms, acked_receipt_json, acked_ms
    FROM outbox ORDER BY seq;

DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;

-- The same indexes as in 0001_init.sql.
CREATE INDEX outbox_due_idx
    ON outbox (peer, precedence DESC, created_ms ASC, seq ASC, next_attempt_ms)
    WHERE state = 'queued';
CREATE INDEX outbox_next_due_idx
    ON outbox (peer, next_attempt_ms)
    WHERE state = 'queued';
CREATE INDEX outbox_from_desk_idx ON outbox (from_desk, seq);
