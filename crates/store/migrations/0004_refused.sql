-- Envelope ids this node has declared, in a signed receipt, that it does not hold
-- and will never hold: the sender asked about an envelope it could no longer send
-- (see `Store::inbox_settle`). A copy still in flight must not land afterwards, so
-- the inbox refuses these ids whatever inserts them.
CREATE TABLE inbox_refused (
    envelope_id  TEXT    PRIMARY KEY NOT NULL
        CONSTRAINT inbox_refused_envelope_id_nonempty CHECK (length(envelope_id) > 0),
    sender_party TEXT    NOT NULL,
    refused_ms   INTEGER NOT NULL,
    reason       TEXT    NOT NULL
) STRICT;

-- RAISE(IGNORE) skips the row without failing the statement, so the multi-row
-- insert reports it as not stored (its id is not RETURNed), like a duplicate.
CREATE TRIGGER inbox_refused_stays_out BEFORE INSERT ON inbox
WHEN EXISTS (SELECT 1 FROM inbox_refused WHERE envelope_id = NEW.envelope_id)
BEGIN
    SELECT RAISE(IGNORE);
END;
