-- The people who use the console and the API: accounts, sign-in sessions and API
-- tokens. Secrets are never stored: passwords as argon2id PHC strings, session and
-- token secrets as SHA-256 hex digests.
CREATE TABLE users (
    name          TEXT    PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    display_name  TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    roles         TEXT    NOT NULL,
    desks         TEXT    NOT NULL,
    clearance     TEXT    NOT NULL,
    language      TEXT    NOT NULL,
    time_zone     TEXT    NOT NULL,
    disabled      INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    id_hash      TEXT    PRIMARY KEY NOT NULL,
    user_name    TEXT    NOT NULL REFERENCES users (name),
    csrf         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_name);

CREATE TABLE api_tokens (
    id_hash    TEXT    PRIMARY KEY NOT NULL,
    user_name  TEXT    NOT NULL REFERENCES users (name),
    label      TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
