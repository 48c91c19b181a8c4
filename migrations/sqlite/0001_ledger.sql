-- Trailmark ledger schema (SQLite). docs/ARCHITECTURE.md explains each table.
-- entries, entry_parents, merkle_nodes and checkpoints are append-only:
-- triggers reject UPDATE and DELETE for every connection, not only ours.

CREATE TABLE entries (
    seq             INTEGER PRIMARY KEY CHECK (seq >= 0),
    hash            BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    canonical       BLOB    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    correlation_id  TEXT,
    idempotency_key TEXT,
    request_digest  BLOB    NOT NULL,
    -- On the last entry of each committed batch: the ledger key's Ed25519
    -- signature over the checkpoint body of the tree ending here (docs/FORMAT.md §3.5).
    seal            BLOB
);
CREATE UNIQUE INDEX entries_idempotency ON entries (idempotency_key, actor) WHERE idempotency_key IS NOT NULL;
CREATE INDEX entries_subject ON entries (subject, seq);
CREATE INDEX entries_kind ON entries (kind, seq);
CREATE INDEX entries_actor ON entries (actor, seq);
CREATE INDEX entries_correlation ON entries (correlation_id, seq) WHERE correlation_id IS NOT NULL;
CREATE INDEX entries_recorded_at ON entries (recorded_at);

CREATE TABLE entry_parents (
    seq        INTEGER NOT NULL,
    parent_seq INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (seq, position)
) WITHOUT ROWID;
CREATE INDEX entry_parents_parent ON entry_parents (parent_seq, seq);

-- Interior nodes (level >= 1) of the RFC 9162 tree; level 0 is entries.hash.
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    size      INTEGER PRIMARY KEY CHECK (size > 0),
    root      BLOB    NOT NULL CHECK (length(root) = 32),
    note      TEXT    NOT NULL,
    signed_at TEXT    NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    created_seq INTEGER NOT NULL,
    revoked_at  TEXT,
    revoked_seq INTEGER
);

CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'trailmark: entries are append-only; UPDATE is rejected'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'trailmark: entries are append-only; DELETE is rejected'); END;
CREATE TRIGGER entry_parents_no_update BEFORE UPDATE ON entry_parents
BEGIN SELECT RAISE(ABORT, 'trailmark: entry_parents is append-only; UPDATE is rejected'); END;
CREATE TRIGGER entry_parents_no_delete BEFORE DELETE ON entry_parents
BEGIN SELECT RAISE(ABORT, 'trailmark: entry_parents is append-only; DELETE is rejected'); END;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'trailmark: merkle_nodes is append-only; UPDATE is rejected'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'trailmark: merkle_nodes is append-only; DELETE is rejected'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'trailmark: checkpoints are append-only; UPDATE is rejected'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'trailmark: checkpoints are append-only; DELETE is rejected'); END;
