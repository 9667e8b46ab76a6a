-- The node's append-only audit log (RFC 9162 Merkle tree over `entry`).
-- Each row keeps its leaf hash and the root of the tree after it was appended, so a
-- verifier can name the first row where history was changed.
CREATE TABLE audit (
    idx        INTEGER PRIMARY KEY,
    entry      BLOB    NOT NULL,
    leaf       BLOB    NOT NULL CONSTRAINT audit_leaf_32 CHECK (length(leaf) = 32),
    root_after BLOB    NOT NULL CONSTRAINT audit_root_32 CHECK (length(root_after) = 32)
) STRICT;
