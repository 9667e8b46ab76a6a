-- Liaison node store, schema version 1 (SQLite).
--
-- Envelopes, receipts and agreements are opaque JSON/text owned by other
-- crates; only the columns the node needs to query on are broken out.
-- Constraints are named so that a violation can be reported by name
-- (see `StoreError::InvalidInput`). All tables are STRICT: a value of the
-- wrong type is rejected rather than silently coerced.

-- Messages accepted locally and waiting for (or holding) the peer's receipt.
CREATE TABLE outbox (
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
    envelope_json      TEXT    NOT NULL,
    state              TEXT    NOT NULL DEFAULT 'queued'
        CONSTRAINT outbox_state_known CHECK (state IN ('queued', 'delivered', 'bounced')),
    attempts           INTEGER NOT NULL DEFAULT 0
        CONSTRAINT outbox_attempts_nonnegative CHECK (attempts >= 0),
    next_attempt_ms    INTEGER NOT NULL,
    last_error         TEXT,
    receipt_json       TEXT,
    bounce_reason      TEXT,
    delivered_ms       INTEGER,
    bounced_ms         INTEGER,
    acked_receipt_json TEXT,
    acked_ms           INTEGER,
    CONSTRAINT outbox_envelope_id_unique UNIQUE (envelope_id),
    CONSTRAINT outbox_delivered_has_receipt
        CHECK (state <> 'delivered' OR (receipt_json IS NOT NULL AND delivered_ms IS NOT NULL)),
    CONSTRAINT outbox_bounced_has_reason
        CHECK (state <> 'bounced' OR (bounce_reason IS NOT NULL AND bounced_ms IS NOT NULL)),
    CONSTRAINT outbox_ack_complete
        CHECK ((acked_ms IS NULL) = (acked_receipt_json IS NULL))
) STRICT;

-- The delivery scheduler's query: queued rows of one peer in precedence
-- order (FLASH first), then oldest first, then insertion order. Partial, so
-- delivered and bounced history does not slow it down; next_attempt_ms is
-- carried so the "is it due" filter is answered from the index.
CREATE INDEX outbox_due_idx
    ON outbox (peer, precedence DESC, created_ms ASC, seq ASC, next_attempt_ms)
    WHERE state = 'queued';

-- Earliest next attempt per peer (MIN is one index probe), and the skip-scan
-- over peers that have queued work.
CREATE INDEX outbox_next_due_idx
    ON outbox (peer, next_attempt_ms)
    WHERE state = 'queued';

-- Newest-first listing, per desk or over everything (seq is the rowid).
CREATE INDEX outbox_from_desk_idx ON outbox (from_desk, seq);

-- Messages received from peers.
CREATE TABLE inbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id      TEXT    NOT NULL
        CONSTRAINT inbox_envelope_id_nonempty CHECK (length(envelope_id) > 0),
    from_desk        TEXT    NOT NULL,
    to_desk          TEXT    NOT NULL,
    sender_party     TEXT    NOT NULL
        CONSTRAINT inbox_sender_party_nonempty CHECK (length(sender_party) > 0),
    precedence       INTEGER NOT NULL
        CONSTRAINT inbox_precedence_range CHECK (precedence BETWEEN 0 AND 3),
    received_ms      INTEGER NOT NULL,
    envelope_json    TEXT    NOT NULL,
    receiver_label   TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    acked_ms         INTEGER,
    acked_by         TEXT,
    ack_receipt_json TEXT,
    escalated_ms     INTEGER,
    CONSTRAINT inbox_envelope_id_unique UNIQUE (envelope_id),
    CONSTRAINT inbox_ack_complete
        CHECK ((acked_ms IS NULL) = (acked_by IS NULL)
           AND (acked_ms IS NULL) = (ack_receipt_json IS NULL))
) STRICT;

CREATE INDEX inbox_desk_idx
    ON inbox (to_desk, precedence DESC, received_ms DESC, seq DESC);

CREATE INDEX inbox_unacked_idx
    ON inbox (precedence, received_ms)
    WHERE acked_ms IS NULL;

-- Acknowledgement receipts ("read by a person") waiting to be sent back to
-- the sender of an inbox message. A row is deleted once delivered; the
-- receipt itself stays on the inbox row.
CREATE TABLE ack_outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id      TEXT    NOT NULL
        CONSTRAINT ack_outbox_envelope_id_known REFERENCES inbox (envelope_id),
    peer             TEXT    NOT NULL
        CONSTRAINT ack_outbox_peer_nonempty CHECK (length(peer) > 0),
    ack_receipt_json TEXT    NOT NULL,
    CONSTRAINT ack_outbox_envelope_id_unique UNIQUE (envelope_id)
) STRICT;

CREATE INDEX ack_outbox_peer_idx ON ack_outbox (peer, seq);

-- Installed agreements, one row per agreement id: the newest version.
CREATE TABLE agreements (
    id           TEXT    PRIMARY KEY
        CONSTRAINT agreements_id_nonempty CHECK (length(id) > 0),
    version      INTEGER NOT NULL
        CONSTRAINT agreements_version_range CHECK (version BETWEEN 0 AND 4294967295),
    text         TEXT    NOT NULL,
    digest_hex   TEXT    NOT NULL
        CONSTRAINT agreements_digest_nonempty CHECK (length(digest_hex) > 0),
    installed_ms INTEGER NOT NULL
) STRICT;

-- One JSON blob per peer party (last heartbeat, link state, tree heads...).
CREATE TABLE peers (
    party      TEXT PRIMARY KEY
        CONSTRAINT peers_party_nonempty CHECK (length(party) > 0),
    state_json TEXT NOT NULL
) STRICT;

-- Escalations raised for messages (e.g. a FLASH not acknowledged in time).
CREATE TABLE escalations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id TEXT    NOT NULL
        CONSTRAINT escalations_envelope_id_nonempty CHECK (length(envelope_id) > 0),
    raised_ms   INTEGER NOT NULL,
    reason      TEXT    NOT NULL
) STRICT;

CREATE INDEX escalations_envelope_idx ON escalations (envelope_id);

-- Small node settings.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY
        CONSTRAINT meta_key_nonempty CHECK (length(key) > 0),
    value TEXT NOT NULL
) STRICT;
