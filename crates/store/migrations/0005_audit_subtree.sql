-- Roots of the audit log's perfect subtrees at every level that is a multiple of 4
-- (`merkle::STORED_LEVEL_STRIDE`): the subtree of `2^level` leaves starting at leaf
-- `idx * 2^level`. A consistency proof for a peer then reads O(log n) rows instead of
-- every leaf. Written in the same transaction as the audit rows that complete them;
-- a log from before this table is filled in once, on the first open that finds
-- `meta.audit_subtrees` unset.
CREATE TABLE audit_subtree (
    level INTEGER NOT NULL CONSTRAINT audit_subtree_level CHECK (level > 0 AND level % 4 = 0),
    idx   INTEGER NOT NULL CONSTRAINT audit_subtree_idx CHECK (idx >= 0),
    hash  BLOB    NOT NULL CONSTRAINT audit_subtree_hash_32 CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;
