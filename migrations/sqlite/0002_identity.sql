-- People, access and signatures (docs/SIGNATURES.md). These tables are the
-- current state; the ledger entries that changed them are the record, and
-- carry every old and new value. They are never the source of a signature
-- check in `verify`, which reads the ledger alone.

CREATE TABLE users (
    user_id              TEXT PRIMARY KEY,           -- never reused: rows are never deleted
    printed_name         TEXT NOT NULL,
    email                TEXT NOT NULL,
    roles                TEXT NOT NULL,              -- JSON array
    status               TEXT NOT NULL CHECK (status IN ('active', 'locked', 'deactivated')),
    created_seq          INTEGER NOT NULL,
    password_hash        TEXT NOT NULL,              -- argon2id PHC string
    password_set_at      TEXT NOT NULL,
    password_expires_at  TEXT NOT NULL,
    must_change_password INTEGER NOT NULL,
    failed_logins        INTEGER NOT NULL DEFAULT 0,
    wrapped_key          TEXT,                       -- JSON, docs/SIGNATURES.md §4
    public_key           BLOB,
    certificate_sha256   TEXT
);
CREATE TRIGGER users_no_delete BEFORE DELETE ON users
BEGIN SELECT RAISE(ABORT, 'trailmark: user IDs are never reused; deactivate instead of deleting'); END;

CREATE TABLE password_history (
    user_id       TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    set_seq       INTEGER NOT NULL,
    PRIMARY KEY (user_id, set_seq)
);

CREATE TABLE certificates (
    sha256        TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    der           BLOB NOT NULL,
    not_before    TEXT NOT NULL,
    not_after     TEXT NOT NULL,
    issued_seq    INTEGER NOT NULL,
    revoked_seq   INTEGER,
    revoked_cause TEXT
);
CREATE INDEX certificates_user ON certificates (user_id);

CREATE TABLE trusted_cas (
    sha256    TEXT PRIMARY KEY,
    der       BLOB NOT NULL,
    subject   TEXT NOT NULL,
    added_seq INTEGER NOT NULL
);

CREATE TABLE signing_policy (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    policy  TEXT NOT NULL,
    set_seq INTEGER NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL,
    user_id      TEXT NOT NULL,
    opened_at    TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    closed_at    TEXT,
    signed_once  INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT '{"kinds":["*"],"permissions":["entries:append","entries:read"]}';
ALTER TABLE api_tokens ADD COLUMN expires_at TEXT;
ALTER TABLE api_tokens ADD COLUMN client_cert_sha256 TEXT;
