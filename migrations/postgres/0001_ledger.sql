-- Trailmark ledger schema (PostgreSQL). docs/ARCHITECTURE.md explains each table.
-- entries, entry_parents, merkle_nodes and checkpoints are append-only:
-- triggers reject UPDATE, DELETE and TRUNCATE for every role that is not the
-- table owner disabling triggers on purpose (which the tamper tests do).

CREATE TABLE entries (
    seq             BIGINT PRIMARY KEY CHECK (seq >= 0),
    hash            BYTEA  NOT NULL UNIQUE CHECK (length(hash) = 32),
    canonical       BYTEA  NOT NULL,
    recorded_at     TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    actor           TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    correlation_id  TEXT,
    idempotency_key TEXT,
    request_digest  BYTEA  NOT NULL,
    -- On the last entry of each committed batch: the ledger key's Ed25519
    -- signature over the checkpoint body of the tree ending here (docs/FORMAT.md §3.5).
    seal            BYTEA
);
CREATE UNIQUE INDEX entries_idempotency ON entries (idempotency_key, actor) WHERE idempotency_key IS NOT NULL;
CREATE INDEX entries_subject ON entries (subject, seq);
CREATE INDEX entries_kind ON entries (kind, seq);
CREATE INDEX entries_actor ON entries (actor, seq);
CREATE INDEX entries_correlation ON entries (correlation_id, seq) WHERE correlation_id IS NOT NULL;
CREATE INDEX entries_recorded_at ON entries (recorded_at);

CREATE TABLE entry_parents (
    seq        BIGINT NOT NULL,
    parent_seq BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (seq, position)
);
CREATE INDEX entry_parents_parent ON entry_parents (parent_seq, seq);

-- Interior nodes (level >= 1) of the RFC 9162 tree; level 0 is entries.hash.
CREATE TABLE merkle_nodes (
    level BIGINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA  NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE TABLE checkpoints (
    size      BIGINT PRIMARY KEY CHECK (size > 0),
    root      BYTEA  NOT NULL CHECK (length(root) = 32),
    note      TEXT   NOT NULL,
    signed_at TEXT   NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  TEXT NOT NULL,
    created_seq BIGINT NOT NULL,
    revoked_at  TEXT,
    revoked_seq BIGINT
);

CREATE FUNCTION trailmark_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trailmark: % is append-only; % is rejected', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER entry_parents_append_only BEFORE UPDATE OR DELETE ON entry_parents
    FOR EACH ROW EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER entry_parents_no_truncate BEFORE TRUNCATE ON entry_parents
    FOR EACH STATEMENT EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION trailmark_reject_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION trailmark_reject_change();
